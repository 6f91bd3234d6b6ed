"""Small frozen event records, and the bus that hands them to subscribers.

The core emits these; it never prints. The display, the journal and library users subscribe.
``t`` is seconds since the run started (monotonic clock).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from overseer.usage import Usage

__all__ = [
    "Event",
    "EventBus",
    "PlanReady",
    "PlanRejected",
    "RunFinished",
    "RunStarted",
    "StepCancelled",
    "StepFailed",
    "StepFinished",
    "StepRetrying",
    "StepSkipped",
    "StepStarted",
    "Subscriber",
    "UsageRecorded",
]


@dataclass(frozen=True)
class Event:
    t: float


@dataclass(frozen=True)
class RunStarted(Event):
    run_id: str
    request: str


@dataclass(frozen=True)
class PlanRejected(Event):
    """The planner got an invalid plan and will ask again (``attempt`` counts from 1)."""

    attempt: int
    problems: tuple[str, ...]


@dataclass(frozen=True)
class PlanReady(Event):
    plan: Any  # overseer.plan.Plan; Any keeps this module free of pydantic
    warnings: tuple[str, ...] = ()


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


Subscriber = Callable[[Event], None]


class EventBus:
    """Thread-safe fan-out. A subscriber that raises is dropped from that event, never the run."""

    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []
        self._lock = threading.Lock()

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        with self._lock:
            self._subscribers.append(subscriber)

        def unsubscribe() -> None:
            with self._lock:
                if subscriber in self._subscribers:
                    self._subscribers.remove(subscriber)

        return unsubscribe

    def emit(self, event: Event) -> None:
        with self._lock:
            subscribers = list(self._subscribers)
        for subscriber in subscribers:
            try:
                subscriber(event)
            except Exception:
                continue
