"""Live progress on stderr: the only core module that imports ``rich``.

It subscribes to events and decides nothing. On a terminal (and without ``NO_COLOR``) it draws the
plan as a tree of dependencies that updates in place; otherwise it writes one plain line per event.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import dataclass
from types import TracebackType
from typing import IO, Any

from rich.console import Console
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.text import Text
from rich.tree import Tree

from overseer.events import (
    Event,
    PlanReady,
    PlanRejected,
    RunFinished,
    StepCancelled,
    StepFailed,
    StepFinished,
    StepRetrying,
    StepSkipped,
    StepStarted,
)

__all__ = ["BatchProgress", "Display", "closing_line", "use_rich"]

_MARKS = {
    "pending": ("·", "dim"),
    "running": ("▶", "cyan"),
    "succeeded": ("✓", "green"),
    "failed": ("✗", "red"),
    "skipped": ("↷", "yellow"),
    "cancelled": ("■", "yellow"),
}


def use_rich(stream: IO[str]) -> bool:
    """Live drawing only on a real terminal, and never when ``NO_COLOR`` is set."""
    return stream.isatty() and not os.environ.get("NO_COLOR")


@dataclass
class _StepView:
    step_id: str
    description: str
    tool: str
    depends_on: tuple[str, ...]
    status: str = "pending"
    started: float | None = None
    seconds: float | None = None
    note: str = ""


class Display:
    """Subscribe ``display.handle`` to a bus; use as a context manager around the run."""

    def __init__(self, stream: IO[str] | None = None, live: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.live_mode = use_rich(self.stream) if live is None else live
        self.console = Console(file=self.stream, no_color=not self.live_mode, highlight=False)
        self.steps: dict[str, _StepView] = {}
        self._lock = threading.Lock()
        self._live: Live | None = None

    def __enter__(self) -> Display:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()

    def stop(self) -> None:
        with self._lock:
            self._stop_live()

    def _stop_live(self) -> None:
        if self._live is not None:
            self._live.update(self._tree(), refresh=True)
            self._live.stop()
            self._live = None

    def handle(self, event: Event) -> None:
        with self._lock:
            self._apply(event)
            line = _plain_line(event, self.steps)
            if not self.live_mode:
                self._write(line)
            elif isinstance(event, PlanReady):
                self._start_live()
            elif self._live is not None:
                self._live.update(self._tree(), refresh=True)
            if self.live_mode and isinstance(event, RunFinished | PlanRejected):
                self._stop_live()
                self.console.print(Text(line, style="dim"))

    def _write(self, line: str) -> None:
        if line:
            self.stream.write(line + "\n")
            self.stream.flush()

    def _start_live(self) -> None:
        self._live = Live(self._tree(), console=self.console, auto_refresh=False, transient=False)
        self._live.start()

    def _apply(self, event: Event) -> None:
        if isinstance(event, PlanReady):
            for step in event.plan.steps:
                self.steps[step.step_id] = _StepView(
                    step.step_id, step.description, step.tool, tuple(step.depends_on)
                )
            return
        view = self.steps.get(getattr(event, "step_id", None) or "")
        if view is not None:
            _update_view(view, event)

    def _tree(self) -> Tree:
        """Each step under its deepest dependency; its other needs are named on its line."""
        root = Tree(Text("plan", style="bold"))
        nodes: dict[str, Tree] = {}
        depth = _depths(self.steps)
        for view in sorted(self.steps.values(), key=lambda v: depth[v.step_id]):
            deps = [d for d in view.depends_on if d in nodes]
            parent = nodes[max(deps, key=lambda d: depth[d])] if deps else root
            nodes[view.step_id] = parent.add(_label(view))
        return root


def _depths(steps: dict[str, _StepView]) -> dict[str, int]:
    depth: dict[str, int] = {}

    def visit(step_id: str, seen: frozenset[str]) -> int:
        if step_id not in depth:
            deps = [d for d in steps[step_id].depends_on if d in steps and d not in seen]
            depth[step_id] = 1 + max((visit(d, seen | {step_id}) for d in deps), default=0)
        return depth[step_id]

    for step_id in steps:
        visit(step_id, frozenset())
    return depth


def _update_view(view: _StepView, event: Event) -> None:
    if isinstance(event, StepStarted):
        view.status, view.started = "running", event.t
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


def _label(view: _StepView) -> Text:
    mark, style = _MARKS[view.status]
    text = Text(f"{mark} ", style=style)
    text.append(f"{view.step_id}", style="bold")
    text.append(f" [{view.tool}] {view.description}")
    if len(view.depends_on) > 1:
        text.append(f"  (needs {', '.join(view.depends_on)})", style="dim")
    if view.seconds is not None:
        text.append(f"  {view.seconds:.2f}s", style=style)
    elif view.status != "pending":
        text.append(f"  {view.status}", style=style)
    if view.note and view.status in ("failed", "skipped", "cancelled"):
        text.append(f"  {view.note}", style=style)
    return text


def _plain_line(event: Event, steps: dict[str, _StepView]) -> str:
    stamp = f"[{event.t:7.2f}s]"
    if isinstance(event, PlanReady):
        lines = [f"{stamp} plan: {len(event.plan.steps)} steps"]
        lines += [f"  {_plain_step(s)}" for s in event.plan.steps]
        lines += [f"  warning: {w}" for w in event.warnings]
        return "\n".join(lines)
    return _event_line(event, stamp)


def _plain_step(step: Any) -> str:
    needs = f" after {', '.join(step.depends_on)}" if step.depends_on else ""
    return f"{step.step_id} [{step.tool}] {step.description}{needs}"


def _event_line(event: Event, stamp: str) -> str:
    if isinstance(event, PlanRejected):
        return f"{stamp} plan attempt {event.attempt} rejected: {'; '.join(event.problems)}"
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
