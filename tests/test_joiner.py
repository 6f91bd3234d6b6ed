"""The joiner: answer, or plan a new round that uses finished outputs (real HTTP, fake server)."""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema
import pytest

from overseer.config import load_settings
from overseer.events import JoinerDecided, PlanReady, StepPlanned
from overseer.nodes.kinds import build_registry
from overseer.planning.joiner import (
    decision_of,
    joiner_schema,
    load_joiner_examples,
    wants_replan,
)
from overseer.planning.streaming import StepGate
from tests.fake_stream import FakeStream, Streamed
from tests.fakes import ScriptedChat
from tests.streamhelp import Roles, engine_for, plan_pieces, step_obj

JOKE = [
    step_obj(1, "Write a joke", "content_generator"),
    step_obj(2, "Translate the joke to French", "translator", [1]),
    step_obj(3, "Translate the joke to Spanish", "translator", [1]),
]


def decision(kind: str, *steps: dict[str, Any], reason: str = "because") -> str:
    return json.dumps({"decision": kind, "reason": reason, "steps": list(steps)})


def joke_plan() -> Streamed:
    return Streamed(plan_pieces(JOKE))


def test_the_joiner_answers_at_once() -> None:
    roles = Roles(plans=[joke_plan()], joins=[decision("answer")])
    with FakeStream(roles) as fake:
        engine, events = engine_for(fake.url)
        report = engine.run("a joke in two languages")
    assert report.status == "succeeded" and report.rounds == 1 and report.answer == "THE ANSWER"
    assert len(roles.bodies("join")) == 1
    decided = [e for e in events if isinstance(e, JoinerDecided)]
    assert [(e.round, e.decision, e.reason) for e in decided] == [(1, "answer", "because")]
    assert all(r.round == 1 for r in report.outcome.steps.values())


def test_one_replan_uses_the_finished_outputs_and_reruns_nothing() -> None:
    extra = step_obj(4, "Put both translations side by side", "general", [2, 3])
    roles = Roles(plans=[joke_plan()], joins=[decision("replan", extra), decision("answer")])
    with FakeStream(roles) as fake:
        engine, events = engine_for(fake.url, **{"planner.max_replans": 1})
        report = engine.run("a joke in two languages")
    assert report.status == "succeeded" and report.rounds == 2
    lines = roles.step_lines()
    assert sorted(lines) == sorted([*(s["description"] for s in JOKE), extra["description"]])
    join_prompt = roles.bodies("join")[0]["messages"][-1]["content"]
    assert "did: Translate the joke to French" in join_prompt and "step4" in join_prompt
    last = next(b for b in roles.bodies("step") if "side by side" in b["messages"][-1]["content"])
    prompt = last["messages"][-1]["content"]
    assert (
        "did: Translate the joke to French" in prompt
        and "did: Translate the joke to Spanish" in prompt
    )
    assert len(roles.bodies("join")) == 1  # max_replans 1: no joiner after round 2
    assert report.outcome.steps["step4"].round == 2 and report.outcome.steps["step1"].round == 1
    data = report.to_json()
    assert data["rounds"] == 2 and [s["round"] for s in data["steps"]] == [1, 1, 1, 2]
    assert [s["step_id"] for s in data["plan"]["steps"]] == ["step1", "step2", "step3", "step4"]
    assert [e.round for e in events if isinstance(e, StepPlanned)] == [1, 1, 1, 2]
    decided = next(i for i, e in enumerate(events) if isinstance(e, JoinerDecided))
    second = next(i for i, e in enumerate(events) if isinstance(e, StepPlanned) and e.round == 2)
    assert decided < second  # the round shows as a replan before its steps appear
    assert [(e.round, e.decision, e.reason) for e in events if isinstance(e, JoinerDecided)] == [
        (1, "replan", "because")
    ]
    assert [(e.round, e.plan.ids[-1]) for e in events if isinstance(e, PlanReady)] == [
        (1, "step3"),
        (2, "step4"),
    ]


def test_max_replans_is_honoured() -> None:
    joins: list[Streamed | str] = [
        decision("replan", step_obj(n, f"More {n}", "general", [n - 1])) for n in (4, 5, 6)
    ]
    roles = Roles(plans=[joke_plan()], joins=joins)
    with FakeStream(roles) as fake:
        engine, _ = engine_for(fake.url, **{"planner.max_replans": 2})
        report = engine.run("a joke")
    assert report.rounds == 3 and report.plan.ids[-2:] == ["step4", "step5"]
    assert len(roles.bodies("join")) == 2
    assert roles.step_lines().count("Write a joke") == 1


def test_max_replans_zero_is_plan_run_answer() -> None:
    roles = Roles(plans=[joke_plan()], joins=[decision("replan", step_obj(4, "X"))])
    with FakeStream(roles) as fake:
        engine, events = engine_for(fake.url, **{"planner.max_replans": 0})
        report = engine.run("a joke")
    assert report.status == "succeeded" and report.rounds == 1
    assert roles.bodies("join") == [] and not any(isinstance(e, JoinerDecided) for e in events)


def test_an_unreadable_decision_counts_as_answer_with_a_warning() -> None:
    roles = Roles(plans=[joke_plan()], joins=["I think we are done here."])
    with FakeStream(roles) as fake:
        engine, _ = engine_for(fake.url)
        report = engine.run("a joke")
    assert report.status == "succeeded" and report.rounds == 1
    assert any("joiner's reply could not be read" in w for w in report.warnings)


