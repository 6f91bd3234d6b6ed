"""Ctrl-C while the chat runs a request, in process: SIGINT to this very process while a step's
reply is held by the fake server, and the engine's hand-off of the interrupt to the executor."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any, cast

import pytest

from overseer import engine as engine_module
from overseer.config import load_settings
from overseer.core.executor import Executor
from overseer.core.plan import parse_plan
from overseer.core.toolbase import ToolResult
from overseer.events import Event, EventBus, PlanReady
from overseer.interfaces.chat.session import ChatSession
from tests.clihelp import responder, user_text
from tests.fake_openai import FakeOpenAI, FakeReply
from tests.fakes import plan_json

SLOW = plan_json(
    ("slow", "Take your time", "general", []), ("after", "Then this", "general", ["slow"])
)
QUICK = plan_json(("quick", "Say hi", "general", []))


class HeldStep:
    """A responder whose first step request is held until ``release`` is set."""

    def __init__(self) -> None:
        self.arrived = threading.Event()
        self.release = threading.Event()
        self.respond = responder([SLOW, QUICK], self.step)

    def step(self, body: dict[str, Any]) -> FakeReply | str:
        if user_text(body).startswith("Take your time"):
            self.arrived.set()
            return FakeReply(content="HELD OUTPUT", wait=self.release)
        return "quick output"


@pytest.fixture
def held() -> Iterator[tuple[HeldStep, FakeOpenAI]]:
    script = HeldStep()
    with FakeOpenAI(script.respond) as fake:
        try:
            yield script, fake
        finally:
            script.release.set()


class PlanWatcher:
    """A chat watcher that notes when the turn's streamed plan has every step."""

    def __init__(self) -> None:
        self.ready = threading.Event()

    def handle(self, event: Event) -> None:
        if isinstance(event, PlanReady):
            self.ready.set()

    def stop(self) -> None:
        pass


def interrupt_when(*events: threading.Event) -> threading.Thread:
    """Send SIGINT to this process (the main thread gets KeyboardInterrupt) once all ``events``."""

    def watch() -> None:
        if all(event.wait(30) for event in events):
            os.kill(os.getpid(), signal.SIGINT)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def threading_with(thread_class: type[threading.Thread]) -> SimpleNamespace:
    """The engine's view of ``threading`` with its run thread replaced (the pool's untouched)."""
    return SimpleNamespace(Event=threading.Event, Lock=threading.Lock, Thread=thread_class)


def overseer_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("overseer-")]


def test_sigint_during_a_step_cancels_the_turn_and_nothing_is_left_running(
    held: tuple[HeldStep, FakeOpenAI],
) -> None:
    script, fake = held
    settings = load_settings(overrides={"backend.base_url": fake.url})
    plan = PlanWatcher()
    session = ChatSession(settings, watchers=(lambda: plan,))
    # The plan streams: "slow" starts before "after" arrives, so wait for both.
    watcher = interrupt_when(script.arrived, plan.ready)
    turn = session.ask("slow then more")
    watcher.join()
    assert turn.status == "cancelled" and turn.code == 130
    assert turn.report is not None
    steps = turn.report.outcome.steps
    assert steps["slow"].status == "cancelled" and steps["after"].status == "cancelled"
    assert steps["slow"].output is None
    script.release.set()  # the held reply arrives now: nobody may take it any more
    for thread in overseer_threads():
        thread.join(timeout=30)
    assert overseer_threads() == []
    assert turn.report.outcome.steps["slow"].status == "cancelled"
    assert "HELD OUTPUT" not in turn.answer
    following = session.ask("and now something quick")
    assert following.status == "succeeded" and following.answer == "THE ANSWER"
    assert "HELD OUTPUT" not in session.context()


def test_ctrl_c_before_the_run_thread_began_still_cancels_and_runs_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An interrupt inside ``Thread.start()`` (before the OS thread exists) must not escape."""
    ran: list[str] = []

    def runner(step: Any, inputs: Any, ctx: Any) -> ToolResult:
        ran.append(step.step_id)
        return ToolResult("x")

    class NeverStarts(threading.Thread):
        def start(self) -> None:
            raise KeyboardInterrupt

    monkeypatch.setattr(engine_module, "threading", threading_with(NeverStarts))
    executor = Executor(runner, bus=EventBus())
    outcome = _run_planned(executor)
    assert outcome.status == "cancelled" and ran == []
    assert outcome.steps["quick"].status == "cancelled"


def test_ctrl_c_while_the_run_thread_is_starting_is_a_cancel_too(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The OS thread exists but ``start()`` is interrupted while waiting for it."""

    class InterruptedAfterStart(threading.Thread):
        def start(self) -> None:
            super().start()
            raise KeyboardInterrupt

    gate = threading.Event()

    def runner(step: Any, inputs: Any, ctx: Any) -> ToolResult:
        gate.wait(30)
        return ToolResult("x")

    monkeypatch.setattr(engine_module, "threading", threading_with(InterruptedAfterStart))
    executor = Executor(runner, bus=EventBus(), cancel_grace=0)
    outcome = _run_planned(executor)
    gate.set()
    assert outcome.status == "cancelled"


QUICK_PLAN = [{"step_id": "quick", "description": "Say hi", "tool": "general"}]


class _PlannedSession:
    """Stands in for the planning session of a plan that had fully arrived: a step was
    accepted, so a Ctrl-C ends the run cancelled instead of going on up."""

    accepted = 1

    def stop(self) -> None:
        return None


def _run_planned(executor: Executor) -> Any:
    """The engine's run path (executor and planning session on helper threads) for QUICK_PLAN."""
    for step in parse_plan(QUICK_PLAN, ["general"]).steps:
        executor.add_step(step)
    executor.close()
    session = cast(Any, _PlannedSession())
    return engine_module._run_with_session(executor, session, lambda: None, None)
