"""What a run lends its steps and nodes: the meter, the node log, the budget, the step slot; and
the tools of a standalone node."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node_runtime.errors import ToolCallError, UnknownToolError
from overseer.config import load_settings
from overseer.core.gate import Gate
from overseer.core.toolbase import CallContext, ToolResult
from overseer.errors import ConfigError, ToolError
from overseer.events import EventBus, UsageRecorded
from overseer.nodes.standalone import NodeTools, _LazyChat
from overseer.tools.registry import ToolRegistry
from overseer.tools.services import NodeLog, RunServices, TokenMeter, services_of, slot_of
from overseer.usage import Usage
from tests.fakes import ScriptedChat
from tests.nodehelp import failing, tool, upper


def test_the_meter_counts_recorded_and_live_tokens() -> None:
    meter = TokenMeter("run-1")
    meter.add_live("s1", Usage(4, 1))
    meter.add_live("s1", Usage(2, 0))
    meter.add_live(None, Usage(1, 0))
    assert meter.spent() == 8
    meter.observe(UsageRecorded(0.0, Usage(10, 0), "s1", "step", run_id="run-1"))
    assert meter.spent() == 11  # the step's recorded usage replaces its live calls
    meter.observe(UsageRecorded(0.0, Usage(100, 0), "s1", "step", run_id="run-2"))
    assert meter.spent() == 11


def test_the_node_log_merges_what_each_step_reports() -> None:
    log = NodeLog()
    log.record("s1", attempts=1, isolation={"backend": "none"})
    log.record("s1", attempts=2, calls=3)
    log.record(None, calls=1)
    snapshot = log.as_dict()
    assert snapshot == {
        "s1": {"attempts": 2, "isolation": {"backend": "none"}, "calls": 3},
        "": {"calls": 1},
    }
    snapshot["s1"]["calls"] = 99
    assert log.as_dict()["s1"]["calls"] == 3


def _services(**overrides: Any) -> RunServices:
    settings = load_settings(overrides=overrides)
    return RunServices.for_run(settings, ToolRegistry([tool("upper", upper)]), EventBus(), 0.0)


def test_no_budget_means_no_budget_problem() -> None:
    run = _services()
    run.meter.add_live("s", Usage(10**9, 0))
    assert run.budget_problem() is None


def test_a_budget_problem_names_the_budget_and_the_use() -> None:
    run = _services(**{"run.max_tokens": 50})
    run.meter.add_live("s", Usage(49, 0))
    assert run.budget_problem() is None
    run.meter.add_live("s", Usage(1, 0))
    assert run.budget_problem() == "token budget of 50 spent (used 50)"


def test_for_run_sizes_the_gate_from_the_settings_and_the_tools_caps() -> None:
    settings = load_settings(overrides={"run.max_workers": 3})
    capped = tool("capped", upper, cap=1)
    run = RunServices.for_run(settings, ToolRegistry([capped]), EventBus(), 0.0, "r1")
    assert run.gate.free == 3 and run.meter.run_id == "r1"
    with run.gate.step("capped", CallContext()):
        assert run.gate.busy("capped") == 1


def test_services_and_slot_are_found_in_a_step_context() -> None:
    run = _services()
    seen: dict[str, Any] = {}

    class Spy:
        name = "upper"
        description = "d"
        max_concurrency: int | None = None

        def run(self, prompt: str, options: dict[str, Any], ctx: CallContext) -> ToolResult:
            seen["services"], seen["slot"] = services_of(ctx), slot_of(ctx)
            return ToolResult("x")

    run.run_step(Spy(), "p", CallContext())
    assert seen["services"] is run and seen["slot"] is not None
    assert services_of(CallContext()) is None and slot_of(CallContext()) is None


def test_a_step_that_raises_gives_its_slot_back() -> None:
    run = _services(**{"run.max_workers": 1})
    with pytest.raises(ToolError):
        run.run_step(tool("boom", failing), "p", CallContext())
    assert run.gate.free == 1


def test_standalone_tools_answer_and_fail_as_a_node_expects() -> None:
    tools = NodeTools({"upper": tool("upper", upper), "boom": tool("boom", failing)})
    never = threading.Event()
    assert tools.names() == ["upper", "boom"]
    assert tools.call("upper", "hi", {}, never) == "HI"
    failed = tools.call("boom", "x", {}, never)
    assert isinstance(failed, ToolCallError) and "cannot do 'x'" in str(failed)
    unknown = tools.call("paint", "x", {}, never)
    assert isinstance(unknown, UnknownToolError) and unknown.known == ["boom", "upper"]


def test_standalone_maps_unexpected_exceptions_too() -> None:
    class Odd:
        name = "odd"
        description = "d"
        max_concurrency: int | None = None

        def run(self, prompt: str, options: dict[str, Any], ctx: CallContext) -> ToolResult:
            raise KeyError("k")

    outcome = NodeTools({"odd": Odd()}).call("odd", "x", {}, threading.Event())
    assert isinstance(outcome, ToolCallError) and "raised KeyError" in str(outcome)


def test_the_lazy_chat_builds_the_client_on_the_first_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    built: list[object] = []

    def make_chat(settings: object) -> ScriptedChat:
        built.append(settings)
        return ScriptedChat("one", "two")

    monkeypatch.setattr("overseer.backends.factory.make_chat", make_chat)
    chat = _LazyChat(load_settings())
    assert built == []
    from overseer.backends.chat import ChatRequest

    request = ChatRequest(messages=[{"role": "user", "content": "x"}])
    assert chat.complete(request).text == "one" and chat.complete(request).text == "two"
    assert len(built) == 1


def test_standalone_config_errors_become_tool_call_errors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(*args: object, **kwargs: object) -> object:
        raise ConfigError("bad config")

    monkeypatch.setattr("overseer.nodes.standalone.load_settings", broken)
    with pytest.raises(ToolCallError) as info:
        NodeTools.from_config()
    assert info.value.kind == "config" and "bad config" in str(info.value)


def test_the_standalone_tools_leave_out_the_code_tool() -> None:
    assert "code" not in NodeTools.from_config().names()


@settings(max_examples=60, deadline=None)
@given(
    slots=st.integers(1, 3),
    cap=st.integers(1, 2),
    calls=st.lists(st.sampled_from(["capped", "free"]), min_size=1, max_size=8),
)
def test_the_gate_never_exceeds_its_caps_and_every_call_finishes(
    slots: int, cap: int, calls: list[str]
) -> None:
    gate = Gate(slots, {"capped": cap})
    lock = threading.Lock()
    inside = {"capped": 0, "all": 0}
    worst = {"capped": 0, "all": 0}
    done: list[int] = []

    def call(index: int, name: str, owner: Any) -> None:
        with gate.call(name, owner, CallContext()):
            with lock:
                inside[name] = inside.get(name, 0) + 1
                inside["all"] += 1
                worst["capped"] = max(worst["capped"], inside["capped"])
                worst["all"] = max(worst["all"], inside["all"])
            with lock:
                inside[name] -= 1
                inside["all"] -= 1
                done.append(index)

    with gate.step("code", CallContext()) as slot:
        threads = [
            threading.Thread(target=call, args=(i, name, slot)) for i, name in enumerate(calls)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    assert sorted(done) == list(range(len(calls)))
    assert worst["capped"] <= cap and worst["all"] <= slots  # the step's slot, lent, plus free
    assert gate.free == slots and gate.busy("capped") == 0


def test_run_step_errors_reach_the_executor_unchanged() -> None:
    run = _services()
    with pytest.raises(ToolError, match="raised RuntimeError"):
        run.run_step(tool("boom", failing), "p", CallContext())
