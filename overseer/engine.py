"""The library entry point: plan a request, run it, compose the answer.

``Overseer`` wires the planner, the tool registry and the executor together and emits every event
on one bus, which the display, the journal and library users all subscribe to.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from functools import partial
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from overseer.backends.chat import ChatClient, ChatRequest
from overseer.backends.factory import make_chat, open_backend
from overseer.config import Settings, load_settings
from overseer.config.templates import render
from overseer.core.cancel import CancelToken
from overseer.core.executor import Executor
from overseer.core.fanout import fan_out
from overseer.core.gate import Gate
from overseer.core.plan import Plan, Step
from overseer.core.pool import WorkerPool
from overseer.core.report import RunReport, Timing
from overseer.core.results import RunOutcome, StepRecord
from overseer.core.scheduler import critical_path
from overseer.core.toolbase import CallContext, ToolResult
from overseer.errors import (
    EXIT_CONFIG,
    BackendError,
    OverseerError,
    PermanentBackendError,
    PlanError,
)
from overseer.events import (
    Event,
    EventBus,
    PlanningStarted,
    PlanReady,
    PlanRejected,
    RunAborted,
    RunFinished,
    RunStarted,
    UsageRecorded,
)
from overseer.nodes.kinds import build_registry
from overseer.planning.planner import Planner, PlanResult
from overseer.planning.session import PlanningSession, SessionState, plan_within
from overseer.tools.registry import ToolFactory, ToolRegistry
from overseer.tools.services import RunServices, TokenMeter
from overseer.usage import Usage

if TYPE_CHECKING:  # imported when there is a journal to record into (``_journal_for``)
    from overseer.journal.store import Journal

__all__ = [
    "RECORDED_SETTINGS",
    "Overseer",
    "failed_report",
    "is_configuration_error",
    "new_run_id",
    "run_settings",
]

T = TypeVar("T")


class Overseer:
    """Plan and run requests. Every argument is optional; tests pass a scripted ``chat``.

    Without a backend in the settings it starts the embedded model, which lives as long as the
    chat client that talks to it: ``close()`` (or leaving a ``with`` block) stops it, and so do
    the garbage collection of ``chat`` and the end of the process, as a last resort.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        chat: ChatClient | None = None,
        registry: ToolRegistry | None = None,
        bus: EventBus | None = None,
        tool_factories: Mapping[str, ToolFactory] | None = None,
        journal: Journal | bool | None = True,
    ) -> None:
        self._resources = ExitStack()
        self.journal: Journal | None = None  # set below; close() may run before (a failed start)
        try:
            self.settings = settings or load_settings()
            self.run_settings = run_settings(self.settings)  # as configured, before a backend
            if chat is None:
                self.settings = open_backend(self.settings, self._resources)
                chat = make_chat(self.settings, self._resources)  # no server twice, no atexit
                weakref.finalize(chat, self._resources.close)
            self.chat = chat
            self.registry = registry or build_registry(self.settings, self.chat, tool_factories)
        except BaseException:
            self.close()
            raise
        self.bus = bus or EventBus()
        self._gate: Gate | None = None
        self._gate_caps: dict[str, int] = {}
        self._gate_lock = threading.Lock()
        self._pool: WorkerPool | None = None
        self._pool_users = 0
        self.journal = _journal_for(journal, self.settings.journal)
        if self.journal is not None:  # every run is recorded unless journal=False
            self.journal.attach(self.bus)

    def close(self) -> None:
        """Stop what this engine started (the embedded model's server), once the journal has
        written what its runs left queued (a finished run's ``--json`` object, which it writes
        after ``run()`` returns): another process reading the file then finds it. Safe to
        repeat. ``Journal.close`` waits within the journal's own lock patience, and the file
        opens again when next used, so engines sharing the journal are not disturbed."""
        if self.journal is not None:
            self.journal.close()
        self._resources.close()

    def __enter__(self) -> Overseer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def shared_gate(self) -> Gate:
        """The one gate every run of this engine holds its slots in, so that runs going on at
        once (``batch``) share ``max_workers`` and the tools' caps; rebuilt when the registry's
        caps changed (a tool registered since)."""
        caps = self.registry.caps()
        with self._gate_lock:
            if self._gate is None or caps != self._gate_caps:
                self._gate = Gate(self.settings.run.max_workers, caps)
                self._gate_caps = dict(caps)
            return self._gate

    @contextmanager
    def shared_threads(self) -> Iterator[None]:
        """While open, every run takes its step threads from one pool of ``max_workers``
        threads instead of starting a pool of its own, so that many runs at once (``batch``)
        need ``max_workers`` threads in all, not each (steps queue there, as in the gate)."""
        with self._gate_lock:
            self._pool_users += 1
            if self._pool is None:
                self._pool = WorkerPool(self.settings.run.max_workers)
        try:
            yield
        finally:
            with self._gate_lock:
                self._pool_users -= 1
                pool = self._pool if self._pool_users == 0 else None
                if pool is not None:
                    self._pool = None
            if pool is not None:
                pool.shutdown()

    def subscribe(self, subscriber: Callable[[Event], None]) -> Callable[[], None]:
        """Receive every event of every run; returns a function that unsubscribes."""
        return self.bus.subscribe(subscriber)

    def plan(self, request: str, context: str = "", t0: float | None = None) -> PlanResult:
        """A validated plan for ``request`` (raises ``PlanError`` when none could be had)."""
        return self._plan(request, context, t0, self.bus)

    def _plan(self, request: str, context: str, t0: float | None, bus: EventBus) -> PlanResult:
        start = time.monotonic() if t0 is None else t0
        planner = self._planner(start, bus)
        bus.emit(PlanningStarted(_since(start)))
        try:
            result = call_interruptibly(
                lambda: plan_within(planner, request, context), planner.cancel
            )
        except BackendError as exc:
            if isinstance(exc, PermanentBackendError) and exc.is_configuration:
                raise
            raise PlanError(f"no plan could be obtained: {exc}") from None
        bus.emit(PlanReady(_since(start), result.plan, result.warnings))
        return result

    def _planner(self, start: float, bus: EventBus) -> Planner:
        return Planner(
            chat=self.chat,
            tool_names=self.registry.names(),
            tool_lines=self.registry.describe(),
            settings=self.settings.planner,
            model=self.settings.backend.effective_planner_model,
            on_usage=lambda u, m: bus.emit(UsageRecorded(_since(start), u, None, "plan", m)),
            on_reject=lambda n, p: bus.emit(PlanRejected(_since(start), n, tuple(p))),
            cancel=CancelToken(),
        )

    def run(
        self,
        request: str,
        *,
        context: str = "",
        plan: Plan | None = None,
        run_id: str | None = None,
        prior: Mapping[str, StepRecord] | None = None,
        batch_id: str | None = None,
    ) -> RunReport:
        """Plan (unless ``plan`` is given), run every step, and compose the answer.

        Safe to call from several threads at once; the runs share this engine's caps."""
        run = _Run(self, request, run_id or new_run_id(), batch_id)
        return run.execute(context, plan, prior)

    def resume(self, stored: Any) -> RunReport:
        """Continue a journalled run (``overseer.journal.store.StoredRun``) in the round where
        it stopped: its succeeded steps are reused, the rest run, then the joiner may plan the
        rounds left. A run that stopped before any plan plans afresh."""
        run = _Run(self, stored.request, stored.run_id)
        resumed = Resumed(
            int(getattr(stored, "rounds", 1) or 1),
            getattr(stored, "steps_round", {}),
            bool(getattr(stored, "plan_complete", True)),
        )
        plan = stored.plan if stored.plan is not None and stored.plan.steps else None
        return run.execute("", plan, stored.prior, resumed)

    def run_settled(
        self, request: str, *, run_id: str | None = None, batch_id: str | None = None
    ) -> RunReport:
        """``run()``, but a request that ends without a report (no plan could be had, the
        backend gave up) gives a failed report saying why, so that one bad request of many is
        a result, not a crash. Configuration errors and Ctrl-C still raise."""
        run_id = run_id or new_run_id()
        try:
            return self.run(request, run_id=run_id, batch_id=batch_id)
        except OverseerError as exc:
            if is_configuration_error(exc):
                raise
            return failed_report(run_id, request, str(exc) or type(exc).__name__)

    def batch(
        self,
        requests: Iterable[str],
        *,
        concurrency: int | None = None,
        batch_id: str | None = None,
    ) -> Iterator[RunReport]:
        """Run many requests, ``concurrency`` at once (``batch.concurrency`` by default), and
        yield their reports as they finish. The runs share one set of caps (``max_workers``,
        each tool's ``max_concurrency``); a request that fails yields a failed report."""
        width = concurrency or self.settings.batch.concurrency
        with self.shared_threads():
            yield from fan_out(partial(self.run_settled, batch_id=batch_id), requests, width)


