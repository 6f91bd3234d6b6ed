"""The run journal: every run recorded in SQLite as it happens, to list, show and resume later.

The journal subscribes to an engine's event bus and writes each event in its own short
transaction (WAL mode, a short busy timeout), so a crash of the process (Ctrl-C, ``kill -9``)
loses at most the steps in flight; after a power loss the last few writes may be lost too
(``synchronous=NORMAL``), and resuming simply runs those steps again. It records the request,
the plan, each step's status, attempts, output, error and times, and the token usage; nothing in
the events holds an API key, so none is ever written.

Recording never stops a run: when the file is damaged, locked or unwritable the journal gives up
on that run and says so once (``Journal.record`` returns the problem; ``attach`` turns it into a
``JournalProblem`` event). Reading (``list_runs``, ``load``) raises ``JournalError`` instead.

This is the only module that imports ``sqlite3``.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, cast

from overseer.core.plan import Plan
from overseer.core.report import RunReport, Timing
from overseer.core.results import RunOutcome, StepRecord, StepStatus
from overseer.errors import OverseerError, UsageError
from overseer.events import (
    Event,
    EventBus,
    JournalProblem,
    PlanReady,
    RunAborted,
    RunFinished,
    RunStarted,
    StepCancelled,
    StepFailed,
    StepFinished,
    StepSkipped,
    StepStarted,
    UsageRecorded,
)
from overseer.usage import Usage

__all__ = [
    "DEFAULT_BUSY_TIMEOUT",
    "JOURNAL_FILE",
    "Journal",
    "JournalError",
    "RunSummary",
    "StoredRun",
    "UnknownRunError",
    "default_journal_path",
    "journal_for",
]

JOURNAL_FILE = "journal.sqlite3"
DEFAULT_BUSY_TIMEOUT = 1.0
"""Seconds a write waits for another process's transaction before the journal gives up."""

SCHEMA_VERSION = 1
UNFINISHED = ("running", "interrupted")

_HOST = socket.gethostname()

_SCHEMA = """
BEGIN IMMEDIATE;
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    request TEXT NOT NULL,
    status TEXT NOT NULL,
    reason TEXT,
    plan TEXT,
    answer TEXT,
    timing TEXT,
    warnings TEXT,
    report TEXT,
    prompt_tokens INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    base_prompt_tokens INTEGER NOT NULL DEFAULT 0,
    base_completion_tokens INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 1,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    finished_at REAL,
    pid INTEGER,
    host TEXT
);
CREATE INDEX IF NOT EXISTS runs_newest ON runs (created_at DESC);
CREATE TABLE IF NOT EXISTS steps (
    run_id TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    step_id TEXT NOT NULL,
    position INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL DEFAULT 'pending',
    output TEXT,
    error TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    started_at REAL,
    finished_at REAL,
    prompt_tokens INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (run_id, step_id)
);
PRAGMA user_version = 1;
COMMIT;
"""


class JournalError(OverseerError):
    """The journal could not be read (damaged, locked, or not a journal at all)."""


class UnknownRunError(UsageError):
    """No recorded run has that id (or the prefix matches several); exit 2."""


def default_journal_path(environ: Mapping[str, str] | None = None) -> Path:
    """``$OVERSEER_HOME/journal.sqlite3``, else under ``$XDG_STATE_HOME/overseer``, else
    ``~/.local/state/overseer``."""
    env = os.environ if environ is None else environ
    if env.get("OVERSEER_HOME"):
        return Path(env["OVERSEER_HOME"]) / JOURNAL_FILE
    if env.get("XDG_STATE_HOME"):
        return Path(env["XDG_STATE_HOME"]) / "overseer" / JOURNAL_FILE
    return Path.home() / ".local" / "state" / "overseer" / JOURNAL_FILE


# -- what reading gives back -------------------------------------------------------------------


@dataclass(frozen=True)
class RunSummary:
    """One line of ``overseer runs``. ``status``: running, interrupted (its process is gone),
    succeeded, failed or cancelled. Times are Unix seconds."""

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
        }


