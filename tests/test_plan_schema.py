"""The plan schema sent to models, plain and ordered, checked with a JSON Schema validator.

The ordered schema is what makes a small model's plan structurally valid by construction on a
server that enforces schemas: these tests prove it admits every valid ordered plan, and nothing
with a broken dependency.
"""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from overseer.config import PlannerSettings, load_settings
from overseer.core.plan import parse_plan, plan_json_schema
from overseer.planning.examples import load_pool
from overseer.planning.planner import Planner
from tests.fakes import ScriptedChat, plan_json

TOOLS = sorted(t.name for t in load_settings().enabled_tools)


def step(number: int, deps: list[int], tool: str = "general") -> dict[str, Any]:
    return {
        "step_id": f"step{number}",
        "description": f"do part {number}",
        "tool": tool,
        "depends_on": [f"step{d}" for d in deps],
        "parallel_group": None,
    }


def admits(schema: dict[str, Any], plan: dict[str, Any]) -> bool:
    try:
        jsonschema.validate(plan, schema)
    except jsonschema.ValidationError:
        return False
    return True


ORDERED = plan_json_schema(TOOLS, 5, ordered=True)
PLAIN = plan_json_schema(TOOLS, 5)


@pytest.mark.parametrize("schema", [ORDERED, PLAIN], ids=["ordered", "plain"])
def test_every_shipped_example_fits_the_schemas(schema: dict[str, Any]) -> None:
    for example in load_pool():
        assert admits(schema, example["plan"]), example["request"]


@pytest.mark.parametrize("schema", [ORDERED, PLAIN], ids=["ordered", "plain"])
def test_both_schemas_are_valid_json_schema(schema: dict[str, Any]) -> None:
    jsonschema.Draft202012Validator.check_schema(schema)


def test_the_ordered_schema_admits_a_fan_out_and_a_join() -> None:
    plan = {"steps": [step(1, []), step(2, [1]), step(3, [1]), step(4, [2, 3])]}
    assert admits(ORDERED, plan)


@pytest.mark.parametrize(
    ("why", "steps"),
    [
        ("the first step depends on something", [step(1, [2]), step(2, [])]),
        ("a step depends on a later one", [step(1, []), step(2, [3]), step(3, [])]),
        ("a step depends on itself", [step(1, []), step(2, [2])]),
        ("a cycle", [step(1, []), step(2, [3]), step(3, [2])]),
        ("ids out of order", [step(2, []), step(1, [])]),
        ("a duplicate id", [step(1, []), step(1, [])]),
        ("an invented id", [{**step(1, []), "step_id": "intro"}]),
        ("an empty id", [{**step(1, []), "step_id": ""}]),
        ("an unknown tool", [step(1, [], tool="painter")]),
        ("an empty description", [{**step(1, []), "description": ""}]),
        ("no steps", []),
        ("too many steps", [step(i, []) for i in range(1, 7)]),
    ],
)
def test_the_ordered_schema_rejects_every_broken_plan(why: str, steps: list[Any]) -> None:
    assert not admits(ORDERED, {"steps": steps}), why


def test_the_plain_schema_names_ids_and_bounds_the_length() -> None:
    item = PLAIN["properties"]["steps"]["items"]
    assert item["properties"]["step_id"]["enum"] == [f"step{i}" for i in range(1, 6)]
    assert item["properties"]["depends_on"]["items"]["enum"][-1] == "step5"
    assert PLAIN["properties"]["steps"]["maxItems"] == 5
    assert not admits(PLAIN, {"steps": [step(1, []), {**step(2, []), "step_id": "x"}]})
    unbounded = plan_json_schema(TOOLS)
    assert "maxItems" not in unbounded["properties"]["steps"]
    assert admits(unbounded, {"steps": [{**step(1, []), "step_id": "intro"}]})


@settings(deadline=None)  # a shared 2-core machine: the time of one example means nothing
@given(
    st.lists(st.lists(st.integers(min_value=0, max_value=30), max_size=4), min_size=1, max_size=8)
)
def test_every_plan_the_ordered_schema_admits_passes_validation(picks: list[list[int]]) -> None:
    steps = [
        step(number, sorted({p % (number - 1) + 1 for p in raw}) if number > 1 else [])
        for number, raw in enumerate(picks, start=1)
    ]
    plan = {"steps": steps}
    assert admits(plan_json_schema(TOOLS, 8, ordered=True), plan)
    parse_plan(plan, TOOLS, max_steps=8)  # raises if the schema let a broken plan through


@settings(deadline=None)
@given(st.integers(min_value=1, max_value=6), st.integers(min_value=1, max_value=6))
def test_a_dependency_on_a_step_not_before_is_never_admitted(number: int, dep: int) -> None:
    steps = [step(i, []) for i in range(1, 7)]
    steps[number - 1] = step(number, [dep])
    admitted = admits(plan_json_schema(TOOLS, 6, ordered=True), {"steps": steps})
    assert admitted == (dep < number)


def test_the_planner_sends_the_ordered_schema_when_told() -> None:
    good = plan_json(("step1", "Write", "general", []), ("step2", "Check", "general", ["step1"]))
    for ordered in (False, True):
        chat = ScriptedChat(good)
        Planner(
            chat=chat,
            tool_names=TOOLS,
            tool_lines="",
            settings=PlannerSettings(max_steps=4, ordered_steps=ordered),
        ).plan("x")
        schema = chat.requests[0].schema
        assert schema == plan_json_schema(TOOLS, 4, ordered=ordered)
        assert admits(schema, json.loads(good))


_ONE_SCHEMA = ("items", "additionalItems", "contains", "not")
_SCHEMA_LISTS = ("prefixItems", "anyOf", "oneOf", "allOf")


def subschemas(schema: dict[str, Any]) -> list[Any]:
    """Every value in ``schema`` that JSON Schema reads as a schema, at any depth."""
    found: list[Any] = []
    for key in _ONE_SCHEMA:
        if key in schema:
            found.append(schema[key])
    for key in _SCHEMA_LISTS:
        found.extend(schema.get(key, []))
    found.extend(schema.get("properties", {}).values())
    for value in list(found):
        if isinstance(value, dict):
            found.extend(subschemas(value))
    return found


@pytest.mark.parametrize("schema", [ORDERED, PLAIN], ids=["ordered", "plain"])
def test_no_subschema_is_a_boolean_which_llama_cpp_rejects(schema: dict[str, Any]) -> None:
    """llama.cpp answers HTTP 400 "schema must be an object" to ``"items": false``."""
    found = subschemas(schema)
    assert len(found) > 5
    assert all(isinstance(value, dict) for value in found)
    assert subschemas({"items": False}) == [False]  # what the walker would catch


def test_the_ordered_schema_bounds_each_length_with_min_and_max_items() -> None:
    for length, option in enumerate(ORDERED["properties"]["steps"]["anyOf"], start=1):
        assert option["minItems"] == option["maxItems"] == len(option["prefixItems"]) == length
    assert not admits(ORDERED, {"steps": [step(1, []), step(2, [1]), step(1, [])]})
