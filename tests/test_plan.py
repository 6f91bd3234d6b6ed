from __future__ import annotations

from typing import Any

import pytest

from overseer.core.plan import (
    MAX_PROBLEMS,
    Plan,
    group_warnings,
    parse_plan,
    plan_json_schema,
    shown,
)
from overseer.errors import PlanValidationError

TOOLS = ["content_generator", "translator", "summarizer"]


def step(
    sid: str, tool: str = "content_generator", deps: list[str] | None = None, **kw: Any
) -> dict[str, Any]:
    return {
        "step_id": sid,
        "description": f"do {sid}",
        "tool": tool,
        "depends_on": deps or [],
        **kw,
    }


def problems_of(data: Any, max_steps: int = 20) -> list[str]:
    with pytest.raises(PlanValidationError) as info:
        parse_plan(data, TOOLS, max_steps)
    return info.value.problems


def test_a_valid_plan_parses_into_frozen_steps() -> None:
    plan = parse_plan(
        {"steps": [step("a"), step("b", "translator", ["a"], parallel_group=1)]}, TOOLS
    )
    assert plan.ids == ["a", "b"]
    assert plan.step("b").depends_on == ("a",)
    assert plan.step("b").parallel_group == 1
    with pytest.raises(ValueError):
        plan.steps[0].step_id = "z"  # type: ignore[misc]


def test_a_bare_list_of_steps_is_accepted() -> None:
    assert parse_plan([step("a")], TOOLS).ids == ["a"]


def test_to_dict_round_trips() -> None:
    plan = parse_plan({"steps": [step("a"), step("b", deps=["a"])]}, TOOLS)
    assert parse_plan(plan.to_dict(), TOOLS) == plan
    assert plan.to_dict()["steps"][1]["depends_on"] == ["a"]


def test_duplicate_ids_are_named() -> None:
    assert problems_of({"steps": [step("a"), step("a")]}) == ["step id 'a' is used more than once"]


def test_unknown_dependency_is_named() -> None:
    assert problems_of({"steps": [step("a", deps=["ghost"])]}) == [
        "step 'a' depends on unknown step 'ghost'"
    ]


def test_self_dependency_is_named() -> None:
    assert problems_of({"steps": [step("a", deps=["a"])]}) == ["step 'a' depends on itself"]


def test_a_cycle_is_reported_with_its_path() -> None:
    data = {
        "steps": [step("a", deps=["c"]), step("b", deps=["a"]), step("c", deps=["b"]), step("d")]
    }
    [problem] = problems_of(data)
    assert "cycle" in problem
    path = problem.split(": ", 1)[1].split(" (")[0].split(" -> ")
    assert path[0] == path[-1]
    assert set(path) == {"a", "b", "c"}


def test_unknown_tool_names_the_tools_that_exist() -> None:
    [problem] = problems_of({"steps": [step("a", tool="painter")]})
    assert "'painter'" in problem
    for name in TOOLS:
        assert name in problem


def test_empty_plan_is_invalid() -> None:
    assert problems_of({"steps": []}) == ["the plan has no steps"]


def test_too_many_steps() -> None:
    problems = problems_of({"steps": [step(f"s{i}") for i in range(4)]}, max_steps=3)
    assert problems == ["the plan has 4 steps, more than the limit of 3"]


def test_a_malformed_step_is_reported_by_position() -> None:
    problems = problems_of({"steps": [step("a"), {"step_id": "b", "tool": "translator"}]})
    assert len(problems) == 1
    assert problems[0].startswith("step #2 is malformed") and "description" in problems[0]


@pytest.mark.parametrize("data", [None, "steps", 3, {"plan": []}])
def test_not_a_plan_object(data: Any) -> None:
    assert problems_of(data) == ['the plan must be a JSON object with a "steps" list']


def test_steps_must_be_a_list() -> None:
    assert problems_of({"steps": {"a": 1}}) == ['"steps" must be a list, got dict']


def test_every_problem_is_collected_at_once() -> None:
    data = {"steps": [step("a", tool="nope"), step("a", deps=["x"])]}
    assert len(problems_of(data)) == 3


def test_blank_ids_and_whitespace_are_handled() -> None:
    assert parse_plan([step(" a "), step("b", deps=[" a", "a"])], TOOLS).step("b").depends_on == (
        "a",
    )
    assert problems_of([step("   ")])[0].startswith("step #1 is malformed")


def test_extra_fields_from_the_model_are_ignored() -> None:
    plan = parse_plan([step("a", reasoning="because")], TOOLS)
    assert plan.ids == ["a"]


def test_tools_unchecked_when_no_registry_is_given() -> None:
    assert parse_plan([step("a", tool="anything")]).ids == ["a"]


