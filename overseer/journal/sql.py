"""Writing one event into the journal's tables: one small function per event type.

Each function runs inside the writer's open transaction; none commits. ``WRITERS`` maps an event
type to its function; events of other types are not recorded.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
from collections.abc import Callable
from dataclasses import asdict
from functools import cache
from typing import Any, cast

from overseer.core.plan import Plan, Step
from overseer.core.report import RunReport
from overseer.events import (
    Event,
    PlanReady,
    RunAborted,
    RunFinished,
    RunStarted,
    StepCancelled,
    StepFailed,
    StepFinished,
    StepPlanned,
    StepSkipped,
    StepStarted,
    UsageRecorded,
)

__all__ = ["HOST", "WRITERS", "EventWriter", "process_start"]

HOST = socket.gethostname()

EventWriter = Callable[[sqlite3.Connection, Any], None]


@cache
def process_start(pid: int | None = None) -> str | None:
    """What tells this process from a later one that reuses its pid: the start time in clock
    ticks since boot (``/proc/PID/stat`` field 22), or None where there is no ``/proc``."""
    return read_start_time(os.getpid() if pid is None else pid)


def read_start_time(pid: int) -> str | None:
    """Field 22 of ``/proc/PID/stat`` (the command name, field 2, may hold spaces and parens)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            text = stat.read()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2 :].split()
    return fields[19] if len(fields) > 19 else None  # field 3 is fields[0]


def _run_started(conn: sqlite3.Connection, event: RunStarted) -> None:
    now = time.time()
    settings = json.dumps(event.settings, ensure_ascii=False, default=str)
    conn.execute(
        """INSERT INTO runs (run_id, request, status, created_at, updated_at, pid, host,
             proc_start, settings, batch_id)
           VALUES (?, ?, 'running', ?, ?, ?, ?, ?, ?, ?)
           ON CONFLICT (run_id) DO UPDATE SET
             status = 'running', reason = NULL, finished_at = NULL, report = NULL,
             updated_at = excluded.updated_at, pid = excluded.pid, host = excluded.host,
             proc_start = excluded.proc_start, settings = excluded.settings,
             batch_id = COALESCE(excluded.batch_id, batch_id),
             attempts = attempts + 1,
             base_prompt_tokens = prompt_tokens, base_completion_tokens = completion_tokens""",
        (
            event.run_id,
            event.request,
            now,
            now,
            os.getpid(),
            HOST,
            process_start(),
            settings,
            event.batch_id,
        ),
    )


def _plan_ready(conn: sqlite3.Connection, event: PlanReady) -> None:
    """Round 1 sets the plan (a new plan under an old id drops the old steps); a later round
    adds its new steps after the earlier rounds' ones."""
    plan = cast(Plan, event.plan)
    if event.round > 1:
        for step in plan.steps:
            _add_step(conn, event.run_id, step, event.round)
        return
    conn.execute(
        "UPDATE runs SET plan = ?, updated_at = ? WHERE run_id = ?",
        (json.dumps(plan.to_dict(), ensure_ascii=False), time.time(), event.run_id),
    )
    ids = plan.ids
    marks = ", ".join("?" * len(ids))
    conn.execute(
        f"DELETE FROM steps WHERE run_id = ? AND step_id NOT IN ({marks})", (event.run_id, *ids)
    )
    conn.executemany(
        """INSERT INTO steps (run_id, step_id, position, round) VALUES (?, ?, ?, 1)
           ON CONFLICT (run_id, step_id) DO UPDATE SET position = excluded.position""",
        [(event.run_id, step_id, index) for index, step_id in enumerate(ids)],
    )


def _step_planned(conn: sqlite3.Connection, event: StepPlanned) -> None:
    _add_step(conn, event.run_id, cast(Step, event.step), event.round)


def _add_step(conn: sqlite3.Connection, run_id: str, step: Step, round_: int) -> None:
    """Append ``step`` to the run's plan and steps unless the plan has it already."""
    if _plan_has(conn, run_id, step.step_id):
        return
    spec = json.dumps(step.model_dump(), ensure_ascii=False)
    conn.execute(
        """UPDATE runs SET plan = json_insert(COALESCE(plan, '{"steps": []}'), '$.steps[#]',
             json(?)), rounds = MAX(rounds, ?), updated_at = ? WHERE run_id = ?""",
        (spec, round_, time.time(), run_id),
    )
    conn.execute(
        """INSERT INTO steps (run_id, step_id, position, round)
           VALUES (?, ?, (SELECT COALESCE(MAX(position) + 1, 0) FROM steps WHERE run_id = ?), ?)
           ON CONFLICT (run_id, step_id) DO UPDATE SET round = excluded.round""",
        (run_id, step.step_id, run_id, round_),
    )


def _plan_has(conn: sqlite3.Connection, run_id: str, step_id: str) -> bool:
    row = conn.execute(
        """SELECT 1 FROM runs, json_each(runs.plan, '$.steps') AS s
           WHERE runs.run_id = ? AND json_extract(s.value, '$.step_id') = ?""",
        (run_id, step_id),
    ).fetchone()
    return row is not None


def _step_started(conn: sqlite3.Connection, event: StepStarted) -> None:
    conn.execute(
        """INSERT INTO steps (run_id, step_id, status, attempts, started_at)
           VALUES (?, ?, 'running', ?, ?)
           ON CONFLICT (run_id, step_id) DO UPDATE SET
             status = 'running', attempts = excluded.attempts, error = NULL, finished_at = NULL,
             started_at = CASE WHEN steps.status = 'running' THEN steps.started_at
                               ELSE excluded.started_at END""",
        (event.run_id, event.step_id, event.attempt, event.t),
    )


