"""The broker serving a node's channel, with the node's side (ChannelBackend) in this process."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from node_runtime import ToolCallError, ToolCallsFailed, UnknownToolError, wire
from node_runtime import _calls as calls
from node_runtime._channel import ChannelBackend
from overseer.config import load_settings
from overseer.core.toolbase import CallContext, ToolResult
from overseer.events import EventBus, NodeCallFinished, NodeCallStarted, UsageRecorded
from overseer.nodes.broker import Broker, node_tools
from overseer.tools.registry import ToolRegistry
from overseer.tools.services import RunServices
from overseer.usage import Usage
from tests.nodehelp import failing, services, tool, upper


class Paid:
    """A tool that spends tokens, like an LLM tool would."""

    name = "paid"
    description = "spends 10 tokens"
    max_concurrency: int | None = None

    def run(self, prompt: str, options: dict[str, Any], ctx: CallContext) -> ToolResult:
        return ToolResult(output=f"paid:{prompt}", usage=Usage(6, 4), model="m")


class Unreachable:
    name = "code"
    description = "nodes may not call me"
    max_concurrency: int | None = None
    node_callable = False

    def run(self, prompt: str, options: dict[str, Any], ctx: CallContext) -> ToolResult:
        raise AssertionError("called")  # pragma: no cover


@contextlib.contextmanager
def connected(run: RunServices) -> Iterator[tuple[ChannelBackend, Broker]]:
    parent, child = socket.socketpair()
    broker = Broker(run, step_id="s1", slot=None, deadline=None)
    broker.serve(parent)
    backend = ChannelBackend(child)
    try:
        yield backend, broker
    finally:
        child.close()
        broker.close()
        parent.close()


def batch(backend: ChannelBackend, *items: tuple[Any, ...], **kw: Any) -> list[object]:
    normalized = calls.normalize_calls(list(items))
    calls.check_names(backend.tool_names(), normalized)
    return calls.run(backend, normalized, kw.get("max_workers"), kw.get("timeout"))


def test_the_hello_lists_the_tools_a_node_may_call() -> None:
    run, _ = services(tool("upper", upper), Paid(), Unreachable())
    with connected(run) as (backend, _broker):
        assert backend.tool_names() == ["upper", "paid"]


def test_calls_are_answered_in_the_order_asked_with_events() -> None:
    run, recorder = services(tool("upper", upper), Paid())
    with connected(run) as (backend, broker):
        out = batch(backend, ("upper", "a"), ("paid", "b"), ("upper", "c"))
    assert out == ["A", "paid:b", "C"]
    assert broker.calls == 3 and broker.usage == Usage(6, 4)
    started, finished = recorder.of(NodeCallStarted), recorder.of(NodeCallFinished)
    assert sorted(e.call_id for e in started) == [1, 2, 3]
    assert {e.step_id for e in finished} == {"s1"} and all(e.error is None for e in finished)
    assert sum(e.usage.total_tokens for e in finished) == 10
    assert recorder.of(UsageRecorded) == []  # counted once, in the code step's own usage


def test_a_tool_error_reaches_the_node_as_its_message() -> None:
    run, recorder = services(tool("boom", failing))
    with connected(run) as (backend, _broker):
        [outcome] = batch(backend, ("boom", "x"))
    assert isinstance(outcome, ToolCallError) and outcome.kind == "tool_error"
    assert "RuntimeError: cannot do 'x'" in str(outcome)
    [finished] = recorder.of(NodeCallFinished)
    assert finished.error is not None and "cannot do" in finished.error


def test_failed_calls_are_retried_as_steps_are() -> None:
    attempts: list[int] = []

    def flaky(prompt: str) -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise RuntimeError("not yet")
        return "done"

    run, recorder = services(tool("flaky", flaky), **{"run.step_retries": 2})
    with connected(run) as (backend, _broker):
        assert batch(backend, ("flaky", "x")) == ["done"]
    assert len(attempts) == 3 and recorder.of(NodeCallFinished)[0].attempts == 3


def test_the_broker_refuses_unknown_tools_with_the_list() -> None:
    """A node that skips its own name check still gets the error (never a substitute)."""
    run, _ = services(tool("upper", upper), Unreachable())
    with connected(run) as (backend, _broker):
        [outcome] = calls.run(backend, calls.normalize_calls([("code", "x")]), None, None)
    assert isinstance(outcome, UnknownToolError) and outcome.known == ["upper"]


def test_a_spent_budget_refuses_new_calls() -> None:
    run, _ = services(Paid(), **{"run.max_tokens": 15})
    with connected(run) as (backend, _broker):
        assert batch(backend, ("paid", "a")) == ["paid:a"]
        run.meter.add_live("other", Usage(5, 0))
        [outcome] = batch(backend, ("paid", "b"))
    assert isinstance(outcome, ToolCallError) and outcome.kind == "budget"
    assert "token budget of 15 spent (used 15)" in str(outcome)


def test_the_meter_counts_its_own_run_and_drops_live_usage_once_recorded() -> None:
    run, _ = services(Paid())
    run.meter.add_live("s1", Usage(10, 0))
    run.meter.observe(UsageRecorded(1.0, Usage(3, 0), None, "plan", run_id=""))
    run.meter.observe(UsageRecorded(1.0, Usage(50, 0), None, "plan", run_id="other-run"))
    assert run.meter.spent() == 13
    run.meter.observe(UsageRecorded(2.0, Usage(12, 0), "s1", "step", run_id=""))
    assert run.meter.spent() == 15


def test_calls_of_a_capped_tool_queue_behind_its_cap() -> None:
    inside, peak, lock = [0], [0], threading.Lock()
    barrier = threading.Barrier(2, timeout=10)

    def capped(prompt: str) -> str:
        with lock:
            inside[0] += 1
            peak[0] = max(peak[0], inside[0])
        with lock:
            inside[0] -= 1
        return prompt

    def free(prompt: str) -> str:
        barrier.wait()  # two of these must overlap
        return prompt

    run, _ = services(tool("capped", capped, cap=1), tool("free", free))
    with connected(run) as (backend, _broker):
        out = batch(backend, *[("capped", str(i)) for i in range(5)], ("free", "a"), ("free", "b"))
    assert out == ["0", "1", "2", "3", "4", "a", "b"] and peak[0] == 1


class Patient:
    """Waits until its call is cancelled, and says so."""

    name = "patient"
    description = "waits for a cancel"
    max_concurrency: int | None = None

    def __init__(self) -> None:
        self.started = threading.Event()
        self.saw_cancel = threading.Event()

    def run(self, prompt: str, options: dict[str, Any], ctx: CallContext) -> ToolResult:
        self.started.set()
        if ctx.cancelled.wait(30):
            self.saw_cancel.set()
        return ToolResult("late")


def test_a_node_side_timeout_cancels_the_call_in_the_parent() -> None:
    patient = Patient()
    run, _ = services(patient)
    with connected(run) as (backend, broker):
        [outcome] = batch(backend, ("patient", "x"), timeout=0.05)
        assert patient.saw_cancel.wait(30)
    assert isinstance(outcome, ToolCallError) and outcome.kind == "timeout"
    assert broker.calls == 1


def test_closing_the_broker_cancels_calls_still_running() -> None:
    patient = Patient()
    run, _ = services(patient)
    parent, child = socket.socketpair()
    broker = Broker(run, step_id="s1", slot=None, deadline=None)
    broker.serve(parent)
    stream = child.makefile("rb")
    wire.read_frame(stream)
    child.sendall(wire.encode({"op": "call", "id": 1, "tool": "patient", "prompt": "p"}))
    assert patient.started.wait(30)
    broker.close()
    assert patient.saw_cancel.wait(30)
    stream.close()
    child.close()
    parent.close()


def test_garbage_on_the_channel_closes_it_and_the_node_sees_why() -> None:
    run, _ = services(tool("upper", upper))
    parent, child = socket.socketpair()
    broker = Broker(run, step_id="s1", slot=None, deadline=None)
    broker.serve(parent)
    backend = ChannelBackend(child)
    child.sendall(b"\x00\x00\x00\x04junk")
    [outcome] = calls.run(backend, calls.normalize_calls([("upper", "x")]), None, None)
    broker.close()
    child.close()
    parent.close()
    assert isinstance(outcome, ToolCallError) and outcome.kind == "channel"
    assert "did not hold UTF-8 JSON" in broker.protocol_error


def test_malformed_requests_get_bad_request_answers() -> None:
    run, _ = services(tool("upper", upper))
    parent, child = socket.socketpair()
    broker = Broker(run, step_id="s1", slot=None, deadline=None)
    broker.serve(parent)
    stream = child.makefile("rb")
    assert (wire.read_frame(stream) or {})["op"] == "hello"
    child.sendall(wire.encode({"op": "call", "id": 7, "tool": "upper", "prompt": 3}))
    child.sendall(
        wire.encode({"op": "call", "id": 8, "tool": "upper", "prompt": "p", "options": 1})
    )
    child.sendall(wire.encode({"op": "call", "tool": "upper", "prompt": "no id"}))
    child.sendall(wire.encode({"op": "something-else"}))
    answers = {m["id"]: m for m in (wire.read_frame(stream), wire.read_frame(stream)) if m}
    broker.close()
    stream.close()
    child.close()
    parent.close()
    assert {a["error"]["kind"] for a in answers.values()} == {"bad_request"}
    assert "options must be an object" in answers[8]["error"]["message"]


def test_a_broken_channel_fails_waiting_calls_instead_of_hanging() -> None:
    run, _ = services(tool("upper", upper))
    parent, child = socket.socketpair()
    started = threading.Event()

    class Silent(Broker):
        def _dispatch(self, message: dict[str, Any]) -> None:
            started.set()  # never answer; the parent then goes away

    broker = Silent(run, step_id="s1", slot=None, deadline=None)
    broker.serve(parent)
    backend = ChannelBackend(child)
    normalized = calls.normalize_calls([("upper", "x")])

    def hang_up() -> None:
        started.wait(10)
        parent.shutdown(socket.SHUT_RDWR)

    threading.Thread(target=hang_up).start()
    [outcome] = calls.run(backend, normalized, None, None)
    assert isinstance(outcome, ToolCallError) and "closed the tool channel" in str(outcome)
    [again] = calls.run(backend, normalized, None, None)  # later calls fail at once
    assert isinstance(again, ToolCallError) and again.kind == "channel"
    broker.close()
    child.close()
    parent.close()


def test_partial_failure_over_the_channel_keeps_the_other_results() -> None:
    import node_runtime

    run, _ = services(tool("upper", upper), tool("boom", failing))
    with connected(run) as (backend, _broker):
        node_runtime._backend = backend
        try:
            with pytest.raises(ToolCallsFailed) as info:
                node_runtime.call_tools_parallel([("upper", "a"), ("boom", "b"), ("upper", "c")])
        finally:
            node_runtime._backend = None
    assert info.value.results[0] == "A" and info.value.results[2] == "C"
    assert set(info.value.failures) == {1}


def test_node_tools_leaves_out_tools_marked_for_steps_only() -> None:
    registry = ToolRegistry([tool("upper", upper), Unreachable()])
    assert list(node_tools(registry)) == ["upper"]


def test_run_step_holds_a_slot_and_lends_the_services() -> None:
    seen: dict[str, Any] = {}

    class Spy:
        name = "spy"
        description = "d"
        max_concurrency: int | None = None

        def run(self, prompt: str, options: dict[str, Any], ctx: CallContext) -> ToolResult:
            from overseer.tools.services import services_of, slot_of

            seen.update(services=services_of(ctx), slot=slot_of(ctx), free=run.gate.free)
            return ToolResult(prompt)

    settings = load_settings(overrides={"run.max_workers": 3})
    run = RunServices.for_run(settings, ToolRegistry([Spy()]), EventBus(), t0=0.0)
    assert run.run_step(Spy(), "p", CallContext()).output == "p"
    assert seen["services"] is run and seen["slot"] is not None and seen["free"] == 2
    assert run.gate.free == 3


def test_concurrent_batches_share_one_channel_without_mixing_results() -> None:
    run, _ = services(tool("upper", upper), **{"run.max_workers": 4})
    results: dict[int, list[object]] = {}
    with connected(run) as (backend, broker):

        def one(n: int) -> None:
            results[n] = batch(backend, *[("upper", f"b{n}c{i}") for i in range(10)])

        threads = [threading.Thread(target=one, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    assert results == {n: [f"B{n}C{i}" for i in range(10)] for n in range(4)}
    assert broker.calls == 40
