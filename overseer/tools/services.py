"""What one run lends its steps and the tool calls of its code nodes: the registry, the caps
(``Gate``), the token meter for the budget, the event bus and the clock.

The engine builds one ``RunServices`` per run and runs every step through ``run_step``, which
holds the step's slot and puts the services and the slot in the step's ``CallContext`` for the
``code`` tool to find.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from overseer.config import Settings
from overseer.core.gate import Gate, Slot
from overseer.core.toolbase import CallContext, Tool, ToolResult
from overseer.events import Event, EventBus, UsageRecorded
from overseer.tools.registry import ToolRegistry
from overseer.usage import Usage

__all__ = [
    "SERVICES_KEY",
    "SLOT_KEY",
    "NodeLog",
    "RunServices",
    "TokenMeter",
    "services_of",
    "slot_of",
]

SERVICES_KEY = "overseer.tools.services"
SLOT_KEY = "overseer.slot"


class TokenMeter:
    """Tokens the run has spent so far, for the budget check before each node call.

    It counts every ``UsageRecorded`` of the run, plus the calls of nodes still running (whose
    tokens the executor records only when their step ends, inside the step's own usage).
    """

    def __init__(self, run_id: str = "") -> None:
        self.run_id = run_id
        self._lock = threading.Lock()
        self._recorded = 0
        self._live: dict[str | None, int] = {}

    def observe(self, event: Event) -> None:
        """Subscribe this to the bus; it counts the events of its own run only."""
        if isinstance(event, UsageRecorded) and event.run_id == self.run_id:
            with self._lock:
                self._recorded += event.usage.total_tokens
                if event.step_id is not None:
                    self._live.pop(event.step_id, None)

    def add_live(self, step_id: str | None, usage: Usage) -> None:
        """Tokens a node's call spent, before its step records them."""
        with self._lock:
            self._live[step_id] = self._live.get(step_id, 0) + usage.total_tokens

    def spent(self) -> int:
        with self._lock:
            return self._recorded + sum(self._live.values())


class NodeLog:
    """What each code step's node did (isolation, attempts, calls), for the run report."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, dict[str, Any]] = {}

    def record(self, step_id: str | None, **info: Any) -> None:
        with self._lock:
            self._entries.setdefault(step_id or "", {}).update(info)

    def as_dict(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {step_id: dict(info) for step_id, info in self._entries.items()}


@dataclass(frozen=True)
class RunServices:
    registry: ToolRegistry
    bus: EventBus
    gate: Gate
    settings: Settings
    t0: float = field(default_factory=time.monotonic)
    meter: TokenMeter = field(default_factory=TokenMeter)
    node_log: NodeLog = field(default_factory=NodeLog)

    @classmethod
    def for_run(
        cls, settings: Settings, registry: ToolRegistry, bus: EventBus, t0: float, run_id: str = ""
    ) -> RunServices:
        gate = Gate(settings.run.max_workers, registry.caps())
        meter = TokenMeter(run_id)
        return cls(registry=registry, bus=bus, gate=gate, settings=settings, t0=t0, meter=meter)

    def since(self) -> float:
        """Seconds since the run started (the clock of every event)."""
        return time.monotonic() - self.t0

    def budget_problem(self) -> str | None:
        """Why no new call may start (the token budget is spent), or None."""
        limit = self.settings.run.max_tokens
        if limit is None:
            return None
        used = self.meter.spent()
        return f"token budget of {limit} spent (used {used})" if used >= limit else None

    def run_step(self, tool: Tool, prompt: str, ctx: CallContext) -> ToolResult:
        """Run a plan step's tool while holding its slot; the services ride along in ``ctx``."""
        ctx.extra[SERVICES_KEY] = self
        with self.gate.step(tool.name, ctx) as slot:
            ctx.extra[SLOT_KEY] = slot
            return tool.run(prompt, {}, ctx)


def services_of(ctx: CallContext) -> RunServices | None:
    found = ctx.extra.get(SERVICES_KEY)
    return found if isinstance(found, RunServices) else None


def slot_of(ctx: CallContext) -> Slot | None:
    found = ctx.extra.get(SLOT_KEY)
    return found if isinstance(found, Slot) else None
