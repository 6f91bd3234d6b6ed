"""Streamed plans end to end: the real openai client over HTTP against a slow streaming fake."""

from __future__ import annotations

import itertools
import json
import threading

import pytest

from overseer.errors import PlanError
from overseer.events import (
    PlanningProgress,
    PlanningStarted,
    PlanReady,
    PlanRejected,
    StepFinished,
    StepPlanned,
    StepStarted,
)
from tests.clihelp import role_of
from tests.fake_stream import FakeStream, Hold, Streamed, pieces_of
from tests.streamhelp import Roles, engine_for, first_line, plan_pieces, step_obj

JOKE = [
    step_obj(1, "Write a joke", "content_generator"),
    step_obj(2, "Translate the joke to French", "translator", [1]),
    step_obj(3, "Translate the joke to Spanish", "translator", [1]),
]


def step_seen(fake: FakeStream, line: str) -> threading.Event:
    """An event set by the fake when a step request whose first line is ``line`` arrives."""
    seen = threading.Event()

    def watch() -> None:
        if fake.wait_for(lambda b: role_of(b) == "step" and first_line(b) == line):
            seen.set()

    threading.Thread(target=watch, daemon=True).start()
    return seen


def plan_end(fake: FakeStream) -> float:
    ends = [e.at for e in fake.ends() if role_of(e.body) == "plan"]
    return ends[0]


def arrival(fake: FakeStream, line: str) -> float:
    return next(
        a.at for a in fake.arrivals() if role_of(a.body) == "step" and first_line(a.body) == line
    )


def test_the_first_step_reaches_the_server_before_the_plan_stream_ends() -> None:
    roles = Roles(plans=[])
    with FakeStream(roles) as fake:
        seen = step_seen(fake, "Write a joke")
        roles.plans.append(Streamed(plan_pieces(JOKE, {0: seen})))
        engine, events = engine_for(fake.url)
        report = engine.run("a joke in two languages")
        assert report.status == "succeeded"
        assert seen.is_set()
        assert arrival(fake, "Write a joke") < plan_end(fake)
    planned = [e for e in events if isinstance(e, StepPlanned)]
    assert [e.step.step_id for e in planned] == ["step1", "step2", "step3"]
    ready = [e for e in events if isinstance(e, PlanReady)]
    assert len(ready) == 1 and ready[0].plan.ids == ["step1", "step2", "step3"]
    first_start = next(i for i, e in enumerate(events) if isinstance(e, StepStarted))
    assert first_start < events.index(ready[0])  # it started while the plan was being written
    for step_id in ("step1", "step2", "step3"):  # each announced before it starts (the journal
        # learns a dependent's needs from it, to hold its start until they are on disk)
        announced = next(i for i, e in enumerate(planned) if e.step.step_id == step_id)
        started = next(
            i for i, e in enumerate(events) if isinstance(e, StepStarted) and e.step_id == step_id
        )
        assert events.index(planned[announced]) < started


def test_a_step_whose_dependency_is_done_starts_before_later_steps_arrive() -> None:
    roles = Roles(plans=[])
    with FakeStream(roles) as fake:
        french = step_seen(fake, "Translate the joke to French")
        pieces = plan_pieces(JOKE, {1: french})
        roles.plans.append(Streamed(pieces))
        engine, _ = engine_for(fake.url)
        report = engine.run("a joke in two languages")
        assert report.status == "succeeded" and french.is_set()
        held_at = next(i for i, p in enumerate(pieces) if isinstance(p, Hold))
        spanish_written = fake.piece_times[held_at][0]  # the first piece after the hold
        assert arrival(fake, "Translate the joke to French") < spanish_written


def test_a_step_invalid_mid_stream_is_repaired_without_the_prefix() -> None:
    bad = [JOKE[0], step_obj(2, "Translate the joke to French", "no_such_tool", [1]), JOKE[2]]
    rest = {"steps": JOKE[1:]}
    roles = Roles(plans=[Streamed(plan_pieces(bad)), json.dumps(rest)])
    with FakeStream(roles) as fake:
        engine, events = engine_for(fake.url)
        report = engine.run("a joke in two languages")
    assert report.status == "succeeded"
    assert sorted(roles.step_lines()) == sorted(s["description"] for s in JOKE)  # each once
    second = roles.bodies("plan")[1]["messages"]
    assert json.loads(second[-2]["content"]) == {"steps": [JOKE[0]]}  # the accepted prefix
    assert "already running" in second[-1]["content"] and "no_such_tool" in second[-1]["content"]
    assert "step2" in second[-1]["content"]
    rejected = [e for e in events if isinstance(e, PlanRejected)]
    assert len(rejected) == 1 and "no_such_tool" in rejected[0].problems[0]
    assert report.plan.ids == ["step1", "step2", "step3"]


