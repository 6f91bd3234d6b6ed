"""A step that names an example's subject instead of the request's is sent back, naming the words.

The planner is driven through the real openai client over HTTP against a fake server on loopback,
the whole plan (``Overseer.plan``) and the streamed one (``Overseer.run``) alike.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import Any

from overseer.config import load_settings
from overseer.core.plan import parse_plan
from overseer.events import PlanRejected
from overseer.nodes.kinds import build_registry
from overseer.planning.borrowing import Borrowing, borrowing_of, content_words
from overseer.planning.examples import pick_examples
from overseer.planning.planner import Planner
from tests.fake_stream import FakeStream, Streamed
from tests.fakes import ScriptedChat
from tests.streamhelp import Roles, engine_for, plan_pieces, step_obj

MAIN = "write a joke and translate it to French and Spanish"
LEAKED = [
    step_obj(1, "Write a joke about a lighthouse keeper named Bram", "content_generator"),
    step_obj(2, "Translate the joke about Bram to French", "translator", [1]),
]
CLEAN = [
    step_obj(1, "Write a joke", "content_generator"),
    step_obj(2, "Translate the joke to French", "translator", [1]),
    step_obj(3, "Translate the joke to Spanish", "translator", [1]),
]


def plan_text(steps: list[dict[str, Any]]) -> str:
    return json.dumps({"steps": steps})


def main_job_borrowing() -> Borrowing:
    settings = load_settings()
    registry = build_registry(settings, chat=ScriptedChat())
    planner = Planner(ScriptedChat(), registry.names(), registry.describe(), settings.planner)
    return planner.borrowing(MAIN)


def test_words_are_lowercase_with_plurals_dropped_and_numbers_kept() -> None:
    assert content_words("Three Harbours at 9:30") == {"three", "harbour", "at", "9", "30"}


def test_the_closest_examples_subject_is_foreign_to_the_main_job() -> None:
    foreign = main_job_borrowing().foreign
    assert {"bram", "lighthouse", "keeper", "riddle"} <= foreign
    assert not {"joke", "french", "spanish", "translate", "write", "words"} & foreign


def test_the_request_the_context_and_the_system_prompt_are_never_borrowed() -> None:
    example = {
        "request": "Write a riddle about Bram",
        "plan": {"steps": [{"description": "Write a riddle about Bram for Oslo"}]},
    }
    borrowing = borrowing_of([example], "a riddle", context="we spoke of Bram", allowed="oslo")
    assert borrowing.foreign == frozenset()
    assert borrowing_of([example], "a joke").foreign == {"riddle", "bram", "oslo"}


def test_the_problem_quotes_each_borrowed_word_once_as_written() -> None:
    borrowing = Borrowing(frozenset({"bram", "keeper"}))
    problem = borrowing.problem("step1", "A joke on Bram the keeper, whom Bram loved")
    assert problem is not None
    assert problem.startswith("step 'step1' names 'Bram', 'keeper', which come from an example")
    assert "without them" in problem
    assert borrowing.problem("step2", "A joke") is None


def test_a_borrowing_plan_goes_back_naming_the_words_and_the_clean_one_is_used() -> None:
    roles = Roles(plans=[plan_text(LEAKED), plan_text(CLEAN)])
    with FakeStream(roles) as fake:
        engine, events = engine_for(fake.url)
        result = engine.plan(MAIN)
    assert result.attempts == 2
    assert [s.description for s in result.plan.steps] == [s["description"] for s in CLEAN]
    repair = roles.bodies("plan")[1]["messages"]
    assert json.loads(repair[-2]["content"]) == {"steps": LEAKED}
    assert "'lighthouse', 'keeper', 'Bram'" in repair[-1]["content"]
    assert "step 'step2' names 'Bram'" in repair[-1]["content"]
    [rejected] = [e for e in events if isinstance(e, PlanRejected)]
    assert len(rejected.problems) == 2


def test_on_the_last_attempt_a_borrowing_plan_is_taken_rather_than_no_plan() -> None:
    roles = Roles(plans=[plan_text(LEAKED), plan_text(LEAKED)])
    with FakeStream(roles) as fake:
        engine, _ = engine_for(fake.url, **{"planner.max_repairs": 1})
        result = engine.plan(MAIN)
    assert result.attempts == 2 and "Bram" in result.plan.steps[0].description
    assert len(roles.bodies("plan")) == 2


def test_with_no_repairs_allowed_borrowing_is_not_checked() -> None:
    roles = Roles(plans=[plan_text(LEAKED)])
    with FakeStream(roles) as fake:
        engine, _ = engine_for(fake.url, **{"planner.max_repairs": 0})
        assert engine.plan(MAIN).attempts == 1


def test_a_streamed_step_that_borrows_never_starts_and_the_plan_is_asked_again() -> None:
    roles = Roles(plans=[Streamed(plan_pieces(LEAKED)), Streamed(plan_pieces(CLEAN))])
    with FakeStream(roles) as fake:
        engine, events = engine_for(fake.url)
        report = engine.run(MAIN)
    assert report.status == "succeeded"
    assert sorted(roles.step_lines()) == sorted(s["description"] for s in CLEAN)
    again = roles.bodies("plan")[1]["messages"]
    assert "'lighthouse', 'keeper', 'Bram'" in again[-1]["content"]
    rejected = [e for e in events if isinstance(e, PlanRejected)]
    assert len(rejected) == 1 and "come from an example" in rejected[0].problems[0]


def test_a_streamed_step_after_an_accepted_one_that_borrows_asks_for_the_rest() -> None:
    mixed = [CLEAN[0], step_obj(2, "Translate the riddle to Finnish", "translator", [1])]
    rest = plan_text(CLEAN[1:])
    roles = Roles(plans=[Streamed(plan_pieces(mixed)), rest])
    with FakeStream(roles) as fake:
        engine, _ = engine_for(fake.url)
        report = engine.run(MAIN)
    assert report.status == "succeeded" and report.plan.ids == ["step1", "step2", "step3"]
    assert "Translate the riddle to Finnish" not in roles.step_lines()
    assert "'riddle', 'Finnish'" in roles.bodies("plan")[1]["messages"][-1]["content"]


def test_the_scorer_counts_a_plan_that_borrows_and_prints_its_words() -> None:
    root = Path(__file__).resolve().parent.parent / "benchmarks"
    sys.path.insert(0, str(root))
    try:
        bench: Any = importlib.import_module("bench_local_planning")
    finally:
        sys.path.remove(str(root))
    case = bench.Case.from_dict(
        {"request": MAIN, "expect": [{"about": "joke", "tools": ["content_generator"]}]}
        | {"independent": [], "dependent": []}
    )
    borrowing = main_job_borrowing()
    leaked, clean = bench.Score(MAIN, attempts=1), bench.Score(MAIN, attempts=1)
    bench.score_plan(leaked, parse_plan({"steps": LEAKED}), case, borrowing)
    bench.score_plan(clean, parse_plan({"steps": CLEAN}), case, borrowing)
    assert leaked.borrowed and leaked.borrowed_words == ["lighthouse", "keeper", "Bram"]
    assert not clean.borrowed and bench.summary([leaked, clean])["borrowed"] == "1/2"


def test_the_examples_the_check_reads_are_those_the_planner_shows() -> None:
    registry = build_registry(load_settings(), chat=ScriptedChat())
    shown = pick_examples(MAIN, registry.names())
    assert "Bram" in shown[0]["request"]  # the closest, whose subject leaked before
