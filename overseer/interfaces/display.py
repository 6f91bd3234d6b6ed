"""Live progress on stderr: the only module that imports ``rich``.

It subscribes to events and decides nothing. On a terminal (and without ``NO_COLOR``) it draws the
plan as a tree of dependencies that updates in place; otherwise it writes one plain line per event.

The display never slows a step. Events arrive on whatever thread emits them, a worker's included
(``StepStarted`` is emitted just before the step runs), so ``handle`` only records: on a terminal
it appends the event to an inbox (one ``deque.append``, no lock a renderer could hold) and
returns; rich's own refresh thread drains the inbox and redraws about ten times a second, which is
also what makes the planner's and each running step's elapsed time tick. On a pipe, ``handle``
writes the event's line and returns: the cost of one line's write, nothing more.

What it shows: ``planning…`` with the elapsed time and the tokens received so far while the
planner works (``PlanningStarted``/``PlanningProgress``); each step as it arrives
(``StepPlanned``, from a streamed plan or a new round) or with its plan (``PlanReady``); a
``round N`` heading once a joiner added a round. Text from the model goes through
``safe_text.visible`` first: it is shown, never obeyed by the terminal.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import IO, Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.text import Text

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
from overseer.interfaces.safe_text import visible

__all__ = ["REFRESH_PER_SECOND", "BatchProgress", "Display", "closing_line", "use_rich"]

REFRESH_PER_SECOND = 10.0
"""How often the live tree is redrawn (by rich's refresh thread, never by an event)."""

_MARKS = {
    "pending": ("·", "dim"),
    "running": ("▶", "cyan"),
    "succeeded": ("✓", "green"),
    "failed": ("✗", "red"),
    "skipped": ("↷", "yellow"),
    "cancelled": ("■", "yellow"),
}
_ENDED_WITH_NOTE = ("failed", "skipped", "cancelled")


def use_rich(stream: IO[str]) -> bool:
    """Live drawing only on a real terminal, and never when ``NO_COLOR`` is set."""
    return stream.isatty() and not os.environ.get("NO_COLOR")


# -- what the display knows ----------------------------------------------------------------------


@dataclass
class _StepView:
    step_id: str
    description: str
    tool: str
    depends_on: tuple[str, ...]
    round: int = 1
    status: str = "pending"
    started: float | None = None  # on the display's clock, when its StepStarted arrived
    seconds: float | None = None
    note: str = ""


@dataclass
class _Planning:
    """The planner's call in progress: since when (monotonic), for which round, tokens so far."""

    round: int
    since: float
    tokens: int = 0


@dataclass
class _Board:
    """Everything the display knows about the run, changed only by ``apply``."""

    steps: dict[str, _StepView] = field(default_factory=dict)
    planning: _Planning | None = None
    notes: list[str] = field(default_factory=list)
    rounds: int = 1
    planned: set[int] = field(default_factory=set)  # rounds whose plan is complete
    early: dict[str, list[tuple[float, Event]]] = field(default_factory=dict)
    ended: float | None = None  # when the display stopped: elapsed times freeze there

    def apply(self, arrived: float, event: Event) -> None:
        """Record ``event``, which arrived at monotonic time ``arrived``."""
        if isinstance(event, PlanningStarted | PlanningProgress | PlanReady | PlanRejected):
            self._planning_event(arrived, event)
        elif isinstance(event, StepPlanned):
            self.add_step(event.step, event.round)
        elif isinstance(event, JoinerDecided):
            self.notes.append(_joiner_text(event))
        elif isinstance(event, RunAborted | RunFinished):
            self.planning = None
        else:
            self._step_event(arrived, event)

    def _step_event(self, arrived: float, event: Event) -> None:
        """A step's event; one that came before the step itself (a streamed step can start
        before its ``StepPlanned`` is out) waits for it."""
        step_id = getattr(event, "step_id", None)
        if not isinstance(step_id, str):
            return
        view = self.steps.get(step_id)
        if view is not None:
            _update_view(view, arrived, event)
        else:
            self.early.setdefault(step_id, []).append((arrived, event))

    def _planning_event(self, arrived: float, event: Event) -> None:
        if isinstance(event, PlanningStarted):
            self.planning = _Planning(event.round, arrived)
            self.rounds = max(self.rounds, event.round)
        elif isinstance(event, PlanningProgress) and event.round not in self.planned:
            self.planning = self.planning or _Planning(event.round, arrived - event.elapsed)
            self.planning.tokens = event.tokens
        elif isinstance(event, PlanRejected):
            self.notes.append(_rejected_text(event))
        elif isinstance(event, PlanReady):
            for step in event.plan.steps:
                self.add_step(step, event.round)
            self.planning = None
            self.planned.add(event.round)

    def add_step(self, step: Any, round_: int) -> bool:
        """Add a step not seen before; say whether it was new."""
        if step.step_id in self.steps:
            return False
        view = _StepView(step.step_id, step.description, step.tool, tuple(step.depends_on), round_)
        self.steps[step.step_id] = view
        self.rounds = max(self.rounds, round_)
        for arrived, event in self.early.pop(step.step_id, ()):
            _update_view(view, arrived, event)
        return True


def _update_view(view: _StepView, arrived: float, event: Event) -> None:
    if isinstance(event, StepStarted):
        view.status, view.started = "running", arrived
    elif isinstance(event, StepFinished):
        view.status, view.seconds = "succeeded", event.duration
    elif isinstance(event, StepFailed):
        view.status, view.seconds, view.note = "failed", event.duration, event.error
    elif isinstance(event, StepSkipped | StepCancelled):
        view.status, view.note = _status_of(event), event.reason
    elif isinstance(event, StepRetrying):
        view.note = f"retry {event.attempt}: {event.error}"


def _status_of(event: Event) -> str:
    return "skipped" if isinstance(event, StepSkipped) else "cancelled"


def _joiner_text(event: JoinerDecided) -> str:
    what = "plan again" if event.decision == "replan" else event.decision
    return f"round {event.round} done: {what}" + (f" ({event.reason})" if event.reason else "")


def _rejected_text(event: PlanRejected) -> str:
    return f"plan attempt {event.attempt} rejected: {'; '.join(event.problems)}"


# -- the display ---------------------------------------------------------------------------------


class Display:
    """Subscribe ``display.handle`` to a bus; call ``stop`` (or use ``with``) when the run ends."""

    def __init__(
        self,
        stream: IO[str] | None = None,
        live: bool | None = None,
        refresh_per_second: float = REFRESH_PER_SECOND,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream or sys.stderr
        self.live_mode = use_rich(self.stream) if live is None else live
        self.console = Console(file=self.stream, no_color=not self.live_mode, highlight=False)
        self.refresh_per_second = refresh_per_second
        self._clock = clock  # when events arrive and how long things have run
        self._board = _Board()
        self._inbox: deque[tuple[float, Event]] = deque()
        self._board_lock = threading.Lock()  # taken by the renderer and ``stop``, never ``handle``
        self._write_lock = threading.Lock()  # one plain line at a time
        self._start_lock = threading.Lock()
        self._live: Live | None = None
        self._stopped = False
        self._shown: list[str] = []  # the text of the frame on screen
        self._frame: RenderableType = Group()

    def __enter__(self) -> Display:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()

    @property
    def steps(self) -> dict[str, _StepView]:
        """The steps known so far (after taking in every event handled)."""
        with self._board_lock:
            self._drain()
            return dict(self._board.steps)

    def handle(self, event: Event) -> None:
        """Take in one event; on a terminal O(1), on a pipe one line's write."""
        if not self.live_mode:
            self._plain(event)
            return
        self._inbox.append((self._clock(), event))
        if self._live is None and not self._stopped:
            self._start_live()
        if isinstance(event, RunFinished):
            self._finish(closing_line(event))

    def stop(self) -> None:
        """Draw the final state and stop drawing; later events are ignored."""
        with self._start_lock:
            self._stopped = True
            live, self._live = self._live, None
        if live is not None:
            with self._board_lock:
                self._board.ended = self._clock()
            live.stop()  # its last refresh draws the final state

    # -- a pipe: one line per event

    def _plain(self, event: Event) -> None:
        with self._write_lock:
            line = _plain_line(event, self._board)
            self._board.apply(0.0, event)
            if line:
                self.stream.write(visible(line) + "\n")
                self.stream.flush()

    # -- a terminal: a tree redrawn by rich's thread

    def _start_live(self) -> None:
        with self._start_lock:
            if self._live is not None or self._stopped:
                return
            self._live = _Live(
                self._news,
                console=self.console,
                get_renderable=self._render,
                auto_refresh=True,
                refresh_per_second=self.refresh_per_second,
                transient=False,
            )
            self._live.start()

    def _finish(self, line: str) -> None:
        self.stop()
        self.console.print(Text(visible(line), style="dim"))

    def _drain(self) -> None:
        inbox = self._inbox
        while inbox:
            arrived, event = inbox.popleft()
            self._board.apply(arrived, event)

    def _news(self) -> bool:
        """Take in the inbox and make the next frame; False when it shows what is on screen."""
        with self._board_lock:
            self._drain()
            ended = self._board.ended
            height = None if ended is not None else self.console.height
            now = self._clock() if ended is None else ended
            lines = _frame_lines(self._board, now, height)
            shown = [line.plain for line in lines]
            if ended is None and shown == self._shown:
                return False
            self._shown, self._frame = shown, Group(*lines)
            return True

    def _render(self) -> RenderableType:
        """What rich draws: the frame ``_news`` made."""
        return self._frame

    def lines(self) -> list[str]:
        """The text of the frame the next refresh would draw, uncropped."""
        with self._board_lock:
            self._drain()
            return [line.plain for line in _frame_lines(self._board, self._clock(), None)]


class _Live(Live):
    """rich's Live (and its refresh thread), which skips a frame that shows nothing new: a
    frame costs a few milliseconds of the GIL that the run's threads would rather have."""

    def __init__(self, news: Callable[[], bool], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._news = news

    def refresh(self) -> None:
        if self._news():
            super().refresh()


# -- drawing the board ---------------------------------------------------------------------------


@dataclass
class _Node:
    label: Text
    children: list[_Node] = field(default_factory=list)


def _frame_lines(board: _Board, now: float, height: int | None) -> list[Text]:
    """The frame's lines: the tree, the notes, the planner's progress. With a ``height`` (on a
    live terminal) lines never wrap and the tree is cut to fit, so the frame fits the screen."""
    tail = [Text(visible(note), style="dim") for note in board.notes]
    if board.planning is not None:
        tail.append(_planning_text(board.planning, now, board.ended is not None))
    if not board.steps:
        tree: list[Text] = []
    elif height is None:
        tree = _tree_lines(*_outline(board, now), None)
    else:
        tree = _tree_lines(*_outline(board, now), max(height - len(tail), 2))
    lines = tree + tail
    if height is not None:
        for line in lines:
            line.no_wrap, line.overflow = True, "ellipsis"
    return lines


def _planning_text(planning: _Planning, now: float, stopped: bool) -> Text:
    which = f" round {planning.round}" if planning.round > 1 else ""
    head = f"planning{which} stopped after" if stopped else f"planning{which}…"
    text = Text(f"{head} {now - planning.since:.1f}s", style="cyan")
    if planning.tokens:
        text.append(f" · {planning.tokens} tokens received", style="dim")
    return text


def _outline(board: _Board, now: float) -> tuple[_Node, int]:
    """Each step under its deepest dependency of the same round; other needs named on its line.
    Once there is more than one round, each round has its own heading. Returns the root and
    how many nodes hang from it, itself included."""
    root = _Node(Text("plan", style="bold"))
    depth = _depths(board.steps)
    nodes: dict[str, _Node] = {}
    heads: dict[int, _Node] = {}
    for view in sorted(board.steps.values(), key=lambda v: (v.round, depth[v.step_id])):
        parent = _parent(view, nodes, board, depth) or _round_head(root, heads, view, board)
        nodes[view.step_id] = node = _Node(_label(view, now))
        parent.children.append(node)
    return root, 1 + len(nodes) + len(heads)


def _parent(
    view: _StepView, nodes: dict[str, _Node], board: _Board, depth: dict[str, int]
) -> _Node | None:
    deps = [d for d in view.depends_on if d in nodes and board.steps[d].round == view.round]
    return nodes[max(deps, key=lambda d: depth[d])] if deps else None


def _round_head(root: _Node, heads: dict[int, _Node], view: _StepView, board: _Board) -> _Node:
    if board.rounds <= 1:
        return root
    if view.round not in heads:
        heads[view.round] = _Node(Text(f"round {view.round}", style="bold"))
        root.children.append(heads[view.round])
    return heads[view.round]


def _tree_lines(root: _Node, size: int, height: int | None) -> list[Text]:
    """The outline drawn with tree guides, one line per node; with a ``height``, that many
    lines at most, the last saying how many more there are. No recursion: a chain of a
    thousand steps is a thousand deep."""
    lines = [root.label.copy()]
    stack = _below(root, "")
    while stack:
        if height is not None and len(lines) == height - 1 and size > height:
            lines.append(Text(f"    … {size - len(lines)} more steps", style="dim"))
            break
        node, prefix, last = stack.pop()
        line = Text(prefix + ("└── " if last else "├── "), style="dim")
        line.append_text(node.label)
        lines.append(line)
        stack += _below(node, prefix + ("    " if last else "│   "))
    return lines


def _below(node: _Node, prefix: str) -> list[tuple[_Node, str, bool]]:
    """``node``'s children to visit, last child first (they are popped off a stack)."""
    count = len(node.children)
    return [(child, prefix, i == count - 1) for i, child in enumerate(node.children)][::-1]


def _depths(steps: dict[str, _StepView]) -> dict[str, int]:
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


def _label(view: _StepView, now: float) -> Text:
    mark, style = _MARKS[view.status]
    text = Text(f"{mark} ", style=style)
    text.append(f"{view.step_id}", style="bold")
    text.append(visible(f" [{view.tool}] {view.description}"))
    if len(view.depends_on) > 1:
        text.append(f"  (needs {', '.join(view.depends_on)})", style="dim")
    if view.seconds is not None:
        text.append(f"  {view.seconds:.2f}s", style=style)
    elif view.status == "running" and view.started is not None:
        text.append(f"  running {int(now - view.started)}s", style=style)
    elif view.status != "pending":
        text.append(f"  {view.status}", style=style)
    if view.note and view.status in _ENDED_WITH_NOTE:
        text.append(visible(f"  {view.note}"), style=style)
    return text


# -- plain lines ---------------------------------------------------------------------------------


def _plain_line(event: Event, board: _Board) -> str:
    """The line (or lines) a pipe gets for ``event``; ``board`` is the state before it."""
    stamp = f"[{event.t:7.2f}s]"
    if isinstance(event, PlanReady):
        return _plan_ready_lines(event, board, stamp)
    if isinstance(event, StepPlanned):
        return "" if event.step.step_id in board.steps else _planned_line(event, stamp)
    if isinstance(event, PlanningStarted):
        return f"{stamp} planning{f' round {event.round}' if event.round > 1 else ''}…"
    if isinstance(event, JoinerDecided):
        return f"{stamp} {_joiner_text(event)}"
    if isinstance(event, PlanRejected):
        return f"{stamp} {_rejected_text(event)}"
    return _event_line(event, stamp)


def _plan_ready_lines(event: PlanReady, board: _Board, stamp: str) -> str:
    new = [s for s in event.plan.steps if s.step_id not in board.steps]
    which = f"round {event.round} plan" if event.round > 1 else "plan"
    lines = [f"{stamp} {which}: {len(event.plan.steps)} steps"]
    lines += [f"  {_plain_step(s)}" for s in new]
    lines += [f"  warning: {w}" for w in event.warnings]
    return "\n".join(lines)


def _planned_line(event: StepPlanned, stamp: str) -> str:
    which = f"(round {event.round}) " if event.round > 1 else ""
    return f"{stamp} planned {which}{_plain_step(event.step)}"


def _plain_step(step: Any) -> str:
    needs = f" after {', '.join(step.depends_on)}" if step.depends_on else ""
    return f"{step.step_id} [{step.tool}] {step.description}{needs}"


def _event_line(event: Event, stamp: str) -> str:
    if isinstance(event, StepStarted):
        return f"{stamp} {event.step_id} started"
    if isinstance(event, StepFinished):
        return f"{stamp} {event.step_id} done in {event.duration:.2f}s"
    if isinstance(event, StepFailed):
        return f"{stamp} {event.step_id} FAILED after {event.duration:.2f}s: {event.error}"
    if isinstance(event, StepRetrying):
        return f"{stamp} {event.step_id} retrying (attempt {event.attempt}): {event.error}"
    if isinstance(event, StepSkipped | StepCancelled):
        return f"{stamp} {event.step_id} {_status_of(event)}: {event.reason}"
    if isinstance(event, RunFinished):
        return closing_line(event)
    return ""


def closing_line(event: RunFinished) -> str:
    """Wall time, sum of step times, critical path and tokens, in one line."""
    report = event.extra.get("report")
    if report is None:
        return f"run {event.status}"
    t, u = report.timing, report.usage
    why = f" ({event.reason})" if event.reason else ""
    return (
        f"run {event.status}{why} in {t.wall_s:.2f}s · steps {t.steps_sum_s:.2f}s in all · "
        f"critical path {t.critical_path_s:.2f}s · plan {t.plan_s:.2f}s · "
        f"{u.total_tokens} tokens ({u.prompt_tokens} in, {u.completion_tokens} out)"
    )


class BatchProgress:
    """The progress of ``overseer batch`` on stderr: a bar on a terminal (done, failed, running,
    tokens, ETA), else a plain line at most every ``interval`` seconds; then a closing line.

    ``started``/``finished`` may be called from any thread."""

    def __init__(
        self,
        total: int,
        stream: IO[str] | None = None,
        *,
        skipped: int = 0,
        live: bool | None = None,
        interval: float = 5.0,
    ) -> None:
        self.stream = stream or sys.stderr
        self.total, self.skipped, self.interval = total, skipped, interval
        self.done = self.failed = self.running = self.tokens = 0
        self._lock = threading.Lock()
        self._t0 = time.monotonic()
        self._last_line = self._t0
        live_mode = use_rich(self.stream) if live is None else live
        self._progress = _batch_bar(self.stream) if live_mode else None
        self._task = (
            self._progress.add_task("batch", total=total, stats="") if self._progress else None
        )

    def start(self) -> BatchProgress:
        if self._progress is not None:
            self._progress.start()
        elif self.skipped:
            self._write(f"skipping {self.skipped} requests that already succeeded")
        return self

    def started(self) -> None:
        with self._lock:
            self.running += 1
            self._refresh()

    def finished(self, ok: bool, tokens: int) -> None:
        with self._lock:
            self.running = max(0, self.running - 1)
            self.done += 1
            self.failed += not ok
            self.tokens += tokens
            self._refresh()
            now = time.monotonic()
            if self._progress is None and (now - self._last_line >= self.interval):
                self._last_line = now
                self._write(self._plain())

    def stop(self) -> str:
        """Take the bar down and write the closing line, which is also returned."""
        with self._lock:
            if self._progress is not None:
                self._progress.stop()
                self._progress = None
            line = self.closing_line()
            self._write(line)
            return line

    def closing_line(self) -> str:
        wall = time.monotonic() - self._t0
        rate = self.done / wall * 60 if wall > 0 else 0.0
        skipped = f", {self.skipped} skipped (done before)" if self.skipped else ""
        return (
            f"batch: {self.done} of {self.total} requests ({self.done - self.failed} succeeded, "
            f"{self.failed} failed{skipped}) in {wall:.2f}s · {rate:.1f} requests/min · "
            f"{self.tokens} tokens"
        )

    def _refresh(self) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, completed=self.done, stats=self._stats())

    def _stats(self) -> str:
        return f"{self.failed} failed · {self.running} running · {self.tokens} tokens"

    def _plain(self) -> str:
        wall = time.monotonic() - self._t0
        left = self.total - self.done
        eta = f" · ETA {wall / self.done * left:.0f}s" if self.done and left else ""
        return f"[{wall:7.2f}s] {self.done}/{self.total} done · {self._stats()}{eta}"

    def _write(self, line: str) -> None:
        self.stream.write(line + "\n")
        self.stream.flush()


def _batch_bar(stream: IO[str]) -> Progress:
    console = Console(file=stream, highlight=False)
    return Progress(
        TextColumn("batch"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[stats]}"),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )
