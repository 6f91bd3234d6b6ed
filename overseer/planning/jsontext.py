"""Lenient JSON extraction from model replies.

Models wrap JSON in prose or Markdown fences. ``extract_json`` tries, in order: the whole text, the
fenced blocks (```json first, then bare ```), and the first balanced ``{...}`` or ``[...]`` in the
prose that parses.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

__all__ = ["extract_json"]

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n`]*\n?(.*?)```", re.DOTALL)
_JSON_TAGS = frozenset({"json", "json5", "jsonc"})
_CLOSERS = {"{": "}", "[": "]"}
_PREVIEW = 80


def extract_json(text: str) -> Any:
    """The first JSON value found in ``text``; ``ValueError`` when there is none."""
    for candidate in _candidates(text):
        try:
            return json.loads(candidate)
        except ValueError:
            continue
    raise ValueError(f"no JSON value could be found in the reply {_preview(text)!r}")


def _candidates(text: str) -> Iterator[str]:
    yield text.strip().lstrip("\ufeff")
    yield from _fenced_blocks(text)
    yield from _balanced_spans(text)


def _fenced_blocks(text: str) -> Iterator[str]:
    """Fenced block bodies: those tagged as JSON first, then untagged ones."""
    blocks = [(m.group(1).lower(), m.group(2)) for m in _FENCE.finditer(text)]
    yield from (body for tag, body in blocks if tag in _JSON_TAGS)
    yield from (body for tag, body in blocks if not tag)


def _balanced_spans(text: str) -> Iterator[str]:
    """Each balanced ``{...}``/``[...]`` span, from each opening bracket in turn."""
    for start, char in enumerate(text):
        if char in _CLOSERS:
            end = _matching_close(text, start)
            if end is not None:
                yield text[start : end + 1]


def _matching_close(text: str, start: int) -> int | None:
    """Index of the bracket closing ``text[start]``, skipping brackets inside strings."""
    stack: list[str] = []
    in_string = escaped = False
    for index in range(start, len(text)):
        char = text[index]
        if in_string:
            in_string, escaped = _string_step(char, escaped)
        elif char == '"':
            in_string = True
        elif char in _CLOSERS:
            stack.append(_CLOSERS[char])
        elif char in "}]":
            if char != stack.pop():
                return None
            if not stack:
                return index
    return None


def _string_step(char: str, escaped: bool) -> tuple[bool, bool]:
    """Inside a string: (still inside?, is the next character escaped?)."""
    if escaped:
        return True, False
    return char != '"', char == "\\"


def _preview(text: str) -> str:
    return text if len(text) <= _PREVIEW else text[:_PREVIEW] + "…"
