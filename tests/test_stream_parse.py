"""The streamed plan's parts alone: the growing-text parser, the gate, progress, the barrier."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from overseer.backends.chat import ChatReply, ChatRequest
from overseer.config import load_settings
from overseer.core.executor import Executor
from overseer.core.plan import Step
from overseer.core.toolbase import CallContext, ToolResult
from overseer.errors import ConfigError, PlanError, PlanValidationError
from overseer.events import EventBus
from overseer.planning.rounds import RoundHooks, RoundPlanner
from overseer.planning.streaming import Progress, StepGate, StepStream
from overseer.usage import Usage
from tests.streamhelp import step_obj

STEPS = [step_obj(1, "Write a {joke}"), step_obj(2, 'Say "}]" twice', deps=[1]), step_obj(3, "C")]
PLAN = json.dumps({"steps": STEPS})


def feed_all(stream: StepStream, text: str, size: int = 1) -> list[tuple[int, Any, int]]:
    """(index, item, characters fed when it came out) for every item the stream returned."""
    out = []
    for start in range(0, len(text), size):
        for index, item in stream.feed(text[start : start + size]):
            out.append((index, item, start + size))
    return out


def test_each_step_comes_out_the_moment_its_closing_brace_arrives() -> None:
    got = feed_all(StepStream(), PLAN)
    assert [item for _, item, _ in got] == STEPS
    for index, _, fed in got:
        end = _end_of_step(PLAN, index)
        assert fed == end, f"step {index} came out at {fed}, its object ended at {end}"


def _end_of_step(text: str, index: int) -> int:
    """Characters up to and including step ``index``'s closing brace (by decoding)."""
    decoder = json.JSONDecoder()
    position = text.index("[") + 1
    for number in range(index + 1):
        while text[position] in " ,":
            position += 1
        _, position = decoder.raw_decode(text, position)
        if number == index:
            return position
    raise AssertionError


@pytest.mark.parametrize("size", [1, 3, 7, 50, 10_000])
def test_any_piece_size_gives_every_step_once_in_order(size: int) -> None:
    assert [item for _, item, _ in feed_all(StepStream(), PLAN, size)] == STEPS


def test_braces_inside_strings_do_not_end_a_step() -> None:
    text = json.dumps({"steps": [step_obj(1, "a } b { c ] d"), step_obj(2, "x")]})
    got = feed_all(StepStream(), text)
    assert [i["description"] for _, i, _ in got] == ["a } b { c ] d", "x"]


def test_fenced_and_prose_wrapped_replies_stream() -> None:
    for text in (
        f"Sure, here is {{the plan}}:\n```json\n{PLAN}\n```\nHope it helps {{}}.",
        f"```\n{PLAN}\n```",
        f"The plan is {PLAN} and that is all.",
    ):
        assert [i for _, i, _ in feed_all(StepStream(), text)] == STEPS


def test_a_bare_list_of_steps_streams() -> None:
    assert [i for _, i, _ in feed_all(StepStream(), json.dumps(STEPS))] == STEPS


def test_a_restart_starts_the_text_over() -> None:
    stream = StepStream()
    feed_all(stream, PLAN[:60])
    stream.restart()
    assert [i for _, i, _ in feed_all(stream, PLAN)] == STEPS


def test_ready_holds_the_steps_back_until_the_object_allows() -> None:
    answer = json.dumps({"decision": "answer", "steps": STEPS})
    replan = json.dumps({"decision": "replan", "steps": STEPS})
    ready = lambda v: v.get("decision") == "replan"  # noqa: E731
    assert feed_all(StepStream(ready=ready), answer) == []
    assert [i for _, i, _ in feed_all(StepStream(ready=ready), replan)] == STEPS


def test_finish_returns_what_the_stream_did_not() -> None:
    stream = StepStream()
    feed_all(stream, PLAN[: _end_of_step(PLAN, 0)])
    value, rest = stream.finish(PLAN)
    assert value == {"steps": STEPS} and [i for _, i in rest] == STEPS[1:]
    with pytest.raises(PlanValidationError, match="not JSON"):
        StepStream().finish("no plan here")


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=400))
def test_arbitrary_text_never_raises_and_stays_fast(text: str) -> None:
    stream = StepStream()
    start = time.monotonic()
    for piece in (text[i : i + 5] for i in range(0, len(text), 5)):
        stream.feed(piece)
    assert time.monotonic() - start < 2.0


def test_a_hostile_reply_of_brackets_is_cheap() -> None:
    stream = StepStream()
    start = time.monotonic()
    for _ in range(2000):
        stream.feed('{"a": [' * 10 + "}")
    assert time.monotonic() - start < 10.0  # bounded: past the stream limit nothing is parsed


# -- the gate -------------------------------------------------------------------------------


def gate(**kw: Any) -> StepGate:
    return StepGate(frozenset({"general", "translator"}), kw.pop("limit", 5), **kw)


