"""A translation step into several languages becomes one step per language, in whole and streamed
plans alike (the streamed ones through the real openai client against a fake server on loopback)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from overseer.core.plan import Plan, Step, parse_plan
from overseer.planning.splitting import Splitter, languages_of, split_plan
from overseer.planning.streaming import StepGate
from tests.fake_stream import FakeStream, Streamed
from tests.streamhelp import Roles, engine_for, plan_pieces, step_obj

MAIN = "write a joke and translate it to French and Spanish"
MERGED = [
    step_obj(1, "Write a joke", "content_generator"),
    step_obj(2, "Translate the joke to French and Spanish", "translator", [1]),
    step_obj(3, "Count the words of the translations", "word_count", [2]),
]


@pytest.mark.parametrize(
    ("description", "languages"),
    [
        ("Translate the joke to French and Spanish", ["French", "Spanish"]),
        ("Translate the note into Welsh, Icelandic and Malay", ["Welsh", "Icelandic", "Malay"]),
        (
            "Translate it in Russian, Turkish, Hindi, and Arabic",
            ["Russian", "Turkish", "Hindi", "Arabic"],
        ),
        ("Translate the joke to French", []),
        ("Write a joke for Tom and Jerry", []),
        ("Translate 'Tom and Jerry went to Paris and Rome' to German", []),
        ("Summarize the text in French and Spanish", []),
    ],
)
def test_the_languages_are_the_names_listed_after_to_into_or_in(
    description: str, languages: list[str]
) -> None:
    found = languages_of(description)
    assert len(found) == len(languages)
    for part, name in zip(found, languages, strict=True):
        assert part.endswith(name) and not (set(languages) - {name}) & set(part.split())


def test_each_part_keeps_the_rest_of_the_description_and_quoted_text() -> None:
    assert languages_of("Translate 'see you at 9' into Thai and Lao, keeping the time") == [
        "Translate 'see you at 9' into Thai, keeping the time",
        "Translate 'see you at 9' into Lao, keeping the time",
    ]


def test_a_whole_plan_is_renumbered_and_a_step_needing_the_merged_one_needs_every_part() -> None:
    plan = split_plan(parse_plan({"steps": MERGED}))
    assert [(s.step_id, s.description, s.depends_on) for s in plan.steps] == [
        ("step1", "Write a joke", ()),
        ("step2", "Translate the joke to French", ("step1",)),
        ("step3", "Translate the joke to Spanish", ("step1",)),
        ("step4", "Count the words of the translations", ("step2", "step3")),
    ]


def test_only_the_translator_is_split_and_other_ids_are_left_alone() -> None:
    general = [dict(MERGED[1], tool="general")]
    plan = parse_plan({"steps": [dict(general[0], depends_on=[])]})
    assert split_plan(plan) is plan
    named = parse_plan({"steps": [dict(MERGED[1], step_id="t", depends_on=[])]})
    assert split_plan(named) is named


def test_the_streamed_gate_accepts_every_part_and_renumbers_what_follows() -> None:
    gate = StepGate(frozenset({"content_generator", "translator", "word_count"}), 8)
    verdicts = [gate.offer(raw, n) for n, raw in enumerate(MERGED, 1)]
    assert [s.step_id for v in verdicts for s in v.steps] == ["step1", "step2", "step3", "step4"]
    assert gate.accepted[3].depends_on == ("step2", "step3")
    assert gate.offer(MERGED[0], 1).skipped  # a restarted reply that wrote it again
    gate.reopen()
    assert gate.next_id() == "step5"


def test_the_parts_count_toward_the_step_limit() -> None:
    gate = StepGate(frozenset({"content_generator", "translator"}), 2)
    gate.offer(MERGED[0], 1)
    verdict = gate.offer(MERGED[1], 2)
    assert verdict.whole and "more than 2 steps" in verdict.problems[0]


def test_the_main_jobs_merged_translation_runs_as_two_steps_side_by_side() -> None:
    roles = Roles(plans=[Streamed(plan_pieces(MERGED[:2]))])
    with FakeStream(roles) as fake:
        engine, _ = engine_for(fake.url)
        report = engine.run(MAIN)
    assert report.status == "succeeded"
    assert report.plan.ids == ["step1", "step2", "step3"]
    assert sorted(roles.step_lines()) == [
        "Translate the joke to French",
        "Translate the joke to Spanish",
        "Write a joke",
    ]
    assert len(roles.bodies("plan")) == 1  # split, not sent back


def test_a_whole_plan_from_the_planner_is_split() -> None:
    roles = Roles(plans=[json.dumps({"steps": MERGED[:2]})])
    with FakeStream(roles) as fake:
        engine, _ = engine_for(fake.url)
        result = engine.plan(MAIN)
    assert [s.description for s in result.plan.steps][1:] == [
        "Translate the joke to French",
        "Translate the joke to Spanish",
    ]
    assert result.attempts == 1


@given(st.text(max_size=200))
def test_any_description_splits_into_parts_or_none(description: str) -> None:
    found = languages_of(description)
    assert len(found) != 1
    step = Step(step_id="step1", description=description.strip() or "x", tool="translator")
    parts = Splitter().split(step)
    assert [p.step_id for p in parts] == [f"step{i}" for i in range(1, len(parts) + 1)]
    assert Plan(steps=tuple(parts))
