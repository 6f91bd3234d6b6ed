"""Writing one event into the journal's tables: one small function per event type.

Each function runs inside the writer's open transaction; none commits. ``WRITERS`` maps an event
type to its function; events of other types are not recorded. ``write_batch`` writes a batch of
events in one transaction.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sqlite3
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import cache
from typing import Any, cast

from pydantic_core import to_json

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

__all__ = [
    "HOST",
    "WRITERS",
    "EventWriter",
    "FinalReport",
    "PlanText",
    "process_start",
    "read_start_time",
    "write_batch",
]

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


def _plan_ready(conn: sqlite3.Connection, event: PlanReady, text: str | None = None) -> None:
    """Round 1 sets the plan (a new plan under an old id drops the old steps; ``text``: its
    JSON, when made already); a later round adds its new steps after the earlier rounds'."""
    plan = cast(Plan, event.plan)
    conn.execute("UPDATE runs SET plan_open = 0 WHERE run_id = ?", (event.run_id,))
    if event.round > 1:
        for step in plan.steps:
            _add_step(conn, event.run_id, step, event.round)
        return
    conn.execute(
        """INSERT INTO plans (run_id, plan) VALUES (?, ?)
           ON CONFLICT (run_id) DO UPDATE SET plan = excluded.plan""",
        (event.run_id, plan.model_dump_json() if text is None else text),
    )
    conn.execute(
        "UPDATE runs SET plan = NULL, updated_at = ? WHERE run_id = ?", (time.time(), event.run_id)
    )
    ids = json.dumps(plan.ids, ensure_ascii=False)
    conn.execute(
        "DELETE FROM steps WHERE run_id = ? AND step_id NOT IN (SELECT value FROM json_each(?))",
        (event.run_id, ids),
    )
    conn.execute(
        """INSERT INTO steps (run_id, step_id, position, round)
           SELECT ?, value, key, 1 FROM json_each(?) WHERE true
           ON CONFLICT (run_id, step_id) DO UPDATE SET position = excluded.position""",
        (event.run_id, ids),
    )


@dataclass(frozen=True)
class PlanText(Event):
    """The journal's own record of a first round's ``PlanReady`` (never on a bus), with the
    plan's JSON made on the emitter's thread, before the run's steps start. Serialising holds
    the GIL (10 ms for 10,000 steps): on the writer's thread, while the first steps start, it
    held every thread of the run up for several times as long."""

    ready: Any  # PlanReady
    text: str


def _plan_text(conn: sqlite3.Connection, event: PlanText) -> None:
    _plan_ready(conn, cast(PlanReady, event.ready), event.text)


def _step_planned(conn: sqlite3.Connection, event: StepPlanned) -> None:
    """A streamed step: the plan of its round is open until that round's ``PlanReady``, so a
    run killed in between resumes by asking for the rest of the plan."""
    _add_step(conn, event.run_id, cast(Step, event.step), event.round)
    conn.execute("UPDATE runs SET plan_open = 1 WHERE run_id = ?", (event.run_id,))


def _add_step(conn: sqlite3.Connection, run_id: str, step: Step, round_: int) -> None:
    """Append ``step`` to the run's plan and steps unless the plan has it already."""
    if _plan_has(conn, run_id, step.step_id):
        return
    spec = json.dumps(step.model_dump(), ensure_ascii=False)
    _append_to_plan(conn, run_id, spec)
    conn.execute(
        "UPDATE runs SET plan = NULL, rounds = MAX(rounds, ?), updated_at = ? WHERE run_id = ?",
        (round_, time.time(), run_id),
    )
    conn.execute(
        """INSERT INTO steps (run_id, step_id, position, round)
           VALUES (?, ?, (SELECT COALESCE(MAX(position) + 1, 0) FROM steps WHERE run_id = ?), ?)
           ON CONFLICT (run_id, step_id) DO UPDATE SET round = excluded.round""",
        (run_id, step.step_id, run_id, round_),
    )


def _append_to_plan(conn: sqlite3.Connection, run_id: str, spec: str) -> None:
    """Append a step (JSON) to the run's plan; a version-1 row's plan moves to ``plans``."""
    if conn.execute("SELECT 1 FROM plans WHERE run_id = ?", (run_id,)).fetchone():
        conn.execute(
            "UPDATE plans SET plan = json_insert(plan, '$.steps[#]', json(?)) WHERE run_id = ?",
            (spec, run_id),
        )
        return
    old = conn.execute("SELECT plan FROM runs WHERE run_id = ?", (run_id,)).fetchone()
    base = old[0] if old is not None and old[0] else '{"steps": []}'
    conn.execute(
        "INSERT INTO plans (run_id, plan) VALUES (?, json_insert(?, '$.steps[#]', json(?)))",
        (run_id, base, spec),
    )


def _plan_has(conn: sqlite3.Connection, run_id: str, step_id: str) -> bool:
    """Whether the run's plan (in ``plans``, or a version-1 row's) has the step already."""
    old = conn.execute(
        """SELECT 1 FROM runs, json_each(runs.plan, '$.steps') AS s
           WHERE runs.run_id = ? AND runs.plan IS NOT NULL
             AND json_extract(s.value, '$.step_id') = ?""",
        (run_id, step_id),
    ).fetchone()
    if old is not None:
        return True
    row = conn.execute(
        """SELECT 1 FROM plans, json_each(plans.plan, '$.steps') AS s
           WHERE plans.run_id = ? AND json_extract(s.value, '$.step_id') = ?""",
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
    """The final state of the run and its steps (the ``--json`` object follows, as a
    ``FinalReport``, in a later transaction nobody waits for)."""
    now, usage = time.time(), report.usage
    conn.execute(
        """UPDATE runs SET status = ?, reason = ?, answer = ?, timing = ?, warnings = ?,
             report = NULL, prompt_tokens = base_prompt_tokens + ?,
             completion_tokens = base_completion_tokens + ?, rounds = MAX(rounds, ?),
             finished_at = ?, updated_at = ? WHERE run_id = ?""",
        (
            report.outcome.status,
            report.outcome.reason or None,
            report.answer,
            json.dumps(asdict(report.timing)),
            json.dumps(list(report.warnings), ensure_ascii=False),
            usage.prompt_tokens,
            usage.completion_tokens,
            report.rounds,
            now,
            now,
            run_id,
        ),
    )
    _settle_unfinished(conn, run_id, report)


def _settle_unfinished(conn: sqlite3.Connection, run_id: str, report: RunReport) -> None:
    """Steps the journal still holds as running or pending get their state from the report.

    Every event of the run was written before this (in order, retried while the file was
    locked), so normally there are none; this is what keeps a finished run from ever reading
    as unfinished should a write have gone missing all the same."""
    left = conn.execute(
        "SELECT step_id FROM steps WHERE run_id = ? AND status IN ('running', 'pending')",
        (run_id,),
    ).fetchall()
    steps = report.outcome.steps
    rows = [
        (run_id, i, r.status, r.output, r.error, r.attempts, r.started_at, r.finished_at)
        for i, r in ((str(row[0]), steps.get(str(row[0]))) for row in left)
        if r is not None and r.status not in ("running", "pending")
    ]
    if rows:
        conn.execute(_FINAL_STEPS, (json.dumps(rows, ensure_ascii=False),))


@dataclass(frozen=True)
class FinalReport(Event):
    """The journal's own record (never on a bus): store the ``--json`` object of a finished run.
    Building and writing it costs about as much as the rest of a large run's journal, so it is
    written after the run's end is committed, off the run's path (``close()`` and the end of the
    process wait for it); a run killed before has its JSON rebuilt from its steps."""

    report: Any  # RunReport


def _final_report(conn: sqlite3.Connection, event: FinalReport) -> None:
    report = cast(RunReport, event.report)
    conn.execute(
        "UPDATE runs SET report = ? WHERE run_id = ? AND status = ?",
        (to_json(report.to_json()).decode(), event.run_id, report.outcome.status),
    )


WRITERS: dict[type[Event], EventWriter] = {
    RunStarted: _run_started,
    PlanReady: _plan_ready,
    PlanText: _plan_text,
    StepPlanned: _step_planned,
    StepStarted: _step_started,
    StepFinished: _step_finished,
    StepFailed: _step_failed,
    StepSkipped: _step_settled,
    StepCancelled: _step_settled,
    UsageRecorded: _usage,
    RunFinished: _run_finished,
    RunAborted: _run_finished,
    FinalReport: _final_report,
}


# -- many step events, few rows -------------------------------------------------------------------
#
# A batch of the writer holds mostly step events. Written one statement each, a step would cost
# three row updates (started, finished, tokens); and each statement is a round trip for the GIL,
# which sqlite3 lets go around every one. So the step events between two run-level events (start,
# plan, end) are folded: a step that started in the segment gets one row with where it got to
# (running, or how it ended, with its tokens), and the rows go in statements of up to ``_CHUNK``
# rows each (one GIL round trip a statement, not a row); the events of steps that started before
# are written one by one. Per step the effect is that of its events in order.

_FOLDED = """INSERT INTO steps (run_id, step_id, status, output, error, attempts, started_at,
      finished_at, prompt_tokens, completion_tokens) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (run_id, step_id) DO UPDATE SET
      status = excluded.status, output = excluded.output, error = excluded.error,
      attempts = excluded.attempts, finished_at = excluded.finished_at,
      started_at = CASE WHEN steps.status = 'running' THEN steps.started_at
                        ELSE excluded.started_at END,
      prompt_tokens = steps.prompt_tokens + excluded.prompt_tokens,
      completion_tokens = steps.completion_tokens + excluded.completion_tokens"""
_FOLDED_HEAD, _FOLDED_TAIL = _FOLDED.split(" VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
_WIDTH = 10  # values a folded row
_ROW_MARKS = "(" + ", ".join("?" * _WIDTH) + ")"
_CHUNK = 128


@cache
def _folded_sql(rows: int) -> str:
    return f"{_FOLDED_HEAD} VALUES {', '.join([_ROW_MARKS] * rows)}{_FOLDED_TAIL}"


def _upsert_folded(conn: sqlite3.Connection, values: list[Any]) -> None:
    """The folded rows, ``_WIDTH`` values each one after the other, ``_CHUNK`` per statement."""
    step = _CHUNK * _WIDTH
    for at in range(0, len(values), step):
        chunk = values[at : at + step]
        conn.execute(_folded_sql(len(chunk) // _WIDTH), chunk)


_STEP_USAGE = """UPDATE steps SET prompt_tokens = prompt_tokens + ?,
      completion_tokens = completion_tokens + ? WHERE run_id = ? AND step_id = ?"""
_ROWS = "SELECT {columns} FROM json_each(?) WHERE true"


def _columns(*names: str) -> str:
    return ", ".join(f"json_extract(value, '$[{i}]') AS {n}" for i, n in enumerate(names))


_FINAL_STEPS = f"""INSERT INTO steps (run_id, step_id, status, output, error, attempts, started_at,
      finished_at, position)
    SELECT r, s, st, o, e, a, t0, t1, 1000000 FROM (
      {_ROWS.format(columns=_columns("r", "s", "st", "o", "e", "a", "t0", "t1"))})
    WHERE true
    ON CONFLICT (run_id, step_id) DO UPDATE SET status = excluded.status,
      output = excluded.output, error = excluded.error, attempts = excluded.attempts,
      started_at = excluded.started_at, finished_at = excluded.finished_at
    WHERE steps.status IS NOT excluded.status OR steps.output IS NOT excluded.output
      OR steps.error IS NOT excluded.error OR steps.attempts IS NOT excluded.attempts"""
_RUN_USAGE = """UPDATE runs SET prompt_tokens = prompt_tokens + ?,
      completion_tokens = completion_tokens + ?, updated_at = ? WHERE run_id = ?"""


class _Segment:
    """The step events between two run-level events, folded into rows.

    The rows are kept as one flat list (``_WIDTH`` values a row: run, step, status, output,
    error, attempts, started_at, finished_at, tokens in, tokens out), which is the statement's
    parameters as they are: folding runs on the writer's thread holding the GIL, so it does as
    little as it can per event."""

    def __init__(self) -> None:
        self.values: list[Any] = []
        self.folded: dict[tuple[str, str], int] = {}  # started here: where its row begins
        self.others: list[Event] = []  # of steps that started before this segment
        self.run_usage: dict[str, list[int]] = {}
        self.step_usage: dict[tuple[str, str], list[int]] = {}

    def add(self, event: Event) -> bool:
        """Take ``event`` if it is a step event (True), else leave it (False)."""
        kind = type(event)
        if kind is StepStarted:
            started: StepStarted = event  # type: ignore[assignment]
            key = (started.run_id, started.step_id)
            at = self.folded.get(key)
            if at is None:
                self.folded[key] = len(self.values)
                self.values += (*key, "running", None, None, started.attempt, started.t, None, 0, 0)
            else:  # a retry: the step keeps its first start
                self.values[at + 2 : at + 6] = ("running", None, None, started.attempt)
                self.values[at + 7] = None
            return True
        if kind is UsageRecorded:
            self._add_usage(event)  # type: ignore[arg-type]
            return True
        if kind not in _ENDS:
            return False
        ended: StepFinished = event  # type: ignore[assignment]  # or another end
        at = self.folded.get((ended.run_id, ended.step_id))
        if at is None:
            self.others.append(event)
        elif kind is StepFinished:
            values = self.values
            values[at + 2] = "succeeded"
            values[at + 3] = ended.output
            values[at + 4] = None
            values[at + 5] = ended.attempts
            values[at + 7] = ended.t
        else:
            _settle(self.values, at, event)
        return True

    def _add_usage(self, event: UsageRecorded) -> None:
        tokens = (event.usage.prompt_tokens, event.usage.completion_tokens)
        _accumulate(self.run_usage.setdefault(event.run_id, [0, 0]), tokens)
        if event.step_id is None:
            return
        key = (event.run_id, event.step_id)
        at = self.folded.get(key)
        if at is not None:
            self.values[at + 8] += tokens[0]
            self.values[at + 9] += tokens[1]
        else:
            _accumulate(self.step_usage.setdefault(key, [0, 0]), tokens)

    def one_statement(self) -> tuple[str, list[Any]] | None:
        """The one statement that writes this segment, when one does: only steps that started
        in it, no tokens, at most ``_CHUNK`` of them."""
        if self.others or self.run_usage or not 0 < len(self.folded) <= _CHUNK:
            return None
        return _folded_sql(len(self.folded)), self.values

    def write(self, conn: sqlite3.Connection) -> None:
        if self.values:
            _upsert_folded(conn, self.values)
        for event in self.others:
            WRITERS[type(event)](conn, event)
        if self.step_usage:
            rows = [(p, c, r, s) for (r, s), (p, c) in self.step_usage.items()]
            conn.executemany(_STEP_USAGE, rows)
        if self.run_usage:
            now = time.time()
            totals = [(p, c, now, r) for r, (p, c) in self.run_usage.items()]
            conn.executemany(_RUN_USAGE, totals)
        self.__init__()  # type: ignore[misc]  # empty again, ready for the next segment


_ENDS = frozenset({StepFinished, StepFailed, StepSkipped, StepCancelled})


def _settle(values: list[Any], at: int, event: Event) -> None:
    """How a step that started in this segment ended (failed, skipped, cancelled), into its
    folded row at ``values[at:]``."""
    if isinstance(event, StepFailed):
        values[at + 2 : at + 6] = ("failed", None, event.error, event.attempts)
        values[at + 7] = event.t
    else:
        settled = cast(StepSkipped, event)
        values[at + 2] = "skipped" if isinstance(event, StepSkipped) else "cancelled"
        values[at + 4] = settled.reason


def _accumulate(total: list[int], tokens: tuple[int, int]) -> None:
    total[0] += tokens[0]
    total[1] += tokens[1]


def write_batch(conn: sqlite3.Connection, events: list[Event]) -> None:
    """Write ``events`` in their order, in one transaction (step events batched between
    run-level events). A batch of steps that all started in it, the usual one under load, is
    one statement: a transaction by itself, with no BEGIN and COMMIT to wait for."""
    segment = _Segment()
    at = 0
    while at < len(events) and segment.add(events[at]):
        at += 1
    single = segment.one_statement() if at == len(events) else None
    if single is not None:
        conn.execute(*single)
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        segment.write(conn)
        for event in events[at:]:
            if not segment.add(event):
                segment.write(conn)
                WRITERS[type(event)](conn, event)
        segment.write(conn)
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
