"""Few-shot plans picked by similarity to the request, from a pool in ``prompts/``.

A small model copies a few-shot plan whose request looks like the user's one ("write a joke and
translate it to French and Spanish" became the example's plan, word for word). So the prompt shows
only the ``count`` examples of ``prompts/plan_examples_pool.json`` that share the most words with
the request: their shape (how many steps, which wait for which, which tool) is the one the request
needs, while their subjects (a riddle about Bram, the ferry at 9:30) cannot pass for the user's.
Pure Python word overlap: no embeddings, no new dependency.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from overseer.config.resources import read_prompt

__all__ = ["POOL_FILE", "format_examples", "load_pool", "pick_examples", "words"]

POOL_FILE = "plan_examples_pool.json"
DEFAULT_COUNT = 2

# Words that say nothing about a plan's shape; "and", "then", "translate", "what" stay.
_FILLER = frozenset(
    {"a", "an", "the", "it", "its", "to", "of", "in", "into", "on", "is", "are", "be", "me"}
    | {"my", "i", "you", "for", "about", "with", "this", "that", "these", "please", "some"}
)
_WORD = re.compile(r"[a-z]+|[0-9]+|[%'?]")
_NUMBER = "0"


def words(text: str) -> frozenset[str]:
    """The lowercase words of ``text`` that can tell plans apart: a plural ``s`` dropped, every
    number the same word, and ``%``, ``'`` (quoted text) and ``?`` (a question) kept as words."""
    found = set()
    for word in _WORD.findall(text.lower()):
        if word.isdigit():
            word = _NUMBER
        elif len(word) > 3 and word.endswith("s"):
            word = word[:-1]
        found.add(word)
    return frozenset(found - _FILLER)


def _weights(requests: Sequence[str]) -> dict[str, float]:
    """Rarer words weigh more: one over how many pool requests use the word."""
    counts: dict[str, int] = {}
    for request in requests:
        for word in words(request):
            counts[word] = counts.get(word, 0) + 1
    return {word: 1.0 / count for word, count in counts.items()}


def load_pool() -> list[dict[str, Any]]:
    """The example plans of ``prompts/plan_examples_pool.json``."""
    data: list[dict[str, Any]] = json.loads(read_prompt(POOL_FILE))
    return data


def _usable(example: dict[str, Any], known: set[str]) -> bool:
    return {s["tool"] for s in example["plan"]["steps"]} <= known


def pick_examples(
    request: str,
    tool_names: Sequence[str],
    count: int = DEFAULT_COUNT,
    pool: Sequence[dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """The ``count`` usable examples sharing most words with ``request``; ties keep pool order."""
    known, asked = set(tool_names), words(request)
    usable = [e for e in (load_pool() if pool is None else pool) if _usable(e, known)]
    weight = _weights([e["request"] for e in usable])

    def overlap(example: dict[str, Any]) -> float:
        return sum(weight[w] for w in asked & words(example["request"]))

    ranked = sorted(enumerate(usable), key=lambda item: (-overlap(item[1]), item[0]))
    return [example for _, example in ranked[:count]]


def format_examples(request: str, tool_names: Sequence[str], count: int = DEFAULT_COUNT) -> str:
    """The picked examples as request/plan pairs for the planner's prompt."""
    blocks = [
        f"Request: {e['request']}\nPlan: {json.dumps(e['plan'], ensure_ascii=False)}"
        for e in pick_examples(request, tool_names, count)
    ]
    return "\n\n".join(blocks) or "(none)"
