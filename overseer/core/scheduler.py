"""The pure dependency organizer: which steps may start, which are done, failed, skipped.

No threads, no clocks, no printing: the executor asks ``take_ready()`` for work, reports each
outcome with ``succeeded()``/``failed()``, and the scheduler answers with what changed.

A step becomes ready the moment every step it depends on has succeeded (never level by level);
``parallel_group`` is ignored here. Steps may be added one at a time while others run (a streamed
plan); a dependency may name a step that has not arrived yet, as long as it arrives before
``close()``. Every operation is O(1) amortised per step and edge, so a plan of n steps and e edges
costs O(n + e) in all; ``take_ready`` adds O(k) per step taken when k tools have caps.
"""

from __future__ import annotations

import graphlib
from collections import defaultdict, deque
from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

from overseer.core.plan import Step
from overseer.core.results import StepStatus

__all__ = ["ErrorPolicy", "Scheduler", "critical_path", "levels"]

ErrorPolicy = Literal["fail-fast", "continue"]

_UNCAPPED = ""  # ready-queue key for every tool without a cap (a tool name is never blank)


class Scheduler:
    """Tracks each step's state under a global cap and per-tool caps.

    ``on_error="fail-fast"``: the first failure halts the scheduler (nothing new starts, every
    step not started is cancelled). ``"continue"``: the failed step's transitive dependents are
    skipped and everything else still runs.
    """

    def __init__(
        self,
        *,
        max_running: int,
        tool_caps: Mapping[str, int] | None = None,
        on_error: ErrorPolicy = "fail-fast",
    ) -> None:
        _check_caps(max_running, tool_caps or {}, on_error)
        self._max_running = max_running
        self._caps = dict(tool_caps or {})
        self._fail_fast = on_error == "fail-fast"
        self._steps: dict[str, Step] = {}
        self._status: dict[str, StepStatus] = {}
        self._missing: dict[str, int] = {}  # dependencies not yet succeeded
        self._dependents: defaultdict[str, list[str]] = defaultdict(list)
        self._cause: dict[str, str] = {}  # skipped step -> the failed step behind it
        self._held: set[str] = set()  # succeeded, dependents not yet released
        self._queues: dict[str, deque[tuple[int, str]]] = {}  # key -> (ready seq, step id)
        self._running_by_tool: dict[str, int] = dict.fromkeys(self._caps, 0)
        self._seq = 0
        self._running = 0
        self._pending = 0
        self._closed = False
        self._halted = False

    # -- feeding -------------------------------------------------------------------------

    def add(self, step: Step) -> list[str]:
        """Register ``step``; returns the ids settled by its arrival (skipped or cancelled).

        Raises ``ValueError`` for a duplicate id, a step depending on itself, or an add after
        ``close()``. After a halt the step is cancelled at once; in continue mode a step that
        needs a failed or skipped step is skipped at once, with any dependents already waiting.
        """
        self._check_new(step)
        step_id = step.step_id
        self._steps[step_id] = step
        self._status[step_id] = "pending"
        self._pending += 1
        if self._halted:
            self._settle(step_id, "cancelled")
            return [step_id]
        cause = self._blocking_cause(step.depends_on)
        if cause is not None:
            return self._skip_from(step_id, cause)
        self._register_deps(step)
        return []

    def close(self) -> None:
        """No more steps will arrive. Raises ``ValueError`` (and stays open) if some step
        depends on a step that never arrived, or steps wait on each other in a cycle."""
        if self._closed:
            return
        if not self._halted:
            _raise_if_problems(self._unknown_dependencies() or self._cycle_problems())
        self._closed = True

    # -- taking and reporting ------------------------------------------------------------

    def take_ready(self) -> list[Step]:
        """Steps that may start now, oldest-ready first, within every cap; marks them running."""
        taken: list[Step] = []
        while self._running < self._max_running:
            key = self._next_queue()
            if key is None:
                break
            step_id = self._queues[key].popleft()[1]
            self._start(step_id)
            taken.append(self._steps[step_id])
        return taken

    def succeeded(self, step_id: str, *, release: bool = True) -> None:
        """A running step succeeded: its slot is free and its dependents may become ready.
        ``release=False`` holds them back until ``release(step_id)`` (the executor waits for
        the journal to commit the result they will be given)."""
        self._finish(step_id, "succeeded")
        if release:
            self._release(step_id)
        else:
            self._held.add(step_id)

    def release(self, step_id: str) -> None:
        """The dependents of a succeeded step held back by ``succeeded`` may become ready."""
        if step_id in self._held:
            self._held.discard(step_id)
            self._release(step_id)

    def has_dependents(self, step_id: str) -> bool:
        """Whether some step added so far waits for ``step_id``."""
        return bool(self._dependents.get(step_id))

    def _release(self, step_id: str) -> None:
        status, missing = self._status, self._missing
        for dependent in self._dependents.pop(step_id, ()):
            if status.get(dependent) == "pending":
                missing[dependent] -= 1
                if missing[dependent] == 0:
                    self._enqueue(dependent)

    def failed(self, step_id: str) -> list[str]:
        """A running step failed. fail-fast: halts and returns the ids newly cancelled;
        continue: returns the ids newly skipped (every transitive dependent still pending)."""
        self._finish(step_id, "failed")
        if self._fail_fast:
            return self.halt()
        return self._skip_dependents(step_id, step_id)

    def abandon(self, step_id: str) -> list[str]:
        """A running step was given up (the run was cancelled): it becomes cancelled and the
        scheduler halts; returns the pending ids newly cancelled."""
        self._finish(step_id, "cancelled")
        return self.halt()

    def halt(self) -> list[str]:
        """Start nothing more (budget spent, Ctrl-C, fail-fast): returns the ids now cancelled.
        Running steps keep running and are still reported as they finish."""
        if self._halted:
            return []
        self._halted = True
        self._queues.clear()
        cancelled = [i for i, status in self._status.items() if status == "pending"]
        for step_id in cancelled:
            self._settle(step_id, "cancelled")
        return cancelled

    # -- questions -----------------------------------------------------------------------

    def status(self, step_id: str) -> StepStatus:
        try:
            return self._status[step_id]
        except KeyError:
            raise KeyError(f"unknown step {step_id!r}") from None

    def cause(self, step_id: str) -> str | None:
        """For a skipped step, the failed step that caused the skip; otherwise None."""
        return self._cause.get(step_id)

    def step(self, step_id: str) -> Step:
        return self._steps[step_id]

    @property
    def finished(self) -> bool:
        """Closed (or halted), nothing pending that can still start, nothing running."""
        return (self._closed or self._halted) and self._pending == 0 and self._running == 0

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def halted(self) -> bool:
        return self._halted

    @property
    def running(self) -> int:
        return self._running

    @property
    def pending(self) -> int:
        """Steps neither started nor settled (waiting for dependencies or for a slot)."""
        return self._pending

    # -- internals -----------------------------------------------------------------------

    def _check_new(self, step: Step) -> None:
        if self._closed:
            raise ValueError(f"step {step.step_id!r} arrived after the plan was closed")
        if step.step_id in self._steps:
            raise ValueError(f"step id {step.step_id!r} is used more than once")
        if step.step_id in step.depends_on:
            raise ValueError(f"step {step.step_id!r} depends on itself")

    def _blocking_cause(self, deps: Iterable[str]) -> str | None:
        for dep in deps:
            status = self._status.get(dep)
            if status == "failed":
                return dep
            if status == "skipped":
                return self._cause[dep]
        return None

    def _register_deps(self, step: Step) -> None:
        missing = 0
        for dep in step.depends_on:
            if self._status.get(dep) != "succeeded" or dep in self._held:
                missing += 1
                self._dependents[dep].append(step.step_id)
        self._missing[step.step_id] = missing
        if missing == 0:
            self._enqueue(step.step_id)

    def _enqueue(self, step_id: str) -> None:
        tool = self._steps[step_id].tool
        key = tool if tool in self._caps else _UNCAPPED
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = deque()
        queue.append((self._seq, step_id))
        self._seq += 1

    def _next_queue(self) -> str | None:
        """The key of the queue whose head became ready first, among tools with a free slot."""
        best: str | None = None
        best_seq = -1
        for key, queue in self._queues.items():
            if queue and (best is None or queue[0][0] < best_seq) and self._has_slot(key):
                best, best_seq = key, queue[0][0]
        return best

    def _has_slot(self, key: str) -> bool:
        return key == _UNCAPPED or self._running_by_tool[key] < self._caps[key]

    def _start(self, step_id: str) -> None:
        self._status[step_id] = "running"
        self._pending -= 1
        self._running += 1
        tool = self._steps[step_id].tool
        if tool in self._caps:
            self._running_by_tool[tool] += 1

    def _finish(self, step_id: str, status: StepStatus) -> None:
        if self._status.get(step_id) != "running":
            raise ValueError(f"step {step_id!r} is not running")
        self._status[step_id] = status
        self._running -= 1
        tool = self._steps[step_id].tool
        if tool in self._caps:
            self._running_by_tool[tool] -= 1

    def _settle(self, step_id: str, status: StepStatus) -> None:
        """A pending step that will never start becomes ``status``."""
        self._status[step_id] = status
        self._pending -= 1

    def _skip_from(self, step_id: str, cause: str) -> list[str]:
        self._settle(step_id, "skipped")
        self._cause[step_id] = cause
        return [step_id, *self._skip_dependents(step_id, cause)]

    def _skip_dependents(self, step_id: str, cause: str) -> list[str]:
        """Skip every pending transitive dependent of ``step_id`` (each edge visited once)."""
        skipped: list[str] = []
        stack = [step_id]
        while stack:
            for dependent in self._dependents.pop(stack.pop(), ()):
                if self._status.get(dependent) == "pending":
                    self._settle(dependent, "skipped")
                    self._cause[dependent] = cause
                    skipped.append(dependent)
                    stack.append(dependent)
        return skipped

    def _unknown_dependencies(self) -> list[str]:
        return [
            f"step {waiting[0]!r} depends on unknown step {dep!r}"
            for dep, waiting in self._dependents.items()
            if dep not in self._steps and waiting
        ]

    def _cycle_problems(self) -> list[str]:
        stuck = self._stuck_steps()
        if not stuck:
            return []
        graph = {i: [d for d in self._steps[i].depends_on if d in stuck] for i in stuck}
        try:
            graphlib.TopologicalSorter(graph).prepare()
        except graphlib.CycleError as exc:
            path = " -> ".join(reversed(exc.args[1]))
            return [f"the steps form a dependency cycle: {path} (each depends on the next)"]
        return []  # pragma: no cover - stuck steps always contain a cycle

    def _stuck_steps(self) -> set[str]:
        """Pending steps that could never start even if every started step succeeded."""
        waiting = {i: n for i, n in self._missing.items() if n and self._status[i] == "pending"}
        frontier = [i for i, s in self._status.items() if s == "running" or i not in waiting]
        while frontier:
            for dependent in self._dependents.get(frontier.pop(), ()):
                if dependent in waiting:
                    waiting[dependent] -= 1
                    if waiting[dependent] == 0:
                        del waiting[dependent]
                        frontier.append(dependent)
        return set(waiting)