def _journal_for(choice: Journal | bool | None, enabled: bool) -> Journal | None:
    """``journal_for`` (``overseer.journal.store``), which is imported (sqlite3, the journal's
    SQL) only when there is a journal to record into."""
    if choice is None or choice is False or (choice is True and not enabled):
        return None
    from overseer.journal.store import journal_for

    return journal_for(choice, enabled)


class _Run:
    """One request from start to finish."""

    def __init__(
        self, owner: Overseer, request: str, run_id: str, batch_id: str | None = None
    ) -> None:
        self.owner = owner
        self.request = request
        self.run_id = run_id
        self.batch_id = batch_id
        self.bus = owner.bus.for_run(run_id)  # every event of this run carries its id
        self.t0 = time.monotonic()
        self.services = RunServices(
            registry=owner.registry,
            bus=self.bus,
            gate=owner.shared_gate(),
            settings=owner.settings,
            t0=self.t0,
            meter=TokenMeter(run_id),
        )
        self.descriptions: dict[str, str] = {}
        self.extra_usage = Usage()
        self.warnings: list[str] = []

    def execute(
        self,
        context: str,
        plan: Plan | None,
        prior: Mapping[str, StepRecord] | None,
        resumed: Resumed | None = None,
    ) -> RunReport:
        """Run to the end; a run that raises instead ends with a ``RunAborted`` event."""
        # the meter serves the budget only: without one it need not see every event
        budget = self.owner.settings.run.max_tokens is not None
        unsubscribe = self.bus.subscribe(self.services.meter.observe) if budget else None
        try:
            return self._execute(context, plan, prior, resumed or Resumed())
        except BaseException as exc:
            self.bus.emit(RunAborted(_since(self.t0), *_abort_status(exc)))
            raise
        finally:
            if unsubscribe is not None:
                unsubscribe()

    def _execute(
        self,
        context: str,
        plan: Plan | None,
        prior: Mapping[str, StepRecord] | None,
        resumed: Resumed,
    ) -> RunReport:
        self.bus.emit(
            RunStarted(
                0.0,
                self.run_id,
                self.request,
                settings=self.owner.run_settings,
                batch_id=self.batch_id,
            )
        )
        executor = self._executor()
        executor.warm()
        session = PlanningSession(
            planner=self.owner._planner(self.t0, self.bus),
            settings=self.owner.settings,
            executor=executor,
            bus=self.bus,
            t0=self.t0,
            on_step=self._learn,
        )
        plan_call = partial(
            session.run,
            self.request,
            context,
            plan,
            start_round=resumed.rounds,
            rounds_of=resumed.steps_round,
            complete=resumed.plan_complete,
        )
        outcome = _run_with_session(executor, session, plan_call, prior)
        return self._finish(session.state, outcome)

    def _finish(self, state: SessionState, outcome: RunOutcome) -> RunReport:
        """The answer and the report over every round's steps."""
        self.extra_usage += state.usage
        # a step accepted after the run had stopped never reached the executor: not in the plan
        full = Plan(steps=tuple(s for s in state.steps if s.step_id in outcome.steps))
        for step_id, record in outcome.steps.items():
            record.round = state.rounds_of.get(step_id, 1)
        answer = self._answer(full, outcome)
        plan_s = state.plan_s if state.plan_s is not None else _since(self.t0)
        return self._report(full, outcome, answer, plan_s, tuple(state.warnings), state.rounds)

    def _learn(self, step: Step) -> None:
        """A step was accepted: its description labels its output in later steps' prompts."""
        self.descriptions[step.step_id] = step.description

    def _executor(self) -> Executor:
        run, journal = self.owner.settings.run, self.owner.journal
        return Executor(
            self._run_step,
            bus=self.bus,
            max_workers=run.max_workers,
            tool_caps=self.owner.registry.caps(),
            step_timeout=run.step_timeout,
            tool_timeouts=self.owner.registry.timeouts(),
            on_error=run.on_error,
            max_tokens=run.max_tokens,
            step_retries=run.step_retries,
            t0=self.t0,
            pool=self.owner._pool,  # shared while a batch runs, else the run's own
            durable=journal.durability(self.run_id) if journal is not None else None,
        )

    def _run_step(self, step: Step, inputs: Mapping[str, str], ctx: CallContext) -> ToolResult:
        tool = self.owner.registry.get(step.tool)  # the executor set ctx.task and ctx.inputs
        return self.services.run_step(tool, self.step_prompt(step, inputs), ctx)

    def step_prompt(self, step: Step, inputs: Mapping[str, str]) -> str:
        if not step.depends_on:
            return render("step_user.md", description=step.description, inputs="")
        blocks = "".join(
            render(
                "step_input.md",
                step_id=dep,
                step_description=self.descriptions.get(dep, dep),
                output=inputs[dep],
            )
            for dep in step.depends_on
            if dep in inputs
        )
        return render("step_user.md", description=step.description, inputs=blocks)

    def _answer(self, plan: Plan, outcome: RunOutcome) -> str:
        settings = self.owner.settings
        if not (settings.run.synthesize and outcome.ok):
            return listing(plan, outcome)
        budget = settings.run.max_tokens
        if budget is not None and (outcome.usage + self.extra_usage).total_tokens >= budget:
            return listing(plan, outcome)
        try:
            return self._synthesize(plan, outcome)
        except BackendError as exc:
            self.warnings.append(
                f"the final answer could not be composed ({exc}); step outputs follow"
            )
            return listing(plan, outcome)

    def _synthesize(self, plan: Plan, outcome: RunOutcome) -> str:
        results = "\n\n".join(
            render(
                "synthesize_result.md",
                description=s.description,
                output=outcome.steps[s.step_id].output or "",
            ).strip()
            for s in plan.steps
        )
        cancel = CancelToken()
        request = ChatRequest(
            messages=[
                {"role": "system", "content": render("synthesize_system.md")},
                {
                    "role": "user",
                    "content": render("synthesize_user.md", request=self.request, results=results),
                },
            ],
            model=self.owner.settings.backend.effective_planner_model,
            max_tokens=self.owner.settings.run.answer_max_tokens,
            cancel=cancel,
        )
        reply = call_interruptibly(lambda: self.owner.chat.complete(request), cancel)
        self.extra_usage += reply.usage
        self.bus.emit(UsageRecorded(_since(self.t0), reply.usage, None, "answer", reply.model))
        return without_step_labels(reply.text, plan)

    def _report(
        self,
        plan: Plan,
        outcome: RunOutcome,
        answer: str,
        plan_s: float,
        warnings: tuple[str, ...],
        rounds: int = 1,
    ) -> RunReport:
        durations = {i: r.duration for i, r in outcome.steps.items() if r.status == "succeeded"}
        timing = Timing(
            wall_s=_since(self.t0),
            plan_s=plan_s,
            steps_sum_s=sum(r.duration for r in outcome.steps.values()),
            critical_path_s=critical_path(plan.steps, durations)[0],
        )
        report = RunReport(
            run_id=self.run_id,
            request=self.request,
            plan=plan,
            outcome=outcome,
            answer=answer,
            usage=outcome.usage + self.extra_usage,
            timing=timing,
            warnings=(*warnings, *self.warnings),
            nodes=self.services.node_log.as_dict(),
            rounds=rounds,
        )
        extra: dict[str, Any] = {"report": report}
        self.bus.emit(RunFinished(timing.wall_s, report.status, outcome.reason, extra))
        return report


