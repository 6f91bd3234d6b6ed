"""The journal's writer thread: events are queued by the emitter and written in batches.

Emitting costs the emitter one append under a lock. One thread per journal takes everything
queued so far and writes it in one transaction (group commit): it wakes for every event, so an
event is on disk within about one transaction of being emitted, and under load one commit carries
many events. ``submit(..., wait=...)`` also lets the emitter wait until its event is committed,
which the journal asks for where crash safety depends on it (``store.Journal`` says when).
``when_done`` (the executor asking whether a result is stored before it starts the steps that
depend on it) commits what is queued on the asking thread when the writer's thread is not
writing just then: two thread hand-offs less on each link of a chain of steps.

A write that finds the file locked by another process is retried, with everything queued since
folded into the same transaction, for up to ``patience`` seconds; meanwhile nobody waits on the
writer except the end of a run (``wait="end"``), so a lock held elsewhere slows no step. Any other
failure (damaged, unwritable) gives up on the runs of that batch, reported once each through
``on_problem``; their later events are dropped until a run with that id starts again.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import os
import sqlite3
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from overseer.events import Event, RunStarted
from overseer.journal.schema import JournalError, open_journal
from overseer.journal.sql import write_batch

__all__ = ["GATHER_S", "HERE_MAX", "IDLE_EXIT_S", "Wait", "Writer", "problem_text"]

IDLE_EXIT_S = 2.0
"""A writer with nothing to do for this long ends its thread; the next event starts another."""

GATHER_S = 0.01
"""How long the writer lets events gather after the first of a batch, unless an emitter waits."""

HERE_MAX = 1000
"""``when_done`` writes what is queued itself up to this many events (a fraction of a
millisecond per hundred); more is left to the writer's thread: the caller (the executor's
coordinating thread) has other steps to start."""

_RETRY_FIRST_S = 0.02
_RETRY_MAX_S = 0.25

Wait = Literal["no", "commit", "end"]
"""``commit``: until the event is committed, or the file is found locked; ``end``: until it is
committed or given up on, however long a lock lasts (up to the patience)."""

ProblemSink = Callable[[Event, str], None]
"""Told, once per run given up on, the first of its events that was not written, and why."""


class Writer:
    """Writes the events ``submit`` queues, in order, from its own thread."""

    def __init__(
        self, path: Path, busy_timeout: float, patience: float, on_problem: ProblemSink
    ) -> None:
        self.path = path
        self.busy_timeout = busy_timeout
        self.patience = patience
        self._on_problem = on_problem
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)
        self._flushed = threading.Condition(self._lock)
        self._queue: deque[Event] = deque()
        self._submitted = 0
        self._done = 0
        self._taken = 0
        self._thread: threading.Thread | None = None
        self._idle = False
        self._gathering = False
        self._urgent = False
        self._stalled = False
        self._writing = False  # a batch is being written, by this thread or by ``when_done``
        self._wrote_here_at = 0.0  # when ``when_done`` last committed
        self._closing = False  # ``close()`` asked the thread to end once nothing is queued
        self._conn: sqlite3.Connection | None = None
        self._quick: sqlite3.Connection | None = None  # ``when_done``'s: no busy wait
        self._given_up: set[str] = set()
        self._callbacks: list[tuple[int, int, Callable[[], None]]] = []  # ``when_done``'s
        self._tickets = itertools.count()
        _WRITERS.add(self)

    def _forget_after_fork(self) -> None:
        """In a forked child: no writer thread, fresh locks, none of the parent's connection or
        queue (the parent writes those events; the child would write them twice)."""
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)
        self._flushed = threading.Condition(self._lock)
        self._queue.clear()
        self._callbacks.clear()  # for runs of the parent's threads, which the child has not
        self._done = self._taken = self._submitted
        self._thread, self._conn, self._quick = None, None, None
        self._idle = self._gathering = self._urgent = self._stalled = self._writing = False
        self._closing = False

    # -- the emitter's side -----------------------------------------------------------------

    def submit(self, event: Event, wait: Wait = "no") -> int:
        """Queue ``event``; with ``wait``, return once it is written (see ``Wait``). Returns its
        place in the queue, for ``settle``."""
        with self._lock:
            self._queue.append(event)
            self._submitted += 1
            seq = self._submitted
            if wait != "no":
                self._urgent = True
            if self._thread is None:
                self._start()
            elif self._idle or (self._gathering and self._urgent):
                self._work.notify()
            if wait != "no" and threading.current_thread() is not self._thread:
                self._wait_for(seq, wait)
        return seq

    def settle(self, upto: int) -> None:
        """Wait until the events queued up to place ``upto`` (``submit``'s answer) are
        committed, or the file is found locked (a lock never holds a step up); at once when
        they are. Not on the writer's own thread."""
        if threading.current_thread() is self._thread:
            return
        with self._lock:
            seq = min(upto, self._submitted)
            if self._done >= seq:
                return
            self._urgent = True
            if self._gathering:
                self._work.notify()
            self._wait_for(seq, "commit")

    def when_done(self, upto: int, then: Callable[[], None]) -> bool:
        """Like ``settle`` without waiting: True when the events up to place ``upto`` are
        committed (or the file is found locked); else False, and ``then()`` is called, exactly
        once, when they are, when the file is found locked, or when they are given up on.

        When the writer's thread is not writing just then, the caller commits what is queued
        itself, at once (True): no hand-off to the writer's thread and back. That write never
        waits for a lock: on a lock, or any trouble, the batch goes back to the writer's thread
        (False), whose retries and reports are as for any batch."""
        with self._lock:
            if self._done >= min(upto, self._submitted) or self._stalled:
                return True
            batch = self._claim_locked()
        if batch is not None and self._write_here(batch):
            return True
        with self._lock:
            if self._done >= min(upto, self._submitted) or self._stalled:
                return True
            heapq.heappush(self._callbacks, (upto, next(self._tickets), then))
            self._urgent = True
            if self._gathering:
                self._work.notify()
            return False

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything queued so far is written or given up on; False on timeout.
        On the writer's own thread (a subscriber of a ``JournalProblem`` reading the journal)
        it returns at once: that thread cannot wait for itself."""
        if threading.current_thread() is self._thread:
            return False
        with self._lock:
            return self._wait_for(self._submitted, "end", timeout)

    def close(self) -> None:
        """Write what is queued, then close the file and end the writer's thread (a later
        event opens the file and starts a thread again)."""
        self.flush(self.patience + self.busy_timeout + 1.0)
        with self._lock:
            if self._done == self._submitted:
                self._drop()
            if self._thread is not None:
                self._closing = True  # the thread ends once it has nothing to write
                self._work.notify()

    def _claim_locked(self) -> list[Event] | None:
        """Everything queued, for ``when_done`` to write itself; None while the writer's thread
        writes (or the file is locked: the writer's thread retries)."""
        if self._writing or self._stalled or not 0 < len(self._queue) <= HERE_MAX:
            return None
        self._writing = True
        return self._drain_locked()

    def _write_here(self, events: list[Event]) -> bool:
        """One transaction for ``events`` on the caller's thread, on a connection that never
        waits for a lock. False: nothing written, and the events are back at the head of the
        queue, for the writer's thread."""
        written = False
        try:
            if self._quick is None:
                self._quick = open_journal(self.path, 0.0)
            self._transaction(self._quick, events)
            written = True
        except Exception:  # locked, or worse: the writer's thread retries, or reports it
            self._drop_quick()
        finally:  # even on a KeyboardInterrupt here, the events go on to the writer's thread
            self._after_write_here(events, written)
        return written

    def _after_write_here(self, events: list[Event], written: bool) -> None:
        due: list[Callable[[], None]] = []
        with self._lock:
            self._writing = False
            if written:
                self._wrote_here_at = time.monotonic()
                due = self._done_locked(self._taken)
            else:
                self._queue.extendleft(reversed(events))
                self._urgent = True
            if self._queue:  # what came meanwhile: a gathering writer's thread writes it anyway
                if self._thread is None:
                    self._start()
                elif self._idle or self._urgent:
                    self._work.notify()
        _call(due)

    def _wait_for(self, seq: int, wait: Wait, timeout: float | None = None) -> bool:
        def settled() -> bool:
            return self._done >= seq or (wait == "commit" and self._stalled)

        return self._flushed.wait_for(settled, timeout)

    def _start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="overseer-journal", daemon=True)
        self._thread.start()

    # -- the writer's thread ----------------------------------------------------------------

    def _loop(self) -> None:
        try:
            while (batch := self._take()) is not None:
                self._write(batch)
                del batch  # not kept while the thread idles: a run's whole report may be in it
                self._mark_done(self._taken)
        except BaseException:  # a bug here must not leave emitters waiting forever
            with self._lock:
                self._thread = None
                self._writing = False
            self._mark_done(self._submitted)
            raise

    def _mark_done(self, upto: int) -> None:
        with self._lock:
            due = self._done_locked(upto)
        _call(due)

    def _done_locked(self, upto: int) -> list[Callable[[], None]]:
        """The events up to place ``upto`` are written: the batch's writer is done, waiters are
        woken; the ``when_done`` callbacks now due, for the caller to call once unlocked."""
        self._done = max(self._done, upto)
        self._writing = False
        self._flushed.notify_all()
        return self._due(self._done)

    def _due(self, upto: int | None) -> list[Callable[[], None]]:
        """Take the ``when_done`` callbacks for places up to ``upto`` (None: all of them). The
        caller holds ``self._lock`` and calls them once it has let go of it."""
        callbacks, due = self._callbacks, []
        while callbacks and (upto is None or callbacks[0][0] <= upto):
            due.append(heapq.heappop(callbacks)[2])
        return due

    def _take(self) -> list[Event] | None:
        """Everything queued (waiting for something if nothing is); None: the thread ends.
        Meanwhile ``when_done`` may write what is queued itself: this thread waits for that."""
        with self._lock:
            while True:
                while not self._queue or self._writing:
                    if self._closing and not self._queue and not self._writing:
                        self._end_locked()
                        return None
                    self._idle = True
                    woken = self._work.wait(IDLE_EXIT_S)
                    self._idle = False
                    if not woken and not self._queue and not self._writing:
                        self._end_locked()
                        return None
                if not self._urgent:  # let a batch gather: fewer, larger transactions
                    self._gather()
                if self._queue and not self._writing:
                    break
            self._urgent = False
            self._writing = True
            return self._drain_locked()

    def _gather(self) -> None:
        """Let a batch gather for ``GATHER_S``, and for as long again after each commit that
        ``when_done`` makes meanwhile (it took everything queued before it): each event still
        waits at most ``GATHER_S``, and under a chain of such commits this thread, writing
        what they would take, does not take the writing from them. The caller holds the lock."""
        self._gathering = True
        until = time.monotonic() + GATHER_S
        while not (self._urgent or self._closing) and (left := until - time.monotonic()) > 0:
            self._work.wait(left)
            until = max(until, self._wrote_here_at + GATHER_S)
        self._gathering = False

    def _end_locked(self) -> None:
        self._thread = None
        self._closing = False

    def _drain_locked(self) -> list[Event]:
        events = list(self._queue)
        self._queue.clear()
        self._taken = self._submitted
        return events

    def _write(self, events: list[Event]) -> None:
        """One transaction for ``events``, retried while the file is locked."""
        first_lock: float | None = None
        pause = _RETRY_FIRST_S
        while True:
            try:
                self._transaction(self._connect(), events)
            except Exception as exc:  # recording never raises into a run: reported instead
                if not _is_lock(exc):
                    self._give_up(events, exc)
                    return
                now = time.monotonic()
                first_lock = now if first_lock is None else first_lock
                if now - first_lock >= self.patience:
                    self._give_up(events, exc)
                    return
                self._set_stalled(True)
                time.sleep(pause)  # the writer's own thread: no emitter waits on this pause
                pause = min(pause * 2, _RETRY_MAX_S)
                events = events + self._more()
                continue
            self._set_stalled(False)
            return

    def _more(self) -> list[Event]:
        """Events queued while a locked write waited: they join its transaction."""
        with self._lock:
            return self._drain_locked() if self._queue else []

    def _transaction(self, conn: sqlite3.Connection, events: list[Event]) -> None:
        write_batch(conn, self._to_write(events))

    def _to_write(self, events: list[Event]) -> list[Event]:
        """``events`` without those of runs given up on (a run that starts again is taken)."""
        if not self._given_up:
            return events
        kept = []
        for event in events:
            if isinstance(event, RunStarted):
                self._given_up.discard(event.run_id)
            elif event.run_id in self._given_up:
                continue
            kept.append(event)
        return kept

    def _give_up(self, events: list[Event], exc: BaseException) -> None:
        self._drop()
        self._set_stalled(False)
        message = problem_text(self.path, exc)
        firsts = {e.run_id: e for e in reversed(events)}
        restarted = {e.run_id for e in events if isinstance(e, RunStarted)}
        for run_id, event in reversed(firsts.items()):
            if run_id not in self._given_up or run_id in restarted:
                self._given_up.add(run_id)
                self._on_problem(event, message)

    def _set_stalled(self, stalled: bool) -> None:
        due: list[Callable[[], None]] = []
        with self._lock:
            if self._stalled != stalled:
                self._stalled = stalled
                if stalled:  # a lock never holds a step up: nobody waits for the commit now
                    due = self._due(None)
                self._flushed.notify_all()
        _call(due)

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = open_journal(self.path, self.busy_timeout)
        return self._conn

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        _close(conn)
        if not self._writing:
            self._drop_quick()

    def _drop_quick(self) -> None:
        conn, self._quick = self._quick, None
        _close(conn)


def _close(conn: sqlite3.Connection | None) -> None:
    if conn is not None:
        with contextlib.suppress(sqlite3.Error):
            conn.close()


_WRITERS: weakref.WeakSet[Writer] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for writer in list(_WRITERS):
        writer._forget_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _call(callbacks: list[Callable[[], None]]) -> None:
    """Run ``when_done`` callbacks; one that raises does not keep the others from running."""
    for callback in callbacks:
        with contextlib.suppress(Exception):
            callback()


def _is_lock(exc: BaseException) -> bool:
    text = str(exc)
    return isinstance(exc, sqlite3.OperationalError) and ("locked" in text or "busy" in text)


def problem_text(path: Path, exc: BaseException) -> str:
    """One line saying what is wrong with the journal, for a run that is not recorded."""
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
