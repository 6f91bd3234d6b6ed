"""Small frozen event records, and the bus that hands them to subscribers.

The core emits these; it never prints. The display, the journal and library users subscribe.
``t`` is seconds since the run started (monotonic clock). ``run_id`` names the run an event
belongs to (stamped by the engine through ``EventBus.for_run``), so subscribers can tell
concurrent runs on one bus apart; it is empty for events outside a run (``Overseer.plan``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from overseer.usage import Usage

__all__ = [
    "Event",
    "EventBus",
    "JoinerDecided",
    "JournalProblem",
    "NodeCallFinished",
    "NodeCallStarted",
    "NodeFinished",
    "NodeStarted",
    "PlanReady",
    "PlanRejected",
    "PlanningProgress",
    "PlanningStarted",
    "RunAborted",
    "RunFinished",
    "RunStarted",
    "StepCancelled",
    "StepFailed",
    "StepFinished",
    "StepPlanned",
    "StepRetrying",
    "StepSkipped",
    "StepStarted",
    "Subscriber",
    "UsageRecorded",
]


@dataclass(frozen=True)
class Event:
    t: float
    run_id: str = field(default="", kw_only=True)


@dataclass(frozen=True)
class RunStarted(Event):
    """A run began. ``settings`` are the run's non-secret settings (backend URL, models, caps,
    policy, timeout, budget), so that ``resume`` can continue with them; ``batch_id`` names the
    batch the run belongs to, if any."""

    run_id: str = field()
    request: str
    settings: dict[str, Any] = field(default_factory=dict, kw_only=True)
    batch_id: str | None = field(default=None, kw_only=True)


@dataclass(frozen=True)
class PlanningStarted(Event):
    """The planner's call for round ``round`` began (round 1 is the first plan)."""

    round: int = 1


@dataclass(frozen=True)
class PlanningProgress(Event):
    """The planner's reply is arriving: ``tokens`` received so far, ``elapsed`` seconds since its
    call began. Emitted at most a few times a second."""

    tokens: int
    elapsed: float
    round: int = 1


@dataclass(frozen=True)
class StepPlanned(Event):
    """A step of round ``round`` arrived (from a streamed plan, or a replan) and was accepted: it
    is valid and has gone to the executor, which starts it as soon as its dependencies allow."""

    step: Any  # overseer.core.plan.Step
    round: int = 1


@dataclass(frozen=True)
class JoinerDecided(Event):
    """After round ``round`` the joiner chose to ``answer`` or to ``replan`` (a new round)."""

    round: int
    decision: str
    reason: str = ""


@dataclass(frozen=True)
class PlanRejected(Event):
    """The planner got an invalid plan and will ask again (``attempt`` counts from 1)."""

    attempt: int
    problems: tuple[str, ...]


@dataclass(frozen=True)
class PlanReady(Event):
    """The plan of round ``round`` is complete and valid (for a streamed plan: every step has
    arrived; ``plan`` holds them all)."""

    plan: Any  # overseer.core.plan.Plan; Any keeps this module free of pydantic
    warnings: tuple[str, ...] = ()
    round: int = 1


@dataclass(frozen=True)
class StepStarted(Event):
    step_id: str
    attempt: int = 1


@dataclass(frozen=True)
class StepRetrying(Event):
    step_id: str
    attempt: int
    error: str


@dataclass(frozen=True)
class StepFinished(Event):
    step_id: str
    output: str
    duration: float
    attempts: int = 1


@dataclass(frozen=True)
class StepFailed(Event):
    step_id: str
    error: str
    duration: float
    attempts: int = 1


@dataclass(frozen=True)
class StepSkipped(Event):
    step_id: str
    reason: str


@dataclass(frozen=True)
class StepCancelled(Event):
    step_id: str
    reason: str


@dataclass(frozen=True)
class UsageRecorded(Event):
    """Tokens spent; ``step_id`` is None for the planner and the final answer."""

    usage: Usage
    step_id: str | None = None
    purpose: str = "step"
    model: str = ""


@dataclass(frozen=True)
class RunFinished(Event):
    status: str
    reason: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RunAborted(Event):
    """The run raised instead of finishing (no plan, a configuration error, Ctrl-C while
    planning): no ``RunFinished`` follows, the exception reaches the caller. ``status`` is
    "failed" or "cancelled"."""

    status: str
    reason: str


@dataclass(frozen=True)
class JournalProblem(Event):
    """The run journal could not record this run (damaged, locked, unwritable); the run goes on."""

    message: str


@dataclass(frozen=True)
class NodeStarted(Event):
    """A code step's node process started. ``attempt`` counts from 1 (2 after the model's fix);
    ``isolation`` is the sandbox in force (``overseer.nodes.isolation.Isolation.as_dict()``)."""

    step_id: str | None
    attempt: int
    isolation: dict[str, Any]


@dataclass(frozen=True)
class NodeFinished(Event):
    """A node process ended; ``error`` is None when it succeeded; ``calls`` counts its calls;
    ``stderr`` is the end (64 KiB at most) of what it wrote there, whole tracebacks included."""

    step_id: str | None
    attempt: int
    duration: float
    error: str | None
    calls: int = 0
    stderr: str = ""


@dataclass(frozen=True)
class NodeCallStarted(Event):
    """A node asked for a tool call (``call_id`` is unique within the node)."""

    step_id: str | None
    call_id: int
    tool: str


@dataclass(frozen=True)
class NodeCallFinished(Event):
    """A node's tool call ended; ``error`` is None when it succeeded. Its tokens count in the
    code step's usage, recorded when the step ends."""

    step_id: str | None
    call_id: int
    tool: str
    duration: float
    error: str | None
    usage: Usage = Usage()
    attempts: int = 1


Subscriber = Callable[[Event], None]


class EventBus:
    """Thread-safe fan-out. A subscriber that raises is dropped from that event, never the run."""

    def __init__(self) -> None:
        # Replaced whole, never changed in place: an emit reads it without taking the lock
        # (two events per step on the hot path), and sees a subscription whole or not at all.
        self._subscribers: tuple[Subscriber, ...] = ()
        self._lock = threading.Lock()

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        with self._lock:
            self._subscribers = (*self._subscribers, subscriber)

        def unsubscribe() -> None:
            with self._lock:
                if subscriber in self._subscribers:
                    left = list(self._subscribers)
                    left.remove(subscriber)
                    self._subscribers = tuple(left)

        return unsubscribe

    def emit(self, event: Event) -> None:
        for subscriber in self._subscribers:
            try:
                subscriber(event)
            except Exception:
                continue

    def for_run(self, run_id: str) -> EventBus:
        """A view of this bus that stamps ``run_id`` on every event emitted through it."""
        return _RunView(self, run_id)

    @property
    def emit_stamped(self) -> Callable[[Event], None]:
        """``emit`` for events that carry their run id already (the executor stamps its own):
        a view passes them on unchanged, so this is its parent's ``emit``, one call fewer per
        event."""
        return self.emit


class _RunView(EventBus):
    """Emits into its parent bus with the run's id; subscribing subscribes to the parent."""

    def __init__(self, parent: EventBus, run_id: str) -> None:
        super().__init__()
        self._parent = parent
        self.run_id = run_id

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        return self._parent.subscribe(subscriber)

    def emit(self, event: Event) -> None:
        self._parent.emit(event if event.run_id else replace(event, run_id=self.run_id))

    @property
    def emit_stamped(self) -> Callable[[Event], None]:
        return self._parent.emit_stamped
