"""Lenient JSON extraction from model replies."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from overseer.planning.jsontext import extract_json

PLAN = {"steps": [{"step_id": "step1", "description": "Write a joke", "depends_on": []}]}
PLAN_TEXT = json.dumps(PLAN, indent=2)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"a": 1}', {"a": 1}),
        ('  \n {"a": 1}\n\n', {"a": 1}),
        ('\ufeff{"a": 1}', {"a": 1}),
        ("[1, 2, 3]", [1, 2, 3]),
        ("42", 42),
        ('"just a string"', "just a string"),
        ("null", None),
        ("true", True),
    ],
)
def test_whole_text_is_json(text: str, expected: Any) -> None:
    assert extract_json(text) == expected


def test_json_fenced_block() -> None:
    text = f"Here is the plan:\n\n```json\n{PLAN_TEXT}\n```\n\nLet me know!"
    assert extract_json(text) == PLAN


def test_uppercase_json_tag_and_trailing_spaces() -> None:
    assert extract_json('```JSON  \n{"a": 1}\n```') == {"a": 1}


def test_bare_fenced_block() -> None:
    assert extract_json('Result:\n```\n{"a": [1, 2]}\n```') == {"a": [1, 2]}


def test_fence_on_one_line() -> None:
    assert extract_json('```json {"a": 1} ```') == {"a": 1}


def test_json_fence_wins_over_an_earlier_bare_fence() -> None:
    text = 'First:\n```\n{"wrong": true}\n```\nThen:\n```json\n{"right": true}\n```'
    assert extract_json(text) == {"right": True}


def test_first_json_fence_wins() -> None:
    text = '```json\n{"n": 1}\n```\nand\n```json\n{"n": 2}\n```'
    assert extract_json(text) == {"n": 1}


def test_fence_with_broken_json_falls_through_to_the_next() -> None:
    text = '```json\n{"n": 1,,}\n```\n```json\n{"n": 2}\n```'
    assert extract_json(text) == {"n": 2}


def test_fences_of_other_languages_are_not_parsed_whole() -> None:
    assert extract_json('```python\nprint("hi")\n```\nso [1, 2]') == [1, 2]


def test_unclosed_fence_still_finds_the_object() -> None:
    assert extract_json('```json\n{"a": {"b": 1}}\n') == {"a": {"b": 1}}


def test_object_in_prose() -> None:
    text = f"Sure! The plan is {json.dumps(PLAN)} and that is all."
    assert extract_json(text) == PLAN


def test_array_in_prose() -> None:
    assert extract_json('The ids are ["step1", "step2"], in order.') == ["step1", "step2"]


def test_first_balanced_value_wins() -> None:
    assert extract_json('one {"a": 1} two {"b": 2}') == {"a": 1}


def test_array_before_object() -> None:
    assert extract_json('list [1] then {"a": 1}') == [1]


def test_unparsable_brackets_are_skipped() -> None:
    text = 'I think [this] matters, and {so does that}; here: {"ok": true}'
    assert extract_json(text) == {"ok": True}


def test_braces_inside_strings_are_ignored() -> None:
    text = 'Output: {"text": "a } tricky { string ]", "n": 1} (done)'
    assert extract_json(text) == {"text": "a } tricky { string ]", "n": 1}


def test_escaped_quotes_inside_strings() -> None:
    text = r'Output: {"q": "she said \"hi}\" and left", "n": 2} end'
    assert extract_json(text) == {"q": 'she said "hi}" and left', "n": 2}


def test_escaped_backslash_before_a_quote() -> None:
    text = 'x {"path": "C:\\\\dir\\\\", "n": 3} y'
    assert extract_json(text) == {"path": "C:\\dir\\", "n": 3}


def test_nested_object_in_prose() -> None:
    text = 'Result -> {"a": {"b": [1, {"c": null}]}} <- there'
    assert extract_json(text) == {"a": {"b": [1, {"c": None}]}}


def test_mismatched_brackets_are_not_a_value() -> None:
    assert extract_json('bad {"a": [1, 2}] good {"b": 1}') == {"b": 1}


def test_unicode_content() -> None:
    assert extract_json('Voilà : {"blague": "Pourquoi les poissons… 🐟"}') == {
        "blague": "Pourquoi les poissons… 🐟"
    }


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "no json here",
        "{unclosed",
        "{'single': 'quotes'}",
        "[1, 2",
        "```json\n{bad}\n```",
    ],
)
def test_nothing_parses_raises_value_error(text: str) -> None:
    with pytest.raises(ValueError, match="no JSON value could be found"):
        extract_json(text)


def test_error_quotes_the_start_of_the_text() -> None:
    with pytest.raises(ValueError) as caught:
        extract_json("I'm sorry, I can't do that.")
    assert str(caught.value) == (
        "no JSON value could be found in the reply \"I'm sorry, I can't do that.\""
    )


def test_error_truncates_long_text() -> None:
    with pytest.raises(ValueError) as caught:
        extract_json("word " * 100)
    message = str(caught.value)
    assert "…" in message
    assert len(message) < 140
    assert "\n" not in message


def test_error_shows_newlines_escaped() -> None:
    with pytest.raises(ValueError) as caught:
        extract_json("line one\nline two")
    assert "\\n" in str(caught.value)
    assert "\n" not in str(caught.value)


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
_containers = st.one_of(
    st.dictionaries(st.text(max_size=8), _json_values, max_size=4),
    st.lists(_json_values, max_size=4),
)
_prose = st.text(alphabet=st.characters(blacklist_characters='{}[]"`'), max_size=40)


@given(value=_json_values)
def test_any_json_text_round_trips(value: Any) -> None:
    assert extract_json(json.dumps(value)) == value


@given(value=_containers, before=_prose, after=_prose)
def test_a_container_in_prose_is_found(value: Any, before: str, after: str) -> None:
    assert extract_json(f"{before} {json.dumps(value)} {after}") == value


@given(value=_containers, before=_prose, after=_prose, indent=st.sampled_from([None, 2]))
def test_a_fenced_container_is_found(
    value: Any, before: str, after: str, indent: int | None
) -> None:
    text = f"{before}\n```json\n{json.dumps(value, indent=indent)}\n```\n{after}"
    assert extract_json(text) == value


@given(text=st.text(max_size=200))
def test_never_crashes_with_anything_but_value_error(text: str) -> None:
    with contextlib.suppress(ValueError):
        extract_json(text)