RECORDED_SETTINGS = (
    "backend.base_url",
    "backend.api_key_env",
    "backend.model",
    "backend.planner_model",
    "backend.structured_output",
    "run.max_workers",
    "run.step_timeout",
    "run.on_error",
    "run.max_tokens",
    "run.step_retries",
)
"""The settings a run records (``RunStarted.settings``), so that ``resume`` continues with them.
None is a secret: ``api_key_env`` is the name of the variable that holds the key."""


def run_settings(settings: Settings) -> dict[str, Any]:
    """The run's non-secret settings as dotted keys (``Settings.with_overrides`` takes them
    back), plus ``tools.max_concurrency``: each capped tool's cap, by name."""
    data = settings.model_dump()
    recorded: dict[str, Any] = {}
    for dotted in RECORDED_SETTINGS:
        section, key = dotted.split(".")
        recorded[dotted] = data[section][key]
    caps = {t.name: t.max_concurrency for t in settings.enabled_tools if t.max_concurrency}
    recorded["tools.max_concurrency"] = caps
    return recorded


def listing(plan: Plan, outcome: RunOutcome) -> str:
    """Each succeeded step's output under its description (``--no-synthesize``)."""
    parts = []
    for step in plan.steps:
        record = outcome.steps.get(step.step_id)
        if record is not None and record.status == "succeeded":
            parts.append(f"## {step.description}\n\n{(record.output or '').strip()}")
    return "\n\n".join(parts)


