"""Live progress on stderr: the only module that imports ``rich``.

It subscribes to events and decides nothing. On a terminal (and without ``NO_COLOR``) it draws the
plan as a tree of dependencies that updates in place; otherwise it writes one plain line per event
(``display_plain``).

The display never slows a step. Events arrive on whatever thread emits them, a worker's included
(``StepStarted`` is emitted just before the step runs), so ``handle`` only records: on a terminal
it appends the event to an inbox (one ``deque.append``, no lock a renderer could hold) and
returns; rich's own refresh thread drains the inbox into the board (``display_board``) and
redraws about ten times a second, which is also what makes the planner's and each running step's
elapsed time tick. On a pipe, ``handle`` writes the event's line and returns: the cost of one
line's write, nothing more.

A frame costs the refresh thread little, since every millisecond it holds the GIL is one the
run's threads wait for: a tick where nothing visible changed (the board's version is the same and
no elapsed time shown has moved on) returns at once; otherwise each line is made, and rendered
by rich into segments, once per change of what it shows, and reused by later frames; a frame
identical to the one on screen is not written. And a frame waits for a pause in the events (no
event for ``QUIET`` seconds, ``MAX_WAIT`` at most): fifty steps starting at once are fifty
threads wanting the GIL for their requests, and the frame is drawn once they have it. A plan
taller than the terminal is not cut at the bottom: the frame shows a summary line, then the
failed, running and last finished steps (then the next pending ones) as far as the screen
allows, so a 10,000-step plan costs a frame no more than a 30-step one. The last frame, left on
the screen when the run ends, shows the whole tree (up to ``FINAL_TREE_STEPS`` steps; the
bounded view beyond).

What it shows: ``planning…`` with the elapsed time and the tokens received so far while the
planner works (``PlanningStarted``/``PlanningProgress``); each step as it arrives
(``StepPlanned``, from a streamed plan or a new round) or with its plan (``PlanReady``); a
``round N`` heading once a joiner added a round. Text from the model goes through
``safe_text.visible`` first: it is shown, never obeyed by the terminal (and on one line: a
newline or tab in it is shown as a space).
"""

from __future__ import annotations

import math
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from itertools import islice
from types import TracebackType
from typing import IO, Any

from rich.cells import cell_len, set_cell_size
from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.control import Control
from rich.live import Live
from rich.live_render import LiveRender
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.segment import Segment
from rich.style import Style
from rich.text import Text

from overseer.events import Event, RunFinished
from overseer.interfaces.display_board import Board, Planning, Row, StepView, outline
from overseer.interfaces.display_plain import closing_line, plain_line
from overseer.interfaces.safe_text import visible

__all__ = [
    "FINAL_TREE_STEPS",
    "REFRESH_PER_SECOND",
    "BatchProgress",
    "Display",
    "closing_line",
    "use_rich",
]

REFRESH_PER_SECOND = 10.0
"""How often the live tree may be redrawn (by rich's refresh thread, never by an event)."""
QUIET = 0.025
"""A frame waits until no event came for this long (seconds): a burst of events is a burst of
work on the run's threads (steps starting, finishing), which a frame would slow down."""
MAX_WAIT = 0.25
"""But an event waits at most this long for its frame."""
FINAL_TREE_STEPS = 1000
"""The last frame draws the whole tree for a plan of up to this many steps."""

_MARKS = {  # a row is dim, as its guide, in the colour of its step's state
    "pending": ("· ", "dim"),
    "running": ("▶ ", "dim cyan"),
    "succeeded": ("✓ ", "dim green"),
    "failed": ("✗ ", "dim red"),
    "skipped": ("↷ ", "dim yellow"),
    "cancelled": ("■ ", "dim yellow"),
}
_ENDED_WITH_NOTE = ("failed", "skipped", "cancelled")
_COUNTED = (
    ("running", "running"),
    ("pending", "pending"),
    ("succeeded", "done"),
    ("failed", "failed"),
    ("skipped", "skipped"),
    ("cancelled", "cancelled"),
)


