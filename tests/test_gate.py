"""The caps shared by plan steps and node calls: slots, per-tool caps, lending, waits."""

from __future__ import annotations

import threading
import time

import pytest

from overseer.core.gate import Gate, Slot
from overseer.core.toolbase import CallContext
from overseer.errors import StepTimeout, ToolError


def test_a_step_holds_a_slot_and_its_tools_cap() -> None:
    gate = Gate(2, {"t": 1})
    with gate.step("t", CallContext()):
        assert gate.free == 1 and gate.busy("t") == 1
    assert gate.free == 2 and gate.busy("t") == 0


def test_a_nodes_first_call_runs_in_its_steps_own_slot() -> None:
    gate = Gate(1)
    with gate.step("code", CallContext()) as slot:
        assert gate.free == 0
        with gate.call("echo", slot, CallContext()):  # no free slot, yet no wait
            assert slot.lent
        assert not slot.lent


def test_further_calls_need_free_slots_and_wait_for_them() -> None:
    gate = Gate(2)
    with gate.step("code", CallContext()) as slot, gate.call("a", slot, CallContext()):
        with gate.call("b", slot, CallContext()):  # the one free slot
            assert gate.free == 0
            late = CallContext(deadline=time.monotonic() + 0.05)
            with (
                pytest.raises(StepTimeout, match="waiting for a free slot"),
                gate.call("c", slot, late),
            ):
                pass  # pragma: no cover
        assert gate.free == 1


def test_a_waiting_call_takes_the_lent_slot_as_soon_as_it_is_back() -> None:
    gate = Gate(1)
    taken = threading.Event()
    with gate.step("code", CallContext()) as slot:
        first = gate.call("a", slot, CallContext())
        first.__enter__()

        def second() -> None:
            with gate.call("b", slot, CallContext()):
                taken.set()

        thread = threading.Thread(target=second)
        thread.start()
        assert not taken.is_set()  # no free slot and the step's own is lent
        first.__exit__(None, None, None)
        thread.join(10)
    assert taken.is_set() and gate.free == 1


def test_a_tool_cap_is_shared_by_steps_and_node_calls() -> None:
    gate = Gate(4, {"translator": 1})
    with gate.step("translator", CallContext()), gate.step("code", CallContext()) as slot:
        now = CallContext(deadline=time.monotonic())
        with pytest.raises(StepTimeout), gate.call("translator", slot, now):
            pass  # pragma: no cover
        with gate.call("summarizer", slot, CallContext()):
            assert gate.busy("translator") == 1


def test_a_cancelled_wait_gives_up_when_woken() -> None:
    gate = Gate(1)
    ctx = CallContext()
    failure: list[BaseException] = []

    def waiter() -> None:
        try:
            with gate.call("a", None, ctx):
                pass  # pragma: no cover
        except ToolError as exc:
            failure.append(exc)

    with gate.step("code", CallContext()):
        thread = threading.Thread(target=waiter)
        thread.start()
        ctx.cancelled.set()
        gate.wake()
        thread.join(10)
    assert failure and "cancelled" in str(failure[0])
    assert gate.free == 1


def test_an_already_cancelled_call_does_not_start_even_with_room() -> None:
    ctx = CallContext()
    ctx.cancelled.set()
    gate = Gate(3)
    with pytest.raises(ToolError, match="cancelled before it started"), gate.call("a", None, ctx):
        pass  # pragma: no cover
    assert gate.free == 3


def test_nodes_holding_every_slot_still_progress_through_their_own() -> None:
    """Two code steps fill a two-slot gate; each node's calls still run, one at a time each."""
    gate = Gate(2)
    done: list[str] = []
    lock = threading.Lock()

    def node(name: str, slot: Slot) -> None:
        for i in range(3):
            with gate.call("echo", slot, CallContext()), lock:
                done.append(f"{name}{i}")

    with gate.step("code", CallContext()) as a, gate.step("code", CallContext()) as b:
        threads = [threading.Thread(target=node, args=(n, s)) for n, s in (("a", a), ("b", b))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
    assert sorted(done) == ["a0", "a1", "a2", "b0", "b1", "b2"]


def test_a_gate_needs_a_slot() -> None:
    with pytest.raises(ValueError, match="at least 1 slot"):
        Gate(0)


def test_a_cancelled_holder_stops_counting() -> None:
    """A step the executor gave up on (timed out, its thread abandoned) frees its slot and cap."""
    gate = Gate(1, {"t": 1})
    abandoned = CallContext()
    with gate.step("t", abandoned):
        assert gate.free == 0 and gate.busy("t") == 1
        abandoned.cancelled.set()
        gate.wake()
        assert gate.free == 1 and gate.busy("t") == 0
        with gate.step("t", CallContext()):
            assert gate.free == 0
    assert gate.free == 1


def test_a_lent_slot_comes_back_when_the_borrowing_call_is_cancelled() -> None:
    gate = Gate(1)
    with gate.step("code", CallContext()) as slot:
        stale = CallContext()
        with gate.call("a", slot, stale):
            stale.cancelled.set()
            assert not slot.lent
            with gate.call("b", slot, CallContext()):
                assert slot.lent


def test_a_step_abandoned_at_its_timeout_does_not_hold_up_the_next_one() -> None:
    """max_workers=1: step1 hangs past its timeout; step2 still gets the one slot."""
    from overseer import Overseer
    from overseer.config import load_settings
    from overseer.tools.registry import FunctionTool, ToolRegistry
    from tests.fakes import RuleChat, plan_json

    release = threading.Event()
    tools = ToolRegistry(
        [
            FunctionTool("hang", "d", lambda prompt: str(release.wait(60))),
            FunctionTool("echo", "d", lambda prompt: "echoed"),
        ]
    )
    plan = plan_json(("step1", "hang", "hang", []), ("step2", "echo", "echo", []))
    overrides = {
        "run.max_workers": 1,
        "run.step_timeout": 0.5,
        "run.on_error": "continue",
        "run.synthesize": False,
    }
    engine = Overseer(
        load_settings(overrides=overrides), chat=RuleChat([plan]), registry=tools, journal=False
    )
    try:
        report = engine.run("x")
    finally:
        release.set()
    assert report.outcome.steps["step1"].status == "failed"
    assert report.outcome.steps["step2"].output == "echoed"