_LABEL = re.compile(r"[ \t]*\[([^\]\s]{1,64})\][ \t]*")
_STEP_ID = re.compile(r"step\d+")


def without_step_labels(text: str, plan: Plan) -> str:
    """A composed answer without the step labels (``[step4]``, ``[step2] Translate ...``) a
    small model copies from the results it was shown: a line's leading label goes, and the line
    too if nothing but a step's description is left of it."""
    ids = {s.step_id for s in plan.steps}
    descriptions = {s.description.strip() for s in plan.steps}
    kept = []
    for line in text.splitlines():
        label = _LABEL.match(line)
        if label and (label.group(1) in ids or _STEP_ID.fullmatch(label.group(1))):
            line = line[label.end() :]
            if not line.strip() or line.strip() in descriptions:
                continue
        kept.append(line)
    return "\n".join(kept).strip()


class _Background(Generic[T]):
    """``call()`` run once: on a helper thread, or on the caller's when it claims it first."""

    def __init__(self, call: Callable[[], T]) -> None:
        self._call = call
        self._box: list[T] = []
        self._failure: list[BaseException] = []
        self._claim = threading.Lock()
        self.done = threading.Event()

    def start(self, name: str) -> None:
        threading.Thread(target=self.run_here, name=name, daemon=True).start()

    def run_here(self) -> None:
        """Run the call unless another thread already claimed it."""
        if not self._claim.acquire(blocking=False):
            return
        try:
            self._box.append(self._call())
        except BaseException as exc:  # re-raised in the caller's thread by result()
            self._failure.append(exc)
        finally:
            self.done.set()

    def forestall(self) -> bool:
        """Claim the call so that it never runs; False when it had begun already."""
        return self._claim.acquire(blocking=False)

    def failure(self) -> BaseException | None:
        """What the call raised, if it raised."""
        return self._failure[0] if self._failure else None

    def result(self) -> T:
        if self._failure:
            raise self._failure[0]
        return self._box[0]


