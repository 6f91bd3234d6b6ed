"""The executor on real threads, driven by events a fake runner waits on (never by sleeping).

Tests check that things overlapped or happened in order, never how long they took. Every wait
is bounded (``WAIT``) so a broken executor fails a test instead of hanging the suite.
"""

from __future__ import annotations

import gc
import itertools
import random
import threading
import weakref
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

import pytest

from overseer.core.cancel import CancelToken
from overseer.core.executor import Executor, StepRunner
from overseer.core.plan import Plan, Step
from overseer.core.pool import WorkerPool
from overseer.core.results import RunOutcome, StepRecord
from overseer.core.toolbase import CallContext, ToolResult
from overseer.events import (
    Event,
    EventBus,
    StepFailed,
    StepFinished,
    StepRetrying,
    StepSkipped,
    StepStarted,
    UsageRecorded,
)
from overseer.usage import Usage

pytestmark = pytest.mark.timeout(60)

WAIT = 10.0  # upper bound for any wait on another thread; never a duration being measured

Behaviour = Callable[[Step, Mapping[str, str], CallContext], object]


def step(step_id: str, *deps: str, tool: str = "t", group: int | None = None) -> Step:
    return Step(
        step_id=step_id, description=step_id, tool=tool, depends_on=deps, parallel_group=group
    )


def plan(*steps: Step) -> Plan:
    return Plan(steps=steps)


# -- fakes ------------------------------------------------------------------------------------


class FakeRunner:
    """Runs each step's scripted behaviour (default: return "out:<id>") and counts overlap."""

    def __init__(
        self, behaviours: Mapping[str, Behaviour] | None = None, usage: Usage = Usage()
    ) -> None:
        self.behaviours = dict(behaviours or {})
        self.usage = usage
        self.cond = threading.Condition()
        self.calls: list[str] = []
        self.inputs: dict[str, dict[str, str]] = {}
        self.contexts: dict[str, CallContext] = {}
        self.running: Counter[str] = Counter()
        self.peak: Counter[str] = Counter()
        self._started: dict[str, threading.Event] = {}

    def started(self, step_id: str) -> threading.Event:
        with self.cond:
            return self._started.setdefault(step_id, threading.Event())

    def wait_running(self, count: int) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: self.running["*"] >= count, timeout=WAIT)

    def __call__(self, s: Step, inputs: Mapping[str, str], ctx: CallContext) -> ToolResult:
        self._enter(s, inputs, ctx)
        try:
            behaviour = self.behaviours.get(s.step_id)
            result = behaviour(s, inputs, ctx) if behaviour else None
            if isinstance(result, ToolResult):
                return result
            return ToolResult(f"out:{s.step_id}", self.usage, "fake-model")
        finally:
            self._leave(s)

    def _enter(self, s: Step, inputs: Mapping[str, str], ctx: CallContext) -> None:
        with self.cond:
            self.calls.append(s.step_id)
            self.inputs[s.step_id] = dict(inputs)
            self.contexts[s.step_id] = ctx
            for key in ("*", s.tool):
                self.running[key] += 1
                self.peak[key] = max(self.peak[key], self.running[key])
            self.cond.notify_all()
        self.started(s.step_id).set()

    def _leave(self, s: Step) -> None:
        with self.cond:
            self.running["*"] -= 1
            self.running[s.tool] -= 1
            self.cond.notify_all()


@dataclass
class Recorder:
    """Every event emitted on a bus, in order."""

    events: list[Event] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, event: Event) -> None:
        with self.lock:
            self.events.append(event)

    def of(self, step_id: str) -> list[Event]:
        with self.lock:
            return [e for e in self.events if getattr(e, "step_id", None) == step_id]

    def kinds(self, step_id: str) -> list[str]:
        return [type(e).__name__ for e in self.of(step_id)]

    def index(self, kind: type[Event], step_id: str) -> int:
        with self.lock:
            for i, e in enumerate(self.events):
                if isinstance(e, kind) and getattr(e, "step_id", None) == step_id:
                    return i
        raise AssertionError(f"no {kind.__name__} for {step_id!r}")


@pytest.fixture
def bus() -> EventBus:
    return EventBus()


@pytest.fixture
def recorder(bus: EventBus) -> Recorder:
    rec = Recorder()
    bus.subscribe(rec)
    return rec


@pytest.fixture
def release() -> Iterator[threading.Event]:
    """An event hung runners wait on; set at the end of the test so their threads end."""
    event = threading.Event()
    yield event
    event.set()


def wait_for(event: threading.Event) -> None:
    if not event.wait(WAIT):
        raise AssertionError("the awaited event never happened")