def use_rich(stream: IO[str]) -> bool:
    """Live drawing only on a real terminal, and never when ``NO_COLOR`` is set."""
    return stream.isatty() and not os.environ.get("NO_COLOR")


# -- the display ---------------------------------------------------------------------------------


class Display:
    """Subscribe ``display.handle`` to a bus; call ``stop`` (or use ``with``) when the run ends."""

    def __init__(
        self,
        stream: IO[str] | None = None,
        live: bool | None = None,
        refresh_per_second: float = REFRESH_PER_SECOND,
        clock: Callable[[], float] = time.monotonic,
        quiet: float = QUIET,
    ) -> None:
        self.stream = stream or sys.stderr
        self.live_mode = use_rich(self.stream) if live is None else live
        self.console = Console(file=self.stream, no_color=not self.live_mode, highlight=False)
        self.refresh_per_second = refresh_per_second
        self._clock = clock  # when events arrive and how long things have run
        self.quiet = quiet  # 0: draw at the first tick after an event
        self._board = Board()
        self._inbox: deque[tuple[float, Event]] = deque()
        self._board_lock = threading.Lock()  # taken by the renderer and ``stop``, never ``handle``
        self._write_lock = threading.Lock()  # one plain line at a time
        self._start_lock = threading.Lock()
        self._live: Live | None = None
        self._stopped = False
        self._drawing = _Drawing()
        self._drawn: tuple[int, Any] = (-1, None)  # the board's version and the screen's size
        self._shown: list[_Line] = []  # the lines of the frame on screen
        self._frame: RenderableType = Group()
        self.frames = 0  # frames written: a test can see that an idle tick writes none

    def __enter__(self) -> Display:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()

    @property
    def steps(self) -> dict[str, StepView]:
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

    def tick(self) -> bool:
        """Do what the refresh thread does ten times a second, now, on this thread: take in
        the events and draw a frame if anything shown changed, unless events are still coming
        fast (``quiet``). Says whether it drew one."""
        live, drawn = self._live, self.frames
        if live is not None:
            live.refresh()
        return self.frames > drawn

    def lines(self) -> list[str]:
        """The text of the whole frame the board makes now, uncut by the terminal's height."""
        with self._board_lock:
            self._drain()
            lines = _Drawing().frame(self._board, self._clock(), None)
            return [line.text.plain for line in lines]

    # -- a pipe: one line per event

    def _plain(self, event: Event) -> None:
        with self._write_lock:
            line = plain_line(event, self._board)
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
        inbox, apply = self._inbox, self._board.apply
        while inbox:
            apply(*inbox.popleft())

    def _news(self) -> bool:
        """Take in the inbox and make the next frame; False when it would show what is on
        screen. A tick where the board has not changed and no elapsed time shown has moved on
        costs a few attribute reads."""
        with self._board_lock:
            board, now = self._board, self._clock()
            if board.ended is None and self._busy(now):
                return False
            self._drain()
            if board.ended is not None:
                return self._last_frame(board, board.ended)
            size = self.console.size
            drawn = (board.version, size)
            if drawn == self._drawn and now < self._drawing.next_change:
                return False
            resized = size != self._drawn[1]
            lines = self._drawing.frame(board, now, size.height)
            self._drawn = drawn
            if lines == self._shown and not resized:
                return False
            self._shown, self._frame = lines, _Frame(lines)
            self.frames += 1
            return True

    def _busy(self, now: float) -> bool:
        """Whether events are still coming fast: the last one came less than ``quiet`` ago and
        the first one not yet drawn less than ``MAX_WAIT`` ago."""
        inbox = self._inbox  # only this thread takes from it: if not empty, it stays so
        if not self.quiet or not inbox:
            return False
        return now - inbox[-1][0] < self.quiet and now - inbox[0][0] < MAX_WAIT

    def _last_frame(self, board: Board, ended: float) -> bool:
        """The frame left on screen: whole and wrapped at the screen's width, not cut."""
        height = None if len(board.steps) <= FINAL_TREE_STEPS else self.console.height
        lines = self._drawing.frame(board, ended, height)
        self._frame = Group(*(line.text for line in lines))
        self.frames += 1
        return True

    def _render(self) -> RenderableType:
        """What rich draws: the frame ``_news`` made."""
        return self._frame


