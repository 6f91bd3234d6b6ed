"""The request file of a batch: JSON Lines, or plain text with one request a line.

A JSON line is a string (the request) or an object with ``request`` and an optional ``id`` (a
string or a whole number); without one, the line's number is its id, so ids stay stable when the
file is run again. Blank lines are skipped. A line that cannot be used (not JSON, the wrong shape,
an empty request, an id seen before) is a ``BadLine`` naming its number: the caller reports it
and skips it, or stops (``--strict``).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from overseer.errors import UsageError

__all__ = ["BadLine", "BatchInput", "BatchItem", "InputFormat", "parse_lines", "read_input"]

InputFormat = Literal["auto", "jsonl", "text"]

_JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
_TEXT_SUFFIXES = (".txt", ".text")


@dataclass(frozen=True)
class BatchItem:
    """One request of the batch; ``key`` is its id as text (ids 7 and "7" are the same)."""

    id: str | int
    request: str
    line: int

    @property
    def key(self) -> str:
        return str(self.id)


@dataclass(frozen=True)
class BadLine:
    line: int
    problem: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.problem}"


@dataclass(frozen=True)
class BatchInput:
    items: tuple[BatchItem, ...]
    problems: tuple[BadLine, ...] = ()


def read_input(source: str, fmt: InputFormat = "auto") -> BatchInput:
    """Read ``source`` (a path, or ``-`` for stdin) whole and parse it."""
    if source == "-":
        return parse_lines(sys.stdin.read().splitlines(), fmt)
    path = Path(source)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"the request file {source!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "it is not UTF-8 text"
        raise UsageError(f"cannot read the request file {source!r}: {why}") from None
    return parse_lines(text.splitlines(), _format_for(path, fmt))


def _format_for(path: Path, fmt: InputFormat) -> InputFormat:
    suffix = path.suffix.lower()
    if fmt != "auto":
        return fmt
    if suffix in _JSONL_SUFFIXES:
        return "jsonl"
    return "text" if suffix in _TEXT_SUFFIXES else "auto"


def parse_lines(lines: Iterable[str], fmt: InputFormat = "auto") -> BatchInput:
    """Items and bad lines; ``auto`` reads JSON Lines when the first non-blank line starts
    with ``{`` or ``"``, else plain text."""
    numbered = [(n, line.strip()) for n, line in enumerate(lines, start=1) if line.strip()]
    if fmt == "auto":
        fmt = "jsonl" if numbered and numbered[0][1][:1] in ("{", '"') else "text"
    items: list[BatchItem] = []
    problems: list[BadLine] = []
    seen: dict[str, int] = {}
    for number, line in numbered:
        found = _text_item(number, line) if fmt == "text" else _json_item(number, line)
        if isinstance(found, BatchItem) and found.key in seen:
            found = BadLine(number, f"id {found.id!r} was already used on line {seen[found.key]}")
        if isinstance(found, BadLine):
            problems.append(found)
        else:
            seen[found.key] = number
            items.append(found)
    return BatchInput(tuple(items), tuple(problems))


def _text_item(number: int, line: str) -> BatchItem:
    return BatchItem(number, line, number)


def _json_item(number: int, line: str) -> BatchItem | BadLine:
    try:
        value = json.loads(line)
    except json.JSONDecodeError as exc:
        return BadLine(number, f"not valid JSON ({exc.msg}): {_clip(line)!r}")
    except RecursionError:
        return BadLine(number, f"JSON nested too deeply to read: {_clip(line)!r}")
    if isinstance(value, str):
        return _checked(number, number, value)
    if not isinstance(value, dict):
        return BadLine(
            number, f"expected a string or an object with 'request', got {_clip(line)!r}"
        )
    return _object_item(number, value)


def _object_item(number: int, value: dict[str, Any]) -> BatchItem | BadLine:
    request = value.get("request")
    if not isinstance(request, str):
        return BadLine(number, f"the object needs a 'request' string, got {request!r}")
    ident = value.get("id", number)
    if isinstance(ident, bool) or not isinstance(ident, str | int) or str(ident).strip() == "":
        return BadLine(number, f"'id' must be a non-empty string or a whole number, got {ident!r}")
    return _checked(number, ident, request)


def _checked(number: int, ident: str | int, request: str) -> BatchItem | BadLine:
    if not request.strip():
        return BadLine(number, "the request is empty")
    return BatchItem(ident, request, number)


def _clip(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