class Background:
    """``executor.run`` on a helper thread, so the test can act while it runs."""

    def __init__(self, executor: Executor, p: Plan | None = None) -> None:
        self.outcome: RunOutcome | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(executor, p), daemon=True)
        self.thread.start()

    def _run(self, executor: Executor, p: Plan | None) -> None:
        try:
            self.outcome = executor.run(p)
        except BaseException as exc:
            self.error = exc

    def result(self) -> RunOutcome:
        self.thread.join(WAIT)
        assert not self.thread.is_alive(), "run() did not return"
        if self.error is not None:
            raise self.error
        assert self.outcome is not None
        return self.outcome


def statuses(outcome: RunOutcome) -> dict[str, str]:
    return {i: r.status for i, r in outcome.steps.items()}


def executor(runner: StepRunner, bus: EventBus, **kwargs: object) -> Executor:
    return Executor(runner, bus=bus, **kwargs)  # type: ignore[arg-type]


# -- dependencies, not levels -----------------------------------------------------------------


def test_uneven_diamond_starts_d_while_b_still_runs(bus: EventBus) -> None:
    d_started = threading.Event()

    def slow_b(s: Step, inputs: Mapping[str, str], ctx: CallContext) -> None:
        wait_for(d_started)  # B can only finish once D has started: level-by-level would fail

    fake = FakeRunner({"b": slow_b, "d": lambda *_: d_started.set()})
    p = plan(step("a"), step("b", "a"), step("c", "a"), step("d", "c"), step("e", "b", "c"))
    outcome = executor(fake, bus, max_workers=4).run(p)
    assert outcome.ok, outcome.reason
    rec = outcome.steps
    assert rec["d"].started_at is not None and rec["b"].finished_at is not None
    assert rec["d"].started_at < rec["b"].finished_at
    assert fake.calls.index("e") > fake.calls.index("d")
    assert fake.inputs["e"] == {"b": "out:b", "c": "out:c"}


def test_steps_in_different_parallel_groups_run_together(bus: EventBus) -> None:
    barrier = threading.Barrier(3, timeout=WAIT)
    fake = FakeRunner(dict.fromkeys("abc", lambda *_: barrier.wait()))
    p = plan(step("a", group=1), step("b", group=2), step("c", group=None))
    outcome = executor(fake, bus, max_workers=3).run(p)
    assert outcome.ok, outcome.reason
    assert fake.peak["*"] == 3


def test_dependency_outputs_reach_the_runner(bus: EventBus) -> None:
    fake = FakeRunner({"a": lambda *_: ToolResult("alpha"), "b": lambda *_: ToolResult("beta")})
    outcome = executor(fake, bus).run(plan(step("a"), step("b"), step("c", "a", "b")))
    assert outcome.ok
    assert fake.inputs == {"a": {}, "b": {}, "c": {"a": "alpha", "b": "beta"}}
    assert outcome.steps["c"].output == "out:c"
    ctx = fake.contexts["c"]
    assert (ctx.step_id, ctx.task, dict(ctx.inputs)) == ("c", "c", {"a": "alpha", "b": "beta"})


def test_an_empty_plan_succeeds_at_once(bus: EventBus) -> None:
    outcome = executor(FakeRunner(), bus).run(plan())
    assert outcome.ok
    assert outcome.steps == {}


# -- caps -------------------------------------------------------------------------------------


def test_global_and_tool_caps_are_never_exceeded(bus: EventBus, release: threading.Event) -> None:
    gate = threading.Event()
    steps = [step(f"a{i}", tool="a") for i in range(6)] + [
        step(f"b{i}", tool="b") for i in range(6)
    ]
    fake = FakeRunner(dict.fromkeys([s.step_id for s in steps], lambda *_: wait_for(gate)))
    ex = executor(fake, bus, max_workers=3, tool_caps={"a": 2})
    run = Background(ex, plan(*steps))
    assert fake.wait_running(3)
    with fake.cond:
        assert fake.running["a"] == 2  # the cap is reached, not just respected
    gate.set()
    outcome = run.result()
    assert outcome.ok
    assert fake.peak["*"] == 3
    assert fake.peak["a"] == 2
    assert sorted(fake.calls) == sorted(s.step_id for s in steps)


def test_a_shared_pool_must_be_large_enough(bus: EventBus) -> None:
    with pytest.raises(ValueError, match="fewer than 4"):
        executor(FakeRunner(), bus, max_workers=4, pool=WorkerPool(2))


# -- failure policies -------------------------------------------------------------------------