@dataclass(frozen=True)
class Resumed:
    """Where a resumed run stopped: its last round, and the round of each of its steps."""

    rounds: int = 1
    steps_round: Mapping[str, int] = field(default_factory=dict)
    plan_complete: bool = True


def _run_with_session(
    executor: Executor,
    session: PlanningSession,
    plan_call: Callable[[], Any],
    prior: Mapping[str, StepRecord] | None,
) -> RunOutcome:
    """The executor and the planning session, each on a helper thread, while this one waits
    interruptibly. The run ends when the executor does (the session closes it after its last
    round, or the run stopped by itself, which stops the session). Ctrl-C cancels both: before
    any step was accepted it goes on up as KeyboardInterrupt (as when planning came first);
    after, the run ends cancelled with every step recorded. A planning failure (``PlanError``)
    is raised once the steps already started have finished."""
    run = _Background(lambda: executor.run(None, prior))
    planning = _Background(plan_call)
    try:
        run.start("overseer-run")
        planning.start("overseer-plan")
        wait_interruptibly(run.done)
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM/SIGHUP (``Terminated`` says which)
        session.stop()
        executor.cancel(_interrupt_reason(exc))
        run.run_here()  # does nothing unless the helper never began
        run.done.wait()
        _settle(planning)
        if not session.accepted:
            raise
        return run.result()
    session.stop()  # the run ended: any planner call still going is of no use now
    _settle(planning)
    failure = planning.failure()
    if failure is not None:
        raise failure
    return run.result()