@dataclass(frozen=True)
class StoredRun:
    """Everything the journal holds about one run. ``plan`` is None if it stopped while planning;
    ``usage`` counts every attempt; ``timing`` is the last finished attempt's; ``final`` is the
    ``--json`` object of the last attempt, once it finished."""

    summary: RunSummary
    plan: Plan | None
    records: dict[str, StepRecord]
    answer: str
    reason: str
    usage: Usage
    timing: Timing
    warnings: tuple[str, ...]
    final: dict[str, Any] | None = None

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


# -- the journal -------------------------------------------------------------------------------


class Journal:
    """One journal file. Thread-safe; opens the file on first use, never at construction."""

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
    ) -> None:
        self.path = Path(path) if path is not None else default_journal_path()
        self.busy_timeout = busy_timeout
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._recording: set[str] = set()
        self._buses: weakref.WeakSet[EventBus] = weakref.WeakSet()

    def __repr__(self) -> str:
        return f"Journal({str(self.path)!r})"

    # -- recording --------------------------------------------------------------------------

    def attach(self, bus: EventBus) -> Callable[[], None]:
        """Record every run on ``bus`` (once, however often called); returns a detach function.

        A problem writing a run becomes one ``JournalProblem`` event on that bus.
        """
        with self._lock:
            if bus in self._buses:
                return _nothing
            self._buses.add(bus)

        def handle(event: Event) -> None:
            problem = self.record(event)
            if problem is not None:
                bus.emit(JournalProblem(event.t, problem, run_id=event.run_id))

        unsubscribe = bus.subscribe(handle)

        def detach() -> None:
            unsubscribe()
            with self._lock:
                self._buses.discard(bus)

        return detach

    def record(self, event: Event) -> str | None:
        """Write one event. Never raises: returns a one-line problem the first time a run's
        recording fails (that run is then no longer recorded), else None."""
        writer = _WRITERS.get(type(event))
        run_id = event.run_id
        if writer is None or not run_id:
            return None
        with self._lock:
            if isinstance(event, RunStarted):
                self._recording.add(run_id)
            elif run_id not in self._recording:
                return None
            if isinstance(event, RunFinished | RunAborted):
                self._recording.discard(run_id)
            return self._write(writer, event)

    def _write(self, writer: _Writer, event: Event) -> str | None:
        try:
            conn = self._connect()
            conn.execute("BEGIN IMMEDIATE")
            try:
                writer(conn, event)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        except Exception as exc:  # any failure to record is reported, never raised into the run
            self._recording.discard(event.run_id)
            self._drop()
            return _problem(self.path, exc)
        return None

    # -- reading ----------------------------------------------------------------------------

    def list_runs(self, limit: int | None = None) -> list[RunSummary]:
        """Recorded runs, newest first (all of them when ``limit`` is None)."""
        rows = self._query(_LIST_SQL, (-1 if limit is None else limit,))
        return [_summary(row) for row in rows]

    def resolve(self, ref: str) -> str:
        """The full id of the run ``ref`` names: an id, or a prefix of exactly one id."""
        ref = ref.strip()
        rows = self._query(_RESOLVE_SQL, (ref, len(ref), ref)) if ref else []
        ids = [str(row["run_id"]) for row in rows]
        if ref in ids or len(ids) == 1:
            return ref if ref in ids else ids[0]
        if not ids:
            raise UnknownRunError(
                f"no run {ref!r} in the journal {str(self.path)!r} ('overseer runs' lists them)"
            )
        shown = ", ".join(ids[:5]) + (", ..." if len(ids) > 5 else "")
        raise UnknownRunError(f"{ref!r} matches several runs ({shown}); give more of the id")

    def load(self, ref: str) -> StoredRun:
        """Everything recorded about the run ``ref`` names (an id or a unique prefix)."""
        run_id = self.resolve(ref)
        rows = self._query(_LIST_ONE_SQL, (run_id,))
        if not rows:
            raise UnknownRunError(f"no run {run_id!r} in the journal {str(self.path)!r}")
        steps = self._query(_STEPS_SQL, (run_id,))
        try:
            return _stored(rows[0], steps)
        except (ValueError, TypeError) as exc:
            raise JournalError(f"run {run_id!r} in the journal is damaged: {exc}") from None

    def close(self) -> None:
        with self._lock:
            self._drop()

    def _query(self, sql: str, params: Sequence[Any]) -> list[sqlite3.Row]:
        if not self.path.exists():
            return []
        with self._lock:
            try:
                return self._connect().execute(sql, params).fetchall()
            except (sqlite3.Error, OSError) as exc:
                self._drop()
                raise JournalError(_read_problem(self.path, exc)) from None

    # -- the connection ---------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = _open(self.path, self.busy_timeout)
        return self._conn

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                conn.close()