def _step_finished(conn: sqlite3.Connection, event: StepFinished) -> None:
    """A step that succeeded; a resumed step (same output, already succeeded) keeps its times."""
    conn.execute(
        """INSERT INTO steps (run_id, step_id, status, output, attempts, started_at, finished_at)
           VALUES (?, ?, 'succeeded', ?, ?, ?, ?)
           ON CONFLICT (run_id, step_id) DO UPDATE SET
             status = 'succeeded', output = excluded.output, error = NULL,
             attempts = excluded.attempts, finished_at = excluded.finished_at,
             started_at = COALESCE(steps.started_at, excluded.started_at)
           WHERE NOT (steps.status = 'succeeded' AND steps.output IS excluded.output)""",
        (
            event.run_id,
            event.step_id,
            event.output,
            event.attempts,
            event.t - event.duration,
            event.t,
        ),
    )


def _step_failed(conn: sqlite3.Connection, event: StepFailed) -> None:
    conn.execute(
        """INSERT INTO steps (run_id, step_id, status, error, attempts, started_at, finished_at)
           VALUES (?, ?, 'failed', ?, ?, ?, ?)
           ON CONFLICT (run_id, step_id) DO UPDATE SET
             status = 'failed', error = excluded.error, attempts = excluded.attempts,
             finished_at = excluded.finished_at,
             started_at = COALESCE(steps.started_at, excluded.started_at)""",
        (
            event.run_id,
            event.step_id,
            event.error,
            event.attempts,
            event.t - event.duration,
            event.t,
        ),
    )


def _step_settled(conn: sqlite3.Connection, event: StepSkipped | StepCancelled) -> None:
    status = "skipped" if isinstance(event, StepSkipped) else "cancelled"
    conn.execute(
        """INSERT INTO steps (run_id, step_id, status, error) VALUES (?, ?, ?, ?)
           ON CONFLICT (run_id, step_id) DO UPDATE SET
             status = excluded.status, error = excluded.error""",
        (event.run_id, event.step_id, status, event.reason),
    )


def _usage(conn: sqlite3.Connection, event: UsageRecorded) -> None:
    tokens = (event.usage.prompt_tokens, event.usage.completion_tokens)
    conn.execute(
        """UPDATE runs SET prompt_tokens = prompt_tokens + ?,
             completion_tokens = completion_tokens + ?, updated_at = ? WHERE run_id = ?""",
        (*tokens, time.time(), event.run_id),
    )
    if event.step_id is not None:
        conn.execute(
            """UPDATE steps SET prompt_tokens = prompt_tokens + ?,
                 completion_tokens = completion_tokens + ? WHERE run_id = ? AND step_id = ?""",
            (*tokens, event.run_id, event.step_id),
        )


def _run_finished(conn: sqlite3.Connection, event: RunFinished | RunAborted) -> None:
    report = getattr(event, "extra", {}).get("report")
    if isinstance(report, RunReport):
        _finish_with_report(conn, event.run_id, report)
        return
    status = event.status if event.status in ("succeeded", "cancelled") else "failed"
    now = time.time()
    conn.execute(
        """UPDATE runs SET status = ?, reason = ?, finished_at = ?, updated_at = ?
           WHERE run_id = ?""",
        (status, event.reason or None, now, now, event.run_id),
    )


def _finish_with_report(conn: sqlite3.Connection, run_id: str, report: RunReport) -> None:
    """The final state of the run, whatever earlier writes did or did not get through."""
    now, usage = time.time(), report.usage
    conn.execute(
        """UPDATE runs SET status = ?, reason = ?, answer = ?, timing = ?, warnings = ?,
             report = ?, prompt_tokens = base_prompt_tokens + ?,
             completion_tokens = base_completion_tokens + ?, rounds = MAX(rounds, ?),
             finished_at = ?, updated_at = ? WHERE run_id = ?""",
        (
            report.outcome.status,
            report.outcome.reason or None,
            report.answer,
            json.dumps(asdict(report.timing)),
            json.dumps(list(report.warnings), ensure_ascii=False),
            json.dumps(report.to_json(), ensure_ascii=False),
            usage.prompt_tokens,
            usage.completion_tokens,
            report.rounds,
            now,
            now,
            run_id,
        ),
    )
    conn.executemany(
        """INSERT INTO steps (run_id, step_id, status, output, error, attempts, started_at,
             finished_at, position) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1000000)
           ON CONFLICT (run_id, step_id) DO UPDATE SET status = excluded.status,
             output = excluded.output, error = excluded.error, attempts = excluded.attempts,
             started_at = excluded.started_at, finished_at = excluded.finished_at""",
        [
            (run_id, i, r.status, r.output, r.error, r.attempts, r.started_at, r.finished_at)
            for i, r in report.outcome.steps.items()
        ],
    )


WRITERS: dict[type[Event], EventWriter] = {
    RunStarted: _run_started,
    PlanReady: _plan_ready,
    StepPlanned: _step_planned,
    StepStarted: _step_started,
    StepFinished: _step_finished,
    StepFailed: _step_failed,
    StepSkipped: _step_settled,
    StepCancelled: _step_settled,
    UsageRecorded: _usage,
    RunFinished: _run_finished,
    RunAborted: _run_finished,
}