def test_the_gate_accepts_valid_steps_in_order() -> None:
    g = gate()
    for number, raw in enumerate(STEPS, start=1):
        assert g.offer(raw, number).step is not None
    assert [s.step_id for s in g.accepted] == ["step1", "step2", "step3"]
    assert g.next_id() == "step4"


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (step_obj(2, "B", "nope"), "unknown tool 'nope'"),
        (step_obj(2, "B", deps=[3]), "depends on 'step3', which is not a step before it"),
        (step_obj(2, "B", deps=[2]), "depends on itself"),
        (step_obj(1, "again"), "'step1' is used more than once"),
        ({"step_id": "step2", "tool": "general"}, "step #2 is malformed: description"),
        ("just text", "step #2 is malformed"),
    ],
)
def test_the_gate_refuses_a_bad_step_with_one_clear_problem(raw: Any, problem: str) -> None:
    g = gate()
    g.offer(STEPS[0], 1)
    verdict = g.offer(raw, 2)
    assert verdict.step is None and problem in " ".join(verdict.problems)
    assert g.refused and not verdict.whole


def test_the_gate_skips_a_repeat_and_knows_earlier_rounds() -> None:
    g = gate(usable={"step1"}, taken={"step1", "step2"})
    assert g.offer(step_obj(3, "C", deps=[1]), 1).step is not None
    assert g.offer(step_obj(3, "C", deps=[1]), 2).skipped
    assert "not a step before it" in g.offer(step_obj(4, "D", deps=[2]), 3).problems[0]
    assert g.next_id() == "step4"


def test_more_steps_than_the_limit_is_a_whole_plan_problem() -> None:
    g = gate(limit=1)
    g.offer(STEPS[0], 1)
    verdict = g.offer(step_obj(2, "B"), 2)
    assert verdict.whole and "more than 1 steps" in verdict.problems[0]


# -- progress -------------------------------------------------------------------------------


def test_progress_counts_pieces_and_reports_at_most_every_interval() -> None:
    now = [0.0]
    reports: list[tuple[int, float]] = []
    progress = Progress(lambda t, e: reports.append((t, e)), every=0.25, clock=lambda: now[0])
    for _ in range(10):
        now[0] += 0.1
        progress.piece("x")
    progress.piece("")
    assert progress.tokens == 10
    assert [t for t, _ in reports] == [1, 4, 7, 10]
    assert reports[-1][1] == pytest.approx(1.0)


# -- the round planner with a scripted chat that streams ----------------------------------


class StreamingChat:
    """Calls ``on_delta`` with each piece of its scripted replies (a streaming backend)."""

    streams = True

    def __init__(self, *replies: list[str]) -> None:
        self.replies = list(replies)
        self.requests: list[ChatRequest] = []

    def complete(self, request: ChatRequest) -> ChatReply:
        self.requests.append(request)
        pieces = self.replies.pop(0)
        if request.on_delta is not None:
            request.on_delta("")
            for piece in pieces:
                request.on_delta(piece)
        return ChatReply("".join(pieces), Usage(3, 4), "m", "stop")


def round_planner(chat: StreamingChat, seen: list[Step], repairs: int = 2) -> RoundPlanner:
    settings = load_settings(overrides={"planner.max_repairs": repairs}).planner
    return RoundPlanner(
        chat, settings, ["general"], hooks=RoundHooks(on_step=seen.append), stream=True
    )


def test_a_step_is_handed_over_before_the_reply_ends() -> None:
    seen: list[Step] = []
    order: list[str] = []

    class Watching(StreamingChat):
        def complete(self, request: ChatRequest) -> ChatReply:
            reply = super().complete(request)
            order.append(f"reply ended with {len(seen)} handed over")
            return reply

    text = json.dumps({"steps": [step_obj(1, "A"), step_obj(2, "B", deps=[1])]})
    chat = Watching([text[:70], text[70:]])
    result = round_planner(chat, seen).run([], gate(), ({}, "plan"))
    assert [s.step_id for s in result.steps] == ["step1", "step2"]
    assert order == ["reply ended with 2 handed over"]


def test_repairs_stop_at_max_repairs() -> None:
    bad = json.dumps({"steps": [step_obj(1, "A", "nope")]})
    chat = StreamingChat([bad], [bad])
    with pytest.raises(PlanError, match="no valid plan after 2 attempts"):
        round_planner(chat, [], repairs=1).run([], gate(), ({}, "plan"))


def test_a_cut_off_reply_after_a_prefix_asks_for_the_rest() -> None:
    seen: list[Step] = []
    text = json.dumps({"steps": [step_obj(1, "A"), step_obj(2, "B")]})

    class CutOff(StreamingChat):
        def complete(self, request: ChatRequest) -> ChatReply:
            reply = super().complete(request)
            if len(self.requests) == 1:
                return ChatReply(reply.text, reply.usage, "m", "length")
            return reply

    chat = CutOff([text[: text.index("}") + 5]], [json.dumps({"steps": [step_obj(2, "B")]})])
    result = round_planner(chat, seen).run([], gate(), ({}, "plan"))
    assert [s.step_id for s in result.steps] == ["step1", "step2"]
    assert "cut off" in chat.requests[1].messages[-1]["content"]


