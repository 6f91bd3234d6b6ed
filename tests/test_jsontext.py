"""Lenient JSON extraction from model replies."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from overseer.planning.jsontext import (
    MAX_DEPTH,
    MAX_TEXT_CHARS,
    QUOTE_BACK_CHARS,
    clip,
    extract_json,
)

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


# -- hostile replies (issue 11): bounded time and memory, a clear error ----------------------------


def test_many_unclosed_brackets_end_in_one_clear_error() -> None:
    with pytest.raises(ValueError) as caught:
        extract_json("{" * 100_000)  # quadratic before: 20 KB took a minute
    assert str(caught.value) == f"the reply's JSON is nested more than {MAX_DEPTH} levels deep"


def test_a_long_run_of_unclosed_prose_brackets_is_refused_by_its_nesting() -> None:
    with pytest.raises(ValueError, match="nested more than"):
        extract_json("{a " * 50_000)


def test_shallow_unclosed_prose_brackets_are_no_json() -> None:
    with pytest.raises(ValueError, match="no JSON value could be found"):
        extract_json("{a} " * 50_000)


def test_deeply_nested_json_is_refused_without_recursion_error() -> None:
    text = '{"steps": ' + "[" * 200_000 + "]" * 200_000 + "}"
    with pytest.raises(ValueError, match="nested more than"):
        extract_json(text)  # a RecursionError traceback before


def test_a_deep_value_in_prose_is_refused_and_no_part_of_it_used() -> None:
    with pytest.raises(ValueError, match="nested more than"):
        extract_json("Here: " + "[" * 5_000 + "]" * 5_000 + " done")


def test_a_deep_value_hidden_from_the_whole_text_is_skipped() -> None:
    """A quote in the prose makes the whole text look shallow; the deep span is still skipped."""
    deep = "[" * 300 + "]" * 300
    assert extract_json(f'say "{deep} and {{"a": 1}}') == {"a": 1}
    with pytest.raises(ValueError, match="nested more than"):
        extract_json(f'say "x" {deep}" ok')


def test_nesting_at_the_limit_is_accepted_and_one_over_is_not() -> None:
    assert _depth(extract_json("[" * MAX_DEPTH + "]" * MAX_DEPTH)) == MAX_DEPTH
    over = '{"a": ' + "[" * MAX_DEPTH + "]" * MAX_DEPTH + "}"
    with pytest.raises(ValueError, match="nested more than"):
        extract_json(over)


def test_brackets_inside_strings_do_not_count_towards_depth() -> None:
    text = json.dumps({"text": "[" * 1000})
    assert extract_json(text) == {"text": "[" * 1000}


def test_a_reply_over_the_size_limit_is_refused_by_its_size() -> None:
    with pytest.raises(ValueError) as caught:
        extract_json(" " * (MAX_TEXT_CHARS + 1))
    assert str(caught.value) == (
        f"the reply is too long to read ({MAX_TEXT_CHARS + 1:,} characters; "
        f"the limit is {MAX_TEXT_CHARS:,})"
    )


def test_a_reply_at_the_size_limit_is_read() -> None:
    padding = MAX_TEXT_CHARS - len('{"a": ""}')
    assert extract_json('{"a": "' + "x" * padding + '"}') == {"a": "x" * padding}


def test_a_fence_followed_by_a_long_word_is_read_at_once() -> None:
    with pytest.raises(ValueError, match="no JSON value"):
        extract_json("```" + "a" * 100_000)  # the old pattern backtracked: 23 s for 2,000


def test_nested_spans_are_cut_out_only_when_tried() -> None:
    """200,000 nested spans of 400 KB each would be 80 GB if each were cut out up front."""
    text = "x" + "[" * 200_000 + "," + "]" * 200_000
    with pytest.raises(ValueError):
        extract_json(text)


def test_a_span_nested_in_a_broken_one_is_still_found() -> None:
    assert extract_json('{"a": 1, {"b": 2}') == {"b": 2}


def test_a_stray_quote_in_the_prose_does_not_hide_the_value() -> None:
    assert extract_json('a 5" screen, and then {"a": 1}') == {"a": 1}


def test_an_unclosed_string_inside_brackets_ends_the_scan() -> None:
    with pytest.raises(ValueError, match="no JSON value"):
        extract_json('{"a": "never closed } ]')


def test_many_broken_spans_are_tried_only_up_to_a_cap() -> None:
    text = "[,]" * 10_000 + ' {"late": true}'
    with pytest.raises(ValueError, match="no JSON value"):
        extract_json(text)  # beyond the spans tried: a bounded search, not a miss by accident


def test_clip_keeps_short_text_and_says_what_it_cut() -> None:
    assert clip("short", 10) == "short"
    assert clip("x" * 25, 10) == "x" * 10 + "\n[… 15 more characters not shown]"
    assert len(clip("y" * 5_000_000)) < QUOTE_BACK_CHARS + 100


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0
