"""The display's lines for a pipe: one line (or a few) per event, no ``rich``, no state of its own.

``plain_line`` reads the board as it was before the event (so a step already announced by a
streamed plan is not announced again when the whole plan arrives). ``closing_line`` is also what
the live display prints under its last frame.
"""

from __future__ import annotations

from typing import Any

from overseer.events import (
    Event,
    JoinerDecided,
    PlanningStarted,
    PlanReady,
    PlanRejected,
    RunFinished,
    StepCancelled,
    StepFailed,
    StepFinished,
    StepPlanned,
    StepRetrying,
    StepSkipped,
    StepStarted,
)
from overseer.interfaces.display_board import Board, joiner_text, rejected_text, status_of

__all__ = ["closing_line", "plain_line"]


def plain_line(event: Event, board: Board) -> str:
    """The line (or lines) a pipe gets for ``event``; ``board`` is the state before it."""
    stamp = f"[{event.t:7.2f}s]"
    if isinstance(event, PlanReady):
        return _plan_ready_lines(event, board, stamp)
    if isinstance(event, StepPlanned):
        return "" if event.step.step_id in board.steps else _planned_line(event, stamp)
    if isinstance(event, PlanningStarted):
        return f"{stamp} planning{f' round {event.round}' if event.round > 1 else ''}…"
    if isinstance(event, JoinerDecided):
        return f"{stamp} {joiner_text(event)}"
    if isinstance(event, PlanRejected):
        return f"{stamp} {rejected_text(event)}"
    return _event_line(event, stamp)


def _plan_ready_lines(event: PlanReady, board: Board, stamp: str) -> str:
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
        return f"{stamp} {event.step_id} {status_of(event)}: {event.reason}"
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