def test_fail_fast_keeps_finished_work_and_cancels_the_rest(
    bus: EventBus, recorder: Recorder
) -> None:
    a_failed = threading.Event()
    bus.subscribe(lambda e: a_failed.set() if isinstance(e, StepFailed) else None)
    fake = FakeRunner()

    def failing_a(s: Step, inputs: Mapping[str, str], ctx: CallContext) -> None:
        wait_for(fake.started("b"))
        raise RuntimeError("boom")

    fake.behaviours = {"a": failing_a, "b": lambda *_: wait_for(a_failed)}
    p = plan(step("a"), step("b"), step("d"), step("c", "b"))
    outcome = executor(fake, bus, max_workers=2).run(p)
    assert outcome.status == "failed"
    assert outcome.reason == "step 'a' failed: boom"
    assert statuses(outcome) == {
        "a": "failed",
        "b": "succeeded",
        "d": "cancelled",
        "c": "cancelled",
    }
    assert outcome.steps["b"].output == "out:b"  # in flight at the failure, finished and kept
    assert outcome.steps["a"].error == "boom"
    assert outcome.steps["c"].error == "step 'a' failed: boom"
    assert sorted(fake.calls) == ["a", "b"]
    assert recorder.kinds("d") == ["StepCancelled"]


def test_continue_skips_dependents_and_runs_everything_else(
    bus: EventBus, recorder: Recorder
) -> None:
    def fail(*_: object) -> None:
        raise ValueError("bad input")

    fake = FakeRunner({"a": fail})
    p = plan(step("a"), step("b", "a"), step("c", "b"), step("d"), step("e", "d"))
    outcome = executor(fake, bus, on_error="continue").run(p)
    assert outcome.status == "failed"
    assert outcome.reason == "step 'a' failed: bad input"
    expected = {"a": "failed", "b": "skipped", "c": "skipped", "d": "succeeded", "e": "succeeded"}
    assert statuses(outcome) == expected
    assert outcome.steps["c"].error == "skipped: step 'a', which it needs, failed"
    skipped = [e for e in recorder.of("c") if isinstance(e, StepSkipped)]
    assert skipped and "'a'" in skipped[0].reason
    assert sorted(fake.calls) == ["a", "d", "e"]


def test_several_failures_are_summed_up_in_the_reason(bus: EventBus) -> None:
    def fail(*_: object) -> None:
        raise RuntimeError("nope")

    fake = FakeRunner({"a": fail, "b": fail})
    outcome = executor(fake, bus, on_error="continue", max_workers=1).run(
        plan(step("a"), step("b"))
    )
    assert outcome.reason == "step 'a' failed: nope (2 steps failed)"


def test_a_runner_exception_without_a_message_is_named_by_its_class(bus: EventBus) -> None:
    def fail(*_: object) -> None:
        raise KeyError

    outcome = executor(FakeRunner({"a": fail}), bus).run(plan(step("a")))
    assert outcome.steps["a"].error == "KeyError"


def test_a_runner_that_returns_the_wrong_type_fails_the_step(bus: EventBus) -> None:
    def wrong(s: Step, inputs: Mapping[str, str], ctx: CallContext) -> ToolResult:
        return "just a string"  # type: ignore[return-value]

    outcome = executor(wrong, bus).run(plan(step("a")))
    assert outcome.steps["a"].status == "failed"
    assert "returned str, not a ToolResult" in (outcome.steps["a"].error or "")


def test_system_exit_from_a_tool_fails_the_step_without_retry(bus: EventBus) -> None:
    def leave(*_: object) -> None:
        raise SystemExit(3)

    fake = FakeRunner({"a": leave})
    outcome = executor(fake, bus, step_retries=2).run(plan(step("a")))
    assert outcome.steps["a"].status == "failed"
    assert outcome.steps["a"].attempts == 1


# -- timeouts ---------------------------------------------------------------------------------


def test_a_timeout_frees_the_slot_for_the_next_step(
    bus: EventBus, recorder: Recorder, release: threading.Event
) -> None:
    pool = WorkerPool(1)
    fake = FakeRunner({"hang": lambda *_: release.wait(WAIT)})
    p = plan(step("hang"), step("after_hang", "hang"), step("next"))
    ex = executor(fake, bus, max_workers=1, step_timeout=0.2, on_error="continue", pool=pool)
    outcome = ex.run(p)
    assert statuses(outcome) == {"hang": "failed", "after_hang": "skipped", "next": "succeeded"}
    assert outcome.steps["hang"].error == "step 'hang' timed out after 0.2s"
    ctx = fake.contexts["hang"]
    assert ctx.cancelled.is_set()
    assert ctx.deadline is not None
    assert pool.threads == 1  # the stuck thread was replaced: the pool is still at capacity
    assert recorder.kinds("hang") == ["StepStarted", "StepFailed"]
    release.set()  # the abandoned runner now returns; its late result must change nothing
    assert outcome.steps["hang"].status == "failed"
    pool.shutdown()