def _nothing() -> None:
    return None


_SHARED: weakref.WeakValueDictionary[Path, Journal] = weakref.WeakValueDictionary()
_SHARED_LOCK = threading.Lock()


def journal_for(choice: Journal | bool | None, enabled: bool = True) -> Journal | None:
    """The journal an ``Overseer`` records into: a ``Journal`` as given; ``True`` the default one
    (shared by every Overseer of the process, unless ``enabled`` is false); False or None none."""
    if isinstance(choice, Journal):
        return choice
    if not choice or not enabled:
        return None
    path = default_journal_path()
    with _SHARED_LOCK:
        journal = _SHARED.get(path)
        if journal is None:
            journal = _SHARED[path] = Journal(path)
        return journal


def _open(path: Path, busy_timeout: float) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    conn = sqlite3.connect(
        path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
    )
    try:
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {max(0, int(busy_timeout * 1000))}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        _migrate(conn, path)
    except BaseException:
        conn.close()
        raise
    return conn


def _migrate(conn: sqlite3.Connection, path: Path) -> None:
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if version > SCHEMA_VERSION:
        raise JournalError(
            f"the run journal {str(path)!r} was written by a newer overseer "
            f"(schema {version}, this one knows {SCHEMA_VERSION})"
        )
    if version < SCHEMA_VERSION:
        conn.executescript(_SCHEMA)


def _problem(path: Path, exc: BaseException) -> str:
    if isinstance(exc, JournalError):
        return f"{exc}; this run is not recorded"
    text = str(exc) or type(exc).__name__
    if "locked" in text or "busy" in text:
        what = "is locked by another program"
    elif "not a database" in text or "malformed" in text:
        what = "is damaged (move it away to start a new one)"
    else:
        what = "cannot be written"
    return f"the run journal {str(path)!r} {what} ({text}); this run is not recorded"


