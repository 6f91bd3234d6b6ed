"""Runs a plan's steps on a warm pool of worker threads, each the moment its dependencies succeed.

One thread (the caller of ``run()``) owns all the state. It blocks on a single inbox where every
happening arrives: a step finished, a step was added (streamed plan), the plan was closed, tokens
were spent elsewhere, the run was cancelled. The only timeout it ever waits with is the nearest
step deadline (or the cancel grace): it never polls. The ``Scheduler`` decides what may start, so
the global cap and the per-tool caps hold; the ``WorkerPool`` runs it with a fast hand-off.

A step others depend on may have its dependents held back after it succeeded until its result
is stored (``durable``, the journal's): meanwhile its slot is free and they hold no worker.

Policies: per-step timeout (the step fails, its thread is abandoned and replaced), per-step
retries of a runner that raised, fail-fast or continue on failure, a token budget, cancellation.
Every outcome is recorded in a ``StepRecord`` and announced on the ``EventBus``; a runner's
exception is a step failure, never a crash of the run. ``StepStarted`` and ``StepRetrying`` are
emitted on the worker thread that runs the step (off the coordinating thread's critical path);
every other event on the thread that called ``run()``. Per step the order is always
StepStarted, [StepRetrying, StepStarted]..., then StepFinished (+ UsageRecorded) or StepFailed;
a step that never ran gets one StepSkipped or StepCancelled, a step reused from ``prior`` one
StepFinished.
"""

from __future__ import annotations

import heapq
import itertools
import queue
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from types import MappingProxyType
from typing import Literal

from overseer.core.plan import Plan, Step
from overseer.core.pool import Ticket, WorkerPool
from overseer.core.results import RunOutcome, StepRecord
from overseer.core.scheduler import ErrorPolicy, Scheduler
from overseer.core.toolbase import CallContext, ToolResult
from overseer.events import (
    EventBus,
    StepCancelled,
    StepFailed,
    StepFinished,
    StepRetrying,
    StepSkipped,
    StepStarted,
    UsageRecorded,
)
from overseer.usage import Usage

__all__ = ["DEFAULT_CANCEL_GRACE", "Durability", "Executor", "Settled", "StepRunner"]

StepRunner = Callable[[Step, Mapping[str, str], CallContext], ToolResult]
"""Runs one step: (step, outputs of its dependencies by step id, call context) -> result."""

Durability = Callable[[str, Callable[[], None]], bool]
"""``durable(step_id, then)``: whether the result of ``step_id`` (its ``StepFinished``, just
emitted) is safely stored; when not yet, False, and ``then()`` is called once it is, or once
waiting for it is pointless (from any thread, soon, and exactly once). The journal gives one
(``Journal.durability``): the steps that depend on a step start only when ``then`` is called,
and until then they hold neither a worker nor a slot."""

DEFAULT_CANCEL_GRACE = 0.5
"""Seconds ``cancel()`` waits for running steps before recording them cancelled."""


@dataclass(eq=False, slots=True)
class _Job:
    """One step's run, built when it starts and dropped once it settles, so that a long run
    keeps no context, token or ticket per finished step (the garbage collector would walk
    them all, again and again, for the rest of the run).

    ``started`` is when it was handed to a worker (seconds since t0); ``settled`` once its
    outcome is recorded or it was abandoned.
    """

    step: Step
    ctx: CallContext
    inputs: Mapping[str, str]
    started: float = 0.0
    attempts: int = 1
    ticket: Ticket | None = None
    settled: bool = False


@dataclass(eq=False, slots=True)
class _Done:
    job: _Job
    result: ToolResult | None
    error: str
    at: float  # executor clock when the runner returned


@dataclass(frozen=True)
class _Added:
    steps: tuple[Step, ...]


@dataclass(frozen=True)
class _Closed:
    pass


@dataclass(frozen=True)
class _Durable:
    step_id: str  # its result is stored: its dependents may start


@dataclass(eq=False)
class Settled:
    """A barrier (``Executor.settled``): ``reached`` is set once every step added before it has
    settled, or once the run ended. Then ``records`` holds a copy of every step's record and
    ``stopped`` says whether the run halted (fail-fast, budget, cancel): nothing more will start,
    so adding steps is pointless. Lets a caller plan a next round from finished outputs."""

    reached: threading.Event = field(default_factory=threading.Event)
    records: dict[str, StepRecord] = field(default_factory=dict)
    stopped: bool = False


