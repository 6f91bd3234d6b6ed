from __future__ import annotations

import json
import re
from typing import Any

import pytest

from overseer.backends.chat import ChatRequest, Message
from overseer.config import PlannerSettings, load_settings
from overseer.core.plan import parse_plan
from overseer.errors import PlanError
from overseer.nodes.kinds import build_registry
from overseer.planning.examples import load_pool
from overseer.planning.planner import Planner
from overseer.usage import Usage
from tests.fakes import ScriptedChat, plan_json, reply

TOOLS = ["content_generator", "translator", "summarizer", "general"]
GOOD = plan_json(
    ("step1", "Write a joke", "content_generator", []),
    ("step2", "Translate it to French", "translator", ["step1"]),
)


def make(chat: ScriptedChat, **settings: int) -> Planner:
    return Planner(
        chat=chat,
        tool_names=TOOLS,
        tool_lines="\n".join(f"- {t}: does {t}" for t in TOOLS),
        settings=PlannerSettings(**settings),
        model="planner-model",
    )


def test_a_valid_plan_on_the_first_try() -> None:
    chat = ScriptedChat(GOOD)
    result = make(chat).plan("write a joke in French")
    assert result.plan.ids == ["step1", "step2"]
    assert result.attempts == 1
    assert result.usage == Usage(10, 5)
    [request] = chat.requests
    assert request.model == "planner-model"
    assert request.schema is not None and request.schema_name == "plan"
    system, *examples, user = request.messages
    assert "- translator: does translator" in system["content"]
    assert examples and [m["role"] for m in examples[-2:]] == ["user", "assistant"]
    assert "write a joke in French" in user["content"]


def test_the_tool_list_is_a_schema_enum() -> None:
    chat = ScriptedChat(GOOD)
    make(chat).plan("x")
    schema = chat.requests[0].schema
    assert schema is not None
    assert schema["properties"]["steps"]["items"]["properties"]["tool"]["enum"] == sorted(TOOLS)


def test_an_invalid_plan_goes_back_with_its_errors_and_the_repair_is_used() -> None:
    bad = plan_json(("step1", "Write", "painter", []), ("step2", "Go", "translator", ["step9"]))
    chat = ScriptedChat(bad, GOOD)
    seen: list[tuple[int, list[str]]] = []
    planner = make(chat)
    planner.on_reject = lambda n, p: seen.append((n, p))
    result = planner.plan("x")
    assert result.attempts == 2
    assert result.usage == Usage(20, 10)
    repair = chat.requests[1].messages
    assert repair[-2] == {"role": "assistant", "content": bad}
    assert "'painter'" in repair[-1]["content"] and "'step9'" in repair[-1]["content"]
    assert seen[0][0] == 1 and len(seen[0][1]) == 2


def test_gives_up_after_max_repairs_with_what_was_wrong() -> None:
    cyclic = plan_json(("a", "A", "general", ["b"]), ("b", "B", "general", ["a"]))
    chat = ScriptedChat("no plan here", "{broken", cyclic)
    with pytest.raises(PlanError) as info:
        make(chat, max_repairs=2).plan("x")
    assert len(chat.requests) == 3
    assert "no valid plan after 3 attempts" in str(info.value)
    assert "cycle" in str(info.value)
    assert info.value.exit_code == 3


def test_zero_repairs_means_one_attempt() -> None:
    chat = ScriptedChat("nonsense")
    with pytest.raises(PlanError, match="not JSON"):
        make(chat, max_repairs=0).plan("x")
    assert len(chat.requests) == 1


def test_a_reply_cut_off_by_the_token_limit_is_an_invalid_plan() -> None:
    chat = ScriptedChat(reply('{"steps": [{"step_id": "a"', finish_reason="length"), GOOD)
    result = make(chat).plan("x")
    assert result.attempts == 2
    assert "cut off" in chat.requests[1].messages[-1]["content"]


def test_a_plan_in_a_fenced_block_with_prose_is_accepted() -> None:
    chat = ScriptedChat(f"Sure! Here is the plan:\n```json\n{GOOD}\n```\nEnjoy.")
    assert make(chat).plan("x").plan.ids == ["step1", "step2"]