def test_an_invalid_replan_step_is_repaired_as_the_rest() -> None:
    bad = step_obj(4, "Combine", "no_such_tool", [2, 3])
    good = step_obj(4, "Combine", "general", [2, 3])
    rest = json.dumps({"steps": [good]})
    roles = Roles(plans=[joke_plan()], joins=[decision("replan", bad), rest])
    with FakeStream(roles) as fake:
        engine, _ = engine_for(fake.url)
        report = engine.run("a joke")
    assert report.status == "succeeded" and report.rounds == 2
    assert roles.step_lines().count("Combine") == 1
    assert "no_such_tool" in roles.bodies("join")[1]["messages"][-1]["content"]


def test_a_replan_may_not_depend_on_a_failed_step() -> None:
    def step(body: dict[str, Any]) -> Streamed | str:
        if body["messages"][-1]["content"].splitlines()[0] == "Translate the joke to French":
            raise RuntimeError("no French today")  # the fake answers 500: the step fails
        return "ok"

    uses_failed = step_obj(4, "Fix French", "translator", [2])
    redo = step_obj(4, "Translate the joke to French again", "translator", [1])
    roles = Roles(
        plans=[joke_plan()],
        joins=[decision("replan", uses_failed), json.dumps({"steps": [redo]})],
        step=step,
    )
    with FakeStream(roles) as fake:
        engine, _ = engine_for(
            fake.url, **{"run.on_error": "continue", "backend.retry": {"max_attempts": 1}}
        )
        report = engine.run("a joke")
    join_prompt = roles.bodies("join")[0]["messages"][-1]["content"]
    assert "(failed)" in join_prompt
    assert (
        "'step2', which is not a step before it"
        in roles.bodies("join")[1]["messages"][-1]["content"]
    )
    assert report.outcome.steps["step4"].status == "succeeded"
    assert report.rounds == 2


def test_the_budget_stops_a_replan() -> None:
    roles = Roles(plans=[joke_plan()], joins=[decision("replan", step_obj(4, "X"))])
    with FakeStream(roles) as fake:
        engine, _ = engine_for(fake.url, **{"run.max_tokens": 1})
        report = engine.run("a joke")
    assert roles.bodies("join") == []
    assert report.rounds == 1 and "token budget" in report.outcome.reason


def test_scripted_fakes_answer_the_joiner_off_script() -> None:
    from overseer import Overseer
    from tests.fakes import plan_json

    chat = ScriptedChat(plan_json(("step1", "A", "general", [])), "out", "ANSWER")
    report = Overseer(load_settings(), chat=chat, journal=False).run("x")
    assert report.status == "succeeded" and len(chat.join_requests) == 1
    assert chat.join_requests[0].schema == joiner_schema(
        Overseer(load_settings(), chat=chat, journal=False).registry.names()
    )


# -- the decision and its prompts -----------------------------------------------------------


def test_decision_of_reads_answer_and_replan_and_refuses_the_rest() -> None:
    assert decision_of({"decision": "answer", "reason": "ok"}).kind == "answer"
    assert decision_of({"decision": "replan"}).kind == "replan"
    values: list[Any] = [None, [], {"decision": "maybe"}, "answer", {"reason": "x"}]
    for value in values:
        made = decision_of(value)
        assert made.kind == "answer" and not made.readable
    assert wants_replan({"decision": "replan"}) and not wants_replan({"decision": "answer"})


def test_every_joiner_example_is_a_valid_decision() -> None:
    registry = build_registry(load_settings(), ScriptedChat())
    tools = registry.names()
    schema = joiner_schema(tools)
    examples = load_joiner_examples()
    assert {e["decision"]["decision"] for e in examples} == {"answer", "replan"}
    for example in examples:
        jsonschema.validate(example["decision"], schema)
        ids = re.findall(r"\[(step\d+)\] \((\w+)\)", example["results"])
        succeeded = {i for i, status in ids if status == "succeeded"}
        gate = StepGate(frozenset(tools), 20, set(succeeded), {i for i, _ in ids})
        for number, raw in enumerate(example["decision"]["steps"], start=1):
            verdict = gate.offer(raw, number)
            assert verdict.step is not None, verdict.problems
        if example["decision"]["steps"]:
            assert example["decision"]["steps"][0]["step_id"] == f"step{len(ids) + 1}"


@pytest.mark.parametrize("name", ["joiner_system.md", "joiner_user.md", "joiner_step.md"])
def test_the_joiner_prompts_hold_no_unfilled_placeholder(name: str) -> None:
    from overseer.core.plan import Step
    from overseer.core.results import StepRecord
    from overseer.planning.joiner import Joiner

    joiner = Joiner("- general: anything", 5)
    step = Step(step_id="step1", description="A", tool="general")
    record = StepRecord("step1", "succeeded", output="$not_a_placeholder")
    messages = joiner.opening("R", [step], {"step1": record}, "step2")
    text = "\n".join(m["content"] for m in messages)
    assert "$not_a_placeholder" in text and "step2" in text and "- general: anything" in text
    assert re.search(r"\$[a-z_]+", text.replace("$not_a_placeholder", "")) is None


def test_a_joiner_past_planner_timeout_leaves_the_finished_round_to_answer() -> None:
    import threading

    from tests.fake_stream import Hold

    never = threading.Event()
    roles = Roles(plans=[joke_plan()], joins=[Streamed([Hold(never), decision("answer")])])
    with FakeStream(roles) as fake:
        engine, _ = engine_for(fake.url, **{"planner.timeout": 2.0})
        report = engine.run("a joke")
        never.set()
    assert report.status == "succeeded" and report.rounds == 1
    assert report.answer == "THE ANSWER"
    assert any("planner.timeout" in w for w in report.warnings)