def test_a_step_depending_on_a_later_step_is_refused_mid_stream() -> None:
    bad = [step_obj(1, "A", deps=[2]), step_obj(2, "B")]
    roles = Roles(plans=[Streamed(plan_pieces(bad)), json.dumps({"steps": [step_obj(1, "A")]})])
    with FakeStream(roles) as fake:
        engine, events = engine_for(fake.url)
        report = engine.run("x")
    assert report.status == "succeeded" and report.plan.ids == ["step1"]
    problems = next(e for e in events if isinstance(e, PlanRejected)).problems
    assert "not a step before it" in problems[0]
    assert len(roles.bodies("plan")) == 2


def test_too_many_steps_after_a_started_prefix_fails_with_the_prefix_recorded() -> None:
    many = [step_obj(i, f"S{i}") for i in range(1, 5)]
    roles = Roles(plans=[Streamed(plan_pieces(many))])
    with FakeStream(roles) as fake:
        engine, events = engine_for(fake.url, **{"planner.max_steps": 2})
        with pytest.raises(PlanError, match="more than 2 steps"):
            engine.run("x")
    assert sorted(roles.step_lines()) == ["S1", "S2"]  # started, finished, recorded
    finished = {e.step_id for e in events if isinstance(e, StepFinished)}
    assert finished == {"step1", "step2"}
    assert len(roles.bodies("plan")) == 1  # not mendable by asking for more


def test_a_reply_without_steps_is_asked_again_as_a_whole() -> None:
    roles = Roles(plans=['{"steps": []}', Streamed(plan_pieces(JOKE))])
    with FakeStream(roles) as fake:
        engine, _events = engine_for(fake.url)
        report = engine.run("a joke")
    assert report.status == "succeeded"
    second = roles.bodies("plan")[1]["messages"]
    assert "not valid" in second[-1]["content"] and second[-2]["content"] == '{"steps": []}'


def test_a_fenced_text_mode_reply_streams_too() -> None:
    text = "Here is the plan:\n```json\n" + json.dumps({"steps": JOKE}) + "\n```\nDone."
    roles = Roles(plans=[])
    with FakeStream(roles) as fake:
        seen = step_seen(fake, "Write a joke")
        head = text.index("}") + 1  # the end of step1's object
        roles.plans.append(Streamed([*pieces_of(text[:head]), Hold(seen), *pieces_of(text[head:])]))
        engine, _ = engine_for(fake.url, **{"backend.structured_output": "text"})
        report = engine.run("a joke")
        assert report.status == "succeeded"
        assert arrival(fake, "Write a joke") < plan_end(fake)


def test_a_one_chunk_reply_works_as_before() -> None:
    roles = Roles(plans=[Streamed([json.dumps({"steps": JOKE})])])
    with FakeStream(roles) as fake:
        engine, events = engine_for(fake.url)
        report = engine.run("a joke")
    assert report.status == "succeeded" and report.plan.ids == ["step1", "step2", "step3"]
    assert sum(isinstance(e, StepPlanned) for e in events) == 3


def test_streaming_off_plans_the_whole_reply_first() -> None:
    roles = Roles(plans=[Streamed(plan_pieces(JOKE))])
    with FakeStream(roles) as fake:
        engine, events = engine_for(fake.url, **{"planner.stream": False})
        report = engine.run("a joke")
    assert report.status == "succeeded"
    assert not roles.bodies("plan")[0].get("stream")
    assert not any(isinstance(e, StepPlanned | PlanningProgress) for e in events)
    assert [e.round for e in events if isinstance(e, PlanningStarted)] == [1, 2]  # plan, join
    ready = next(i for i, e in enumerate(events) if isinstance(e, PlanReady))
    assert ready < next(i for i, e in enumerate(events) if isinstance(e, StepStarted))


