"""One planning round of a run: planner calls (streamed where the backend can) and their repairs.

A round's steps are handed over one by one (``RoundHooks.on_step``) as they are accepted, so the
executor starts them while the reply is still being written. The rules are those of
``overseer.planning.streaming``; this module makes the calls and the re-asks: the whole plan
again while no step of the round was accepted (as a plan that did not stream), else the rest.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from overseer.backends.chat import ChatClient, ChatReply, ChatRequest, Message
from overseer.config import PlannerSettings
from overseer.config.templates import render
from overseer.core.plan import Step, plan_json_schema
from overseer.errors import Cancelled, PlanError, PlanValidationError
from overseer.planning.planner import give_up_message, repair_messages
from overseer.planning.streaming import Progress, StepGate, StepStream, plan_items
from overseer.usage import Usage

__all__ = ["RoundHooks", "RoundPlanner", "RoundResult", "Schema"]

Schema = tuple[dict[str, Any], str]
"""A JSON Schema for the reply and its name."""

Ready = Callable[[Mapping[str, Any]], bool]

_CUT_OFF = "the reply was cut off at the token limit before the plan was complete"


def _nothing(*_: object) -> None:
    """A hook nobody asked for."""


@dataclass
class RoundHooks:
    """Where a round reports: each accepted step, each call's start, its progress (pieces so
    far, seconds since the call began), its tokens, and each rejected reply's problems."""

    on_step: Callable[[Step], None] = _nothing
    on_call: Callable[[], None] = _nothing
    on_progress: Callable[[int, float], None] = _nothing
    on_usage: Callable[[Usage, str], None] = _nothing
    on_reject: Callable[[int, list[str]], None] = _nothing


@dataclass(frozen=True)
class RoundResult:
    """The steps the round accepted (in order), its tokens and calls, and the JSON value of its
    first reply (the joiner's decision; None when it could not be read)."""

    steps: tuple[Step, ...]
    usage: Usage
    attempts: int
    first: Any = None


@dataclass
class _Call:
    """One planner call as its reply arrives: the stream, the gate, what went wrong."""

    stream: StepStream
    gate: StepGate
    hooks: RoundHooks
    progress: Progress
    handled: int = 0
    problems: list[str] = field(default_factory=list)
    whole: bool = False
    value: Any = None

    def delta(self, piece: str) -> None:
        """``ChatRequest.on_delta``: a piece of the reply, or ``""`` when an attempt starts."""
        if not piece:
            self.stream.restart()
            return
        self.progress.piece(piece)
        for index, raw in self.stream.feed(piece):
            self.take(index, raw)

    def take(self, index: int, raw: Any) -> None:
        """Offer the step object at ``index`` once (an earlier attempt may have offered it)."""
        if index < self.handled:
            return
        self.handled = index + 1
        if self.gate.refused:
            return
        verdict = self.gate.offer(raw, index + 1)
        for step in verdict.steps:
            self.hooks.on_step(step)
        if verdict.problems:
            self.problems, self.whole = list(verdict.problems), verdict.whole

    def finish(self, reply: ChatReply, ready: Ready | None) -> list[str]:
        """The problems of the reply once it is whole (empty when the round may end)."""
        if _cut_off(reply):  # what streamed in stands; the rest was never written
            return self.problems or [_CUT_OFF]
        try:
            self.value, rest = self.stream.finish(reply.text)
        except PlanValidationError as exc:
            return self.problems or exc.problems
        if ready is not None and not _is_ready(self.value, ready):
            return []
        try:
            plan_items(self.value.get("steps") if _joined(self.value, ready) else self.value)
        except PlanValidationError as exc:
            return self.problems or exc.problems
        for index, raw in rest:
            self.take(index, raw)
        return self._final_problems()

    def _final_problems(self) -> list[str]:
        if self.problems:
            return self.problems
        return [] if self.gate.accepted else ["the plan has no steps"]


def _cut_off(reply: ChatReply) -> bool:
    return reply.finish_reason == "length"


def _is_ready(value: Any, ready: Ready) -> bool:
    return isinstance(value, Mapping) and ready(value)


def _joined(value: Any, ready: Ready | None) -> bool:
    return ready is not None and isinstance(value, Mapping)


