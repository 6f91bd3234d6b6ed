"""The run journal: every run recorded in SQLite as it happens, to list, show and resume later.

The journal subscribes to an engine's event bus. Emitting an event costs the emitter one queue
append; the journal's writer thread (``writer.py``) writes what is queued in batched
transactions (WAL mode, group commit). The exact durability rule, which is what crash safety
rests on:

- every event wakes the writer, which lets a batch gather for ``writer.GATHER_S`` (10 ms)
  unless an emitter waits, then commits everything queued in one transaction: an event is on
  disk within about 10 ms plus one transaction of being emitted;
- the emitter waits until its event is committed (and with it every event before it) for a
  run's start;
- a step that depends on others starts only once its dependencies' results are committed
  (and with them every event queued before them): no dependent runs before the output it is
  given is on disk. The executor holds it back meanwhile (``durability``: it holds neither a
  worker nor a slot); once its inbox is empty it asks, and when the writer's thread is not
  writing just then, that question commits everything queued at once, on the executor's
  thread, without waiting for a lock (a locked file leaves it to the writer's thread). One
  that arrives after its dependencies finished (a streamed plan) waits as it starts
  (``StepStarted``, on its worker thread, before its tool runs). A run killed (Ctrl-C,
  ``kill -9``) loses at most its steps in flight and the steps that finished within those last
  10 ms with no dependent started yet, which resuming runs again (a plan not yet on disk is
  planned again);
- the end of a run (``RunFinished``, ``RunAborted``) waits until everything of the run is
  committed, so a finished run never reads as unfinished; its ``--json`` object follows in a
  transaction nobody waits for (``close()``, a read in the same process and the end of the
  process wait for it; a run killed before has that object rebuilt from its steps);
- a plan, a step finishing, tokens spent and a step with no dependencies starting never make
  the emitter wait.

While another program holds the file locked, writes are retried (events keep queueing and go
into the same transaction) for up to ``lock_patience`` seconds; only a run's end waits for them,
so a lock slows no step, and when it goes away within the patience the run is recorded in
full. After a power loss the last few commits may be lost too (``synchronous=NORMAL``).

Recording never stops a run: when the file is damaged, unwritable or locked beyond the patience,
the journal gives up on that run and says so once (``Journal.record`` returns the problem;
``attach`` emits a ``JournalProblem`` event). Reading (``list_runs``, ``load``) raises
``JournalError`` instead. The journal records the request, the plan and its rounds, each step's
status, attempts, output, error and times, the token usage and the run's non-secret settings;
nothing in the events holds an API key, so none is ever written.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sqlite3
import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

from overseer.core.plan import Plan, Step
from overseer.errors import UsageError
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
    StepPlanned,
    StepSkipped,
    StepStarted,
    UsageRecorded,
)
from overseer.journal.reader import (
    LIST_ONE_SQL,
    LIST_SQL,
    RESOLVE_SQL,
    STEPS_SQL,
    RunSummary,
    StoredRun,
    iso_time,
    stored_run,
    summary,
)
from overseer.journal.schema import SCHEMA_VERSION, JournalError, open_journal
from overseer.journal.sql import WRITERS, FinalReport, PlanText
from overseer.journal.writer import Wait, Writer

__all__ = [
    "DEFAULT_BUSY_TIMEOUT",
    "DEFAULT_LOCK_PATIENCE",
    "JOURNAL_FILE",
    "SCHEMA_VERSION",
    "Journal",
    "JournalError",
    "RunSummary",
    "StoredRun",
    "UnknownRunError",
    "default_journal_path",
    "iso_time",
    "journal_for",
]

JOURNAL_FILE = "journal.sqlite3"
DEFAULT_BUSY_TIMEOUT = 1.0
"""Seconds one write waits for another process's transaction (SQLite's busy timeout)."""
DEFAULT_LOCK_PATIENCE = 5.0
"""Seconds a locked journal is retried before the journal gives up on the runs it holds up."""


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


class Journal:
    """One journal file. Thread-safe; opens the file on first use, never at construction."""

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
        lock_patience: float = DEFAULT_LOCK_PATIENCE,
    ) -> None:
        self.path = Path(path) if path is not None else default_journal_path()
        self.busy_timeout = busy_timeout
        self._lock = threading.Lock()  # the recording bookkeeping below
        self._read_lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None  # for reading; the writer has its own
        self._writer = Writer(self.path, busy_timeout, lock_patience, self._on_problem)
        self._recording: set[str] = set()
        self._runs: dict[str, _Recording] = {}  # the runs being recorded
        self._run_buses: dict[str, EventBus] = {}
        self._problems: dict[str, str] = {}
        self._buses: weakref.WeakSet[EventBus] = weakref.WeakSet()
        _OPEN.add(self)

    def _forget_after_fork(self) -> None:
        """In a forked child: fresh locks (another thread may have held one at the fork) and
        none of the parent's reading connection."""
        self._lock = threading.Lock()
        self._read_lock = threading.Lock()
        self._conn = None

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
            self._submit(event, bus)

        unsubscribe = bus.subscribe(handle)

        def detach() -> None:
            unsubscribe()
            with self._lock:
                self._buses.discard(bus)

        return detach

    def record(self, event: Event) -> str | None:
        """Write one event and wait until it is written. Never raises: returns a one-line
        problem the first time a run's recording fails (that run is then no longer recorded),
        else None."""
        if self._admit(event, None) is None:
            return None
        self._writer.submit(event, "end")
        self._then_report(event, "end")
        with self._lock:
            return self._problems.pop(event.run_id, None)

    def durability(self, run_id: str) -> Callable[[str, Callable[[], None]], bool]:
        """For the executor of run ``run_id`` (``overseer.core.executor.Durability``): whether
        a step's result, just emitted, is committed, and when not, a call once it is. The steps
        that depend on it are held back by the executor till then, so they wait holding no
        worker (as they start, they find it committed; the start's own wait, below, stays for
        the steps that arrive after it finished, in a streamed plan)."""

        def durable(step_id: str, then: Callable[[], None]) -> bool:
            run = self._runs.get(run_id)
            place = run.finished.get(step_id) if run is not None else None
            return place is None or self._writer.when_done(place, then)

        return durable

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every event recorded so far is written (or given up on)."""
        return self._writer.flush(timeout)

    def _submit(self, event: Event, bus: EventBus) -> None:
        kind = type(event)
        if kind in _PLAIN:  # most events: queued as they come, no lock of the journal's
            self._record_plain(event)
            return
        if kind is StepStarted:
            self._record_start(cast(StepStarted, event))
            return
        wait = self._admit(event, bus)
        if wait is None:
            return
        if kind is PlanReady and cast(PlanReady, event).round <= 1:
            plan = cast(Plan, cast(PlanReady, event).plan)
            event = PlanText(event.t, event, plan.model_dump_json(), run_id=event.run_id)
        self._writer.submit(event, wait)
        if wait == "end":
            self._then_report(event, "no")
            with self._lock:
                self._run_buses.pop(event.run_id, None)
                self._problems.pop(event.run_id, None)

    def _record_plain(self, event: Event) -> None:
        """Queue an event nobody waits for. The run is looked up with one dict read (atomic);
        a step's result notes its queue place for the dependents that will wait for it (they
        start after this returns, on the thread that emitted it)."""
        run = self._runs.get(event.run_id) if event.run_id else None
        if run is None:
            return
        place = self._writer.submit(event)
        if isinstance(event, StepFinished):
            run.finished[event.step_id] = place

    def _record_start(self, event: StepStarted) -> None:
        """A step starting: one that depends on others first waits until the results it is
        given are committed. No lock: the run is one dict read, and a step starts on one thread
        at a time (its retries on the same one)."""
        run = self._runs.get(event.run_id) if event.run_id else None
        if run is None:
            return
        if _first_dependent_start(run, event.step_id):
            places = run.finished
            self._writer.settle(max(places.get(d, 0) for d in run.dependent[event.step_id]))
        self._writer.submit(event)

    def _admit(self, event: Event, bus: EventBus | None) -> Wait | None:
        """Whether to record ``event`` (None: not) and how long its emitter waits for it."""
        run_id = event.run_id
        if not run_id or type(event) not in WRITERS:
            return None
        with self._lock:
            if isinstance(event, RunStarted):
                self._recording.add(run_id)
                self._runs[run_id] = _Recording()
                if bus is not None:
                    self._run_buses[run_id] = bus
                return "commit"
            run = self._runs.get(run_id)
            if run is None:
                return None
            return _wait_for(event, run, self._end)

    def _then_report(self, event: Event, wait: Wait) -> None:
        """After a finished run's end: its ``--json`` object, in a transaction of its own."""
        report = (
            getattr(event, "extra", {}).get("report") if isinstance(event, RunFinished) else None
        )
        if report is not None:
            self._writer.submit(FinalReport(event.t, report, run_id=event.run_id), wait)

    def _end(self, run_id: str) -> None:
        self._recording.discard(run_id)
        self._runs.pop(run_id, None)

    def _on_problem(self, event: Event, message: str) -> None:
        """From the writer's thread: the run of ``event`` is not recorded, and why."""
        run_id = event.run_id
        with self._lock:
            self._end(run_id)
            bus = self._run_buses.get(run_id)
            self._problems[run_id] = message
        if bus is not None:
            bus.emit(JournalProblem(event.t, message, run_id=run_id))

    # -- reading ----------------------------------------------------------------------------

    def list_runs(self, limit: int | None = None, batch_id: str | None = None) -> list[RunSummary]:
        """Recorded runs, newest first (all of them when ``limit`` is None); with ``batch_id``,
        only the runs of that batch."""
        rows = self._query(LIST_SQL, (batch_id, batch_id, -1 if limit is None else limit))
        return [summary(row) for row in rows]

    def resolve(self, ref: str) -> str:
        """The full id of the run ``ref`` names: an id, or a prefix of exactly one id."""
        ref = ref.strip()
        rows = self._query(RESOLVE_SQL, (ref, len(ref), ref)) if ref else []
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
        rows = self._query(LIST_ONE_SQL, (run_id,))
        if not rows:
            raise UnknownRunError(f"no run {run_id!r} in the journal {str(self.path)!r}")
        steps = self._query(STEPS_SQL, (run_id,))
        try:
            return stored_run(rows[0], steps)
        except (ValueError, TypeError) as exc:
            raise JournalError(f"run {run_id!r} in the journal is damaged: {exc}") from None

    def close(self) -> None:
        """Write everything queued, then close the file (it opens again when next used)."""
        self._writer.close()
        with self._read_lock:
            self._drop()

    def _query(self, sql: str, params: Sequence[Any]) -> list[sqlite3.Row]:
        _settle_writes(self.path)
        if not self.path.exists():
            return []
        with self._read_lock:
            try:
                if self._conn is None:
                    self._conn = open_journal(self.path, self.busy_timeout)
                return self._conn.execute(sql, params).fetchall()
            except (sqlite3.Error, OSError) as exc:
                self._drop()
                raise JournalError(_read_problem(self.path, exc)) from None

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                conn.close()