def _settle(planning: _Background[Any]) -> None:
    """Wait for the session to wind down (its calls are aborted); never run it here."""
    if not planning.forestall():
        planning.done.wait(CANCEL_JOIN_S)


def call_interruptibly(call: Callable[[], T], cancel: threading.Event) -> T:
    """``call()`` on a helper thread while this one waits interruptibly: on Ctrl-C, ``cancel``
    is set (which aborts the HTTP exchange in flight) and KeyboardInterrupt goes on up."""
    job = _Background(call)
    try:
        job.start("overseer-call")
        wait_interruptibly(job.done)
    except KeyboardInterrupt:
        cancel.set()
        if not job.forestall():
            job.done.wait(CANCEL_JOIN_S)
        raise
    return job.result()


CANCEL_JOIN_S = 5.0
"""How long an interrupted call may take to wind down after its cancel (it is aborted at once)."""

SIGNAL_CHECK_S = 0.2
"""How often a main thread waiting on a run returns to Python code to act on a pending Ctrl-C."""


def wait_interruptibly(done: threading.Event) -> None:
    """Wait for ``done`` in slices. The kernel may hand a process's SIGINT to any thread (more
    often under load); taken by a worker blocked in C, it only trips a flag, and a main thread in
    one untimed wait would sleep on until the run ended by itself. Each slice acts on the flag."""
    while not done.wait(SIGNAL_CHECK_S):
        continue


def failed_report(run_id: str, request: str, reason: str) -> RunReport:
    """The report of a run that ended before it had a plan: failed, no steps, ``reason``."""
    outcome = RunOutcome(status="failed", reason=reason)
    return RunReport(run_id=run_id, request=request, plan=Plan(steps=()), outcome=outcome)


def is_configuration_error(exc: OverseerError) -> bool:
    """An error every request would meet again (bad configuration, key or model)."""
    if isinstance(exc, PermanentBackendError):
        return exc.is_configuration
    return exc.exit_code == EXIT_CONFIG


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]


def _abort_status(exc: BaseException) -> tuple[str, str]:
    """The status and reason of a run that raised instead of finishing."""
    if isinstance(exc, KeyboardInterrupt):
        return "cancelled", _interrupt_reason(exc)
    return "failed", str(exc) or type(exc).__name__


def _interrupt_reason(exc: KeyboardInterrupt) -> str:
    return str(exc) or "interrupted by the user"


def _since(t0: float) -> float:
    return time.monotonic() - t0
