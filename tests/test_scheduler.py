"""The pure scheduler, without threads: readiness, caps, failure policies, streamed plans."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from overseer.core.plan import Step
from overseer.core.scheduler import ErrorPolicy, Scheduler, critical_path, levels


def step(step_id: str, *deps: str, tool: str = "t", group: int | None = None) -> Step:
    return Step(
        step_id=step_id, description=step_id, tool=tool, depends_on=deps, parallel_group=group
    )


def scheduler(
    *steps: Step,
    max_running: int = 10,
    caps: Mapping[str, int] | None = None,
    on_error: ErrorPolicy = "fail-fast",
    close: bool = True,
) -> Scheduler:
    sched = Scheduler(max_running=max_running, tool_caps=caps, on_error=on_error)
    for s in steps:
        sched.add(s)
    if close:
        sched.close()
    return sched


def ids(steps: Iterable[Step]) -> list[str]:
    return [s.step_id for s in steps]


# -- readiness -------------------------------------------------------------------------------


def test_roots_are_ready_in_insertion_order() -> None:
    sched = scheduler(step("c"), step("a"), step("b"))
    assert ids(sched.take_ready()) == ["c", "a", "b"]
    assert [sched.status(i) for i in "cab"] == ["running"] * 3


def test_a_step_waits_for_every_dependency() -> None:
    sched = scheduler(step("a"), step("b"), step("c", "a", "b"))
    assert ids(sched.take_ready()) == ["a", "b"]
    sched.succeeded("a")
    assert sched.take_ready() == []
    assert sched.status("c") == "pending"
    sched.succeeded("b")
    assert ids(sched.take_ready()) == ["c"]


def test_a_step_starts_the_moment_its_own_dependencies_succeed_not_by_level() -> None:
    # A -> B (slow), A -> C, C -> D: D must not wait for B, its "level" sibling.
    sched = scheduler(
        step("a"), step("b", "a"), step("c", "a"), step("d", "c"), step("e", "b", "c")
    )
    assert ids(sched.take_ready()) == ["a"]
    sched.succeeded("a")
    assert ids(sched.take_ready()) == ["b", "c"]
    sched.succeeded("c")
    assert ids(sched.take_ready()) == ["d"]
    assert sched.status("b") == "running"
    sched.succeeded("d")
    sched.succeeded("b")
    assert ids(sched.take_ready()) == ["e"]


def test_parallel_group_never_delays_anything() -> None:
    sched = scheduler(step("a", group=1), step("b", group=2), step("c", group=3), step("d", "a"))
    assert ids(sched.take_ready()) == ["a", "b", "c"]
    sched.succeeded("a")
    assert ids(sched.take_ready()) == ["d"]


def test_take_ready_marks_steps_running_so_they_are_taken_once() -> None:
    sched = scheduler(step("a"), step("b"))
    assert ids(sched.take_ready()) == ["a", "b"]
    assert sched.take_ready() == []
    assert sched.running == 2
    assert sched.pending == 0


def test_ready_steps_start_oldest_ready_first() -> None:
    sched = scheduler(step("a"), step("b"), step("x", "b"), step("y", "a"), max_running=2)
    assert ids(sched.take_ready()) == ["a", "b"]
    sched.succeeded("b")
    sched.succeeded("a")
    assert ids(sched.take_ready()) == ["x", "y"]


def test_finished_needs_close_and_nothing_running() -> None:
    sched = scheduler(step("a"), close=False)
    sched.take_ready()
    sched.succeeded("a")
    assert not sched.finished
    sched.close()
    assert sched.finished
    assert sched.closed


def test_an_empty_closed_plan_is_finished() -> None:
    assert scheduler().finished


# -- caps -------------------------------------------------------------------------------------


def test_global_cap_limits_running_steps() -> None:
    sched = scheduler(*(step(f"s{i}") for i in range(5)), max_running=2)
    assert ids(sched.take_ready()) == ["s0", "s1"]
    assert sched.take_ready() == []
    sched.succeeded("s1")
    assert ids(sched.take_ready()) == ["s2"]


def test_tool_cap_holds_back_only_that_tool() -> None:
    steps = [step("x1", tool="x"), step("x2", tool="x"), step("y1", tool="y"), step("x3", tool="x")]
    sched = scheduler(*steps, caps={"x": 1})
    assert ids(sched.take_ready()) == ["x1", "y1"]
    sched.succeeded("y1")
    assert sched.take_ready() == []
    sched.succeeded("x1")
    assert ids(sched.take_ready()) == ["x2"]


def test_tool_caps_and_global_cap_together() -> None:
    steps = [step(f"x{i}", tool="x") for i in range(3)] + [
        step(f"y{i}", tool="y") for i in range(3)
    ]
    sched = scheduler(*steps, max_running=3, caps={"x": 2, "y": 2})
    assert ids(sched.take_ready()) == ["x0", "x1", "y0"]
    sched.succeeded("x0")
    assert ids(sched.take_ready()) == ["x2"]  # became ready before y1
    sched.succeeded("y0")
    assert ids(sched.take_ready()) == ["y1"]
    assert sched.take_ready() == []  # x at its cap (x1, x2), y1 and nothing else ready


def test_caps_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_running"):
        Scheduler(max_running=0)
    with pytest.raises(ValueError, match="'x'"):
        Scheduler(max_running=1, tool_caps={"x": 0})
    with pytest.raises(ValueError, match="on_error"):
        Scheduler(max_running=1, on_error="explode")  # type: ignore[arg-type]


# -- validation -------------------------------------------------------------------------------


def test_duplicate_id_is_rejected() -> None:
    sched = scheduler(step("a"), close=False)
    with pytest.raises(ValueError, match="'a' is used more than once"):
        sched.add(step("a"))


def test_self_dependency_is_rejected() -> None:
    sched = scheduler(close=False)
    with pytest.raises(ValueError, match="'a' depends on itself"):
        sched.add(step("a", "a"))


def test_add_after_close_is_rejected() -> None:
    sched = scheduler(step("a"))
    with pytest.raises(ValueError, match="after the plan was closed"):
        sched.add(step("b"))


def test_close_rejects_a_dependency_that_never_arrived() -> None:
    sched = scheduler(step("a"), step("b", "ghost"), close=False)
    with pytest.raises(ValueError, match="'b' depends on unknown step 'ghost'"):
        sched.close()
    assert not sched.closed


def test_close_rejects_a_cycle_and_names_its_path() -> None:
    sched = scheduler(step("a", "c"), step("b", "a"), step("c", "b"), step("d"), close=False)
    with pytest.raises(ValueError, match="dependency cycle: ") as info:
        sched.close()
    path = str(info.value).split("cycle: ")[1].split(" (")[0].split(" -> ")
    deps = {"a": "c", "b": "a", "c": "b"}
    assert sorted(path[:-1]) == ["a", "b", "c"]
    assert path[0] == path[-1]
    assert all(deps[x] == y for x, y in itertools.pairwise(path))


def test_close_twice_is_harmless() -> None:
    sched = scheduler(step("a"))
    sched.close()
    assert sched.closed


def test_unknown_step_status_is_a_key_error() -> None:
    with pytest.raises(KeyError, match="'nope'"):
        scheduler().status("nope")


def test_reporting_a_step_that_is_not_running_is_an_error() -> None:
    sched = scheduler(step("a"), step("b", "a"))
    with pytest.raises(ValueError, match="'b' is not running"):
        sched.succeeded("b")
    sched.take_ready()
    sched.succeeded("a")
    with pytest.raises(ValueError, match="'a' is not running"):
        sched.failed("a")


# -- streamed plans ---------------------------------------------------------------------------


def test_steps_may_arrive_while_others_run() -> None:
    sched = scheduler(step("a"), close=False)
    assert ids(sched.take_ready()) == ["a"]
    sched.add(step("b", "a"))
    assert sched.take_ready() == []
    sched.succeeded("a")
    sched.add(step("c", "a"))
    assert ids(sched.take_ready()) == ["b", "c"]
    sched.close()
    sched.succeeded("b")
    assert not sched.finished
    sched.succeeded("c")
    assert sched.finished


def test_a_dependency_may_arrive_after_its_dependent() -> None:
    sched = scheduler(step("b", "a"), close=False)
    assert sched.take_ready() == []
    sched.add(step("a"))
    assert ids(sched.take_ready()) == ["a"]
    sched.succeeded("a")
    assert ids(sched.take_ready()) == ["b"]
    sched.close()


def test_a_step_added_after_its_dependency_succeeded_is_ready_at_once() -> None:
    sched = scheduler(step("a"), close=False)
    sched.take_ready()
    sched.succeeded("a")
    assert sched.add(step("b", "a")) == []
    assert ids(sched.take_ready()) == ["b"]


# -- failures ---------------------------------------------------------------------------------


def test_continue_skips_transitive_dependents_and_runs_the_rest() -> None:
    sched = scheduler(
        step("a"),
        step("b", "a"),
        step("c", "b"),
        step("d"),
        step("e", "d", "c"),
        on_error="continue",
    )
    assert ids(sched.take_ready()) == ["a", "d"]
    assert sched.failed("a") == ["b", "c", "e"]
    sched.succeeded("d")
    assert sched.take_ready() == []
    assert [sched.status(i) for i in "abcde"] == [
        "failed",
        "skipped",
        "skipped",
        "succeeded",
        "skipped",
    ]
    assert sched.cause("e") == "a"
    assert sched.cause("d") is None
    assert sched.finished


def test_continue_skips_a_late_step_that_needs_a_failed_one() -> None:
    sched = scheduler(step("a"), step("z", "late"), on_error="continue", close=False)
    sched.take_ready()
    sched.failed("a")
    assert sched.add(step("b", "a")) == ["b"]
    assert sched.status("b") == "skipped"
    # "late" needs b (skipped): it is skipped on arrival, and so is z, which waited for it.
    assert sched.add(step("late", "b")) == ["late", "z"]
    assert sched.cause("z") == "a"
    sched.close()
    assert sched.finished


def test_fail_fast_cancels_everything_not_started_and_lets_running_steps_finish() -> None:
    sched = scheduler(step("a"), step("b"), step("c", "a"), step("d"), max_running=2)
    assert ids(sched.take_ready()) == ["a", "b"]
    assert sched.failed("a") == ["c", "d"]
    assert sched.halted
    assert sched.take_ready() == []
    assert not sched.finished
    sched.succeeded("b")
    assert sched.finished
    assert [sched.status(i) for i in "abcd"] == ["failed", "succeeded", "cancelled", "cancelled"]


def test_fail_fast_cancels_steps_that_arrive_after_the_failure() -> None:
    sched = scheduler(step("a"), close=False)
    sched.take_ready()
    sched.failed("a")
    assert sched.add(step("b")) == ["b"]
    assert sched.status("b") == "cancelled"
    assert sched.finished  # halted and idle: nothing more can start


def test_halt_cancels_pending_steps_once() -> None:
    sched = scheduler(step("a"), step("b", "a"), step("c"), max_running=1)
    assert ids(sched.take_ready()) == ["a"]
    assert sched.halt() == ["b", "c"]
    assert sched.halt() == []
    sched.succeeded("a")
    assert sched.status("b") == "cancelled"
    assert sched.take_ready() == []
    assert sched.finished


def test_abandon_cancels_a_running_step_and_halts() -> None:
    sched = scheduler(step("a"), step("b", "a"))
    sched.take_ready()
    assert sched.abandon("a") == ["b"]
    assert sched.status("a") == "cancelled"
    assert sched.finished


def test_a_failure_after_a_halt_cancels_nothing_more() -> None:
    sched = scheduler(step("a"), step("b"), step("c", "a"), on_error="continue")
    sched.take_ready()
    sched.halt()
    assert sched.failed("a") == []
    assert sched.status("c") == "cancelled"


# -- scale ------------------------------------------------------------------------------------


def test_a_long_chain_and_a_wide_fan_out_schedule_completely() -> None:
    n = 20_000
    chain = [step("c0")] + [step(f"c{i}", f"c{i - 1}") for i in range(1, n)]
    fan = [step(f"f{i}", "c0") for i in range(n)]
    sched = scheduler(*chain, *fan, max_running=64)
    done = 0
    while not sched.finished:
        for s in sched.take_ready():
            sched.succeeded(s.step_id)
            done += 1
    assert done == 2 * n


# -- the property test ------------------------------------------------------------------------


@st.composite
def dags(draw: st.DrawFn) -> list[Step]:
    n = draw(st.integers(min_value=1, max_value=18))
    steps = []
    for i in range(n):
        parents = (
            draw(st.sets(st.integers(min_value=0, max_value=i - 1), max_size=3)) if i else set()
        )
        tool = draw(st.sampled_from(["x", "y", "z"]))
        steps.append(step(f"s{i}", *(f"s{p}" for p in sorted(parents)), tool=tool))
    return steps


class Model:
    """What the property test saw happen, checked against the scheduler after every move."""

    def __init__(self, steps: Sequence[Step], max_running: int, caps: Mapping[str, int]) -> None:
        self.by_id = {s.step_id: s for s in steps}
        self.max_running = max_running
        self.caps = caps
        self.added: set[str] = set()
        self.taken: list[str] = []
        self.running: set[str] = set()
        self.succeeded: set[str] = set()
        self.failed: set[str] = set()
        self.reported_skipped: list[str] = []
        self.reported_cancelled: list[str] = []
        self.halted_at_take_count: int | None = None

    def take(self, sched: Scheduler) -> None:
        for s in sched.take_ready():
            assert s.step_id not in self.taken, "taken twice"
            assert set(s.depends_on) <= self.succeeded, "taken before its dependencies succeeded"
            self.taken.append(s.step_id)
            self.running.add(s.step_id)
        assert len(self.running) <= self.max_running
        for tool, cap in self.caps.items():
            assert sum(self.by_id[i].tool == tool for i in self.running) <= cap
        self.check_work_conserving(sched)

    def check_work_conserving(self, sched: Scheduler) -> None:
        """After take_ready, no step that could start is left waiting."""
        if sched.halted or len(self.running) >= self.max_running:
            return
        for step_id in self.added:
            s = self.by_id[step_id]
            if sched.status(step_id) == "pending" and set(s.depends_on) <= self.succeeded:
                busy = sum(self.by_id[i].tool == s.tool for i in self.running)
                assert s.tool in self.caps and busy >= self.caps[s.tool], f"{step_id} left waiting"

    def settle(self, settled: list[str], sched: Scheduler) -> None:
        for step_id in settled:
            if sched.status(step_id) == "skipped":
                self.reported_skipped.append(step_id)
            else:
                assert sched.status(step_id) == "cancelled"
                self.reported_cancelled.append(step_id)

    def descendants(self, roots: set[str]) -> set[str]:
        found: set[str] = set()
        changed = True
        while changed:
            changed = False
            for s in self.by_id.values():
                if s.step_id not in found and set(s.depends_on) & (roots | found):
                    found.add(s.step_id)
                    changed = True
        return found


def _finish_one(sched: Scheduler, model: Model, step_id: str, fails: bool) -> None:
    model.running.discard(step_id)
    if fails:
        model.failed.add(step_id)
        model.settle(sched.failed(step_id), sched)
    else:
        model.succeeded.add(step_id)
        sched.succeeded(step_id)


def _simulate(data: st.DataObject, sched: Scheduler, model: Model, failing: set[str]) -> None:
    arrivals = data.draw(st.permutations(sorted(model.by_id)))
    for _ in range(10 * len(model.by_id) + 10):
        if sched.finished and not arrivals:
            return
        if arrivals and (not model.running or data.draw(st.booleans())):
            step_id = arrivals.pop(0)
            model.added.add(step_id)
            model.settle(sched.add(model.by_id[step_id]), sched)
            if not arrivals:
                sched.close()
        elif model.running:
            step_id = data.draw(st.sampled_from(sorted(model.running)))
            _finish_one(sched, model, step_id, step_id in failing)
        model.take(sched)
    raise AssertionError("the scheduler never finished")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    steps=dags(),
    max_running=st.integers(min_value=1, max_value=4),
    caps=st.dictionaries(st.sampled_from(["x", "y"]), st.integers(min_value=1, max_value=2)),
    on_error=st.sampled_from(["fail-fast", "continue"]),
    data=st.data(),
)
def test_scheduler_properties(
    steps: list[Step],
    max_running: int,
    caps: dict[str, int],
    on_error: ErrorPolicy,
    data: st.DataObject,
) -> None:
    failing = data.draw(st.sets(st.sampled_from([s.step_id for s in steps])))
    sched = Scheduler(max_running=max_running, tool_caps=caps, on_error=on_error)
    model = Model(steps, max_running, caps)
    _simulate(data, sched, model, failing)
    statuses = {i: sched.status(i) for i in model.by_id}
    assert len(model.taken) == len(set(model.taken))
    assert not model.running
    assert sorted(model.reported_skipped) == sorted(
        i for i, s in statuses.items() if s == "skipped"
    )
    assert sorted(model.reported_cancelled) == sorted(
        i for i, s in statuses.items() if s == "cancelled"
    )
    if not model.failed:
        assert sorted(model.taken) == sorted(model.by_id)
        assert set(statuses.values()) == {"succeeded"}
    elif on_error == "continue":
        expected_skipped = model.descendants(model.failed)
        assert {i for i, s in statuses.items() if s == "skipped"} == expected_skipped
        assert {i for i, s in statuses.items() if s == "succeeded"} == (
            set(model.by_id) - model.failed - expected_skipped
        )
        assert not model.reported_cancelled
    else:
        for step_id, status in statuses.items():
            expected = "failed" if step_id in model.failed else "succeeded"
            assert status == (expected if step_id in model.taken else "cancelled")


@settings(max_examples=100, deadline=None)
@given(steps=dags(), on_error=st.sampled_from(["fail-fast", "continue"]), data=st.data())
def test_fail_fast_starts_nothing_after_the_first_failure(
    steps: list[Step], on_error: ErrorPolicy, data: st.DataObject
) -> None:
    sched = scheduler(*steps, max_running=3, on_error=on_error)
    running = ids(sched.take_ready())
    failed_once = False
    while running:
        step_id = data.draw(st.sampled_from(running))
        running.remove(step_id)
        if data.draw(st.booleans()):
            failed_once = True
            sched.failed(step_id)
        else:
            sched.succeeded(step_id)
        new = ids(sched.take_ready())
        assert not (new and failed_once and on_error == "fail-fast")
        running += new
    assert sched.finished


# -- levels and the critical path -------------------------------------------------------------


def test_levels_groups_steps_by_depth() -> None:
    steps = [step("a"), step("b", "a"), step("c", "a"), step("d", "c"), step("e", "b", "d")]
    assert levels(steps) == [["a"], ["b", "c"], ["d"], ["e"]]


def test_levels_keeps_listed_order_within_a_level_and_ignores_unknown_deps() -> None:
    steps = [step("z"), step("y", "elsewhere"), step("x", "z")]
    assert levels(steps) == [["z", "y"], ["x"]]


def test_levels_of_nothing_is_empty() -> None:
    assert levels([]) == []


def test_levels_rejects_a_cycle() -> None:
    with pytest.raises(ValueError, match="cycle"):
        levels([step("a", "b"), step("b", "a")])


def test_critical_path_follows_the_longest_chain_by_duration() -> None:
    steps = [step("a"), step("b", "a"), step("c", "a"), step("d", "c"), step("e", "b", "d")]
    durations = {"a": 1.0, "b": 5.0, "c": 1.0, "d": 1.0, "e": 2.0}
    assert critical_path(steps, durations) == (8.0, ["a", "b", "e"])
    durations["d"] = 4.5
    assert critical_path(steps, durations) == (8.5, ["a", "c", "d", "e"])


def test_critical_path_counts_missing_durations_as_zero() -> None:
    assert critical_path([step("a"), step("b", "a")], {"b": 2.0}) == (2.0, ["a", "b"])


def test_critical_path_of_nothing_is_zero() -> None:
    assert critical_path([], {}) == (0.0, [])


def test_critical_path_ties_go_to_the_first_listed() -> None:
    steps = [step("a"), step("b"), step("c", "a", "b")]
    assert critical_path(steps, {"a": 1.0, "b": 1.0, "c": 1.0}) == (2.0, ["a", "c"])
    assert critical_path([step("p"), step("q")], {"p": 1.0, "q": 1.0}) == (1.0, ["p"])


@given(steps=dags(), data=st.data())
@settings(max_examples=150, deadline=None)
def test_critical_path_is_the_longest_chain_however_the_steps_are_listed(
    steps: list[Step], data: st.DataObject
) -> None:
    """Listed after their dependencies (the one-pass path) or in any order (the sorted path):
    the same length, and the path returned is a real chain of that length."""
    durations = {s.step_id: data.draw(st.sampled_from([0.0, 0.5, 1.0, 2.0, 3.5])) for s in steps}
    by_id = {s.step_id: s for s in steps}
    longest: dict[str, float] = {}
    for s in steps:  # dags() lists every step after its dependencies
        longest[s.step_id] = durations[s.step_id] + max(
            (longest[d] for d in s.depends_on), default=0.0
        )
    shuffled = data.draw(st.permutations(steps))
    for listed in (steps, shuffled):
        total, path = critical_path(listed, durations)
        assert total == max(longest.values())
        assert sum(durations[i] for i in path) == total
        assert all(a in by_id[b].depends_on for a, b in itertools.pairwise(path))
        assert not by_id[path[0]].depends_on  # the chain starts at a root


# -- dependents held back until a result is stored ---------------------------------------------


def test_a_held_success_frees_its_slot_but_not_its_dependents() -> None:
    sched = scheduler(step("a"), step("b", "a"), step("c"), max_running=1)
    assert ids(sched.take_ready()) == ["a"]
    assert sched.has_dependents("a") and not sched.has_dependents("c")
    sched.succeeded("a", release=False)
    assert sched.status("a") == "succeeded" and sched.running == 0
    assert ids(sched.take_ready()) == ["c"]  # the slot a held is free for c ...
    sched.succeeded("c")
    assert sched.take_ready() == [] and not sched.finished  # ... b waits for a's release
    sched.release("a")
    assert ids(sched.take_ready()) == ["b"]
    sched.succeeded("b")
    assert sched.finished


def test_a_step_arriving_after_a_held_success_waits_for_its_release() -> None:
    sched = scheduler(step("a"), close=False)
    sched.take_ready()
    sched.succeeded("a", release=False)
    sched.add(step("b", "a"))
    assert sched.take_ready() == []
    sched.release("a")
    sched.release("a")  # twice (or for a step never held) changes nothing
    sched.release("b")
    assert ids(sched.take_ready()) == ["b"]


def test_a_step_arriving_after_a_released_success_is_ready_at_once() -> None:
    sched = scheduler(step("a"), close=False)
    sched.take_ready()
    sched.succeeded("a")
    sched.add(step("b", "a"))
    assert ids(sched.take_ready()) == ["b"]


def test_a_halt_cancels_the_dependents_of_a_held_success() -> None:
    sched = scheduler(step("a"), step("b", "a"))
    sched.take_ready()
    sched.succeeded("a", release=False)
    assert sched.halt() == ["b"]
    sched.release("a")
    assert sched.take_ready() == [] and sched.finished