@dataclass
class RoundPlanner:
    """Makes a round's planner calls: the first (``run``'s ``opening``), then the re-asks."""

    chat: ChatClient
    settings: PlannerSettings
    tool_names: Sequence[str]
    model: str | None = None
    hooks: RoundHooks = field(default_factory=RoundHooks)
    cancel: threading.Event = field(default_factory=threading.Event)
    stream: bool = True

    def run(
        self,
        opening: list[Message],
        gate: StepGate,
        first: Schema,
        ready: Ready | None = None,
        *,
        start: list[Message] | None = None,
    ) -> RoundResult:
        """Ask, check, re-ask: the round's accepted steps, or ``PlanError``.

        ``ready`` (the joiner): the first reply's steps count only when it holds for the reply's
        object; when it does not, the round ends at once with no steps (the reply was an answer).
        ``start``: the first call's messages when they are not ``opening`` (a resumed round that
        asks for the rest of its plan).
        """
        messages, schema, usage = list(start or opening), first, Usage()
        problems: list[str] = []
        decided: Any = None
        for attempt in range(1, self.settings.max_repairs + 2):
            reply, call, problems = self._call(messages, gate, schema, ready, attempt)
            usage += reply.usage
            if attempt == 1:
                decided = call.value
                if ready is not None and not _is_ready(decided, ready):
                    return RoundResult((), usage, 1, decided)
            if not problems:
                return RoundResult(tuple(gate.accepted), usage, attempt, decided)
            self.hooks.on_reject(attempt, problems)
            if call.whole and gate.accepted:
                raise PlanError(f"the plan cannot be used: {'; '.join(problems)}", problems)
            messages, schema = self._again(opening, messages, reply, problems, gate)
            if ready is not None:
                schema = self.rest_schema()  # a mended replan is a list of steps, no decision
            else:
                schema = first if not gate.accepted else schema
        raise PlanError(give_up_message(self.settings.max_repairs + 1, problems), problems)

    def _call(
        self,
        messages: list[Message],
        gate: StepGate,
        schema: Schema,
        ready: Ready | None,
        attempt: int,
    ) -> tuple[ChatReply, _Call, list[str]]:
        ready = ready if attempt == 1 else None  # only the first reply carries a decision
        gate.reopen()
        call = _Call(StepStream(ready=ready), gate, self.hooks, Progress(self.hooks.on_progress))
        self.hooks.on_call()
        reply = self.chat.complete(self._request(messages, schema, call))
        self.hooks.on_usage(reply.usage, reply.model)
        if self.cancel.is_set():  # a client that cannot abort a call returned after the cancel
            raise Cancelled("planning was cancelled")
        return reply, call, call.finish(reply, ready)

    def _request(self, messages: list[Message], schema: Schema, call: _Call) -> ChatRequest:
        return ChatRequest(
            messages=list(messages),
            model=self.model,
            temperature=self.settings.temperature,
            max_tokens=self.settings.max_tokens,
            schema=schema[0],
            schema_name=schema[1],
            cancel=self.cancel,
            on_delta=call.delta if self.stream else None,
        )

    def _again(
        self,
        opening: list[Message],
        messages: list[Message],
        reply: ChatReply,
        problems: list[str],
        gate: StepGate,
    ) -> tuple[list[Message], Schema]:
        """The next request: the whole plan again while nothing was accepted, else the rest."""
        if not gate.accepted:
            return messages + repair_messages(reply.text, problems), self.rest_schema()
        return opening + rest_messages(gate, problems), self.rest_schema()

    def rest_schema(self) -> Schema:
        """The schema of a reply that continues a plan: free step ids (they continue)."""
        return plan_json_schema(self.tool_names), "plan"


def rest_messages(gate: StepGate, problems: list[str]) -> list[Message]:
    """The accepted steps as the model's own words, then the ask for the rest only."""
    accepted = {"steps": [step.model_dump(mode="json") for step in gate.accepted]}
    listed = "\n".join(f"- {p}" for p in problems)
    ask = render(
        "planner_rest.md",
        problems=listed,
        accepted=", ".join(s.step_id for s in gate.accepted),
        next_id=gate.next_id(),
    )
    return [
        {"role": "assistant", "content": json.dumps(accepted, ensure_ascii=False)},
        {"role": "user", "content": ask},
    ]