_PLAIN = frozenset({StepFinished, StepFailed, StepSkipped, StepCancelled, UsageRecorded})
"""Event kinds recorded as they come: nothing to decide, nobody waits."""


class _Recording:
    """What the journal tracks of a run it records, to know when an emitter must wait."""

    __slots__ = ("dependent", "finished", "started")

    def __init__(self) -> None:
        self.dependent: dict[str, tuple[str, ...]] = {}  # step -> the steps it depends on
        self.finished: dict[str, int] = {}  # step -> its StepFinished's queue place
        self.started: set[str] = set()  # the steps that started in this attempt

    def plan(self, step: Step) -> None:
        if step.depends_on:
            self.dependent[step.step_id] = step.depends_on


def _first_dependent_start(run: _Recording, step_id: str) -> bool:
    """Notes that ``step_id`` started; True the first time, for a step that depends on others
    (a retry's start waited already, at the step's first start)."""
    first = step_id not in run.started
    run.started.add(step_id)
    return first and step_id in run.dependent


def _wait_for(event: Event, run: _Recording, end: Callable[[str], None]) -> Wait:
    """The emitter's wait for an event of a run being recorded (the rule in the docstring).
    A retry's start waited already, at the step's first start."""
    if isinstance(event, StepStarted):  # from ``record()``, which waits for it anyway
        _first_dependent_start(run, event.step_id)
        return "no"
    if isinstance(event, StepPlanned):
        run.plan(cast(Step, event.step))
        return "no"
    if isinstance(event, PlanReady):
        for step in cast(Plan, event.plan).steps:
            run.plan(step)
        return "no"  # the next wait (a dependent's start, the run's end) covers it
    if isinstance(event, RunFinished | RunAborted):
        end(event.run_id)
        return "end"
    return "no"


def _nothing() -> None:
    return None


def _read_problem(path: Path, exc: BaseException) -> str:
    if isinstance(exc, JournalError):
        return str(exc)
    text = str(exc) or type(exc).__name__
    return f"cannot read the run journal {str(path)!r}: {text}"


_OPEN: weakref.WeakSet[Journal] = weakref.WeakSet()


@atexit.register
def _flush_at_exit() -> None:
    """What is still queued (a finished run's ``--json`` object) is written before the process
    ends; the writer threads are daemons, so nothing else would wait for them."""
    for journal in list(_OPEN):
        journal.flush(journal.busy_timeout + DEFAULT_LOCK_PATIENCE)


def _after_fork_in_child() -> None:
    for journal in list(_OPEN):
        journal._forget_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _settle_writes(path: Path) -> None:
    """Read what this process wrote: wait for every journal of the process on ``path`` to
    write what it has queued (nothing to wait for, most of the time)."""
    for journal in list(_OPEN):
        if journal.path == path:
            journal.flush(journal.busy_timeout + DEFAULT_LOCK_PATIENCE)


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
