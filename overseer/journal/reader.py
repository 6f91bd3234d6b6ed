"""What reading the journal gives back: ``RunSummary`` (a line of ``overseer runs``) and
``StoredRun`` (everything about one run), built from rows, and whether a run is still live.

A run recorded as running is live only while the very process that wrote it runs: same host,
same pid, and, where ``/proc`` exists, the same process start time. A pid reused by another
program, or a process started later with it, reads as interrupted, so ``resume`` is not blocked
by a stranger.
"""

from __future__ import annotations

import json
import os
import sqlite3
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from overseer.core.plan import Plan
from overseer.core.report import RunReport, Timing
from overseer.core.results import RunOutcome, StepRecord, StepStatus
from overseer.journal.sql import HOST, read_start_time
from overseer.usage import Usage

__all__ = [
    "LIST_ONE_SQL",
    "LIST_SQL",
    "RESOLVE_SQL",
    "STEPS_SQL",
    "UNFINISHED",
    "RunSummary",
    "StoredRun",
    "is_live",
    "iso_time",
    "stored_run",
    "summary",
]

UNFINISHED = ("running", "interrupted")


@dataclass(frozen=True)
class RunSummary:
    """One line of ``overseer runs``. ``status``: running, interrupted (its process is gone),
    succeeded, failed or cancelled. Times are Unix seconds. ``batch_id`` names the batch the run
    belongs to (``overseer batch``), if any."""

    run_id: str
    request: str
    status: str
    created_at: float
    finished_at: float | None
    steps_done: int
    steps_total: int
    attempts: int
    total_tokens: int
    pid: int | None
    batch_id: str | None = None
    rounds: int = 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "request": self.request,
            "status": self.status,
            "created_at": iso_time(self.created_at),
            "finished_at": None if self.finished_at is None else iso_time(self.finished_at),
            "steps_done": self.steps_done,
            "steps_total": self.steps_total,
            "attempts": self.attempts,
            "total_tokens": self.total_tokens,
            "rounds": self.rounds,
            "batch_id": self.batch_id,
        }


@dataclass(frozen=True)
class StoredRun:
    """Everything the journal holds about one run. ``plan`` is None if it stopped while planning,
    else every round's steps in order; ``usage`` counts every attempt (``spent`` is the same
    tokens, named for the budget: they count against ``--max-tokens`` on resume); ``timing`` is
    the last finished attempt's; ``final`` is the ``--json`` object of the last attempt, once it
    finished. ``settings`` are the run's non-secret settings as dotted keys (``"backend.model"``),
    with ``run.max_tokens`` the budget of the whole run over all its attempts;
    ``steps_round`` gives each step's round and ``rounds`` how many rounds the run had."""

    summary: RunSummary
    plan: Plan | None
    records: dict[str, StepRecord]
    answer: str
    reason: str
    usage: Usage
    timing: Timing
    warnings: tuple[str, ...]
    final: dict[str, Any] | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    spent: Usage = Usage()
    steps_round: dict[str, int] = field(default_factory=dict)
    rounds: int = 1
    plan_complete: bool = True  # False: killed while a streamed plan was still being written

    @property
    def run_id(self) -> str:
        return self.summary.run_id

    @property
    def request(self) -> str:
        return self.summary.request

    @property
    def status(self) -> str:
        return self.summary.status

    @property
    def batch_id(self) -> str | None:
        return self.summary.batch_id

    @property
    def prior(self) -> dict[str, StepRecord]:
        """The steps that succeeded: pass as ``Overseer.run(..., prior=...)`` to resume."""
        return {i: r for i, r in self.records.items() if r.status == "succeeded"}

    def report(self) -> RunReport:
        """The run as a ``RunReport`` (an empty plan if it never got one)."""
        outcome = RunOutcome(
            status=_outcome_status(self.status),
            steps=dict(self.records),
            reason=self.reason,
            usage=sum((r.usage for r in self.records.values()), Usage()),
            wall_s=self.timing.wall_s,
        )
        plan = self.plan if self.plan is not None else Plan(steps=())
        return RunReport(
            run_id=self.run_id,
            request=self.request,
            plan=plan,
            outcome=outcome,
            answer=self.answer,
            usage=self.usage,
            timing=self.timing,
            warnings=self.warnings,
            rounds=self.rounds,
        )

    def to_json(self) -> dict[str, Any]:
        """The one-shot ``--json`` object: as printed when the run (its last attempt) finished;
        rebuilt from the steps, with ``status`` running or interrupted, when it did not."""
        if self.final is not None:
            return dict(self.final)
        data = self.report().to_json()
        if self.status in UNFINISHED:
            data["status"] = self.status
        return data


def iso_time(unix: float) -> str:
    """Local time with its UTC offset, to the second."""
    return datetime.fromtimestamp(unix).astimezone().isoformat(timespec="seconds")