# -- the executor's barrier -------------------------------------------------------------------


def runner(step: Step, inputs: Mapping[str, str], ctx: CallContext) -> ToolResult:
    return ToolResult(output=f"did {step.step_id}")


def test_the_barrier_is_reached_when_every_step_added_before_it_settled() -> None:
    executor = Executor(runner, bus=EventBus(), max_workers=2)
    thread = threading.Thread(target=executor.run)
    thread.start()
    executor.add_step(Step(step_id="a", description="A", tool="t"))
    executor.add_step(Step(step_id="b", description="B", tool="t", depends_on=("a",)))
    first = executor.settled()
    assert first.reached.wait(10)
    assert {i: r.status for i, r in first.records.items()} == {"a": "succeeded", "b": "succeeded"}
    assert not first.stopped and first.records["b"].output == "did b"
    executor.add_step(Step(step_id="c", description="C", tool="t", depends_on=("b",)))
    second = executor.settled()
    assert second.reached.wait(10) and second.records["c"].status == "succeeded"
    executor.close()
    thread.join(10)
    late = executor.settled()
    assert late.reached.is_set() and late.stopped


def test_the_barrier_says_stopped_after_a_fail_fast_failure() -> None:
    def failing(step: Step, inputs: Mapping[str, str], ctx: CallContext) -> ToolResult:
        raise RuntimeError("boom")

    executor = Executor(failing, bus=EventBus(), max_workers=1)
    thread = threading.Thread(target=executor.run)
    thread.start()
    executor.add_step(Step(step_id="a", description="A", tool="t"))
    barrier = executor.settled()
    assert barrier.reached.wait(10) and barrier.stopped
    executor.close()
    thread.join(10)


# -- settings and flags -----------------------------------------------------------------------


def test_the_planner_settings_have_their_defaults_and_limits() -> None:
    planner = load_settings().planner
    assert (planner.stream, planner.max_replans, planner.timeout) == (True, 1, 300.0)
    for key, value in (("max_replans", -1), ("timeout", 0), ("timeout", float("inf"))):
        with pytest.raises(ConfigError):
            load_settings(overrides={f"planner.{key}": value})


def test_max_replans_flag() -> None:
    import argparse

    from overseer.interfaces.common import add_common_flags, settings_from_args

    parser = argparse.ArgumentParser()
    add_common_flags(parser)
    args = parser.parse_args(["--max-replans", "0"])
    assert settings_from_args(args).planner.max_replans == 0
    assert settings_from_args(parser.parse_args([])).planner.max_replans == 1
    with pytest.raises(SystemExit):
        parser.parse_args(["--max-replans", "-1"])


class Stuck:
    """A chat that answers only once its call is cancelled (as the real client does)."""

    def complete(self, request: ChatRequest) -> ChatReply:
        assert request.cancel is not None and request.cancel.wait(30)
        from overseer.errors import Cancelled

        raise Cancelled("the call was cancelled")


def test_planner_timeout_bounds_overseer_plan_too() -> None:
    from overseer import Overseer
    from overseer.events import PlanningStarted

    engine = Overseer(
        load_settings(overrides={"planner.timeout": 0.2}), chat=Stuck(), journal=False
    )
    events: list[Any] = []
    engine.subscribe(events.append)
    with pytest.raises(PlanError, match=r"within planner\.timeout \(0\.2s\)"):
        engine.plan("anything")
    assert any(isinstance(e, PlanningStarted) for e in events)


def test_planner_timeout_bounds_a_run_on_a_client_that_cannot_stream() -> None:
    from overseer import Overseer

    engine = Overseer(
        load_settings(overrides={"planner.timeout": 0.2}), chat=Stuck(), journal=False
    )
    with pytest.raises(PlanError, match=r"within planner\.timeout"):
        engine.run("anything")


def test_the_barrier_is_reached_when_every_step_was_reused_from_prior() -> None:
    from overseer.core.results import StepRecord

    executor = Executor(runner, bus=EventBus(), max_workers=2)
    prior = {i: StepRecord(i, "succeeded", output=i) for i in ("a", "b")}
    executor.add_step(Step(step_id="a", description="A", tool="t"))
    executor.add_step(Step(step_id="b", description="B", tool="t", depends_on=("a",)))
    barrier = executor.settled()  # in the inbox with the steps: all settle in one dispatch
    thread = threading.Thread(target=executor.run, args=(None, prior))
    thread.start()
    assert barrier.reached.wait(10), "the barrier was never reached"
    assert {i: r.status for i, r in barrier.records.items()} == {"a": "succeeded", "b": "succeeded"}
    executor.close()
    thread.join(10)