@dataclass(frozen=True)
class _UsageAdded:
    usage: Usage


@dataclass(frozen=True)
class _CancelRequested:
    reason: str


_Message = _Done | _Added | _Closed | _Durable | _UsageAdded | _CancelRequested | Settled

_NO_INPUTS: Mapping[str, str] = MappingProxyType({})
"""The inputs of every step that depends on nothing: one shared, read-only mapping."""
RunStatus = Literal["succeeded", "failed", "cancelled"]


class Executor:
    """Runs steps under caps with timeouts, retries, a budget and cancellation; emits events.

    Single use: one ``run()`` per executor. ``add_step``, ``close``, ``add_usage`` and ``cancel``
    may be called from any thread, before or during ``run()``. ``clock`` stamps events and
    records (seconds since ``t0``, which defaults to the start of ``run()``); step deadlines
    always use ``time.monotonic()``, as ``CallContext.deadline`` promises.
    """

    def __init__(
        self,
        runner: StepRunner,
        *,
        bus: EventBus,
        max_workers: int = 8,
        tool_caps: Mapping[str, int] | None = None,
        step_timeout: float | None = None,
        tool_timeouts: Mapping[str, float] | None = None,
        on_error: ErrorPolicy = "fail-fast",
        max_tokens: int | None = None,
        step_retries: int = 0,
        clock: Callable[[], float] = time.monotonic,
        t0: float | None = None,
        pool: WorkerPool | None = None,
        cancel_grace: float = DEFAULT_CANCEL_GRACE,
        durable: Durability | None = None,
    ) -> None:
        _check_settings(step_timeout, max_tokens, step_retries, cancel_grace)
        self._runner = runner
        self._bus = bus
        self._run_id: str = getattr(bus, "run_id", "")  # stamped here: the bus need not copy
        self._emit = bus.emit_stamped if self._run_id else bus.emit
        self._sched = Scheduler(max_running=max_workers, tool_caps=tool_caps, on_error=on_error)
        self._fail_fast = on_error == "fail-fast"
        self._timeout = step_timeout
        self._tool_timeouts = dict(tool_timeouts or {})
        self._max_tokens = max_tokens
        self._retries = step_retries
        self._clock = clock
        self._t0 = clock() if t0 is None else t0
        self._t0_given = t0 is not None
        self._grace = cancel_grace
        self._durable = durable
        self._unsure: list[str] = []  # held back: stored yet? asked once the inbox is empty
        self._pool, self._owns_pool = _pool_for(pool, max_workers)
        self._inbox: queue.SimpleQueue[_Message] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._caller_closed = False
        self._started = False
        self._ended = False
        self._barriers: list[Settled] = []
        self._records: dict[str, StepRecord] = {}
        self._prior: dict[str, StepRecord] = {}
        self._jobs: dict[str, _Job] = {}  # running
        self._deadlines: list[tuple[float, int, _Job]] = []
        self._tiebreak = itertools.count()
        self._step_usage = Usage()
        self._other_usage = Usage()
        self._failures: list[str] = []
        self._halt_reason = ""
        self._cancel_reason = ""
        self._grace_deadline: float | None = None

    # -- the thread-safe surface -----------------------------------------------------------

    def warm(self) -> None:
        """Start the worker threads now (e.g. while the planner is still thinking)."""
        self._pool.start()

    def add_step(self, step: Step) -> None:
        """Add one step of a streamed plan; it starts as soon as its dependencies succeed."""
        self.add_steps((step,))

    def add_steps(self, steps: Sequence[Step]) -> None:
        """Add several steps at once (one message for the run's thread, however many)."""
        if not steps:
            return
        with self._lock:
            if self._caller_closed:
                raise RuntimeError(f"step {steps[0].step_id!r} was added after the plan was closed")
            self._inbox.put(_Added(tuple(steps)))

    def close(self) -> None:
        """The plan is complete: ``run()`` returns once every step has settled."""
        with self._lock:
            self._caller_closed = True
            self._inbox.put(_Closed())

    def settled(self) -> Settled:
        """A barrier over the steps added so far (see ``Settled``); wait on ``reached``."""
        barrier = Settled()
        with self._lock:
            if not self._ended:
                self._inbox.put(barrier)
                return barrier
        self._release([barrier])
        return barrier

    def add_usage(self, usage: Usage) -> None:
        """Tokens spent outside the steps (the planner's) that count toward ``max_tokens``."""
        self._inbox.put(_UsageAdded(usage))

    def cancel(self, reason: str) -> None:
        """Start nothing more, set ``ctx.cancelled`` on running steps, return soon."""
        self._inbox.put(_CancelRequested(reason))

    # -- running ----------------------------------------------------------------------------

    def run(
        self, plan: Plan | None = None, prior: Mapping[str, StepRecord] | None = None
    ) -> RunOutcome:
        """Run until every step has settled (or the run stopped) and return the outcome.

        ``plan`` given: its steps are added and the plan closed. Otherwise steps arrive through
        ``add_step`` until ``close()``. ``prior``: records from an earlier attempt of this run;
        a step whose prior record succeeded is not run again and its output feeds dependents.
        """
        self._begin(plan, prior)
        try:
            self._loop()
        finally:
            with self._lock:
                self._ended = True
            self._release(self._barriers + self._left_barriers())
            if self._owns_pool:
                self._pool.shutdown()
        return self._outcome()

    def _begin(self, plan: Plan | None, prior: Mapping[str, StepRecord] | None) -> None:
        with self._lock:
            if self._started:
                raise RuntimeError("an Executor runs once; create a new one for another run")
            self._started = True
            self._caller_closed = self._caller_closed or plan is not None
        if not self._t0_given:
            self._t0 = self._clock()
        self._prior = {i: r for i, r in (prior or {}).items() if r.status == "succeeded"}
        self.warm()
        for step in plan.steps if plan is not None else ():
            self._on_added(step)
        if plan is not None:
            self._on_closed()

    def _loop(self) -> None:
        self._drain()
        self._check_budget()
        while True:
            if self._unsure:
                self._ask_durable()
            self._dispatch()  # may settle steps at once (reused from prior): barriers after it
            if self._barriers and self._sched.pending == 0 and self._sched.running == 0:
                self._release(self._barriers)
            if self._sched.finished:
                return
            message = self._wait()
            if message is not None:
                self._handle(message)
            self._drain()
            if self._deadlines or self._grace_deadline is not None:
                self._expire()

    def _wait(self) -> _Message | None:
        """Block until something happens or the nearest deadline passes."""
        deadline = self._next_deadline()
        if deadline is None:
            return self._inbox.get()
        try:
            wait = min(max(0.0, deadline - time.monotonic()), threading.TIMEOUT_MAX)  # inf, 1e308
            return self._inbox.get(timeout=wait)
        except queue.Empty:
            return None

    def _next_deadline(self) -> float | None:
        heap = self._deadlines
        while heap and heap[0][2].settled:
            heapq.heappop(heap)
        candidates = [heap[0][0]] if heap else []
        if self._grace_deadline is not None:
            candidates.append(self._grace_deadline)
        return min(candidates, default=None)

    def _drain(self) -> None:
        inbox = self._inbox
        while not inbox.empty():  # only this thread takes from the inbox
            self._handle(inbox.get_nowait())

    def _handle(self, message: _Message) -> None:
        if isinstance(message, _Done):
            self._on_done(message)
        elif isinstance(message, _Durable):
            self._sched.release(message.step_id)
        elif isinstance(message, _Added):
            for step in message.steps:
                self._on_added(step)
        elif isinstance(message, _Closed):
            self._on_closed()
        elif isinstance(message, Settled):
            self._barriers.append(message)
        elif isinstance(message, _UsageAdded):
            self._other_usage += message.usage
            self._check_budget()
        else:
            self._on_cancel(message.reason)

    def _left_barriers(self) -> list[Settled]:
        """Barriers still in the inbox when the run ended (nothing else there matters now)."""
        left = []
        while not self._inbox.empty():
            message = self._inbox.get_nowait()
            if isinstance(message, Settled):
                left.append(message)
        return left

    def _release(self, barriers: list[Settled]) -> None:
        """Answer the barriers waiting: every step added before them has settled."""
        stopped = self._sched.halted or bool(self._cancel_reason) or self._ended
        for barrier in barriers:
            barrier.records = {i: replace(r) for i, r in self._records.items()}
            barrier.stopped = stopped
            barrier.reached.set()
        barriers.clear()

    # -- plan arrival -----------------------------------------------------------------------

    def _on_added(self, step: Step) -> None:
        try:
            settled = self._sched.add(step)
        except ValueError as exc:
            self._halt(f"invalid plan: {exc}", force=True)
            return
        self._records[step.step_id] = StepRecord(step.step_id)
        if settled:
            self._record_settled(settled)

    def _on_closed(self) -> None:
        try:
            self._sched.close()
        except ValueError as exc:
            self._halt(f"invalid plan: {exc}", force=True)

    def _record_settled(self, step_ids: Iterable[str]) -> None:
        """Record steps the scheduler settled without running them (skipped or cancelled)."""
        for step_id in step_ids:
            if self._sched.status(step_id) == "skipped":
                self._skip([step_id])
            else:
                self._cancel_pending([step_id], self._stop_reason())

    # -- starting steps ---------------------------------------------------------------------

    def _dispatch(self) -> None:
        while steps := self._sched.take_ready():
            for step in steps:
                prior = self._prior.get(step.step_id)
                if prior is None:
                    self._launch(step)
                else:
                    self._reuse(step, prior)

    def _launch(self, step: Step) -> None:
        """Hand a step to a worker; StepStarted is emitted there, off this thread's path."""
        step_id = step.step_id
        inputs = self._inputs(step)
        ctx = CallContext(step_id=step_id, task=step.description, inputs=inputs)
        job = self._jobs[step_id] = _Job(step, ctx, inputs)
        job.started = now = self._since()
        timeout = self._timeout_of(step)
        if timeout is not None:
            ctx.deadline = deadline = time.monotonic() + timeout
            heapq.heappush(self._deadlines, (deadline, next(self._tiebreak), job))
        record = self._records[step_id]
        record.status, record.started_at, record.attempts = "running", now, 1
        job.ticket = self._pool.submit(partial(self._work, job))

    def _timeout_of(self, step: Step) -> float | None:
        """The tool's own timeout where the configuration gives one, else the step timeout."""
        return self._tool_timeouts.get(step.tool, self._timeout)

    def _inputs(self, step: Step) -> Mapping[str, str]:
        if not step.depends_on:
            return _NO_INPUTS
        records = self._records
        return {d: records[d].output or "" for d in step.depends_on if d in records}

    def _reuse(self, step: Step, prior: StepRecord) -> None:
        """A step that succeeded in an earlier attempt: keep its record, do not run it."""
        record = self._records[step.step_id] = replace(prior)
        self._sched.succeeded(step.step_id)
        output = record.output or ""
        self._emit(
            StepFinished(
                self._since(),
                step.step_id,
                output,
                record.duration,
                record.attempts,
                run_id=self._run_id,
            )
        )

    # -- on a worker thread -------------------------------------------------------------------

    def _work(self, job: _Job) -> None:
        self._emit(StepStarted(job.started, job.step.step_id, 1, run_id=self._run_id))
        result, error = self._attempts(job)
        self._inbox.put(_Done(job, result, error, self._clock()))

    def _attempts(self, job: _Job) -> tuple[ToolResult | None, str]:
        attempt = 1
        while True:
            job.attempts = job.ctx.attempt = attempt
            result, error, retryable = self._attempt(job)
            if not retryable or attempt > self._retries or job.ctx.cancelled.is_set():
                return result, error
            attempt += 1
            self._announce_retry(job.step.step_id, attempt, error)

    def _attempt(self, job: _Job) -> tuple[ToolResult | None, str, bool]:
        """One call of the runner: (result, error, worth retrying)."""
        try:
            result = self._runner(job.step, job.inputs, job.ctx)
        except Exception as exc:
            return None, _describe(exc), True
        except BaseException as exc:  # SystemExit and the like from a tool: fail, never retry
            return None, _describe(exc), False
        if not isinstance(result, ToolResult):
            return (
                None,
                f"the step runner returned {type(result).__name__}, not a ToolResult",
                False,
            )
        return result, "", False

    def _announce_retry(self, step_id: str, attempt: int, error: str) -> None:
        now = self._since()
        self._emit(StepRetrying(now, step_id, attempt, error, run_id=self._run_id))
        self._emit(StepStarted(now, step_id, attempt, run_id=self._run_id))

    # -- outcomes -----------------------------------------------------------------------------

    def _on_done(self, done: _Done) -> None:
        job = done.job
        if job.settled:
            return  # the late result of a step that timed out or was given up: ignored
        self._unregister(job)
        at = done.at - self._t0
        if done.result is None and self._cancel_reason and job.ctx.cancelled.is_set():
            self._record_cancelled(job, at, done.error)  # it stopped because the run asked it to
        elif done.result is None:
            self._fail(job, done.error, at)
        else:
            self._succeed(job, done.result, at)

    def _unregister(self, job: _Job) -> None:
        job.settled = True
        del self._jobs[job.step.step_id]

    def _succeed(self, job: _Job, result: ToolResult, at: float) -> None:
        step_id = job.step.step_id
        record = self._records[step_id]
        record.status, record.output, record.finished_at = "succeeded", result.output, at
        record.attempts = job.attempts
        record.usage += result.usage
        run_id = self._run_id
        self._emit(
            StepFinished(
                at, step_id, result.output, record.duration, record.attempts, run_id=run_id
            )
        )
        self._sched.succeeded(step_id, release=not self._held_back(step_id))
        if result.usage.total_tokens:
            self._emit(
                UsageRecorded(at, result.usage, step_id, "step", result.model, run_id=run_id)
            )
            self._step_usage += result.usage
            self._check_budget()

    def _held_back(self, step_id: str) -> bool:
        """Whether the dependents of a step that just succeeded wait for its result to be
        stored (``Durability``). Whether it is, is asked once every message in the inbox is
        handled (``_ask_durable``): the results that came in together are stored together."""
        if self._durable is None or not self._sched.has_dependents(step_id):
            return False
        self._unsure.append(step_id)
        return True

    def _ask_durable(self) -> None:
        """Release the dependents of the steps held back whose results are stored (the first
        question usually stores them all); the others are released by a ``_Durable`` message
        once theirs is."""
        unsure, self._unsure = self._unsure, []
        durable = self._durable
        assert durable is not None  # only then is a step held back
        for step_id in unsure:
            if durable(step_id, partial(self._inbox.put, _Durable(step_id))):
                self._sched.release(step_id)

    def _fail(self, job: _Job, error: str, at: float) -> None:
        step_id = job.step.step_id
        record = self._records[step_id]
        record.status, record.error, record.finished_at = "failed", error, at
        record.attempts = job.attempts
        prefix = f"step {step_id!r}"
        self._failures.append(error if error.startswith(prefix) else f"{prefix} failed: {error}")
        settled = self._sched.failed(step_id)
        self._emit(
            StepFailed(at, step_id, error, record.duration, record.attempts, run_id=self._run_id)
        )
        if self._fail_fast:
            self._halt_reason = self._halt_reason or self._failures[-1]
            self._cancel_pending(settled, self._stop_reason())
        else:
            self._skip(settled)

    def _skip(self, step_ids: Iterable[str]) -> None:
        now = self._since()
        for step_id in step_ids:
            reason = f"skipped: step {self._sched.cause(step_id)!r}, which it needs, failed"
            record = self._records[step_id]
            record.status, record.error = "skipped", reason
            self._emit(StepSkipped(now, step_id, reason, run_id=self._run_id))

    def _cancel_pending(self, step_ids: Iterable[str], reason: str) -> None:
        now = self._since()
        for step_id in step_ids:
            record = self._records[step_id]
            record.status, record.error = "cancelled", reason
            self._emit(StepCancelled(now, step_id, reason, run_id=self._run_id))

    # -- stopping -----------------------------------------------------------------------------

    def _halt(self, reason: str, *, force: bool = False) -> None:
        """Start nothing more. The reason sticks when it stopped something (or ``force``)."""
        cancelled = self._sched.halt()
        if (cancelled or force or not self._sched.closed) and not self._halt_reason:
            self._halt_reason = reason
        self._cancel_pending(cancelled, self._stop_reason())

    def _check_budget(self) -> None:
        if self._max_tokens is None or self._sched.halted:
            return
        used = (self._step_usage + self._other_usage).total_tokens
        if used >= self._max_tokens:
            self._halt(f"token budget of {self._max_tokens} spent (used {used})")

    def _on_cancel(self, reason: str) -> None:
        if self._cancel_reason:
            return
        self._cancel_reason = reason
        self._cancel_pending(self._sched.halt(), reason)
        for job in self._jobs.values():
            job.ctx.cancelled.set()
        if self._jobs:
            self._grace_deadline = time.monotonic() + self._grace

    def _stop_reason(self) -> str:
        return self._cancel_reason or self._halt_reason or "the run stopped"

    def _expire(self) -> None:
        """Time out steps past their deadline; after the cancel grace, give up on the rest."""
        now = time.monotonic()
        while self._deadlines and self._deadlines[0][0] <= now:
            job = heapq.heappop(self._deadlines)[2]
            if not job.settled:
                self._time_out(job)
        if self._grace_deadline is not None and now >= self._grace_deadline:
            self._grace_deadline = None
            for job in list(self._jobs.values()):
                self._give_up(job)

    def _time_out(self, job: _Job) -> None:
        if not self._abandon(job):
            return  # it returned just now: its result is in the inbox
        job.ctx.cancelled.set()
        error = (
            f"step {job.step.step_id!r} timed out after {float(self._timeout_of(job.step) or 0)}s"
        )
        self._fail(job, error, self._since())

    def _give_up(self, job: _Job) -> None:
        """A running step ignored the cancel grace: record it cancelled, abandon its thread."""
        if self._abandon(job):
            self._record_cancelled(job, self._since(), self._cancel_reason)

    def _record_cancelled(self, job: _Job, at: float, error: str) -> None:
        step_id = job.step.step_id
        record = self._records[step_id]
        record.status, record.error = "cancelled", error
        record.finished_at, record.attempts = at, job.attempts
        self._sched.abandon(step_id)
        self._emit(StepCancelled(at, step_id, self._cancel_reason, run_id=self._run_id))

    def _abandon(self, job: _Job) -> bool:
        """Detach a running job from the run; False if it already returned."""
        assert job.ticket is not None
        if not self._pool.abandon(job.ticket):
            return False
        self._unregister(job)
        return True

    def _outcome(self) -> RunOutcome:
        return RunOutcome(
            status=self._status(),
            steps=dict(self._records),
            reason=self._cancel_reason or self._halt_reason or _summary(self._failures),
            usage=self._step_usage,
            wall_s=self._since(),
        )

    def _status(self) -> RunStatus:
        if self._cancel_reason:
            return "cancelled"
        everything_ok = all(r.status == "succeeded" for r in self._records.values())
        return "succeeded" if everything_ok and not self._halt_reason else "failed"

    # -- small helpers ------------------------------------------------------------------------

    def _since(self) -> float:
        return self._clock() - self._t0


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def _summary(failures: list[str]) -> str:
    if len(failures) <= 1:
        return failures[0] if failures else ""
    return f"{failures[0]} ({len(failures)} steps failed)"


def _pool_for(pool: WorkerPool | None, max_workers: int) -> tuple[WorkerPool, bool]:
    if pool is None:
        return WorkerPool(max_workers), True
    if pool.size < max_workers:
        raise ValueError(f"the worker pool has {pool.size} threads, fewer than {max_workers}")
    return pool, False


def _check_settings(
    step_timeout: float | None, max_tokens: int | None, step_retries: int, cancel_grace: float
) -> None:
    if step_timeout is not None and step_timeout <= 0:
        raise ValueError(f"step_timeout must be positive, got {step_timeout!r}")
    if max_tokens is not None and max_tokens < 0:
        raise ValueError(f"max_tokens must not be negative, got {max_tokens!r}")
    if step_retries < 0:
        raise ValueError(f"step_retries must not be negative, got {step_retries!r}")
    if cancel_grace < 0:
        raise ValueError(f"cancel_grace must not be negative, got {cancel_grace!r}")