def test_a_timeout_in_fail_fast_names_the_step_and_the_limit(
    bus: EventBus, release: threading.Event
) -> None:
    fake = FakeRunner({"hang": lambda *_: release.wait(WAIT)})
    outcome = executor(fake, bus, max_workers=1, step_timeout=0.1).run(
        plan(step("hang"), step("other"))
    )
    assert outcome.status == "failed"
    assert outcome.reason == "step 'hang' timed out after 0.1s"
    assert statuses(outcome) == {"hang": "failed", "other": "cancelled"}


def test_steps_get_a_deadline_only_with_a_timeout(bus: EventBus) -> None:
    fake = FakeRunner()
    executor(fake, bus).run(plan(step("a")))
    assert fake.contexts["a"].deadline is None
    assert not fake.contexts["a"].cancelled.is_set()


# -- retries ----------------------------------------------------------------------------------


def flaky(failures: int) -> Behaviour:
    counter = itertools.count(1)

    def run(s: Step, inputs: Mapping[str, str], ctx: CallContext) -> None:
        attempt = next(counter)
        assert ctx.attempt == attempt
        if attempt <= failures:
            raise RuntimeError(f"flake {attempt}")

    return run


def test_a_step_is_retried_and_its_attempts_counted(bus: EventBus, recorder: Recorder) -> None:
    outcome = executor(FakeRunner({"a": flaky(2)}), bus, step_retries=2).run(plan(step("a")))
    assert outcome.ok
    assert outcome.steps["a"].attempts == 3
    retries = [e for e in recorder.of("a") if isinstance(e, StepRetrying)]
    assert [(e.attempt, e.error) for e in retries] == [(2, "flake 1"), (3, "flake 2")]
    starts = [e.attempt for e in recorder.of("a") if isinstance(e, StepStarted)]
    assert starts == [1, 2, 3]
    finished = [e for e in recorder.of("a") if isinstance(e, StepFinished)]
    assert finished[0].attempts == 3


def test_a_step_fails_when_its_retries_run_out(bus: EventBus) -> None:
    outcome = executor(FakeRunner({"a": flaky(5)}), bus, step_retries=1).run(plan(step("a")))
    assert outcome.steps["a"].status == "failed"
    assert outcome.steps["a"].attempts == 2
    assert outcome.steps["a"].error == "flake 2"


def test_no_retries_by_default(bus: EventBus) -> None:
    outcome = executor(FakeRunner({"a": flaky(1)}), bus).run(plan(step("a")))
    assert outcome.steps["a"].attempts == 1
    assert outcome.steps["a"].status == "failed"


# -- budget -----------------------------------------------------------------------------------


def test_the_budget_stops_new_steps(bus: EventBus, recorder: Recorder) -> None:
    fake = FakeRunner(usage=Usage(3, 3))
    p = plan(step("a"), step("b", "a"), step("c", "b"))
    outcome = executor(fake, bus, max_tokens=10).run(p)
    assert outcome.status == "failed"
    assert outcome.reason == "token budget of 10 spent (used 12)"
    assert statuses(outcome) == {"a": "succeeded", "b": "succeeded", "c": "cancelled"}
    assert outcome.steps["c"].error == outcome.reason
    assert fake.calls == ["a", "b"]
    assert outcome.usage == Usage(6, 6)


def test_usage_added_from_outside_counts_toward_the_budget(bus: EventBus) -> None:
    fake = FakeRunner(usage=Usage(3, 3))
    ex = executor(fake, bus, max_tokens=10)
    ex.add_usage(Usage(8, 0))  # the planner's tokens
    outcome = ex.run(plan(step("a"), step("b", "a")))
    assert outcome.reason == "token budget of 10 spent (used 14)"
    assert statuses(outcome) == {"a": "succeeded", "b": "cancelled"}
    assert outcome.usage == Usage(3, 3)  # the steps' own tokens; the caller holds the rest


def test_a_budget_of_zero_starts_nothing(bus: EventBus) -> None:
    fake = FakeRunner()
    outcome = executor(fake, bus, max_tokens=0).run(plan(step("a")))
    assert outcome.status == "failed"
    assert outcome.reason == "token budget of 0 spent (used 0)"
    assert fake.calls == []


def test_a_budget_spent_by_the_last_step_stops_nothing(bus: EventBus) -> None:
    fake = FakeRunner(usage=Usage(3, 3))
    outcome = executor(fake, bus, max_tokens=10).run(plan(step("a"), step("b", "a")))
    assert outcome.ok
    assert outcome.reason == ""


def test_step_usage_is_recorded_and_announced(bus: EventBus, recorder: Recorder) -> None:
    fake = FakeRunner(usage=Usage(2, 5))
    outcome = executor(fake, bus).run(plan(step("a"), step("b")))
    assert outcome.usage == Usage(4, 10)
    assert outcome.steps["a"].usage == Usage(2, 5)
    usage_events = [e for e in recorder.of("a") if isinstance(e, UsageRecorded)]
    assert [(e.usage, e.purpose, e.model) for e in usage_events] == [
        (Usage(2, 5), "step", "fake-model")
    ]


