"""A run's planning from first plan to last round, feeding one executor as steps are accepted.

``PlanningSession.run`` (on a thread of its own while the executor runs on another):

1. Round 1: the plan, streamed where the backend can (``planner.stream``): each accepted step
   goes to the executor at once (``StepPlanned``); a backend that cannot stream, or
   ``planner.stream: false``, plans as before (the whole plan, then its steps). A plan given by
   the caller (``resume``) is round ``start_round`` instead.
2. When every step so far has settled (``Executor.settled``) and the run did not stop, the
   joiner decides (``JoinerDecided``): answer, or a new round of steps (``planner.max_replans``
   rounds at most; the token budget stops a replan too). Then ``close()``.

``planner.timeout`` bounds the planning of each round (every call and repair): when it passes,
the call in flight is aborted and planning fails (``PlanError``, exit 3); in a joiner's round the
finished steps answer instead, with a warning. ``stop()`` (the run
ended by itself: budget, fail-fast) and Ctrl-C abort it too. Every planner call's tokens count
toward the run's budget (``Executor.add_usage``) and are announced (``UsageRecorded``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from overseer.config import Settings
from overseer.core.cancel import CancelToken
from overseer.core.executor import Executor, Settled
from overseer.core.plan import Plan, Step, group_warnings, plan_json_schema
from overseer.errors import (
    BackendError,
    Cancelled,
    PermanentBackendError,
    PlanError,
)
from overseer.events import (
    EventBus,
    JoinerDecided,
    PlanningProgress,
    PlanningStarted,
    PlanReady,
    PlanRejected,
    StepPlanned,
    UsageRecorded,
)
from overseer.planning.joiner import (
    JOINER_SCHEMA_NAME,
    Joiner,
    decision_of,
    joiner_schema,
    wants_replan,
)
from overseer.planning.planner import Planner, PlanResult
from overseer.planning.rounds import RoundHooks, RoundPlanner, Schema, rest_messages
from overseer.planning.streaming import StepGate
from overseer.usage import Usage

__all__ = ["PlanningSession", "SessionState", "plan_within", "planning_timeout_message"]


def planning_timeout_message(seconds: float) -> str:
    return (
        f"planning did not finish within planner.timeout ({seconds:g}s); "
        "raise it in the configuration or use a faster planner model"
    )


def plan_within(planner: Planner, request: str, context: str = "") -> PlanResult:
    """``planner.plan`` bounded by ``planner.timeout``: past it the call is aborted and
    ``PlanError`` says so (``overseer plan``, which plans without running)."""
    expired = threading.Event()

    def expire() -> None:
        expired.set()
        planner.cancel.set()

    try:
        with _Deadline(planner.settings.timeout, expire):
            result = planner.plan(request, context)
    except Cancelled:
        if expired.is_set():
            raise PlanError(planning_timeout_message(planner.settings.timeout)) from None
        raise
    if expired.is_set():
        raise PlanError(planning_timeout_message(planner.settings.timeout))
    return result


@dataclass
class SessionState:
    """What planning produced so far: every accepted step in order, each one's round, the
    rounds begun, the planner's tokens, warnings, and when round 1's plan was complete."""

    steps: list[Step] = field(default_factory=list)
    rounds_of: dict[str, int] = field(default_factory=dict)
    rounds: int = 1
    usage: Usage = field(default_factory=Usage)
    warnings: list[str] = field(default_factory=list)
    plan_s: float | None = None

    def plan(self) -> Plan:
        return Plan(steps=tuple(self.steps))


class PlanningSession:
    """Plans a run's rounds into ``executor`` (see the module docstring)."""

    def __init__(
        self,
        *,
        planner: Planner,
        settings: Settings,
        executor: Executor,
        bus: EventBus,
        t0: float,
        on_step: Callable[[Step], None] | None = None,
    ) -> None:
        self.planner = planner
        self.settings = settings
        self.executor = executor
        self.bus = bus
        self.t0 = t0
        self.on_step = on_step
        self.cancel = planner.cancel if isinstance(planner.cancel, CancelToken) else CancelToken()
        self.state = SessionState()
        self._round = 1
        self._stopping = False
        self._expired = False
        self._undecided = False
        self._reason = ""
        self._lock = threading.Lock()

    # -- the thread-safe surface ------------------------------------------------------------

    def stop(self) -> None:
        """The run ended by itself: abort any planner call and plan nothing more."""
        self._stopping = True
        self.cancel.set()

    @property
    def accepted(self) -> int:
        """Steps handed to the executor so far."""
        return len(self.state.steps)

    # -- running ----------------------------------------------------------------------------

    def run(
        self,
        request: str,
        context: str = "",
        plan: Plan | None = None,
        *,
        start_round: int = 1,
        rounds_of: Mapping[str, int] | None = None,
        complete: bool = True,
    ) -> SessionState:
        """Plan every round, then close the executor (always, so the run can end).

        ``plan`` given (``resume``): its steps are round ``start_round``'s; ``complete=False``
        says the run stopped while that round's plan was still arriving, so the planner is asked
        for the rest of it first."""
        try:
            if plan is None:
                self._first_round(request, context)
            else:
                self._given(plan, start_round, rounds_of or {}, complete)
                if not complete:
                    self._rest_of(request, context)
            self._join_rounds(request, start_round)
        except Cancelled:
            if self._expired:
                raise PlanError(planning_timeout_message(self.settings.planner.timeout)) from None
            if not self._stopping:
                raise
        finally:
            self.executor.close()
        return self.state

    def _first_round(self, request: str, context: str) -> None:
        with self._deadline():
            try:
                if self._streams():
                    self._streamed_first(request, context)
                else:
                    self._whole_first(request, context)
            except BackendError as exc:
                if isinstance(exc, PermanentBackendError) and exc.is_configuration:
                    raise
                raise PlanError(f"no plan could be obtained: {exc}") from None

    def _streams(self) -> bool:
        return self.settings.planner.stream and bool(getattr(self.planner.chat, "streams", False))

    def _whole_first(self, request: str, context: str) -> None:
        self._announce_call()
        result = self.planner.plan(request, context)  # its hooks announce usage and rejections
        if self.cancel.is_set():  # a client that cannot abort a call returned after the cancel
            raise Cancelled("planning was cancelled")
        self.executor.add_usage(result.usage)
        self.state.usage += result.usage
        self.state.warnings += result.warnings
        self._plan_ready(result.plan.steps, result.warnings)
        for step in result.plan.steps:
            self._hand_over(step, announce=False)

    def _streamed_first(self, request: str, context: str) -> None:
        planner = self.planner
        schema = plan_json_schema(
            planner.tool_names,
            self.settings.planner.max_steps,
            ordered=planner.settings.ordered_steps,
        )
        gate = self._gate(set(), set())
        self._round_planner().run(planner.opening(request, context), gate, (schema, "plan"))
        self._round_done()

    def _given(
        self, plan: Plan, start_round: int, rounds_of: Mapping[str, int], complete: bool
    ) -> None:
        self._round = max(start_round, 1)
        self.state.rounds = self._round
        for step in plan.steps:
            self.state.steps.append(step)
            self.state.rounds_of[step.step_id] = rounds_of.get(step.step_id, self._round)
            self._tell(step)
        if complete:  # else PlanReady comes once the rest has arrived; before the steps start,
            # as a streamed step's StepPlanned does
            self.state.plan_s = self._since()
            self.bus.emit(PlanReady(self._since(), plan, (), round=self._round))
        self.executor.add_steps(plan.steps)  # one message, however large the plan

    def _rest_of(self, request: str, context: str) -> None:
        """Ask for the rest of a round's plan that stopped arriving (a resumed run)."""
        gate = self._gate(set(self.state.rounds_of), set(self.state.rounds_of))
        gate.accepted = [
            s for s in self.state.steps if self.state.rounds_of[s.step_id] == self._round
        ]
        problem = "the run stopped before the rest of the plan arrived"
        opening = self.planner.opening(request, context)
        planner = self._round_planner()
        with self._deadline():
            planner.run(
                opening,
                gate,
                planner.rest_schema(),
                start=opening + rest_messages(gate, [problem]),
            )
        self._round_done()

    # -- the joiner's rounds ----------------------------------------------------------------

    def _join_rounds(self, request: str, start_round: int) -> None:
        replans_left = self.settings.planner.max_replans - (max(start_round, 1) - 1)
        while replans_left > 0 and not self._stopping:
            settled = self.executor.settled()
            settled.reached.wait()
            if settled.stopped or self._spent(settled):
                return
            if not self._join(request, settled):
                return
            replans_left -= 1

    def _spent(self, settled: Settled) -> bool:
        budget = self.settings.run.max_tokens
        if budget is None:
            return False
        steps = sum((r.usage for r in settled.records.values()), Usage())
        return (steps + self.state.usage).total_tokens >= budget

    def _join(self, request: str, settled: Settled) -> bool:
        """One joiner call (and the new round it may start): True when a round was added."""
        finished = self._round
        gate = self._gate(
            {i for i, r in settled.records.items() if r.status == "succeeded"},
            {s.step_id for s in self.state.steps},
        )
        joiner = Joiner(self.planner.tool_lines, self.settings.planner.max_steps)
        opening = joiner.opening(request, self.state.steps, settled.records, gate.next_id())
        schema: Schema = (joiner_schema(self.planner.tool_names), JOINER_SCHEMA_NAME)
        self._round = finished + 1
        self._undecided = True
        try:
            with self._deadline():
                result = self._round_planner("join").run(opening, gate, schema, self._replans)
        except (PlanError, BackendError) as exc:
            return self._replan_failed(finished, gate, exc)
        except Cancelled:
            if not self._expired:
                raise
            timeout = PlanError(planning_timeout_message(self.settings.planner.timeout))
            return self._replan_failed(finished, gate, timeout)  # what finished still answers
        decision = decision_of(result.first)
        if not decision.readable:
            self.state.warnings.append(f"{decision.reason}; the answer uses the steps so far")
        self._decided(decision.kind, decision.reason)
        if decision.kind != "replan" or not result.steps:
            self._round = finished
            return False
        self._round_done()
        return True

    def _replans(self, value: Mapping[str, Any]) -> bool:
        """The joiner's decision as it streams in: its reason is kept for ``JoinerDecided``,
        which goes out before the first step of the new round."""
        reason = value.get("reason")
        self._reason = reason if isinstance(reason, str) else self._reason
        return wants_replan(value)

    def _decided(self, kind: str, reason: str) -> None:
        """``JoinerDecided`` for the round before this one, once."""
        if self._undecided:
            self._undecided = False
            self.bus.emit(JoinerDecided(self._since(), self._round - 1, kind, reason))

    def _replan_failed(self, finished: int, gate: StepGate, exc: Exception) -> bool:
        """A joiner call or replan that failed: a warning; the finished steps still answer."""
        self.state.warnings.append(f"planning round {finished + 1} failed: {exc}")
        if not gate.accepted:
            self._decided("answer", str(exc))
            self._round = finished
            return False
        self._decided("replan", str(exc))
        self._round_done()
        return True

    # -- the pieces -------------------------------------------------------------------------

    def _round_done(self) -> None:
        self.state.rounds = self._round
        warnings = tuple(
            w for w in group_warnings(self.state.plan()) if w not in self.state.warnings
        )
        self.state.warnings += warnings
        self._plan_ready(tuple(self.state.steps), warnings)

    def _plan_ready(self, steps: tuple[Step, ...], warnings: tuple[str, ...]) -> None:
        """Round ``self._round`` is complete: ``PlanReady`` with every step of the run so far."""
        if self.state.plan_s is None:
            self.state.plan_s = self._since()
        plan = Plan(steps=tuple(self.state.steps) or steps)
        self.bus.emit(PlanReady(self._since(), plan, warnings, round=self._round))

    def _gate(self, usable: set[str], taken: set[str]) -> StepGate:
        tools = frozenset(self.planner.tool_names)
        return StepGate(tools, self.settings.planner.max_steps, usable, taken)

    def _round_planner(self, purpose: str = "plan") -> RoundPlanner:
        hooks = RoundHooks(
            on_step=self._hand_over,
            on_call=self._announce_call,
            on_progress=self._progress,
            on_usage=lambda usage, model: self._usage(usage, model, purpose),
            on_reject=self._rejected,
        )
        planner = self.planner
        return RoundPlanner(
            chat=planner.chat,
            settings=planner.settings,
            tool_names=planner.tool_names,
            model=planner.model,
            hooks=hooks,
            cancel=self.cancel,
            stream=self._streams(),
        )

    def _hand_over(self, step: Step, *, announce: bool = True) -> None:
        """An accepted step: to the executor at once, and announced."""
        with self._lock:
            if step.step_id not in self.state.rounds_of:
                self.state.steps.append(step)
            self.state.rounds_of[step.step_id] = self._round
        self._tell(step)
        if self._round > 1:
            self._decided("replan", self._reason)
        if announce:  # first: whoever follows the run knows a step before it starts (the
            # journal, that a dependent's start waits for the results it is given)
            self.bus.emit(StepPlanned(self._since(), step, round=self._round))
        self.executor.add_step(step)

    def _tell(self, step: Step) -> None:
        if self.on_step is not None:
            self.on_step(step)

    def _announce_call(self) -> None:
        self.bus.emit(PlanningStarted(self._since(), round=self._round))

    def _progress(self, tokens: int, elapsed: float) -> None:
        self.bus.emit(PlanningProgress(self._since(), tokens, elapsed, round=self._round))

    def _usage(self, usage: Usage, model: str, purpose: str) -> None:
        self.state.usage += usage
        self.executor.add_usage(usage)
        self.bus.emit(UsageRecorded(self._since(), usage, None, purpose, model))

    def _rejected(self, attempt: int, problems: list[str]) -> None:
        self.bus.emit(PlanRejected(self._since(), attempt, tuple(problems)))

    def _deadline(self) -> _Deadline:
        return _Deadline(self.settings.planner.timeout, self._expire)

    def _expire(self) -> None:
        self._expired = True
        self.cancel.set()

    def _since(self) -> float:
        return time.monotonic() - self.t0


class _Deadline:
    """Calls ``expire`` once ``seconds`` pass inside the ``with`` block."""

    def __init__(self, seconds: float, expire: Callable[[], None]) -> None:
        self._timer = threading.Timer(seconds, expire)
        self._timer.daemon = True

    def __enter__(self) -> _Deadline:
        self._timer.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._timer.cancel()
