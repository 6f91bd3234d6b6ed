"""Streamed plans: each step goes to the executor the moment its object in the reply is complete.

The rules (the README's "Streamed plans" section says the same to users):

1. **Parsing.** The reply is parsed as it grows with pydantic_core's ``from_json`` (partial mode
   is not trusted to say where an object ends, so each closing brace that arrives is tried: the
   text up to it is parsed closed, as is or with the ``]}`` that would end the steps list). The
   JSON starts at the first ``{"`` or ``[{`` of the reply, so fenced or prose-wrapped replies
   (text mode) stream too. Anything the stream could not place is found when the reply ends,
   with the lenient ``extract_json``, as for a reply that came in one piece.
2. **Checks, in order.** Each complete step must be a well-formed step with a known tool and an
   id not used before, that depends only on steps already accepted (earlier in this reply, or
   finished in an earlier round). A translator step into several languages is first split into
   one step per language (``planning.splitting``; the reply's later ids move up by as many),
   each checked so. A valid step goes to the executor at once (``on_step``).
3. **A bad step mid-stream.** The first invalid step ends what is taken from that reply; the
   steps accepted before it keep running. When the reply ends, the planner is asked for the
   *rest* of the plan only, given the problems and the accepted steps (``planner_rest.md``),
   which are never re-run or re-asked; the rest streams the same way. At most
   ``planner.max_repairs`` re-asks in all.
4. **Whole-plan problems.** A reply with no plan in it, no steps, or cut off at the token
   limit is re-asked as a whole, as a plan that did not stream, while no step was accepted;
   once some were, it is the rest that is asked for. More than ``planner.max_steps`` steps in a
   round cannot be mended by asking for more: planning fails (exit 3) and the steps already
   started finish and are recorded.
5. **Retries.** A transport retry starts the reply over (``on_delta("")``): the steps accepted
   from the failed attempt are kept, and the new attempt's steps with those ids are skipped.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError
from pydantic_core import from_json

from overseer.core.plan import Step, pydantic_summary
from overseer.errors import PlanValidationError
from overseer.planning.jsontext import extract_json
from overseer.planning.splitting import Splitter

__all__ = ["Progress", "StepGate", "StepStream", "Verdict", "plan_items"]

_START = re.compile(r'\{\s*"|\[\s*\{')
_STREAM_LIMIT = 64_000
"""Characters of reply the stream parses as it grows; past that, the rest waits for the end."""
_BRACES_TRIED = 4
"""Closing braces of one piece tried, newest first (a brace may sit inside a string)."""


class StepStream:
    """The growing text of one reply; ``feed`` returns the step objects completed by a piece.

    ``key`` names the list of steps in the reply's object; ``ready`` says whether the object
    seen so far allows taking its steps (the joiner's ``"decision": "replan"``).
    """

    def __init__(
        self, key: str = "steps", ready: Callable[[Mapping[str, Any]], bool] | None = None
    ) -> None:
        self._key = key
        self._ready = ready
        self._text = ""
        self.seen = 0

    def restart(self) -> None:
        """A new attempt of the same call: its text starts over."""
        self._text = ""
        self.seen = 0

    def feed(self, piece: str) -> list[tuple[int, Any]]:
        """(index, step object) for each step object this piece completed, in order."""
        old = len(self._text)
        self._text += piece
        if "}" not in piece or len(self._text) > _STREAM_LIMIT:
            return []
        items = self._complete_items(old)
        fresh = list(enumerate(items))[self.seen :]
        self.seen = max(self.seen, len(items))
        return fresh

    def _complete_items(self, old: int) -> list[Any]:
        start = _START.search(self._text)
        if start is None:
            return []
        body = self._text[start.start() :]
        closer = "]}" if body[0] == "{" else "]"
        offset = start.start()
        for brace in _new_braces(self._text, max(old, offset)):
            cut = self._text[offset : brace + 1]
            for candidate in (cut, cut + closer):
                items = self._items_of(candidate)
                if items is not None:
                    return items
        return []

    def _items_of(self, candidate: str) -> list[Any] | None:
        try:
            value = from_json(candidate)
        except ValueError:
            return None
        return self.items(value)

    def items(self, value: Any) -> list[Any] | None:
        """The step objects of a parsed reply; None when it holds no usable list."""
        if isinstance(value, list):
            return value
        if not isinstance(value, Mapping):
            return None
        if self._ready is not None and not self._ready(value):
            return None
        steps = value.get(self._key)
        return steps if isinstance(steps, list) else None

    def finish(self, text: str) -> tuple[Any, list[tuple[int, Any]]]:
        """The whole reply, leniently: (its JSON value, the step objects not yet returned).
        Raises ``PlanValidationError`` when the reply holds no JSON at all."""
        try:
            value = extract_json(text)
        except (ValueError, RecursionError) as exc:
            raise PlanValidationError([f"the reply is not JSON: {exc}"]) from None
        items = self.items(value) or []
        return value, list(enumerate(items))[self.seen :]


def _new_braces(text: str, since: int) -> list[int]:
    """Positions of the closing braces at or after ``since``, newest first (a few at most)."""
    found: list[int] = []
    position = len(text)
    while len(found) < _BRACES_TRIED:
        position = text.rfind("}", since, position)
        if position < 0:
            break
        found.append(position)
    return found


def plan_items(value: Any) -> list[Any]:
    """The step objects of a whole plan reply, or ``PlanValidationError`` (today's rules)."""
    if isinstance(value, list):
        return value
    if not isinstance(value, Mapping) or "steps" not in value:
        raise PlanValidationError(['the plan must be a JSON object with a "steps" list'])
    steps = value["steps"]
    if not isinstance(steps, list):
        raise PlanValidationError([f'"steps" must be a list, got {type(steps).__name__}'])
    return steps


@dataclass(frozen=True)
class Verdict:
    """What the gate made of one step object: ``steps`` when accepted (more than one when it
    was split), else ``problems`` (``whole`` when the plan as a whole broke a rule);
    ``skipped`` for a repeat of a step already accepted (a restarted or rest reply that wrote
    it again)."""

    steps: tuple[Step, ...] = ()
    problems: tuple[str, ...] = ()
    whole: bool = False
    skipped: bool = False

    @property
    def step(self) -> Step | None:
        """The first step accepted, or None."""
        return self.steps[0] if self.steps else None


@dataclass
class StepGate:
    """Checks a round's step objects in the order they arrive (rule 2 of the module docstring).

    ``usable`` holds the ids later steps may depend on (finished steps of earlier rounds, then
    each accepted step); ``taken`` every id used in the run; ``limit`` the steps of one round.
    """

    tools: frozenset[str]
    limit: int
    usable: set[str] = field(default_factory=set)
    taken: set[str] = field(default_factory=set)
    accepted: list[Step] = field(default_factory=list)
    refused: bool = False
    splitter: Splitter = field(default_factory=Splitter)

    def offer(self, raw: Any, number: int) -> Verdict:
        """Check step object ``raw`` (the ``number``-th of its reply, from 1)."""
        try:
            step = Step.model_validate(raw)
        except ValidationError as exc:
            return self._refuse([f"step #{number} is malformed: {pydantic_summary(exc)}"])
        parts = [p for p in self.splitter.split(step) if p not in self.accepted]
        if not parts:
            return Verdict(skipped=True)
        if len(self.accepted) + len(parts) > self.limit:
            return self._refuse([f"the plan has more than {self.limit} steps"], whole=True)
        problems = [p for part in parts for p in self._problems(part)]
        if problems:
            return self._refuse(problems)
        for part in parts:
            self.accepted.append(part)
            self.usable.add(part.step_id)
            self.taken.add(part.step_id)
        return Verdict(steps=tuple(parts))

    def _problems(self, step: Step) -> list[str]:
        problems = []
        if step.step_id in self.taken:
            problems.append(f"step id {step.step_id!r} is used more than once")
        if step.tool not in self.tools:
            known = ", ".join(sorted(self.tools))
            problems.append(
                f"step {step.step_id!r} uses unknown tool {step.tool!r} (the tools are: {known})"
            )
        problems += [
            _bad_dependency(step.step_id, dep) for dep in step.depends_on if dep not in self.usable
        ]
        return problems

    def _refuse(self, problems: list[str], *, whole: bool = False) -> Verdict:
        self.refused = True
        return Verdict(problems=tuple(problems), whole=whole)

    def reopen(self) -> None:
        """A new reply (the rest of the plan) is about to be checked."""
        self.refused = False
        self.splitter.reset()

    def next_id(self) -> str:
        """The id the next step should have: ``stepN`` after the highest such id taken."""
        numbers = [int(i[4:]) for i in self.taken if i.startswith("step") and i[4:].isdigit()]
        return f"step{max(numbers, default=0) + 1}"


def _bad_dependency(step_id: str, dep: str) -> str:
    if dep == step_id:
        return f"step {step_id!r} depends on itself"
    return (
        f"step {step_id!r} depends on {dep!r}, which is not a step before it (list each step "
        "after the steps it needs, so that no dependency cycle can form)"
    )


@dataclass
class Progress:
    """Counts a reply's pieces (roughly its tokens) and reports at most every ``every`` s."""

    report: Callable[[int, float], None]
    every: float = 0.25
    clock: Callable[[], float] = time.monotonic
    tokens: int = 0
    started: float = field(default=0.0)
    _last: float = field(default=float("-inf"))

    def __post_init__(self) -> None:
        self.started = self.clock()

    def piece(self, text: str) -> None:
        if not text:
            return
        self.tokens += 1
        now = self.clock()
        if now - self._last >= self.every:
            self._last = now
            self.report(self.tokens, now - self.started)