# -- cancellation -----------------------------------------------------------------------------


def test_cancel_stops_new_steps_and_signals_running_ones(bus: EventBus) -> None:
    def obliging(s: Step, inputs: Mapping[str, str], ctx: CallContext) -> None:
        wait_for(ctx.cancelled)
        raise RuntimeError("stopped on request")

    fake = FakeRunner({"a": obliging})
    ex = executor(fake, bus, max_workers=1)
    run = Background(ex, plan(step("a"), step("b")))
    wait_for(fake.started("a"))
    ex.cancel("interrupted by the user")
    outcome = run.result()
    assert outcome.status == "cancelled"
    assert outcome.reason == "interrupted by the user"
    assert outcome.steps["b"].status == "cancelled"
    # a step that stops because the run asked it to is cancelled, not failed; its words are kept
    assert outcome.steps["a"].status == "cancelled"
    assert outcome.steps["a"].error == "stopped on request"
    assert fake.calls == ["a"]


def test_a_failure_unrelated_to_a_cancel_is_still_a_failure(bus: EventBus) -> None:
    fake = FakeRunner({"a": lambda *_: (_ for _ in ()).throw(RuntimeError("real fault"))})
    outcome = executor(fake, bus).run(plan(step("a")))
    assert statuses(outcome) == {"a": "failed"}


def test_a_tool_timeout_overrides_the_step_timeout(bus: EventBus, release: threading.Event) -> None:
    fake = FakeRunner(
        {
            "slow": lambda *_: release.wait(WAIT),
            "patient": lambda *_: wait_for(fake.started("slow")),
        }
    )
    ex = executor(
        fake,
        bus,
        step_timeout=30,
        tool_timeouts={"quick": 0.1},
        on_error="continue",
    )
    outcome = ex.run(plan(step("slow", tool="quick"), step("patient")))
    assert statuses(outcome) == {"slow": "failed", "patient": "succeeded"}
    assert outcome.steps["slow"].error == "step 'slow' timed out after 0.1s"
    deadline_slow = fake.contexts["slow"].deadline
    deadline_patient = fake.contexts["patient"].deadline
    assert deadline_slow is not None and deadline_patient is not None
    assert deadline_patient - deadline_slow > 10  # the other tool kept the 30 s step timeout


def test_cancel_gives_up_on_a_step_that_ignores_it(
    bus: EventBus, recorder: Recorder, release: threading.Event
) -> None:
    fake = FakeRunner({"a": lambda *_: release.wait(WAIT)})
    ex = executor(fake, bus, cancel_grace=0.05)
    run = Background(ex, plan(step("a"), step("b", "a")))
    wait_for(fake.started("a"))
    ex.cancel("stop")
    outcome = run.result()  # returns although "a" is still blocked
    assert statuses(outcome) == {"a": "cancelled", "b": "cancelled"}
    assert outcome.steps["a"].error == "stop"
    assert recorder.kinds("a") == ["StepStarted", "StepCancelled"]
    assert fake.contexts["a"].cancelled.is_set()


def test_cancel_before_run_cancels_everything(bus: EventBus) -> None:
    fake = FakeRunner()
    ex = executor(fake, bus)
    ex.cancel("never mind")
    outcome = ex.run(plan(step("a"), step("b", "a")))
    assert outcome.status == "cancelled"
    assert statuses(outcome) == {"a": "cancelled", "b": "cancelled"}
    assert fake.calls == []


# -- events and records -----------------------------------------------------------------------


def test_events_come_in_a_sane_order(bus: EventBus, recorder: Recorder) -> None:
    def fail(*_: object) -> None:
        raise RuntimeError("no")

    fake = FakeRunner({"c": fail}, usage=Usage(1, 1))
    p = plan(step("a"), step("b", "a"), step("c"), step("d", "c"))
    executor(fake, bus, on_error="continue").run(p)
    assert recorder.kinds("a") == ["StepStarted", "StepFinished", "UsageRecorded"]
    assert recorder.kinds("b") == ["StepStarted", "StepFinished", "UsageRecorded"]
    assert recorder.kinds("c") == ["StepStarted", "StepFailed"]
    assert recorder.kinds("d") == ["StepSkipped"]
    assert recorder.index(StepFinished, "a") < recorder.index(StepStarted, "b")
    assert recorder.index(StepFailed, "c") < recorder.index(StepSkipped, "d")
    assert all(e.t >= 0 for e in recorder.events)