class _Live(Live):
    """rich's Live (and its refresh thread), which skips a frame that shows nothing new: a
    frame costs milliseconds of the GIL that the run's threads would rather have."""

    def __init__(self, news: Callable[[], bool], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._news = news
        self._live_render = _LiveRender(self.get_renderable(), vertical_overflow="ellipsis")

    def refresh(self) -> None:
        if not self._news():
            return
        renderable = self.renderable
        ours = _frame_in(renderable) is not None and not self._nested
        if not (ours and self.console.is_terminal and not self.console.is_dumb_terminal):
            super().refresh()
            return
        with self._lock:  # rich's own refresh, but the lines are not cut again: they fit
            self._live_render.set_renderable(renderable)
            with self.console:
                self.console.print(Control(), crop=False)


# -- drawing the board ---------------------------------------------------------------------------


class _Line:
    """One line of a frame as parts (text, style), and the segments they make when cut to the
    width of the screen (with an ellipsis), kept for as long as the width stays the same. Made
    straight from the parts: a ``Text`` rendered by rich costs a row ten times as much."""

    __slots__ = ("_segments", "_width", "parts")

    def __init__(self, *parts: tuple[str, str]) -> None:
        self.parts = parts
        self._width = -1
        self._segments: list[Segment] = []

    @property
    def plain(self) -> str:
        return "".join(text for text, _ in self.parts)

    @property
    def text(self) -> Text:
        """The line as rich text (wrapped, not cut, when printed)."""
        text = Text()
        for part, style in self.parts:
            text.append(part, style=style)
        return text

    def segments(self, console: Console, width: int) -> list[Segment]:
        if width != self._width:
            self._segments, self._width = _cut(console, self.parts, width), width
        return self._segments


_STYLES: dict[str, Style] = {}  # each style of a part, parsed once


def _cut(console: Console, parts: tuple[tuple[str, str], ...], width: int) -> list[Segment]:
    """The segments of ``parts`` within ``width`` cells, the last one cut short with an
    ellipsis if they do not fit; neighbours of one style make one segment (fewer for rich)."""
    merged: list[tuple[str, str]] = []
    for text, name in parts:
        if merged and merged[-1][1] == name:
            merged[-1] = (merged[-1][0] + text, name)
        elif text:
            merged.append((text, name))
    segments, room = [], width
    for text, name in merged:
        style = _STYLES.get(name) or _STYLES.setdefault(name, console.get_style(name))
        size = cell_len(text)
        if size <= room:
            segments.append(Segment(text, style))
            room -= size
            continue
        if room > 0:
            segments.append(Segment(set_cell_size(text, room - 1) + "…", style))
        break
    return segments


class _Frame:
    """A live frame: its lines' segments, one line each (never wrapped)."""

    def __init__(self, lines: list[_Line]) -> None:
        self.lines = lines

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> Iterator[Segment]:
        width = options.max_width
        newline = Segment.line()
        for line in self.lines:
            yield from line.segments(console, width)
            yield newline


class _LiveRender(LiveRender):
    """rich's live region, which takes a ``_Frame`` as the lines it already is: rich's way
    splits, measures and pads every segment of every frame again."""

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        frame = _frame_in(self.renderable)
        if frame is None:
            yield from super().__rich_console__(console, options)
            return
        width, height = options.max_width, options.size.height
        lines = [line.segments(console, width) for line in frame.lines]
        if len(lines) > height:  # as rich's "ellipsis" overflow: the screen's height at most
            lines = [*lines[: height - 1], [Segment("...".center(width), _style(console))]]
        self._shape = (width, len(lines))
        newline = Segment.line()
        for i, line in enumerate(lines):
            if i:
                yield newline
            yield from line


def _frame_in(renderable: RenderableType) -> _Frame | None:
    """The live frame ``renderable`` is: rich wraps what a Live shows in a ``Group`` of one."""
    if isinstance(renderable, Group) and len(renderable.renderables) == 1:
        renderable = renderable.renderables[0]
    return renderable if isinstance(renderable, _Frame) else None


def _style(console: Console) -> Style:
    return console.get_style("live.ellipsis")


_ROOT = _Line(("plan", "bold"))


class _Drawing:
    """Makes frames from the board, reusing each line until what it shows changes: a step's row
    is made (and rendered) again when its step changes or the whole seconds it has been running
    do, not on every frame. ``next_change`` says when the last frame would next look different
    with the board unchanged (a running step's second ticking over, the planner's tenth)."""

    def __init__(self) -> None:
        self.next_change = math.inf
        self._ended = False
        self._rows: dict[str, tuple[tuple[Any, ...], _Line]] = {}
        self._words: dict[str, tuple[str, str, str]] = {}  # what a step's row always says
        self._shape = -1
        self._outline: list[Row] = []
        self._headings: dict[tuple[str, int], _Line] = {}
        self._notes: list[_Line] = []
        self._texts: dict[str, tuple[str, _Line]] = {}  # one changing line per purpose

    def frame(self, board: Board, now: float, height: int | None) -> list[_Line]:
        """The frame's lines: the tree, the notes, the planner's progress. With a ``height`` the
        frame takes at most that many lines (one at least for the tree)."""
        self.next_change, self._ended = math.inf, board.ended is not None
        self._notes += [_dim(note) for note in board.notes[len(self._notes) :]]
        tail = list(self._notes)
        if board.planning is not None:
            tail.append(self._planning(board.planning, now))
        if not board.steps:
            return tail
        room = None if height is None else max(height - len(tail), 2)
        return self._tree(board, now, room) + tail

    def _tree(self, board: Board, now: float, room: int | None) -> list[_Line]:
        if room is not None and len(board.steps) >= room:
            return self._bounded(board, now, room)  # cannot fit: no need for the outline
        if board.shape != self._shape:
            self._outline, self._shape = outline(board), board.shape
        if room is not None and 1 + len(self._outline) > room:
            return self._bounded(board, now, room)
        lines = [_ROOT]
        for guide, item in self._outline:
            if isinstance(item, StepView):
                lines.append(self._row(item, guide, now))
            else:
                lines.append(self._heading(guide, item))
        return lines

    def _bounded(self, board: Board, now: float, room: int) -> list[_Line]:
        """A summary line, the steps most worth a line, and how many more there are."""
        shown = _chosen(board, room - 2)
        more = len(board.steps) - len(shown)
        lines = [self._text("header", _summary(board), _header)]
        last = len(shown) - 1 if not more else -1
        for i, view in enumerate(shown):
            lines.append(self._row(view, "└── " if i == last else "├── ", now))
        if more:
            lines.append(self._text("more", f"└── … {more} more steps", _dim))
        return lines

    def _row(self, view: StepView, guide: str, now: float) -> _Line:
        elapsed = None
        if view.status == "running" and view.seconds is None and view.started is not None:
            elapsed = int(now - view.started)
            if not self._ended:
                self.next_change = min(self.next_change, view.started + elapsed + 1)
        key = (view.version, guide, elapsed)
        cached = self._rows.get(view.step_id)
        if cached is not None and cached[0] == key:
            return cached[1]
        words = self._words.get(view.step_id)
        if words is None:
            words = self._words[view.step_id] = _words(view)
        made = _Line((guide, "dim"), *_label(view, words, elapsed))
        self._rows[view.step_id] = (key, made)
        return made

    def _heading(self, guide: str, round_: int) -> _Line:
        key = (guide, round_)
        if key not in self._headings:
            self._headings[key] = _Line((guide, "dim"), (f"round {round_}", "dim bold"))
        return self._headings[key]

    def _planning(self, planning: Planning, now: float) -> _Line:
        which = f" round {planning.round}" if planning.round > 1 else ""
        head = f"planning{which} stopped after" if self._ended else f"planning{which}…"
        elapsed = now - planning.since
        if not self._ended:  # the tenth shown rounds over half way through it
            self.next_change = planning.since + (math.floor(elapsed * 10 + 0.5) + 0.5) / 10
        tokens = f" · {planning.tokens} tokens received" if planning.tokens else ""
        return self._text("planning", f"{head} {elapsed:.1f}s{tokens}", _planning_text)

    def _text(self, purpose: str, plain: str, make: Callable[[str], _Line]) -> _Line:
        """The line for ``purpose`` showing ``plain``: the one made before if it shows the same."""
        cached = self._texts.get(purpose)
        if cached is None or cached[0] != plain:
            cached = self._texts[purpose] = (plain, make(plain))
        return cached[1]


def _chosen(board: Board, room: int) -> list[StepView]:
    """At most ``room`` steps worth a line when not all fit, in plan order: failed ones (up to
    half the room), then the running ones (longest running first), the last ones to end, the
    next pending ones. Never a walk over every step of a big plan."""
    chosen: dict[str, StepView] = {}
    steps = board.steps

    def take(step_ids: Any, limit: int = room) -> None:
        for step_id in step_ids:
            if len(chosen) >= limit:
                return
            chosen.setdefault(step_id, steps[step_id])

    if room > 0:
        take(board.failed, room // 2 or 1)
        take(board.running)
        take(reversed(board.recent))
        if len(chosen) < room:
            pending = (v.step_id for v in steps.values() if v.status == "pending")
            take(islice(pending, room - len(chosen)))
    return sorted(chosen.values(), key=lambda v: v.index)


def _summary(board: Board) -> str:
    counts = [f"{board.counts[s]} {name}" for s, name in _COUNTED if board.counts[s] > 0]
    return f"plan · {len(board.steps)} steps: {', '.join(counts)}"


def _header(plain: str) -> _Line:
    return _Line((plain[:4], "bold"), (plain[4:], "dim"))


def _dim(plain: str) -> _Line:
    return _Line((_one_line(plain), "dim"))


def _planning_text(plain: str) -> _Line:
    head, dot, tokens = plain.partition(" · ")
    return _Line((head, "cyan"), (dot + tokens, "cyan dim")) if dot else _Line((head, "cyan"))


def _one_line(text: str) -> str:
    """Model text as one line of a frame: control characters as escapes, newlines and tabs as
    spaces (so that every line of the frame is one line of the screen)."""
    return visible(text).replace("\n", " ").replace("\t", " ")


def _words(view: StepView) -> tuple[str, str, str]:
    """What a step's row always says: its id, its tool and description, its other needs."""
    needs = f"  (needs {', '.join(view.depends_on)})" if len(view.depends_on) > 1 else ""
    return (
        _one_line(view.step_id),
        _one_line(f" [{view.tool}] {view.description}"),
        _one_line(needs),
    )


def _label(
    view: StepView, words: tuple[str, str, str], elapsed: int | None
) -> list[tuple[str, str]]:
    """A step's row after its guide: mark, id, tool and description, other needs, then its
    time (or its state) and, once it ended badly, why. All of it dim in the colour of its
    state, as the guide is."""
    mark, style = _MARKS[view.status]
    step_id, what, needs = words
    parts = [(mark, style), (step_id, f"{style} bold"), (what + needs, style)]
    if view.seconds is not None:
        parts.append((f"  {view.seconds:.2f}s", style))
    elif elapsed is not None:
        parts.append((f"  running {elapsed}s", style))
    elif view.status != "pending":
        parts.append((f"  {view.status}", style))
    if view.note and view.status in _ENDED_WITH_NOTE:
        parts.append((_one_line(f"  {view.note}"), style))
    return parts


# -- overseer batch ------------------------------------------------------------------------------


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
