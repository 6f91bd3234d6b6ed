"""What the live display knows about a run: the steps, their states, the planner, the notes.

Plain data, no ``rich`` and no I/O; changed only by ``Board.apply`` (on the display's renderer
thread, or under its lock). Besides the steps it keeps what a frame needs without walking every
step: how many steps are in each state, which are running (in the order they started), the last
steps to end, and a version that moves with every change a frame would show, so a renderer can
tell in O(1) that nothing changed. Each step's view has its own version, so a row drawn once is
reused until its step changes.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from overseer.events import (
    Event,
    JoinerDecided,
    PlanningProgress,
    PlanningStarted,
    PlanReady,
    PlanRejected,
    RunAborted,
    RunFinished,
    StepCancelled,
    StepFailed,
    StepFinished,
    StepPlanned,
    StepRetrying,
    StepSkipped,
    StepStarted,
)

__all__ = [
    "ENDED",
    "RECENT",
    "Board",
    "Planning",
    "Row",
    "StepView",
    "joiner_text",
    "outline",
    "rejected_text",
    "status_of",
]

ENDED = ("succeeded", "failed", "skipped", "cancelled")
_STEP_EVENTS = (StepStarted, StepFinished, StepFailed, StepRetrying, StepSkipped, StepCancelled)
RECENT = 500
"""How many of the last steps to end the board remembers in order (a bounded frame shows some)."""


@dataclass(slots=True)
class StepView:
    step_id: str
    description: str
    tool: str
    depends_on: tuple[str, ...]
    round: int = 1
    index: int = 0  # its place in the plan: the order of arrival
    status: str = "pending"
    started: float | None = None  # on the display's clock, when its StepStarted arrived
    seconds: float | None = None
    note: str = ""
    version: int = 0  # moves whenever its row would show something else (its clock aside)


@dataclass(slots=True)
class Planning:
    """The planner's call in progress: since when (monotonic), for which round, tokens so far."""

    round: int
    since: float
    tokens: int = 0


@dataclass
class Board:
    """Everything the display knows about the run, changed only by ``apply``."""

    steps: dict[str, StepView] = field(default_factory=dict)
    planning: Planning | None = None
    notes: list[str] = field(default_factory=list)
    rounds: int = 1
    planned: set[int] = field(default_factory=set)  # rounds whose plan is complete
    early: dict[str, list[tuple[float, Event]]] = field(default_factory=dict)
    ended: float | None = None  # when the display stopped: elapsed times freeze there
    counts: Counter[str] = field(default_factory=Counter)  # steps in each state
    running: dict[str, None] = field(default_factory=dict)  # in the order they started
    recent: deque[str] = field(default_factory=lambda: deque(maxlen=RECENT))  # last to end
    failed: list[str] = field(default_factory=list)  # in the order they failed
    version: int = 0  # moves with every change a frame would show
    shape: int = 0  # moves when a step or a round is added: the tree's outline changes

    def apply(self, arrived: float, event: Event) -> None:
        """Record ``event``, which arrived at monotonic time ``arrived``."""
        if isinstance(event, _STEP_EVENTS):
            self._step_event(arrived, event)
        elif isinstance(event, PlanningStarted | PlanningProgress | PlanReady | PlanRejected):
            self._planning_event(arrived, event)
        elif isinstance(event, StepPlanned):
            self.add_step(event.step, event.round)
        elif isinstance(event, JoinerDecided):
            self.notes.append(joiner_text(event))
            self.version += 1
        elif isinstance(event, RunAborted | RunFinished):
            self.planning = None
            self.version += 1

    def _step_event(self, arrived: float, event: Any) -> None:
        """A step's event; one that came before the step itself (a streamed step can start
        before its ``StepPlanned`` is out) waits for it."""
        view = self.steps.get(event.step_id)
        if view is not None:
            self._update(view, arrived, event)
        else:
            self.early.setdefault(event.step_id, []).append((arrived, event))

    def _planning_event(self, arrived: float, event: Event) -> None:
        if isinstance(event, PlanningStarted):
            self.planning = Planning(event.round, arrived)
            if event.round > self.rounds:
                self.rounds = event.round
                self.shape += 1
        elif isinstance(event, PlanningProgress) and event.round not in self.planned:
            self.planning = self.planning or Planning(event.round, arrived - event.elapsed)
            self.planning.tokens = event.tokens
        elif isinstance(event, PlanRejected):
            self.notes.append(rejected_text(event))
        elif isinstance(event, PlanReady):
            for step in event.plan.steps:
                self.add_step(step, event.round)
            self.planning = None
            self.planned.add(event.round)
        self.version += 1

    def add_step(self, step: Any, round_: int) -> bool:
        """Add a step not seen before; say whether it was new."""
        if step.step_id in self.steps:
            return False
        view = StepView(step.step_id, step.description, step.tool, tuple(step.depends_on), round_)
        view.index = len(self.steps)
        self.steps[step.step_id] = view
        self.counts["pending"] += 1
        self.rounds = max(self.rounds, round_)
        self.version += 1
        self.shape += 1
        for arrived, event in self.early.pop(step.step_id, ()):
            self._update(view, arrived, event)
        return True

    def _update(self, view: StepView, arrived: float, event: Event) -> None:
        was = view.status
        if isinstance(event, StepStarted):
            view.status, view.started = "running", arrived
        elif isinstance(event, StepFinished):
            view.status, view.seconds = "succeeded", event.duration
        elif isinstance(event, StepFailed):
            view.status, view.seconds, view.note = "failed", event.duration, event.error
        elif isinstance(event, StepSkipped | StepCancelled):
            view.status, view.note = status_of(event), event.reason
        elif isinstance(event, StepRetrying):
            view.note = f"retry {event.attempt}: {event.error}"
        view.version += 1
        self.version += 1
        if view.status != was:
            self._moved(view, was)

    def _moved(self, view: StepView, was: str) -> None:
        self.counts[was] -= 1
        self.counts[view.status] += 1
        if was == "running":
            self.running.pop(view.step_id, None)
        if view.status == "running":
            self.running[view.step_id] = None
        elif view.status in ENDED:
            self.recent.append(view.step_id)
            if view.status == "failed":
                self.failed.append(view.step_id)


def status_of(event: Event) -> str:
    return "skipped" if isinstance(event, StepSkipped) else "cancelled"


def joiner_text(event: JoinerDecided) -> str:
    what = "plan again" if event.decision == "replan" else event.decision
    return f"round {event.round} done: {what}" + (f" ({event.reason})" if event.reason else "")


def rejected_text(event: PlanRejected) -> str:
    return f"plan attempt {event.attempt} rejected: {'; '.join(event.problems)}"


# -- the outline of the tree ---------------------------------------------------------------------

Row = tuple[str, "StepView | int"]
"""One line of the tree under its root: the guide drawn before it, and its step (or, once there
is more than one round, the number of the round it heads)."""


def outline(board: Board) -> list[Row]:
    """The tree under the root, in drawing order: each step under its deepest dependency of the
    same round, other needs named on its own line; with more than one round, each round under
    its own heading. No recursion: a chain of a thousand steps is a thousand deep."""
    depth = _depths(board.steps)
    root: tuple[str, str | int] = ("", "")
    children: dict[tuple[str, str | int], list[tuple[str, str | int]]] = {root: []}
    for view in sorted(board.steps.values(), key=lambda v: (v.round, depth[v.step_id])):
        parent = _parent(view, board, depth, children)
        if parent is None:
            parent = root if board.rounds <= 1 else ("round", view.round)
            if parent not in children:
                children[parent] = []
                children[root].append(parent)
        node = ("step", view.step_id)
        children[node] = []
        children[parent].append(node)
    rows: list[Row] = []
    stack = _below(children[root], "")
    while stack:
        (kind, name), prefix, last = stack.pop()
        item = board.steps[name] if kind == "step" and isinstance(name, str) else int(name)
        rows.append((prefix + ("└── " if last else "├── "), item))
        stack += _below(children[(kind, name)], prefix + ("    " if last else "│   "))
    return rows


def _parent(
    view: StepView,
    board: Board,
    depth: dict[str, int],
    placed: dict[tuple[str, str | int], list[tuple[str, str | int]]],
) -> tuple[str, str | int] | None:
    deps = [
        d for d in view.depends_on if ("step", d) in placed and board.steps[d].round == view.round
    ]
    return ("step", max(deps, key=lambda d: depth[d])) if deps else None


def _below(
    nodes: list[tuple[str, str | int]], prefix: str
) -> list[tuple[tuple[str, str | int], str, bool]]:
    """``nodes`` to visit, last first (they are popped off a stack), each with its prefix and
    whether it is the last of its siblings."""
    count = len(nodes)
    return [(node, prefix, i == count - 1) for i, node in enumerate(nodes)][::-1]


def _depths(steps: dict[str, StepView]) -> dict[str, int]:
    """1 for a step with no known dependency, else one more than its deepest one (iteratively;
    a dependency that would close a cycle is ignored)."""
    depth: dict[str, int] = {}
    for start in steps:
        stack, active = [start], {start}
        while stack:
            step_id = stack[-1]
            deps = [d for d in steps[step_id].depends_on if d in steps]
            todo = [d for d in deps if d not in depth and d not in active]
            if todo:
                stack += todo
                active.update(todo)
                continue
            stack.pop()
            active.discard(step_id)
            depth[step_id] = 1 + max((depth[d] for d in deps if d in depth), default=0)
    return depth