def _check_caps(max_running: int, caps: Mapping[str, int], on_error: str) -> None:
    if max_running < 1:
        raise ValueError(f"max_running must be at least 1, got {max_running!r}")
    for tool, cap in caps.items():
        if cap < 1:
            raise ValueError(f"the cap for tool {tool!r} must be at least 1, got {cap!r}")
    if on_error not in ("fail-fast", "continue"):
        raise ValueError(f"on_error must be 'fail-fast' or 'continue', got {on_error!r}")


def _raise_if_problems(problems: list[str]) -> None:
    if problems:
        raise ValueError("; ".join(problems))


# -- whole-plan views (display and reports) -----------------------------------------------


def levels(steps: Sequence[Step]) -> list[list[str]]:
    """Depth layers for display only: roots first, each step one below its deepest dependency.

    Dependencies on steps not in ``steps`` are ignored; a cycle raises ``ValueError``.
    """
    depth: dict[str, int] = {}
    for step in _topological(steps):
        depth[step.step_id] = 1 + max((depth[d] for d in _known_deps(step, depth)), default=-1)
    layers: list[list[str]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
    for step in steps:
        layers[depth[step.step_id]].append(step.step_id)
    return layers


def critical_path(steps: Sequence[Step], durations: Mapping[str, float]) -> tuple[float, list[str]]:
    """The longest chain of dependencies by total duration: ``(seconds, ids root first)``.

    A step missing from ``durations`` counts as 0; ties go to the candidate listed first.
    Dependencies on steps not in ``steps`` are ignored; a cycle raises ``ValueError``.
    """
    known = {s.step_id for s in steps}
    found = _longest(steps, known, durations)  # plans usually list steps after their needs
    finish, via = found if found is not None else _longest_ordered(steps, known, durations)
    if not finish:
        return 0.0, []
    end = max((s.step_id for s in steps), key=finish.__getitem__)
    return finish[end], _walk_back(end, via)


def _known_deps(step: Step, known: Mapping[str, object]) -> list[str]:
    return [d for d in step.depends_on if d in known]


_Longest = tuple[dict[str, float], dict[str, str | None]]


def _longest(
    steps: Iterable[Step], known: set[str], durations: Mapping[str, float]
) -> _Longest | None:
    """Each step's finish on the longest chain to it, and the dependency that chain comes
    through; None when a step comes before one of its (known) dependencies."""
    finish: dict[str, float] = {}
    via: dict[str, str | None] = {}
    for step in steps:
        before, start = None, 0.0
        for dep in step.depends_on:
            at = finish.get(dep)
            if at is None:
                if dep in known:
                    return None
            elif before is None or at > start:  # ties: the first listed
                before, start = dep, at
        via[step.step_id] = before
        finish[step.step_id] = start + durations.get(step.step_id, 0.0)
    return finish, via


def _longest_ordered(
    steps: Sequence[Step], known: set[str], durations: Mapping[str, float]
) -> _Longest:
    found = _longest(_topological(steps), known, durations)
    assert found is not None  # in topological order every dependency comes first
    return found


def _walk_back(end: str, via: Mapping[str, str | None]) -> list[str]:
    path: list[str] = []
    current: str | None = end
    while current is not None:
        path.append(current)
        current = via[current]
    return path[::-1]


def _topological(steps: Sequence[Step]) -> list[Step]:
    """``steps`` ordered so each comes after its (known) dependencies; stable for ties."""
    by_id = {s.step_id: s for s in steps}
    missing, dependents = _edges(steps, by_id)
    if not dependents:  # no step needs another: already in order (a fan-out, a big batch)
        return [by_id[s.step_id] for s in steps]
    ready = deque(s.step_id for s in steps if missing[s.step_id] == 0)
    order: list[Step] = []
    while ready:
        step_id = ready.popleft()
        order.append(by_id[step_id])
        for dependent in dependents.get(step_id, ()):
            missing[dependent] -= 1
            if missing[dependent] == 0:
                ready.append(dependent)
    if len(order) < len(by_id):
        raise ValueError("the steps form a dependency cycle")
    return order


def _edges(
    steps: Sequence[Step], by_id: Mapping[str, Step]
) -> tuple[dict[str, int], defaultdict[str, list[str]]]:
    """Per step, how many known dependencies it has, and who depends on it."""
    missing = dict.fromkeys(by_id, 0)
    dependents: defaultdict[str, list[str]] = defaultdict(list)
    for step in steps:
        for dep in step.depends_on:
            if dep in by_id:
                missing[step.step_id] += 1
                dependents[dep].append(step.step_id)
    return missing, dependents
