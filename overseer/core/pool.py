"""A warm pool of daemon worker threads with a fast hand-off and a way to give up on a stuck job.

``concurrent.futures.ThreadPoolExecutor`` starts its threads lazily, one per submit, and cannot
let go of a thread that hangs. This pool starts every thread up front (``start()``, cheap to call
while the planner is still thinking), hands jobs over through one ``queue.SimpleQueue`` (a C
queue: tens of microseconds from submit to a worker running the job), and ``abandon()`` gives up
on a running job: its thread retires once the job returns on its own, and a fresh thread takes
its seat at once so the pool stays at full capacity.

The threads hold no reference to the pool: a pool dropped without ``shutdown()`` (a run that
never happened because planning failed) lets its idle threads go when it is collected.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import weakref
from collections.abc import Callable
from typing import Literal

__all__ = ["Ticket", "WorkerPool"]

TicketState = Literal["queued", "running", "done", "abandoned"]


class Ticket:
    """One submitted job; its state moves queued -> running -> done, or to abandoned."""

    __slots__ = ("_fn", "_lock", "_state")

    def __init__(self, fn: Callable[[], object]) -> None:
        self._fn: Callable[[], object] | None = fn
        self._lock = threading.Lock()
        self._state: TicketState = "queued"

    @property
    def state(self) -> TicketState:
        return self._state

    def _claim(self) -> bool:
        """A worker takes the job; False if it was abandoned while queued."""
        with self._lock:
            if self._state != "queued":
                return False
            self._state = "running"
            return True

    def _release(self) -> bool:
        """The job returned; False if it was abandoned meanwhile (the worker must retire)."""
        with self._lock:
            if self._state == "abandoned":
                return False
            self._state = "done"
            return True

    def _abandon(self) -> TicketState | None:
        """Mark abandoned; returns the state it had, or None if it had already finished."""
        with self._lock:
            before = self._state
            if before in ("done", "abandoned"):
                return None
            self._state = "abandoned"
            return before


class WorkerPool:
    """``size`` daemon threads that run submitted callables, started once and reused."""

    def __init__(self, size: int, *, name: str = "overseer-worker") -> None:
        if size < 1:
            raise ValueError(f"a worker pool needs at least 1 thread, got {size!r}")
        self._size = size
        self._name = name
        self._jobs: queue.SimpleQueue[Ticket | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._seated = 0  # threads that take jobs (excludes retiring ones)
        self._spawned = 0
        self._started = False
        self._stopped = False
        self._ready = threading.Semaphore(0)  # released once by each worker as it starts
        self._stop = weakref.finalize(self, _stop_workers, self._jobs, size)

    @property
    def size(self) -> int:
        return self._size

    @property
    def threads(self) -> int:
        """Threads currently taking jobs (the pool's capacity once started)."""
        return self._seated

    def start(self) -> None:
        """Start every worker thread and return once all of them wait for work (a few ms).

        Later calls do nothing.
        """
        with self._lock:
            if self._started:
                return
            if self._stopped:
                raise RuntimeError("the worker pool was shut down")
            self._started = True
            for _ in range(self._size):
                self._spawn()
        for _ in range(self._size):
            self._ready.acquire()

    def submit(self, fn: Callable[[], object]) -> Ticket:
        """Queue ``fn`` for the next free worker. ``fn`` should not raise (errors are dropped)."""
        if not self._started:
            self.start()
        if self._stopped:
            raise RuntimeError("the worker pool was shut down")
        ticket = Ticket(fn)
        self._jobs.put(ticket)
        return ticket

    def abandon(self, ticket: Ticket) -> bool:
        """Give up on ``ticket``. False if it already finished; True otherwise (a queued job
        will never run; a running job's thread retires when it returns and is replaced now)."""
        before = ticket._abandon()
        if before is None:
            return False
        if before == "running":
            with self._lock:
                self._seated -= 1
                if not self._stopped:
                    self._spawn()
        return True

    def shutdown(self) -> None:
        """Let idle workers exit; threads stuck in abandoned jobs end when their job does."""
        with self._lock:
            self._stopped = True
        self._stop()  # runs once, here or when the pool is collected

    def __enter__(self) -> WorkerPool:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()

    def _spawn(self) -> None:
        """Start one worker; the caller holds ``self._lock``."""
        self._seated += 1
        self._spawned += 1
        name = f"{self._name}-{self._spawned}"
        args = (self._jobs, self._ready)
        threading.Thread(target=_serve, args=args, name=name, daemon=True).start()


def _serve(jobs: queue.SimpleQueue[Ticket | None], ready: threading.Semaphore) -> None:
    """A worker's life: take jobs until told to stop, or retire after an abandoned job."""
    ready.release()
    while True:
        ticket = jobs.get()
        if ticket is None:
            return
        if not ticket._claim():
            continue
        fn, ticket._fn = ticket._fn, None  # the job often holds its ticket: no cycle left
        with contextlib.suppress(Exception):  # jobs report their own errors; the pool lives on
            if fn is not None:
                fn()
        del fn
        if not ticket._release():
            return


def _stop_workers(jobs: queue.SimpleQueue[Ticket | None], count: int) -> None:
    """One stop sign per seat (the pool's size); spare ones are never read."""
    for _ in range(count):
        jobs.put(None)
