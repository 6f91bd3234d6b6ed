"""The request file of a batch: JSON Lines or plain text, ids, and bad lines by number."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from overseer.batch.inputs import BadLine, BatchItem, parse_lines, read_input
from overseer.errors import UsageError


def test_json_lines_take_strings_and_objects_with_or_without_an_id() -> None:
    parsed = parse_lines(['"first"', '{"request": "second", "id": "b"}', '{"request": "third"}'])
    assert parsed.items == (
        BatchItem(1, "first", 1),
        BatchItem("b", "second", 2),
        BatchItem(3, "third", 3),
    )
    assert parsed.problems == ()


def test_plain_text_is_one_request_a_line_and_blank_lines_keep_numbers() -> None:
    parsed = parse_lines(["write a joke", "", "  summarise this  "])
    assert parsed.items == (BatchItem(1, "write a joke", 1), BatchItem(3, "summarise this", 3))


def test_a_text_line_that_looks_like_json_is_text_when_asked() -> None:
    parsed = parse_lines(['"quoted"'], "text")
    assert parsed.items == (BatchItem(1, '"quoted"', 1),)


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("{broken", "line 2: not valid JSON"),
        ("[1, 2]", "line 2: expected a string or an object with 'request', got '[1, 2]'"),
        ('{"id": 5}', "line 2: the object needs a 'request' string, got None"),
        ('{"request": 7}', "line 2: the object needs a 'request' string, got 7"),
        ('{"request": "x", "id": true}', "'id' must be a non-empty string or a whole number"),
        ('{"request": "x", "id": [1]}', "got [1]"),
        ('{"request": "   "}', "line 2: the request is empty"),
        ('{"request": "x", "id": "a"}', "line 2: id 'a' was already used on line 1"),
    ],
)
def test_a_bad_line_is_named_by_its_number(line: str, problem: str) -> None:
    parsed = parse_lines(['{"request": "ok", "id": "a"}', line])
    assert [item.key for item in parsed.items] == ["a"]
    assert len(parsed.problems) == 1 and problem in str(parsed.problems[0])


def test_ids_seven_and_seven_as_text_are_the_same_id() -> None:
    parsed = parse_lines(['{"request": "x", "id": 7}', '{"request": "y", "id": "7"}'])
    assert len(parsed.items) == 1 and parsed.problems[0].line == 2


def test_a_long_bad_line_is_clipped_in_its_message() -> None:
    parsed = parse_lines(['"ok"', "{" + "x" * 500])
    assert len(str(parsed.problems[0])) < 200


def test_the_file_suffix_picks_the_format(tmp_path: Path) -> None:
    text = tmp_path / "requests.txt"
    text.write_text('{"request": "literally this"}\n')
    assert read_input(str(text)).items[0].request == '{"request": "literally this"}'
    jsonl = tmp_path / "requests.jsonl"
    jsonl.write_text("not json\n")
    assert read_input(str(jsonl)).problems[0].line == 1


def test_a_missing_or_binary_file_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        read_input(str(tmp_path / "missing.jsonl"))
    binary = tmp_path / "bin.jsonl"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(UsageError, match="not UTF-8"):
        read_input(str(binary))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=40), max_size=20))
def test_any_text_gives_items_or_numbered_problems_never_an_exception(lines: list[str]) -> None:
    parsed = parse_lines(lines)
    numbers = [item.line for item in parsed.items] + [p.line for p in parsed.problems]
    assert sorted(numbers) == [n for n, line in enumerate(lines, 1) if line.strip()]
    assert len({item.key for item in parsed.items}) == len(parsed.items)
    assert all(isinstance(p, BadLine) and str(p).startswith("line ") for p in parsed.problems)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=30).filter(str.strip), max_size=15))
def test_json_strings_round_trip_as_requests(requests: list[str]) -> None:
    parsed = parse_lines([json.dumps(r) for r in requests], "jsonl")
    assert [item.request for item in parsed.items] == requests


def test_a_line_nested_too_deeply_is_a_numbered_problem() -> None:
    parsed = parse_lines(['"fine"', "[" * 200_000], "jsonl")
    assert [item.request for item in parsed.items] == ["fine"]
    [problem] = parsed.problems
    assert problem.line == 2 and "nested too deeply" in str(problem)