def test_too_many_steps_is_repaired() -> None:
    many = plan_json(*[(f"s{i}", "W", "general", []) for i in range(5)])
    chat = ScriptedChat(many, GOOD)
    result = make(chat, max_steps=3).plan("x")
    assert result.attempts == 2
    assert "more than the limit of 3" in chat.requests[1].messages[-1]["content"]


def test_group_contradictions_are_warned_not_fatal() -> None:
    data = json.loads(GOOD)
    for s in data["steps"]:
        s["parallel_group"] = 1
    result = make(ScriptedChat(json.dumps(data))).plan("x")
    assert len(result.warnings) == 1


def test_conversation_context_reaches_the_planner() -> None:
    chat = ScriptedChat(GOOD)
    make(chat).plan("now in German", context="Earlier: a joke about cats")
    assert "Earlier: a joke about cats" in chat.requests[0].messages[-1]["content"]


NAMES = build_registry(load_settings(), chat=ScriptedChat()).names()
JOKE = "write a joke and translate it to French and Spanish"


def test_every_shipped_few_shot_plan_is_valid_against_the_default_registry() -> None:
    examples = load_pool()
    assert examples
    for example in examples:
        parse_plan(example["plan"], NAMES)
        assert example["request"].strip()


def shown(messages: list[Message]) -> list[tuple[str, dict[str, Any]]]:
    """The example requests and plans of an opening: its earlier turns, in pairs."""
    turns = messages[1:-1]
    assert [m["role"] for m in turns] == ["user", "assistant"] * (len(turns) // 2)
    return [
        (turns[i]["content"].removeprefix("Request: ").strip(), json.loads(turns[i + 1]["content"]))
        for i in range(0, len(turns), 2)
    ]


def test_the_examples_are_earlier_turns_and_the_request_comes_last() -> None:
    planner = Planner(ScriptedChat(), NAMES, "- tools")
    messages = planner.opening(JOKE, context="Earlier: nothing")
    assert messages[0]["role"] == "system" and messages[-1]["role"] == "user"
    assert messages[-1]["content"].rstrip().endswith(f"Request: {JOKE}")
    examples = shown(messages)
    assert len(examples) == 3
    for _, plan in examples:
        parse_plan(plan, NAMES)
    assert '"step_id": "step1"' not in messages[0]["content"]  # no plan in the system message


def _raw_words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", text.lower()))


@pytest.mark.parametrize(
    "request_text",
    [
        JOKE,
        "Write a joke and translate it to French and Spanish",
        "Write a haiku about the sea and a limerick about a cat, then summarize both",
        "Translate 'good morning' into German and Italian",
        "What is 15% of 240?",
    ],
)
def test_no_example_shown_is_a_plan_the_request_could_copy(request_text: str) -> None:
    """Every example shown is another request, and each of its descriptions names something of
    that request the user's does not have (a tongue twister, the ferry, 35 and 860): copied as it
    stands, it would be wrong, and the benchmark counts it."""
    asked = _raw_words(request_text)
    examples = shown(Planner(ScriptedChat(), NAMES, "- tools").opening(request_text))
    assert examples
    for example_request, plan in examples:
        assert _raw_words(example_request) != asked
        for step in plan["steps"]:
            own = _raw_words(step["description"]) & _raw_words(example_request)
            assert own - asked, step["description"]


def test_the_joke_request_is_shown_a_plan_of_the_same_shape_about_something_else() -> None:
    [*_, (closest, plan)] = shown(Planner(ScriptedChat(), NAMES, "- tools").opening(JOKE))
    assert "joke" not in closest.lower()
    assert [s["tool"] for s in plan["steps"]] == ["content_generator", "translator", "translator"]
    assert [s["depends_on"] for s in plan["steps"]] == [[], ["step1"], ["step1"]]


def test_examples_using_missing_tools_are_left_out() -> None:
    messages = Planner(ScriptedChat(), ["nothing_here"], "- nothing_here").opening(JOKE)
    assert [m["role"] for m in messages] == ["system", "user"]


def test_the_planner_request_is_a_chat_request() -> None:
    chat = ScriptedChat(GOOD)
    make(chat).plan("x")
    assert isinstance(chat.requests[0], ChatRequest)
    assert chat.requests[0].temperature == 0.0


def test_the_planning_call_carries_the_planner_cancel_token() -> None:
    chat = ScriptedChat(GOOD)
    planner = make(chat)
    planner.plan("x")
    assert chat.requests[0].cancel is planner.cancel
