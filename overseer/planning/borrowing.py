"""Words a plan took from the few-shot examples instead of the request.

A small model shown "Write a riddle about a lighthouse keeper named Bram" for the request "write a
joke" writes "Write a joke about a lighthouse keeper named Bram": the example's subject leaks into
the plan. ``Borrowing`` holds the words that only the shown examples have, and finds them in a
step description: ``benchmarks/bench_local_planning.py`` counts such plans. (Sending such a plan
back with the words to drop was tried: SmolLM2-135M kept them, or copied another example; see
``benchmarks/results/README.md``.)

A word is borrowed when it is in a shown example (its request or a step description) and in none
of: the request, the chat context, the planner's system prompt (its rules and tool lines: "count",
"translate", "poems" are the plan's own words), and a short list of words any plan may use. Words
are compared lowercase with a plural ``s`` dropped; numbers count as words ("four facts" when the
request asked for five is borrowed).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Borrowing", "borrowing_of", "content_words"]

_TOKEN = re.compile(r"[a-z]+|[0-9]+")

# Words any step description may use whatever the request: articles, links, the verbs and nouns
# a plan writes around the request's subject (``Compute 15% of 240``, ``Say how tall ...``).
_COMMON = frozenset(
    {"a", "an", "the", "it", "its", "to", "of", "in", "into", "on", "is", "are", "be", "by"}
    | {"at", "as", "or", "and", "then", "for", "about", "with", "from", "this", "that", "these"}
    | {"those", "them", "their", "they", "what", "which", "how", "who", "each", "both", "all"}
    | {"s", "compute", "multiplied", "product", "result", "give", "say", "describe", "compare"}
    | {"list", "summarize", "summary", "translate", "translation", "write", "count", "word"}
    | {"sentence", "line", "short", "one", "two", "version", "text", "named", "called"}
)


def _normal(token: str) -> str:
    return token[:-1] if len(token) > 3 and token.endswith("s") else token


def content_words(text: str) -> frozenset[str]:
    """The lowercase words and numbers of ``text``, a plural ``s`` dropped."""
    return frozenset(_normal(t) for t in _TOKEN.findall(text.lower()))


@dataclass(frozen=True)
class Borrowing:
    """The words only the shown examples have (``foreign``); empty when nothing can leak."""

    foreign: frozenset[str] = frozenset()

    def words_in(self, description: str) -> list[str]:
        """The borrowed words of ``description``, as written there, in order, once each."""
        found: list[str] = []
        seen: set[str] = set()
        for match in re.finditer(r"[A-Za-z]+|[0-9]+", description):
            word = _normal(match.group().lower())
            if word in self.foreign and word not in seen:
                seen.add(word)
                found.append(match.group())
        return found


def _example_text(example: Mapping[str, Any]) -> Iterable[str]:
    yield str(example["request"])
    for step in example["plan"]["steps"]:
        yield str(step["description"])


def borrowing_of(
    examples: Sequence[Mapping[str, Any]], request: str, context: str = "", allowed: str = ""
) -> Borrowing:
    """What a plan of ``request`` (after ``context``) would borrow from ``examples``; the words
    of ``allowed`` (the system prompt) are never borrowed."""
    shown = frozenset().union(*(content_words(t) for e in examples for t in _example_text(e)))
    own = content_words(request) | content_words(context) | content_words(allowed)
    return Borrowing(frozenset(shown - own - _COMMON))
