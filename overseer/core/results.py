"""What a run produced: one record per step and the outcome of the whole run."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from overseer.usage import Usage

__all__ = ["RunOutcome", "StepRecord", "StepStatus"]

StepStatus = Literal["pending", "running", "succeeded", "failed", "skipped", "cancelled"]


@dataclass(slots=True)
class StepRecord:
    """``started_at``/``finished_at`` are seconds since the run started (None if never);
    ``round`` is the planning round the step came from (1 is the first plan)."""

    step_id: str
    status: StepStatus = "pending"
    output: str | None = None
    error: str | None = None
    attempts: int = 0
    started_at: float | None = None
    finished_at: float | None = None
    usage: Usage = Usage()
    round: int = 1

    @property
    def duration(self) -> float:
        if self.started_at is None or self.finished_at is None:
            return 0.0
        return self.finished_at - self.started_at

    def to_dict(self) -> dict[str, Any]:
        return {
            "step_id": self.step_id,
            "status": self.status,
            "output": self.output,
            "error": self.error,
            "attempts": self.attempts,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "usage": self.usage.as_dict(),
            "round": self.round,
        }


@dataclass
class RunOutcome:
    """``status`` is "succeeded" only when every step succeeded; ``reason`` says why not."""

    status: Literal["succeeded", "failed", "cancelled"]
    steps: dict[str, StepRecord] = field(default_factory=dict)
    reason: str = ""
    usage: Usage = Usage()
    wall_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "succeeded"
