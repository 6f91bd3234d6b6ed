"""The display: plain lines off a terminal, a live tree on one; it decides nothing."""

from __future__ import annotations

import io

from overseer.core.plan import parse_plan
from overseer.core.report import RunReport, Timing
from overseer.core.results import RunOutcome
from overseer.events import (
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
from overseer.interfaces.display import Display, closing_line, use_rich
from overseer.usage import Usage

PLAN = parse_plan(
    [
        {"step_id": "a", "description": "Write", "tool": "t"},
        {"step_id": "b", "description": "Translate", "tool": "t", "depends_on": ["a"]},
        {"step_id": "c", "description": "Merge", "tool": "t", "depends_on": ["a", "b"]},
    ]
)


def report(status: str = "succeeded") -> RunReport:
    outcome = RunOutcome(status="succeeded" if status == "succeeded" else "failed")
    timing = Timing(wall_s=1.5, plan_s=0.25, steps_sum_s=2.0, critical_path_s=1.25)
    return RunReport("r1", "req", PLAN, outcome, "ans", Usage(100, 20), timing)


def events() -> list[object]:
    return [
        PlanReady(0.1, PLAN, ("a warning",)),
        StepStarted(0.1, "a"),
        StepRetrying(0.2, "a", 2, "HTTP 503"),
        StepFinished(0.5, "a", "out", 0.4),
        StepStarted(0.5, "b"),
        StepFailed(0.9, "b", "boom", 0.4),
        StepSkipped(0.9, "c", "depends on failed step 'b'"),
        RunFinished(1.0, "failed", "step 'b' failed", {"report": report("failed")}),
    ]


def plain_output() -> str:
    stream = io.StringIO()
    display = Display(stream, live=False)
    for event in events():
        display.handle(event)  # type: ignore[arg-type]
    display.stop()
    return stream.getvalue()


def test_plain_mode_writes_one_line_per_event() -> None:
    text = plain_output()
    assert "plan: 3 steps" in text
    assert "  c [t] Merge after a, b" in text
    assert "warning: a warning" in text
    assert "a retrying (attempt 2): HTTP 503" in text
    assert "a done in 0.40s" in text
    assert "b FAILED after 0.40s: boom" in text
    assert "c skipped: depends on failed step 'b'" in text
    assert text.rstrip().splitlines()[-1].startswith("run failed (step 'b' failed) in 1.50s")
    assert "\x1b[" not in text


def test_the_closing_line_has_wall_time_step_sum_critical_path_and_tokens() -> None:
    line = closing_line(RunFinished(1.0, "succeeded", "", {"report": report()}))
    assert line == (
        "run succeeded in 1.50s · steps 2.00s in all · critical path 1.25s · plan 0.25s · "
        "120 tokens (100 in, 20 out)"
    )
    assert closing_line(RunFinished(1.0, "failed")) == "run failed"


def test_live_mode_draws_the_dependency_tree_with_states() -> None:
    stream = io.StringIO()
    display = Display(stream, live=True)
    for event in events():
        display.handle(event)  # type: ignore[arg-type]
    display.stop()
    text = stream.getvalue()
    assert "plan" in text
    assert "✓ a [t] Write" in text and "✗ b [t] Translate" in text
    assert "↷ c [t] Merge" in text and "(needs a, b)" in text
    assert text.rstrip().endswith("120 tokens (100 in, 20 out)")


def test_the_tree_nests_a_step_under_its_deepest_dependency() -> None:
    display = Display(io.StringIO(), live=True)
    display.handle(PlanReady(0.0, PLAN))
    tree = display._tree()
    [a] = tree.children
    [b] = a.children
    [c] = b.children
    assert "a [t]" in str(a.label) and "b [t]" in str(b.label) and "c [t]" in str(c.label)
    display.stop()


def test_cancelled_and_rejected_plans_are_shown() -> None:
    stream = io.StringIO()
    display = Display(stream, live=False)
    display.handle(PlanRejected(0.1, 1, ("unknown tool 'x'",)))
    display.handle(PlanReady(0.2, PLAN))
    display.handle(StepCancelled(0.3, "a", "interrupted"))
    text = stream.getvalue()
    assert "plan attempt 1 rejected: unknown tool 'x'" in text
    assert "a cancelled: interrupted" in text


def test_events_for_unknown_steps_are_ignored() -> None:
    display = Display(io.StringIO(), live=True)
    display.handle(StepStarted(0.0, "ghost"))
    display.stop()


def test_rich_only_on_a_terminal_without_no_color(monkeypatch: object) -> None:
    import pytest

    mp = pytest.MonkeyPatch()
    try:

        class Tty(io.StringIO):
            def isatty(self) -> bool:
                return True

        assert use_rich(Tty()) is True
        assert use_rich(io.StringIO()) is False
        mp.setenv("NO_COLOR", "1")
        assert use_rich(Tty()) is False
    finally:
        mp.undo()