# -- queries ---------------------------------------------------------------------------------------

_COUNTS = """SELECT r.*,
  (SELECT COUNT(*) FROM steps s WHERE s.run_id = r.run_id AND s.status = 'succeeded') AS done,
  (SELECT COUNT(*) FROM steps s WHERE s.run_id = r.run_id) AS total
FROM runs r"""
LIST_SQL = f"""{_COUNTS} WHERE (? IS NULL OR r.batch_id = ?)
ORDER BY r.created_at DESC, r.rowid DESC LIMIT ?"""
LIST_ONE_SQL = f"""SELECT c.*, COALESCE(p.plan, c.plan) AS the_plan FROM ({_COUNTS}) AS c
LEFT JOIN plans p ON p.run_id = c.run_id WHERE c.run_id = ?"""
RESOLVE_SQL = """
SELECT run_id FROM runs WHERE run_id = ? OR substr(run_id, 1, ?) = ?
ORDER BY created_at DESC, rowid DESC LIMIT 6
"""
STEPS_SQL = "SELECT * FROM steps WHERE run_id = ? ORDER BY position, rowid"

_STATUSES: tuple[StepStatus, ...] = (
    "pending",
    "running",
    "succeeded",
    "failed",
    "skipped",
    "cancelled",
)


# -- rows to objects -------------------------------------------------------------------------------


def summary(row: sqlite3.Row) -> RunSummary:
    return RunSummary(
        run_id=row["run_id"],
        request=row["request"],
        status=_live_status(row),
        created_at=row["created_at"],
        finished_at=row["finished_at"],
        steps_done=row["done"],
        steps_total=row["total"],
        attempts=row["attempts"],
        total_tokens=row["prompt_tokens"] + row["completion_tokens"],
        pid=row["pid"],
        batch_id=row["batch_id"],
        rounds=row["rounds"] or 1,
    )


def _live_status(row: sqlite3.Row) -> str:
    """A run recorded as running whose process (on this machine) is gone was interrupted."""
    status = str(row["status"])
    if status != "running" or row["pid"] is None or row["host"] != HOST:
        return status
    return "running" if is_live(row["pid"], row["proc_start"]) else "interrupted"


def is_live(pid: int, proc_start: str | None) -> bool:
    """Whether the process that recorded a run still runs: ``pid`` alive and, when both are
    known, started at the recorded time (a reused pid is another process)."""
    if not _alive(pid):
        return False
    if proc_start is None:
        return True
    now = read_start_time(pid)
    return now is None or now == proc_start


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stored_run(row: sqlite3.Row, steps: list[sqlite3.Row]) -> StoredRun:
    """A ``StoredRun`` from its ``runs`` row and its ``steps`` rows."""
    plan = Plan.model_validate_json(row["the_plan"]) if row["the_plan"] else None
    timing = Timing(**json.loads(row["timing"])) if row["timing"] else Timing()
    usage = Usage(row["prompt_tokens"], row["completion_tokens"])
    records = {s["step_id"]: _record(s) for s in steps}
    rounds = {i: r.round for i, r in records.items()}
    return StoredRun(
        summary=summary(row),
        plan=plan,
        records=records,
        answer=row["answer"] or "",
        reason=row["reason"] or "",
        usage=usage,
        timing=timing,
        warnings=tuple(json.loads(row["warnings"])) if row["warnings"] else (),
        final=json.loads(row["report"]) if row["report"] else None,
        settings=_settings(row),
        spent=usage,
        steps_round=rounds,
        rounds=max([row["rounds"] or 1, *rounds.values()]),
        plan_complete=not row["plan_open"],
    )


def _settings(row: sqlite3.Row) -> dict[str, Any]:
    """The recorded settings, the budget made whole-run: an attempt's ``run.max_tokens`` was
    what it had left after the tokens spent before it (its base)."""
    settings = json.loads(row["settings"]) if row["settings"] else {}
    if not isinstance(settings, dict):
        raise ValueError(f"its settings are not a mapping: {row['settings']!r}")
    budget = settings.get("run.max_tokens")
    if isinstance(budget, int):
        settings["run.max_tokens"] = (
            budget + row["base_prompt_tokens"] + row["base_completion_tokens"]
        )
    return settings


def _record(row: sqlite3.Row) -> StepRecord:
    status = row["status"]
    if status not in _STATUSES:
        raise ValueError(f"step {row['step_id']!r} has an unknown status {status!r}")
    return StepRecord(
        step_id=row["step_id"],
        status=status,
        output=row["output"],
        error=row["error"],
        attempts=row["attempts"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        usage=Usage(row["prompt_tokens"], row["completion_tokens"]),
        round=row["round"] or 1,
    )


def _outcome_status(status: str) -> Literal["succeeded", "failed", "cancelled"]:
    if status == "succeeded":
        return "succeeded"
    return "cancelled" if status == "cancelled" else "failed"