def test_a_stream_cut_short_is_retried_and_no_step_runs_twice() -> None:
    pieces = plan_pieces(JOKE)
    cut = next(i for i in range(len(pieces)) if "}" in "".join(map(str, pieces[:i]))) + 2
    roles = Roles(plans=[Streamed(pieces, cut=cut), Streamed(plan_pieces(JOKE))])
    with FakeStream(roles) as fake:
        engine, events = engine_for(fake.url, **{"backend.retry": {"initial_wait": 0, "jitter": 0}})
        report = engine.run("a joke")
    assert report.status == "succeeded"
    planned = [e.step.step_id for e in events if isinstance(e, StepPlanned)]
    assert planned == ["step1", "step2", "step3"]  # step1 came in the cut stream, once
    assert len(roles.bodies("plan")) == 2  # the transport retry, not a repair
    assert sorted(roles.step_lines()) == sorted(s["description"] for s in JOKE)


def test_planning_progress_is_reported_while_the_plan_streams() -> None:
    roles = Roles(plans=[Streamed(plan_pieces(JOKE), rate=200)])
    with FakeStream(roles) as fake:
        engine, events = engine_for(fake.url)
        engine.run("a joke")
    started = [e for e in events if isinstance(e, PlanningStarted)]
    progress = [e for e in events if isinstance(e, PlanningProgress) and e.round == 1]
    assert started[0].round == 1
    assert progress and progress[-1].tokens > progress[0].tokens >= 1
    assert all(b.elapsed >= a.elapsed for a, b in itertools.pairwise(progress))
    assert len(progress) < len(plan_pieces(JOKE))  # throttled


def test_planner_timeout_ends_planning_with_one_clear_error() -> None:
    never = threading.Event()
    roles = Roles(plans=[Streamed([*plan_pieces(JOKE[:1]), Hold(never)])])
    with FakeStream(roles) as fake:
        engine, _ = engine_for(fake.url, **{"planner.timeout": 0.5})
        with pytest.raises(PlanError, match=r"planner\.timeout \(0\.5s\)"):
            engine.run("a joke")
        never.set()
    assert roles.step_lines() == ["Write a joke"]  # the step already started was let finish


def test_resume_of_a_plan_that_stopped_arriving_asks_for_the_rest() -> None:
    from types import SimpleNamespace

    from overseer.core.plan import Plan, Step
    from overseer.core.results import StepRecord

    prefix = Plan(steps=(Step.model_validate(JOKE[0]),))
    done = StepRecord("step1", "succeeded", output="a joke", attempts=1)
    stored = SimpleNamespace(
        run_id="r-1",
        request="a joke in two languages",
        plan=prefix,
        prior={"step1": done},
        rounds=1,
        steps_round={"step1": 1},
        plan_complete=False,  # the journal saw no PlanReady for round 1
    )
    roles = Roles(plans=[Streamed(plan_pieces(JOKE[1:]))])
    with FakeStream(roles) as fake:
        engine, events = engine_for(fake.url)
        report = engine.resume(stored)
    assert report.status == "succeeded" and report.plan.ids == ["step1", "step2", "step3"]
    assert sorted(roles.step_lines()) == sorted(s["description"] for s in JOKE[1:])
    ask = roles.bodies("plan")[0]["messages"]
    assert json.loads(ask[-2]["content"]) == {"steps": [JOKE[0]]}
    assert "stopped before the rest of the plan arrived" in ask[-1]["content"]
    ready = [e for e in events if isinstance(e, PlanReady)]
    assert len(ready) == 1 and ready[0].plan.ids == ["step1", "step2", "step3"]
    assert "a joke" in next(b for b in roles.bodies("step"))["messages"][-1]["content"]


def test_a_spent_budget_stops_planning() -> None:
    never = threading.Event()
    bad = json.dumps({"steps": [step_obj(1, "A", "no_such_tool")]})
    roles = Roles(plans=[bad, Streamed([Hold(never), '{"steps": []}'])])
    with FakeStream(roles) as fake:
        engine, _ = engine_for(fake.url, **{"run.max_tokens": 1})
        report = engine.run("x")  # neither PlanError nor a wait for the held repair
        never.set()
    assert report.status == "failed" and "token budget of 1 spent" in report.outcome.reason
    assert roles.step_lines() == []
