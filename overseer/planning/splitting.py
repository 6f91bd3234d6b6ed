"""One language a translation step: a step translating into several becomes one step per language.

The translator takes the one language its step names, yet a small model writes "Translate the
joke to French and Spanish" in one step even when its examples show one step per language (the
main job's plan did, on SmolLM2-135M). Such a step is split, as it arrives and before it is
checked, into one step per language: the same tool, the same dependencies, so the translations
run at the same time. The languages are the capitalised words listed after "to", "into" or
"in" and joined by "and" ("to French and Spanish", "into Welsh, Icelandic and Malay"); quoted
text is never read for them.

Step ids stay ``step1``, ``step2``, ... in order: the split steps take the next ids, the reply's
later steps move up by as many, and a later step that needed the merged step needs every one of
its parts. Only ``stepN`` ids are renumbered; a plan with other ids is left as it is.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from overseer.core.plan import Plan, Step

__all__ = ["SPLIT_TOOLS", "Splitter", "languages_of", "split_plan"]

SPLIT_TOOLS = frozenset({"translator"})
"""The tools whose steps take one language each."""

_NAME = r"[A-Z][a-z]+"
_LIST = re.compile(
    rf"\b(?:to|into|in)\s+(?P<names>{_NAME}(?:\s*,\s*{_NAME})*\s*,?\s+and\s+{_NAME})\b"
)
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
_STEP_ID = re.compile(r"step([0-9]+)")


def _masked(text: str) -> str:
    """``text`` with its quoted parts blanked out (same length, so positions hold)."""
    return _QUOTED.sub(lambda m: "_" * len(m.group()), text)


def languages_of(description: str) -> list[str]:
    """``description`` once per language it translates into (two or more), or ``[]``."""
    if "translat" not in description.lower():
        return []
    found = _LIST.search(_masked(description))
    if found is None:
        return []
    start, end = found.span("names")
    names = re.findall(_NAME, description[start:end].replace(" and ", ", "))
    head, tail = description[:start], description[end:]
    return [f"{head}{name}{tail}" for name in dict.fromkeys(names)]


@dataclass
class Splitter:
    """Splits the steps of one reply in the order they arrive, renumbering what follows."""

    tools: frozenset[str] = SPLIT_TOOLS
    _offset: int = 0
    _ids: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def reset(self) -> None:
        """A new reply: its ids are the model's own again."""
        self._offset = 0
        self._ids.clear()

    def split(self, step: Step) -> list[Step]:
        """``step`` in this reply's numbering: itself, or one step per language it names."""
        depends = tuple(
            dict.fromkeys(d for dep in step.depends_on for d in self._ids.get(dep, (dep,)))
        )
        number = _STEP_ID.fullmatch(step.step_id)
        if number is None:
            return [step.model_copy(update={"depends_on": depends})]
        parts = languages_of(step.description) if step.tool in self.tools else []
        descriptions = parts or [step.description]
        ids = self._ids.get(step.step_id)
        if ids is None:
            ids = self._ids[step.step_id] = self._number(int(number.group(1)), len(descriptions))
        elif len(ids) != len(descriptions):  # the id again, split otherwise: the gate refuses it
            descriptions = [step.description]
        return _parts(step, ids, descriptions, depends)

    def _number(self, number: int, count: int) -> tuple[str, ...]:
        """The ids of the reply's step ``number`` split in ``count``; a step written again
        (a restarted reply, the same id twice) keeps the ids it had."""
        first = number + self._offset
        self._offset += count - 1
        return tuple(f"step{first + i}" for i in range(count))


def split_plan(plan: Plan, tools: frozenset[str] = SPLIT_TOOLS) -> Plan:
    """``plan`` with each translation step into several languages split (a whole plan, whose
    steps may come in any order: the ids become ``step1``, ``step2``, ... in the plan's order)."""
    if any(_STEP_ID.fullmatch(s.step_id) is None for s in plan.steps):
        return plan
    parts = {s.step_id: languages_of(s.description) if s.tool in tools else [] for s in plan.steps}
    if not any(parts.values()):
        return plan
    ids: dict[str, tuple[str, ...]] = {}
    taken = 0
    for step in plan.steps:
        count = len(parts[step.step_id]) or 1
        ids[step.step_id] = tuple(f"step{taken + i}" for i in range(1, count + 1))
        taken += count
    steps = []
    for step in plan.steps:
        depends = tuple(d for dep in step.depends_on for d in ids[dep])
        steps += _parts(step, ids[step.step_id], parts[step.step_id] or [step.description], depends)
    return Plan(steps=tuple(steps))


def _parts(
    step: Step, ids: Sequence[str], descriptions: Sequence[str], depends: tuple[str, ...]
) -> list[Step]:
    """``step`` as the steps ``ids`` with ``descriptions``, each needing ``depends``."""
    return [
        step.model_copy(update={"step_id": i, "description": d, "depends_on": depends})
        for i, d in zip(ids, descriptions, strict=True)
    ]
