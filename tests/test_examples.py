"""The few-shot pool and the pick by word overlap that puts three of its plans into the prompt."""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema
import pytest

from overseer.config import load_settings
from overseer.core.plan import parse_plan, plan_json_schema
from overseer.nodes.kinds import build_registry
from overseer.planning.examples import example_turns, load_pool, pick_examples, words
from tests.fakes import ScriptedChat

NAMES = build_registry(load_settings(), chat=ScriptedChat()).names()


def example(request: str, *tools: str) -> dict[str, Any]:
    steps = [
        {"step_id": f"step{i}", "description": request, "tool": tool, "depends_on": []}
        for i, tool in enumerate(tools, 1)
    ]
    return {"request": request, "plan": {"steps": steps}}


def test_every_pool_plan_is_valid_against_the_default_registry() -> None:
    pool = load_pool()
    assert len(pool) >= 10
    for item in pool:
        parse_plan(item["plan"], NAMES)
        assert item["request"].strip()


@pytest.mark.parametrize("ordered", [True, False], ids=["ordered", "plain"])
def test_every_pool_plan_fits_the_plan_schemas(ordered: bool) -> None:
    schema = plan_json_schema(NAMES, 20, ordered=ordered)
    for item in load_pool():
        assert jsonschema.Draft202012Validator(schema).is_valid(item["plan"]), item["request"]


def test_no_two_pool_examples_share_a_step_description() -> None:
    descriptions = [s["description"] for e in load_pool() for s in e["plan"]["steps"]]
    assert len(descriptions) == len(set(descriptions))


def test_words_drop_filler_and_plurals_and_make_every_number_one_word() -> None:
    assert words("Translate the 12 words into French") == {"translate", "0", "word", "french"}
    assert words("What is 15% of 240?") == words("what is 35% of 860?")
    assert "'" in words("Translate 'hello'")


def test_the_pool_example_closest_to_the_request_comes_first() -> None:
    picked = pick_examples("What is 15% of 240?", NAMES, count=1)
    assert [e["request"] for e in picked] == ["What is 35% of 860?"]
    picked = pick_examples("Translate 'see you soon' into Basque and Thai", NAMES, count=1)
    assert picked[0]["request"].startswith("Translate 'the ferry leaves at 9:30'")


def test_rare_words_outweigh_common_ones() -> None:
    pool = [
        example("write a poem", "general"),
        example("write a story", "general"),
        example("write a song", "general"),
        example("count the words", "general"),
    ]
    picked = pick_examples("write it and count", ["general"], count=1, pool=pool)
    assert picked[0]["request"] == "count the words"


def test_ties_keep_the_pool_order_and_count_bounds_the_pick() -> None:
    pool = [example(f"request {n}", "general") for n in ("a", "b", "c")]
    picked = pick_examples("nothing shared", ["general"], count=2, pool=pool)
    assert [e["request"] for e in picked] == ["request a", "request b"]


def test_examples_whose_tools_are_missing_are_never_picked() -> None:
    pool = [example("count words", "word_count"), example("other", "general")]
    picked = pick_examples("count words", ["general"], count=2, pool=pool)
    assert [e["request"] for e in picked] == ["other"]
    assert example_turns("count words", ["nothing_here"]) == []


def test_example_turns_ask_each_request_and_answer_with_its_plan_the_closest_last() -> None:
    turns = example_turns("List six facts about owls", NAMES, count=2)
    assert [t["role"] for t in turns] == ["user", "assistant", "user", "assistant"]
    assert turns[-2]["content"].strip() == "Request: List four facts about axolotls"
    assert json.loads(turns[-1]["content"]) == load_pool()[-2]["plan"]
    assert len(example_turns("anything", NAMES)) == 2 * 3  # three examples by default


def _raw_words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", text.lower()))


def test_every_pool_description_names_a_subject_of_its_own_request_alone() -> None:
    """The wording of an example cannot pass for another request: each step description holds a
    word (a name, a number, a subject) of its own request that no other pool request has."""
    pool = load_pool()
    for index, item in enumerate(pool):
        others = set().union(*(_raw_words(o["request"]) for o in pool if o is not item))
        for step in item["plan"]["steps"]:
            own = _raw_words(step["description"]) & _raw_words(item["request"])
            assert own - others, (index, step["description"])
