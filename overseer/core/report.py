"""The result of one request: plan, step records, answer, usage and timing; and its JSON form."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from overseer.core.plan import Plan
from overseer.core.results import RunOutcome
from overseer.errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_RUN_FAILED
from overseer.usage import Usage

__all__ = ["RunReport", "Timing"]


@dataclass(frozen=True)
class Timing:
    wall_s: float = 0.0
    plan_s: float = 0.0
    steps_sum_s: float = 0.0
    critical_path_s: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return {
            "wall_s": round(self.wall_s, 4),
            "plan_s": round(self.plan_s, 4),
            "steps_sum_s": round(self.steps_sum_s, 4),
            "critical_path_s": round(self.critical_path_s, 4),
        }


@dataclass
class RunReport:
    run_id: str
    request: str
    plan: Plan
    outcome: RunOutcome
    answer: str = ""
    usage: Usage = Usage()
    timing: Timing = field(default_factory=Timing)
    warnings: tuple[str, ...] = ()
    nodes: dict[str, Any] = field(default_factory=dict)  # code steps: isolation, attempts, calls
    rounds: int = 1  # planning rounds: 1, plus one per replan of the joiner

    @property
    def status(self) -> str:
        return "succeeded" if self.outcome.ok else "failed"

    @property
    def exit_code(self) -> int:
        if self.outcome.status == "cancelled":
            return EXIT_INTERRUPTED
        return EXIT_OK if self.outcome.ok else EXIT_RUN_FAILED

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` object of DESIGN.md (fields may be added, never renamed)."""
        return {
            "run_id": self.run_id,
            "request": self.request,
            "status": self.status,
            "reason": self.outcome.reason or None,
            "plan": self.plan.to_dict(),
            "steps": [
                self.outcome.steps[i].to_dict() for i in self.plan.ids if i in self.outcome.steps
            ],
            "answer": self.answer,
            "usage": self.usage.as_dict(),
            "timing": self.timing.as_dict(),
            "warnings": list(self.warnings),
            "nodes": self.nodes,
            "rounds": self.rounds,
        }
