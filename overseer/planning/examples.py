"""Few-shot plans picked by similarity to the request, from a pool in ``prompts/``.

A small model copies a few-shot plan whose request looks like the user's one ("write a joke and
translate it to French and Spanish" became the example's plan, word for word). So the planner is
shown only the ``count`` examples of ``prompts/plan_examples_pool.json`` that share the most words
with the request: their shape (how many steps, which wait for which, which tool) is the one the
request needs, while their subjects (a tongue twister, the ferry at 9:30) cannot pass for the
user's; the one the main job is closest to has no subject beyond its kind and languages, since
a subject of its own ("a lighthouse keeper named Bram") became the joke's. They go in as
earlier turns of the conversation (the example request asked, its plan as the answer), the
closest last: on SmolLM2-135M that scored better than the same examples inside
the system prompt and than two fixed examples (``benchmarks/bench_local_planning.py``).
Pure Python word overlap: no embeddings, no new dependency.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from overseer.backends.chat import Message
from overseer.config.resources import read_prompt
from overseer.config.templates import render

__all__ = ["POOL_FILE", "example_turns", "load_pool", "pick_examples", "words"]

POOL_FILE = "plan_examples_pool.json"
DEFAULT_COUNT = 3

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


def example_turns(
    request: str, tool_names: Sequence[str], count: int = DEFAULT_COUNT
) -> list[Message]:
    """The picked examples as earlier turns of the planner's conversation: each request asked as
    ``prompts/planner_user.md`` asks one, answered with its plan. The closest comes last, next to
    ``request``, where a small model looks hardest."""
    turns: list[Message] = []
    for example in reversed(pick_examples(request, tool_names, count)):
        asked = render("planner_user.md", request=example["request"], context="")
        turns.append({"role": "user", "content": asked})
        turns.append(
            {"role": "assistant", "content": json.dumps(example["plan"], ensure_ascii=False)}
        )
    return turns