def test_records_carry_times_since_t0_and_outputs(bus: EventBus, recorder: Recorder) -> None:
    lock = threading.Lock()
    ticks = itertools.count(100)

    def clock() -> float:
        with lock:
            return float(next(ticks))

    ex = executor(FakeRunner(), bus, clock=clock, t0=90.0)
    outcome = ex.run(plan(step("a"), step("b", "a")))
    a, b = outcome.steps["a"], outcome.steps["b"]
    assert a.started_at is not None and a.finished_at is not None and b.started_at is not None
    assert 10 <= a.started_at < a.finished_at <= b.started_at
    assert (a.output, a.error, a.attempts) == ("out:a", None, 1)
    assert b.finished_at is not None and outcome.wall_s >= b.finished_at
    finished = [e for e in recorder.of("a") if isinstance(e, StepFinished)]
    assert finished[0].t == a.finished_at
    assert finished[0].duration == a.duration


def test_t0_defaults_to_the_start_of_run(bus: EventBus) -> None:
    outcome = executor(FakeRunner(), bus).run(plan(step("a")))
    started = outcome.steps["a"].started_at
    assert started is not None and 0 <= started < WAIT


# -- resume -----------------------------------------------------------------------------------


def test_prior_successes_are_reused_not_rerun(bus: EventBus, recorder: Recorder) -> None:
    prior = {
        "a": StepRecord(
            "a", "succeeded", output="old", attempts=1, started_at=0.0, finished_at=2.0
        ),
        "b": StepRecord("b", "failed", error="earlier failure", attempts=1),
    }
    fake = FakeRunner()
    outcome = executor(fake, bus).run(plan(step("a"), step("b"), step("c", "a", "b")), prior)
    assert outcome.ok
    assert sorted(fake.calls) == ["b", "c"]
    assert fake.inputs["c"] == {"a": "old", "b": "out:b"}
    assert outcome.steps["a"] == prior["a"]
    assert outcome.steps["a"] is not prior["a"]
    assert recorder.kinds("a") == ["StepFinished"]


# -- streamed plans ---------------------------------------------------------------------------


def test_steps_may_stream_in_while_the_run_is_going(bus: EventBus) -> None:
    fake = FakeRunner()
    ex = executor(fake, bus)
    ex.warm()
    run = Background(ex)
    ex.add_step(step("b", "a"))  # its dependency arrives later
    ex.add_step(step("a"))
    wait_for(fake.started("b"))
    ex.add_step(step("c", "a"))  # a has already succeeded: c starts at once
    wait_for(fake.started("c"))
    ex.close()
    outcome = run.result()
    assert outcome.ok
    assert list(outcome.steps) == ["b", "a", "c"]
    assert fake.inputs["c"] == {"a": "out:a"}


def test_a_streamed_step_with_an_unknown_dependency_fails_the_run_at_close(
    bus: EventBus,
) -> None:
    ex = executor(FakeRunner(), bus)
    ex.add_step(step("a"))
    ex.add_step(step("b", "ghost"))
    ex.close()
    outcome = ex.run()
    assert outcome.status == "failed"
    assert outcome.reason == "invalid plan: step 'b' depends on unknown step 'ghost'"
    # everything arrived before run() looked: the plan was refused before anything started
    assert statuses(outcome) == {"a": "cancelled", "b": "cancelled"}
    assert outcome.steps["b"].error == outcome.reason


def test_a_duplicate_streamed_step_fails_the_run(bus: EventBus) -> None:
    ex = executor(FakeRunner(), bus)
    for s in (step("a"), step("a"), step("b")):
        ex.add_step(s)
    ex.close()
    outcome = ex.run()
    assert outcome.status == "failed"
    assert outcome.reason == "invalid plan: step id 'a' is used more than once"


def test_adding_after_close_is_a_caller_error(bus: EventBus) -> None:
    ex = executor(FakeRunner(), bus)
    ex.close()
    with pytest.raises(RuntimeError, match="'a' was added after the plan was closed"):
        ex.add_step(step("a"))


