"""Lenient JSON extraction from model replies, bounded in time and memory.

Models wrap JSON in prose or Markdown fences. ``extract_json`` tries, in order: the whole text, the
fenced blocks (```json first, then bare ```), and the first balanced ``{...}`` or ``[...]`` in the
prose that parses.

A reply is untrusted text, so every step here is linear in its length: one scan finds every
balanced span (quadratic when done from each opening bracket in turn: 20 KB of ``{`` took a
minute), the fence pattern cannot backtrack, a reply over ``MAX_TEXT_CHARS`` is refused, a value
nested deeper than ``MAX_DEPTH`` is refused before ``json`` recurses into it, and the spans tried
are capped in number and in total length.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

__all__ = ["MAX_DEPTH", "MAX_TEXT_CHARS", "QUOTE_BACK_CHARS", "clip", "extract_json"]

MAX_TEXT_CHARS = 1_000_000
"""The longest reply read (a plan of 1,000 steps of 500 characters each is half of it)."""

MAX_DEPTH = 100
"""The deepest nesting of ``{}``/``[]`` accepted (a plan needs 4 levels)."""

QUOTE_BACK_CHARS = 16_000
"""How much of a bad reply a repair request quotes back (a 5 MB reply made a 9.8 MB request)."""

_MAX_SPANS = 200
"""Balanced spans tried at most: prose before a plan holds a few brackets, not hundreds."""

_SPAN_WORK = 4
"""The spans tried may add up to this many times the text's length, at most."""

# Possessive header: a backtracking one took 23 s on "```" followed by 2,000 letters.
_FENCE = re.compile(r"```[ \t]*+([A-Za-z0-9_+-]*+)[^\n`]*+\n?(.*?)```", re.DOTALL)
_JSON_TAGS = frozenset({"json", "json5", "jsonc"})
_CLOSERS = {"{": "}", "[": "]"}
_STRUCTURE = re.compile(r'[{}\[\]"]')
_STRING_REST = re.compile(r'(?:[^"\\]++|\\.)*+"', re.DOTALL)
_PREVIEW = 80
_TOO_DEEP = f"the reply's JSON is nested more than {MAX_DEPTH} levels deep"


def extract_json(text: str) -> Any:
    """The first JSON value found in ``text``; ``ValueError`` when there is none."""
    if len(text) > MAX_TEXT_CHARS:
        raise ValueError(
            f"the reply is too long to read ({len(text):,} characters; "
            f"the limit is {MAX_TEXT_CHARS:,})"
        )
    whole = text.strip().lstrip("\ufeff")
    if _nested_deeper_than(whole, MAX_DEPTH):  # refused outright: no part of it is searched
        raise ValueError(_TOO_DEEP)
    too_deep = False
    for candidate in _candidates(text, whole):
        if candidate is None:
            too_deep = True
            continue
        try:
            return json.loads(candidate)
        except (ValueError, RecursionError):
            continue
    if too_deep:
        raise ValueError(_TOO_DEEP)
    raise ValueError(f"no JSON value could be found in the reply {_preview(text)!r}")


def clip(text: str, limit: int = QUOTE_BACK_CHARS) -> str:
    """``text`` cut to ``limit`` characters, saying how much was left out (to quote it back)."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}\n[… {len(text) - limit:,} more characters not shown]"


def _candidates(text: str, whole: str) -> Iterator[str | None]:
    """The texts to try in turn; ``None`` stands for one skipped as nested too deep."""
    yield whole
    yield from (_shallow(block) for block in _fenced_blocks(text))
    yield from _spans(text, _SPAN_WORK * len(text))


def _shallow(candidate: str) -> str | None:
    return None if _nested_deeper_than(candidate, MAX_DEPTH) else candidate


def _fenced_blocks(text: str) -> Iterator[str]:
    """Fenced block bodies: those tagged as JSON first, then untagged ones."""
    blocks = [(m.group(1).lower(), m.group(2)) for m in _FENCE.finditer(text)]
    yield from (body for tag, body in blocks if tag in _JSON_TAGS)
    yield from (body for tag, body in blocks if not tag)


def _spans(text: str, work: int) -> Iterator[str | None]:
    """The balanced spans to try: at most ``_MAX_SPANS``, of at most ``work`` characters in all
    (longer ones skipped), none inside one nested too deep. Each is cut out only when tried:
    nested spans would add up to the square of the length."""
    tried, deep_until = 0, -1
    for start, end in _balanced_spans(text):
        if end <= deep_until or end - start >= work:
            continue
        if tried == _MAX_SPANS:
            return
        tried, work = tried + 1, work - (end - start + 1)
        span = _shallow(text[start : end + 1])
        if span is None:
            deep_until = end
        yield span


def _balanced_spans(text: str) -> list[tuple[int, int]]:
    """Where each balanced ``{...}``/``[...]`` span starts and ends, by its opening bracket.

    One scan with a stack: a closing bracket that matches the top closes that span; one that does
    not ends every span still open (each of them would meet it unmatched). Quotes count only
    inside brackets, so an apostrophe or inch mark in the prose changes nothing.
    """
    spans: list[tuple[int, int]] = []
    stack: list[tuple[int, str]] = []
    position = 0
    while (found := _STRUCTURE.search(text, position)) is not None:
        index, char = found.start(), found.group()
        position = index + 1
        if char == '"':
            position = _string_end(text, position) if stack else position
        elif char in _CLOSERS:
            stack.append((index, _CLOSERS[char]))
        elif stack and stack[-1][1] == char:
            spans.append((stack.pop()[0], index))
        else:
            stack.clear()
    spans.sort()
    return spans


def _string_end(text: str, position: int) -> int:
    """Just past the quote closing the string whose body starts at ``position`` (or the end)."""
    rest = _STRING_REST.match(text, position)
    return len(text) if rest is None else rest.end()


def _nested_deeper_than(candidate: str, limit: int) -> bool:
    """Whether ``candidate``, read as JSON, nests brackets more than ``limit`` deep."""
    depth = 0
    position = 0
    while (found := _STRUCTURE.search(candidate, position)) is not None:
        char = found.group()
        position = found.end()
        if char == '"':
            position = _string_end(candidate, position)
        elif char in _CLOSERS:
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


def _preview(text: str) -> str:
    return text if len(text) <= _PREVIEW else text[:_PREVIEW] + "…"
