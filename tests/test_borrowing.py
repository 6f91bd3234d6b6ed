"""The words a plan would borrow from the examples shown, as the planning scorer counts them."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

from overseer.config import load_settings
from overseer.core.plan import parse_plan
from overseer.nodes.kinds import build_registry
from overseer.planning.borrowing import Borrowing, borrowing_of, content_words
from overseer.planning.examples import pick_examples
from overseer.planning.planner import Planner
from tests.fakes import ScriptedChat
from tests.streamhelp import step_obj

MAIN = "write a joke and translate it to French and Spanish"
LEAKED = [
    step_obj(1, "Write a tongue twister about the ferry", "content_generator"),
    step_obj(2, "Translate the joke to Finnish", "translator", [1]),
]
CLEAN = [
    step_obj(1, "Write a joke", "content_generator"),
    step_obj(2, "Translate the joke to French", "translator", [1]),
    step_obj(3, "Translate the joke to Spanish", "translator", [1]),
]


def main_job_borrowing() -> Borrowing:
    settings = load_settings()
    registry = build_registry(settings, chat=ScriptedChat())
    planner = Planner(ScriptedChat(), registry.names(), registry.describe(), settings.planner)
    return planner.borrowing(MAIN)


def test_words_are_lowercase_with_plurals_dropped_and_numbers_kept() -> None:
    assert content_words("Three Harbours at 9:30") == {"three", "harbour", "at", "9", "30"}


def test_the_closest_examples_subject_is_foreign_to_the_main_job() -> None:
    foreign = main_job_borrowing().foreign
    assert {"tongue", "twister", "finnish", "hungarian", "ferry"} <= foreign
    assert not {"joke", "french", "spanish", "translate", "write", "words"} & foreign


def test_the_request_the_context_and_the_system_prompt_are_never_borrowed() -> None:
    example = {
        "request": "Write a riddle about Bram",
        "plan": {"steps": [{"description": "Write a riddle about Bram for Oslo"}]},
    }
    borrowing = borrowing_of([example], "a riddle", context="we spoke of Bram", allowed="oslo")
    assert borrowing.foreign == frozenset()
    assert borrowing_of([example], "a joke").foreign == {"riddle", "bram", "oslo"}


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
    assert leaked.borrowed and leaked.borrowed_words == ["tongue", "twister", "ferry", "Finnish"]
    assert not clean.borrowed and bench.summary([leaked, clean])["borrowed"] == "1/2"


def test_the_examples_read_are_those_the_planner_shows() -> None:
    registry = build_registry(load_settings(), chat=ScriptedChat())
    shown = pick_examples(MAIN, registry.names())
    assert shown[0]["request"].startswith("Write a tongue twister and translate it")  # the closest