def _read_problem(path: Path, exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return f"cannot read the run journal {str(path)!r}: {text}"


# -- writing one event ---------------------------------------------------------------------------

_Writer = Callable[[sqlite3.Connection, Any], None]


def _run_started(conn: sqlite3.Connection, event: RunStarted) -> None:
    now = time.time()
    conn.execute(
        """INSERT INTO runs (run_id, request, status, created_at, updated_at, pid, host)
           VALUES (?, ?, 'running', ?, ?, ?, ?)
           ON CONFLICT (run_id) DO UPDATE SET
             status = 'running', reason = NULL, finished_at = NULL, report = NULL,
             updated_at = excluded.updated_at, pid = excluded.pid, host = excluded.host,
             attempts = attempts + 1,
             base_prompt_tokens = prompt_tokens, base_completion_tokens = completion_tokens""",
        (event.run_id, event.request, now, now, os.getpid(), _HOST),
    )


def _plan_ready(conn: sqlite3.Connection, event: PlanReady) -> None:
    plan = cast(Plan, event.plan)
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
        """INSERT INTO steps (run_id, step_id, position) VALUES (?, ?, ?)
           ON CONFLICT (run_id, step_id) DO UPDATE SET position = excluded.position""",
        [(event.run_id, step_id, index) for index, step_id in enumerate(ids)],
    )


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
    now, usage = time.time(), report.usage
    conn.execute(
        """UPDATE runs SET status = ?, reason = ?, answer = ?, timing = ?, warnings = ?,
             report = ?, prompt_tokens = base_prompt_tokens + ?,
             completion_tokens = base_completion_tokens + ?,
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
            now,
            now,
            run_id,
        ),
    )
    conn.executemany(
        """UPDATE steps SET status = ?, output = ?, error = ?, attempts = ?, started_at = ?,
             finished_at = ? WHERE run_id = ? AND step_id = ?""",
        [
            (r.status, r.output, r.error, r.attempts, r.started_at, r.finished_at, run_id, i)
            for i, r in report.outcome.steps.items()
        ],
    )


_WRITERS: dict[type[Event], _Writer] = {
    RunStarted: _run_started,
    PlanReady: _plan_ready,
    StepStarted: _step_started,
    StepFinished: _step_finished,
    StepFailed: _step_failed,
    StepSkipped: _step_settled,
    StepCancelled: _step_settled,
    UsageRecorded: _usage,
    RunFinished: _run_finished,
    RunAborted: _run_finished,
}


# -- reading rows back ---------------------------------------------------------------------------

_LIST_SQL = """
SELECT r.*,
  (SELECT COUNT(*) FROM steps s WHERE s.run_id = r.run_id AND s.status = 'succeeded') AS done,
  (SELECT COUNT(*) FROM steps s WHERE s.run_id = r.run_id) AS total
FROM runs r ORDER BY r.created_at DESC, r.rowid DESC LIMIT ?
"""
_LIST_ONE_SQL = """
SELECT r.*,
  (SELECT COUNT(*) FROM steps s WHERE s.run_id = r.run_id AND s.status = 'succeeded') AS done,
  (SELECT COUNT(*) FROM steps s WHERE s.run_id = r.run_id) AS total
FROM runs r WHERE r.run_id = ?
"""
_RESOLVE_SQL = """
SELECT run_id FROM runs WHERE run_id = ? OR substr(run_id, 1, ?) = ?
ORDER BY created_at DESC, rowid DESC LIMIT 6
"""
_STEPS_SQL = "SELECT * FROM steps WHERE run_id = ? ORDER BY position, rowid"

_STATUSES: tuple[StepStatus, ...] = (
    "pending",
    "running",
    "succeeded",
    "failed",
    "skipped",
    "cancelled",
)


def _summary(row: sqlite3.Row) -> RunSummary:
    return RunSummary(
        run_id=row["run_id"],
        request=row["request"],
        status=_live_status(row["status"], row["pid"], row["host"]),
        created_at=row["created_at"],
        finished_at=row["finished_at"],
        steps_done=row["done"],
        steps_total=row["total"],
        attempts=row["attempts"],
        total_tokens=row["prompt_tokens"] + row["completion_tokens"],
        pid=row["pid"],
    )


def _live_status(status: str, pid: int | None, host: str | None) -> str:
    """A run recorded as running whose process (on this machine) is gone was interrupted."""
    if status != "running" or pid is None or host != _HOST:
        return status
    return "running" if _alive(pid) else "interrupted"


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


def _stored(row: sqlite3.Row, steps: list[sqlite3.Row]) -> StoredRun:
    plan = Plan.model_validate(json.loads(row["plan"])) if row["plan"] else None
    timing = Timing(**json.loads(row["timing"])) if row["timing"] else Timing()
    return StoredRun(
        summary=_summary(row),
        plan=plan,
        records={s["step_id"]: _record(s) for s in steps},
        answer=row["answer"] or "",
        reason=row["reason"] or "",
        usage=Usage(row["prompt_tokens"], row["completion_tokens"]),
        timing=timing,
        warnings=tuple(json.loads(row["warnings"])) if row["warnings"] else (),
        final=json.loads(row["report"]) if row["report"] else None,
    )


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
    )


def _outcome_status(status: str) -> Literal["succeeded", "failed", "cancelled"]:
    if status == "succeeded":
        return "succeeded"
    return "cancelled" if status == "cancelled" else "failed"