def test_an_executor_runs_once(bus: EventBus) -> None:
    ex = executor(FakeRunner(), bus)
    ex.run(plan(step("a")))
    with pytest.raises(RuntimeError, match="runs once"):
        ex.run(plan(step("a")))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"step_timeout": 0}, "step_timeout"),
        ({"max_tokens": -1}, "max_tokens"),
        ({"step_retries": -1}, "step_retries"),
        ({"cancel_grace": -1}, "cancel_grace"),
        ({"max_workers": 0}, "max_running"),
    ],
)
def test_bad_settings_are_rejected(bus: EventBus, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        executor(FakeRunner(), bus, **kwargs)


# -- the warm pool ----------------------------------------------------------------------------


def test_warm_starts_the_workers_before_the_run(bus: EventBus) -> None:
    pool = WorkerPool(4)
    ex = executor(FakeRunner(), bus, max_workers=4, pool=pool)
    assert pool.threads == 0
    ex.warm()
    assert pool.threads == 4
    assert ex.run(plan(step("a"))).ok
    # a shared pool outlives the run and serves the next one
    assert executor(FakeRunner(), bus, max_workers=2, pool=pool).run(plan(step("b"))).ok
    pool.shutdown()


def blocker(entered: threading.Event, release: threading.Event) -> Callable[[], None]:
    def job() -> None:
        entered.set()
        release.wait(WAIT)

    return job


def test_pool_runs_jobs_on_its_threads() -> None:
    done = threading.Event()
    names: list[str] = []
    with WorkerPool(2, name="unit") as pool:

        def job() -> None:
            names.append(threading.current_thread().name)
            done.set()

        pool.submit(job)
        wait_for(done)
    assert names[0].startswith("unit-")


def test_pool_replaces_a_thread_stuck_in_an_abandoned_job(release: threading.Event) -> None:
    pool = WorkerPool(1)
    entered, ran = threading.Event(), threading.Event()
    stuck = pool.submit(blocker(entered, release))
    wait_for(entered)
    assert stuck.state == "running"
    assert pool.abandon(stuck) is True
    assert pool.abandon(stuck) is False
    assert pool.threads == 1
    pool.submit(ran.set)
    wait_for(ran)  # ran although the only original thread is still stuck
    pool.shutdown()


def test_pool_never_runs_a_job_abandoned_while_queued(release: threading.Event) -> None:
    pool = WorkerPool(1)
    entered, later = threading.Event(), threading.Event()
    calls: list[str] = []
    pool.submit(blocker(entered, release))
    wait_for(entered)
    queued = pool.submit(lambda: calls.append("queued"))
    assert pool.abandon(queued) is True
    release.set()
    pool.submit(later.set)
    wait_for(later)
    assert calls == []
    pool.shutdown()


def test_pool_abandon_of_a_finished_job_is_refused() -> None:
    done = threading.Event()
    with WorkerPool(1) as pool:
        ticket = pool.submit(done.set)
        wait_for(done)
        # the job has returned; the ticket turns "done" right after: wait for that on the pool
        finished = threading.Event()
        pool.submit(finished.set)
        wait_for(finished)
        assert ticket.state == "done"
        assert pool.abandon(ticket) is False


def test_pool_survives_a_job_that_raises() -> None:
    done = threading.Event()

    def explode() -> None:
        raise RuntimeError("job bug")

    with WorkerPool(1) as pool:
        pool.submit(explode)
        pool.submit(done.set)
        wait_for(done)


def test_pool_rejects_bad_sizes_and_late_submits() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        WorkerPool(0)
    pool = WorkerPool(1)
    pool.start()
    pool.shutdown()
    with pytest.raises(RuntimeError, match="shut down"):
        pool.submit(lambda: None)
    idle = WorkerPool(1)
    idle.shutdown()
    with pytest.raises(RuntimeError, match="shut down"):
        idle.start()


# -- a larger run -----------------------------------------------------------------------------


def test_a_thousand_step_random_dag_runs_every_step_once_in_dependency_order(
    bus: EventBus,
) -> None:
    rng = random.Random(3)
    steps = []
    for i in range(1000):
        parents = rng.sample(range(i), min(i, rng.randint(0, 3)))
        steps.append(step(f"s{i}", *(f"s{p}" for p in parents), tool=rng.choice("xyz")))
    fake = FakeRunner()
    outcome = executor(fake, bus, max_workers=6, tool_caps={"x": 2}).run(plan(*steps))
    assert outcome.ok
    assert sorted(fake.calls) == sorted(s.step_id for s in steps)
    position = {step_id: i for i, step_id in enumerate(fake.calls)}
    for s in steps:
        assert all(position[d] < position[s.step_id] for d in s.depends_on)
    assert fake.peak["*"] <= 6
    assert fake.peak["x"] <= 2


def test_pool_dropped_without_shutdown_lets_its_threads_go() -> None:
    pool = WorkerPool(2, name="dropped-pool")
    pool.start()
    threads = [t for t in threading.enumerate() if t.name.startswith("dropped-pool-")]
    assert len(threads) == 2
    del pool
    gc.collect()
    for thread in threads:
        thread.join(WAIT)
        assert not thread.is_alive()


def test_a_step_streamed_in_after_a_failure_it_needs_is_skipped_at_once(
    bus: EventBus, recorder: Recorder
) -> None:
    failed = threading.Event()
    bus.subscribe(lambda e: failed.set() if isinstance(e, StepFailed) else None)

    def fail(*_: object) -> None:
        raise RuntimeError("gone")

    fake = FakeRunner({"a": fail})
    ex = executor(fake, bus, on_error="continue")
    run = Background(ex)
    ex.add_step(step("a"))
    wait_for(failed)
    ex.add_step(step("b", "a"))
    ex.add_step(step("c"))
    ex.close()
    outcome = run.result()
    assert statuses(outcome) == {"a": "failed", "b": "skipped", "c": "succeeded"}
    assert recorder.kinds("b") == ["StepSkipped"]


# -- what a long run keeps ----------------------------------------------------------------------


def test_a_settled_step_keeps_no_context_token_or_job(bus: EventBus) -> None:
    """Freed by reference counting alone (no cycle left): a 10,000-step run would otherwise
    keep every step's context, token and ticket for the collector to walk again and again."""
    refs: list[weakref.ref[CallContext]] = []

    def remember(s: Step, inputs: Mapping[str, str], ctx: CallContext) -> ToolResult:
        refs.append(weakref.ref(ctx))
        assert isinstance(ctx.cancelled, CancelToken)
        ctx.cancelled.on_cancel(lambda: None)  # a registered callback must not pin it either
        return ToolResult(f"out:{s.step_id}")

    gc.disable()
    try:
        outcome = executor(remember, bus, max_workers=2).run(plan(step("a"), step("b", "a")))
        assert outcome.ok
        assert len(refs) == 2
        assert [ref() for ref in refs] == [None, None]
    finally:
        gc.enable()


def test_steps_without_dependencies_get_empty_read_only_inputs(bus: EventBus) -> None:
    fake = FakeRunner()
    executor(fake, bus).run(plan(step("a"), step("b", "a")))
    assert fake.contexts["a"].inputs == {}
    assert fake.contexts["b"].inputs == {"a": "out:a"}


def test_events_of_a_run_view_carry_its_run_id(bus: EventBus, recorder: Recorder) -> None:
    executor(FakeRunner(), bus.for_run("run-7")).run(plan(step("a"), step("b", "a")))
    assert recorder.events
    assert {e.run_id for e in recorder.events} == {"run-7"}


# -- dependents held back until a result is stored (``durable``) --------------------------------


class Store:
    """A ``Durability`` whose results are stored when the test says (``store``); until then a
    step that others need is reported not stored, and its ``then`` kept."""

    def __init__(self, slow: set[str]) -> None:
        self.slow = slow
        self.asked: list[str] = []
        self.waiting: dict[str, Callable[[], None]] = {}

    def __call__(self, step_id: str, then: Callable[[], None]) -> bool:
        self.asked.append(step_id)
        if step_id not in self.slow:
            return True
        self.waiting[step_id] = then
        return False

    def store(self, step_id: str) -> None:
        self.waiting.pop(step_id)()


def finished(bus: EventBus, step_id: str) -> threading.Event:
    seen = threading.Event()
    bus.subscribe(
        lambda e: seen.set() if isinstance(e, StepFinished) and e.step_id == step_id else None
    )
    return seen


def test_dependents_wait_for_a_stored_result_holding_no_slot(bus: EventBus) -> None:
    store = Store({"a"})
    c_done = finished(bus, "c")
    fake = FakeRunner()
    ex = executor(fake, bus, max_workers=1, durable=store)
    run = Background(ex, plan(step("a"), step("b", "a"), step("c")))
    wait_for(c_done)  # the one slot went to c while b waited for a's result to be stored
    assert fake.calls == ["a", "c"]
    store.store("a")
    outcome = run.result()
    assert outcome.ok, outcome.reason
    assert fake.calls == ["a", "c", "b"]
    assert fake.inputs["b"] == {"a": "out:a"}
    assert store.asked == ["a"]  # only a step that others need is asked about


def test_a_result_stored_already_releases_its_dependents_at_once(bus: EventBus) -> None:
    store = Store(set())
    outcome = executor(FakeRunner(), bus, durable=store).run(
        plan(step("a"), step("b", "a"), step("c", "a", "b"))
    )
    assert outcome.ok
    assert store.asked == ["a", "b"]


def test_a_store_that_answers_from_inside_the_call_is_not_lost(bus: EventBus) -> None:
    """``then`` may come before ``durable`` returns (the journal's writer commits meanwhile)."""

    def durable(step_id: str, then: Callable[[], None]) -> bool:
        then()
        return False

    outcome = executor(FakeRunner(), bus, durable=durable).run(plan(step("a"), step("b", "a")))
    assert outcome.ok, outcome.reason


def test_a_cancel_ends_a_run_whose_dependents_wait_for_a_store(bus: EventBus) -> None:
    store = Store({"a"})
    a_done = finished(bus, "a")
    ex = executor(FakeRunner(), bus, durable=store)
    run = Background(ex, plan(step("a"), step("b", "a")))
    wait_for(a_done)
    ex.cancel("stopped by the test")
    outcome = run.result()  # never stored: the run still ends
    assert outcome.status == "cancelled"
    assert statuses(outcome) == {"a": "succeeded", "b": "cancelled"}