def test_group_warnings_flag_a_group_that_contradicts_dependencies() -> None:
    plan = parse_plan([step("a", parallel_group=1), step("b", deps=["a"], parallel_group=1)], TOOLS)
    [warning] = group_warnings(plan)
    assert "'b'" in warning and "'a'" in warning


def test_groups_without_contradictions_give_no_warning() -> None:
    plan = parse_plan(
        [step("a", parallel_group=1), step("b", parallel_group=1), step("c", deps=["a", "b"])],
        TOOLS,
    )
    assert group_warnings(plan) == []


def test_schema_constrains_tool_names() -> None:
    schema = plan_json_schema(TOOLS)
    tool = schema["properties"]["steps"]["items"]["properties"]["tool"]
    assert tool["enum"] == sorted(TOOLS)
    assert "enum" not in plan_json_schema()["properties"]["steps"]["items"]["properties"]["tool"]


def test_plan_is_a_plain_pydantic_model() -> None:
    assert Plan.model_validate({"steps": [step("a")]}).ids == ["a"]


# -- hostile or careless plans (issue 11) ----------------------------------------------------------


def test_a_numeric_step_id_is_named_not_blamed_on_an_empty_plan() -> None:
    [problem] = problems_of([step(1)])  # type: ignore[arg-type]
    assert problem == "step #1 is malformed: step_id: must be a string such as 'step1', got 1"


def test_numbers_in_depends_on_are_refused_as_step_ids_are() -> None:
    [problem] = problems_of([step("step1"), step("step2", deps=[1])])  # type: ignore[list-item]
    assert problem == (
        "step #2 is malformed: depends_on: must list step ids as strings such as 'step1', got 1"
    )


@pytest.mark.parametrize("dep", [True, None, {"id": "a"}, ["a"], 1.5])
def test_no_value_is_turned_into_a_step_id_silently(dep: Any) -> None:
    [problem] = problems_of([step("a"), step("b", deps=[dep])])
    assert problem.startswith("step #2 is malformed: depends_on: must list step ids as strings")


def test_a_single_dependency_as_text_is_still_accepted() -> None:
    plan = parse_plan([step("a"), {**step("b"), "depends_on": " a "}], TOOLS)
    assert plan.step("b").depends_on == ("a",)


@pytest.mark.parametrize("description", ["", " ", "\n\t  \n"])
def test_a_blank_description_is_an_invalid_plan(description: str) -> None:
    [problem] = problems_of([{**step("a"), "description": description}])
    assert problem.startswith("step #1 is malformed: description:")


def test_a_whitespace_description_says_what_is_wrong() -> None:
    [problem] = problems_of([{**step("a"), "description": "   "}])
    assert problem == "step #1 is malformed: description: must not be blank: say what the step does"


def test_when_every_step_is_malformed_there_is_no_no_steps_problem() -> None:
    problems = problems_of([{"step_id": 1}, {"step_id": 2}])
    assert all(p.startswith("step #") for p in problems) and len(problems) == 2


def test_a_huge_plan_is_refused_before_its_steps_are_validated() -> None:
    raw = [{"step_id": i} for i in range(100_000)]  # every one malformed
    assert problems_of({"steps": raw}, max_steps=20) == [
        "the plan has 100000 steps, more than the limit of 20"
    ]


def test_problems_are_capped_so_the_repair_request_stays_small() -> None:
    raw = [{"step_id": f"s{i}", "tool": "nope"} for i in range(50)]
    problems = problems_of({"steps": raw}, max_steps=50)
    assert len(problems) == MAX_PROBLEMS + 1
    assert problems[-1] == "and 30 more problems"


def test_long_hostile_values_are_quoted_short() -> None:
    [problem] = problems_of([step("a", tool="x" * 10_000)])
    assert len(problem) < 200 and "'xxxx" in problem and "…" in problem
    [problem] = problems_of([step("a", deps=["y" * 10_000])])
    assert problem.startswith("step 'a' depends on unknown step 'yyy") and len(problem) < 120


def test_shown_keeps_short_values_whole() -> None:
    assert shown("step1") == "'step1'"
    assert shown(1) == "1"
    assert shown("z" * 100).endswith("…") and len(shown("z" * 100)) == 61


def test_group_warnings_stay_fast_on_a_long_chain() -> None:
    n = 1000
    raw = [step(f"s{i}", deps=[f"s{i - 1}"] if i else [], parallel_group=1) for i in range(n)]
    plan = parse_plan(raw, TOOLS, max_steps=n)
    assert len(group_warnings(plan)) == n * (n - 1) // 2
