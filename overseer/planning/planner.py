"""Request -> ``Plan`` via the LLM, re-asking with the validation errors a bounded number of times.

Semantic re-asks live in the planning part only (here, and for streamed plans in ``rounds``);
transport retries live in ``llm.py``. This is the plan-then-run planner: the whole reply, then
the whole plan checked; it serves ``overseer plan``, ``planner.stream: false`` and backends that
cannot stream. ``prompts`` and the repair messages are shared with the streamed rounds.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from overseer.backends.chat import ChatClient, ChatReply, ChatRequest, Message
from overseer.config import PlannerSettings
from overseer.config.templates import render
from overseer.core.plan import Plan, group_warnings, parse_plan, plan_json_schema
from overseer.errors import PlanError, PlanValidationError
from overseer.planning import examples as few_shot
from overseer.planning.borrowing import Borrowing, borrowing_of
from overseer.planning.jsontext import clip, extract_json
from overseer.planning.splitting import split_plan
from overseer.usage import Usage

__all__ = ["PlanResult", "Planner", "give_up_message", "repair_messages"]

UsageSink = Callable[[Usage, str], None]
RejectSink = Callable[[int, list[str]], None]


@dataclass(frozen=True)
class PlanResult:
    plan: Plan
    usage: Usage
    attempts: int
    warnings: tuple[str, ...] = ()


@dataclass
class Planner:
    """Asks ``chat`` for a plan over the tools ``tool_names`` (described by ``tool_lines``)."""

    chat: ChatClient
    tool_names: Sequence[str]
    tool_lines: str
    settings: PlannerSettings = field(default_factory=PlannerSettings)
    model: str | None = None
    on_usage: UsageSink | None = None
    on_reject: RejectSink | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    """Set it to abort the planning call in flight (Ctrl-C)."""

    def plan(self, request: str, context: str = "") -> PlanResult:
        """A valid plan, or ``PlanError`` once ``max_repairs`` re-asks have failed too."""
        messages = self.opening(request, context)
        usage = Usage()
        problems: list[str] = []
        for attempt in range(1, self.settings.max_repairs + 2):
            reply = self.chat.complete(self._request(messages))
            usage += reply.usage
            self._count(reply)
            try:
                plan = self._parse(reply)
            except PlanValidationError as exc:
                problems = exc.problems
                self._rejected(attempt, problems)
                messages += repair_messages(reply.text, problems)
                continue
            return PlanResult(plan, usage, attempt, tuple(group_warnings(plan)))
        raise PlanError(give_up_message(self.settings.max_repairs + 1, problems), problems)

    def opening(self, request: str, context: str = "") -> list[Message]:
        """The messages that ask for a plan of ``request``: the system message, a few example
        requests of the pool answered with their plans (earlier turns, picked by similarity to
        ``request``: ``planning.examples``), then ``request`` itself."""
        user = render("planner_user.md", request=request, context=context)
        return [
            {"role": "system", "content": self._system()},
            *few_shot.example_turns(request, self.tool_names),
            {"role": "user", "content": user},
        ]

    def borrowing(self, request: str, context: str = "") -> Borrowing:
        """The words a plan of ``request`` would borrow from the examples ``opening`` shows."""
        shown = few_shot.pick_examples(request, self.tool_names)
        return borrowing_of(shown, request, context, self._system())

    def _system(self) -> str:
        return render("planner_system.md", tools=self.tool_lines, max_steps=self.settings.max_steps)

    def _request(self, messages: list[Message]) -> ChatRequest:
        return ChatRequest(
            messages=list(messages),
            model=self.model,
            temperature=self.settings.temperature,
            max_tokens=self.settings.max_tokens,
            schema=plan_json_schema(
                self.tool_names, self.settings.max_steps, ordered=self.settings.ordered_steps
            ),
            schema_name="plan",
            cancel=self.cancel,
        )

    def _parse(self, reply: ChatReply) -> Plan:
        if reply.finish_reason == "length":
            raise PlanValidationError(
                ["the reply was cut off at the token limit before the plan was complete"]
            )
        try:
            data = extract_json(reply.text)
        except ValueError as exc:
            raise PlanValidationError([f"the reply is not JSON: {exc}"]) from None
        plan = split_plan(parse_plan(data, self.tool_names, self.settings.max_steps))
        if len(plan.steps) > self.settings.max_steps:
            raise PlanValidationError([f"the plan has more than {self.settings.max_steps} steps"])
        return plan

    def _count(self, reply: ChatReply) -> None:
        if self.on_usage is not None:
            self.on_usage(reply.usage, reply.model)

    def _rejected(self, attempt: int, problems: list[str]) -> None:
        if self.on_reject is not None:
            self.on_reject(attempt, problems)


_REPLY_ECHO_LIMIT = 8000
"""Characters of a rejected reply sent back with its problems (a huge reply is cut)."""


def repair_messages(reply_text: str, problems: list[str]) -> list[Message]:
    """The rejected reply and the ask to mend it, to append to the conversation."""
    if len(reply_text) > _REPLY_ECHO_LIMIT:
        reply_text = reply_text[:_REPLY_ECHO_LIMIT] + " …(cut)"
    listed = "\n".join(f"- {p}" for p in problems)
    return [
        {"role": "assistant", "content": clip(reply_text)},  # a hostile reply may be huge
        {"role": "user", "content": render("planner_repair.md", problems=listed)},
    ]


def give_up_message(attempts: int, problems: list[str]) -> str:
    shown = "; ".join(problems[:5]) or "no usable reply"
    more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
    return f"no valid plan after {attempts} attempts: {shown}{more}"
