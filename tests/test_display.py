"""The display: plain lines off a terminal, a live tree on one; it decides nothing."""

from __future__ import annotations

import io
import threading
from collections.abc import Callable
from typing import Any

import pytest

from overseer.core.plan import Plan, parse_plan
from overseer.core.report import RunReport, Timing
from overseer.core.results import RunOutcome
from overseer.events import (
    Event,
    JoinerDecided,
    PlanningProgress,
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
from overseer.interfaces.display import Display, closing_line, use_rich
from overseer.usage import Usage
from tests.displayhelp import Clock, Screen, live_display, step
from tests.replhelp import strip_ansi

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
    assert display.lines() == [
        "plan",
        "└── · a [t] Write",
        "    └── · b [t] Translate",
        "        └── · c [t] Merge  (needs a, b)",
    ]
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


# -- a terminal: recorded at once, drawn by rich's thread ------------------------------------------


def repeat(display: Display, event: Event, times: int) -> Callable[[], None]:
    def run() -> None:
        for _ in range(times):
            display.handle(event)

    return run


def test_a_terminal_gets_the_live_display() -> None:
    display, _ = live_display()
    assert display.live_mode
    display.stop()


def test_handle_only_records_and_never_waits_for_the_renderer() -> None:
    display, screen = live_display()
    display.handle(PlanReady(0.0, PLAN))
    with display._board_lock:  # held as the refresh thread holds it while it draws a frame
        worker = threading.Thread(
            target=repeat(display, StepStarted(0.1, "a"), 1000), name="worker"
        )
        worker.start()
        worker.join(20)
        assert not worker.is_alive(), "handle waited for the renderer"
    screen.wait_for("▶ a [t] Write")
    drawn_by = {name for name, text in screen.writes if "a [t] Write" in strip_ansi(text)}
    assert drawn_by and not drawn_by & {"worker", "MainThread"}
    display.stop()


def test_planning_shows_its_elapsed_time_ticking_and_the_tokens_received() -> None:
    clock = Clock()
    display, screen = live_display(clock)
    display.handle(PlanningStarted(0.0))
    screen.wait_for("planning… 0.0s")
    clock.now += 1.5
    screen.wait_for("planning… 1.5s")  # no event came: the refresh made it tick
    display.handle(PlanningProgress(1.5, tokens=42, elapsed=1.5))
    screen.wait_for("planning… 1.5s · 42 tokens received")
    display.handle(PlanReady(1.6, PLAN))
    screen.wait_for("· c [t] Merge")
    assert not any("planning" in line for line in display.lines())
    display.stop()


def test_late_progress_of_a_finished_plan_does_not_bring_planning_back() -> None:
    display, _ = live_display()
    display.handle(PlanningStarted(0.0))
    display.handle(PlanReady(0.5, PLAN))
    display.handle(PlanningProgress(0.5, tokens=99, elapsed=0.5))
    assert not any("planning" in line for line in display.lines())
    display.stop()


def test_a_running_step_shows_its_elapsed_time() -> None:
    clock = Clock()
    display, screen = live_display(clock)
    display.handle(PlanReady(0.0, PLAN))
    display.handle(StepStarted(0.0, "a"))
    screen.wait_for("▶ a [t] Write  running 0s")
    clock.now += 3.2
    screen.wait_for("▶ a [t] Write  running 3s")
    display.handle(StepFinished(3.2, "a", "out", 3.2))
    screen.wait_for("✓ a [t] Write  3.20s")
    display.stop()


def test_planning_cut_short_says_so_when_the_display_stops() -> None:
    clock = Clock()
    display, screen = live_display(clock)
    display.handle(PlanningStarted(0.0))
    clock.now += 2.0
    display.stop()
    assert "planning stopped after 2.0s" in strip_ansi(screen.getvalue())


def test_the_tree_grows_as_steps_arrive_and_a_new_round_has_a_heading() -> None:
    display, screen = live_display()
    display.handle(PlanningStarted(0.0))
    display.handle(StepPlanned(0.1, step("a", "Write")))
    display.handle(StepStarted(0.1, "a"))
    screen.wait_for("▶ a [t] Write")
    assert display.lines()[-1].startswith("planning…")
    display.handle(StepPlanned(0.2, step("b", "Translate", "a")))
    screen.wait_for("· b [t] Translate")
    display.handle(PlanReady(0.3, Plan(steps=(step("a", "Write"), step("b", "Translate", "a")))))
    display.handle(JoinerDecided(0.4, 1, "replan", "no Spanish yet"))
    display.handle(PlanningStarted(0.4, round=2))
    display.handle(StepPlanned(0.5, step("c", "Into Spanish", "b"), round=2))
    screen.wait_for("round 2")
    assert display.lines() == [
        "plan",
        "├── round 1",
        "│   └── ▶ a [t] Write  running 0s",
        "│       └── · b [t] Translate",
        "└── round 2",
        "    └── · c [t] Into Spanish",
        "round 1 done: plan again (no Spanish yet)",
        "planning round 2… 0.0s",
    ]
    display.handle(PlanReady(0.6, Plan(steps=(step("c", "Into Spanish", "b"),)), round=2))
    assert display.lines()[-1] == "round 1 done: plan again (no Spanish yet)"
    display.stop()


def test_a_streamed_step_that_starts_before_its_planned_event_shows_as_running() -> None:
    display, _ = live_display()
    display.handle(PlanningStarted(0.0))
    display.handle(StepStarted(0.1, "a"))  # the executor was quicker than the planner's event
    display.handle(StepPlanned(0.1, step("a", "Write")))
    assert display.lines()[1] == "└── ▶ a [t] Write  running 0s"
    display.stop()


def test_a_frame_is_cut_to_the_height_of_the_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LINES", "8")
    display, screen = live_display()
    many = parse_plan([{"step_id": f"s{i}", "description": "x", "tool": "t"} for i in range(20)])
    display.handle(PlanningStarted(0.0))
    display.handle(PlanReady(0.0, many))
    display.handle(PlanRejected(0.0, 1, ("bad",)))
    frame = screen.wait_for("more steps")
    assert "… 15 more steps" in frame and "plan attempt 1 rejected: bad" in frame
    assert len(display.lines()) == 22  # uncut: the root, 20 steps, the note
    display.stop()
    assert "s19" in strip_ansi(screen.getvalue())  # the last frame shows everything


def test_a_long_chain_is_drawn_without_recursion() -> None:
    chain = [step("s0", "first"), *(step(f"s{i}", "next", f"s{i - 1}") for i in range(1, 1200))]
    display = Display(io.StringIO(), live=False)
    display.handle(PlanReady(0.0, Plan(steps=tuple(chain))))
    lines = display.lines()
    assert len(lines) == 1201 and lines[-1] == " " * 4 * 1199 + "└── · s1199 [t] next"


def test_events_from_many_threads_all_reach_the_last_frame() -> None:
    steps = [{"step_id": f"s{i}", "description": "x", "tool": "t"} for i in range(50)]
    plan = parse_plan(steps, max_steps=50)
    display, screen = live_display()
    display.handle(PlanReady(0.0, plan))

    def run(step_id: str) -> None:
        display.handle(StepStarted(0.0, step_id))
        display.handle(StepFinished(0.3, step_id, "out", 0.3))

    threads = [threading.Thread(target=run, args=(f"s{i}",)) for i in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    display.handle(RunFinished(1.0, "succeeded", "", {"report": report()}))
    assert all(line.startswith("✓") for line in (x.split("── ")[1] for x in display.lines()[1:]))
    assert strip_ansi(screen.getvalue()).rstrip().endswith("120 tokens (100 in, 20 out)")


# -- a pipe: one line per event, one line when planning starts -----------------------------------


def test_plain_mode_prints_planning_once_then_each_arriving_step_and_round() -> None:
    stream = io.StringIO()
    display = Display(stream, live=False)
    streamed = [
        PlanningStarted(0.0),
        PlanningProgress(0.5, tokens=10, elapsed=0.5),
        PlanningProgress(1.0, tokens=20, elapsed=1.0),
        StepPlanned(1.1, step("a", "Write")),
        StepStarted(1.1, "a"),
        StepPlanned(1.2, step("b", "Translate", "a")),
        PlanReady(1.3, Plan(steps=(step("a", "Write"), step("b", "Translate", "a"))), ("w",)),
        JoinerDecided(2.0, 1, "replan", "no Spanish yet"),
        PlanningStarted(2.0, round=2),
        StepPlanned(2.5, step("c", "Into Spanish", "b"), round=2),
        PlanReady(2.6, Plan(steps=(step("c", "Into Spanish", "b"), step("d", "Check"))), round=2),
        JoinerDecided(3.0, 2, "answer"),
    ]
    for event in streamed:
        display.handle(event)
    assert stream.getvalue().splitlines() == [
        "[   0.00s] planning…",
        "[   1.10s] planned a [t] Write",
        "[   1.10s] a started",
        "[   1.20s] planned b [t] Translate after a",
        "[   1.30s] plan: 2 steps",
        "  warning: w",
        "[   2.00s] round 1 done: plan again (no Spanish yet)",
        "[   2.00s] planning round 2…",
        "[   2.50s] planned (round 2) c [t] Into Spanish after b",
        "[   2.60s] round 2 plan: 2 steps",
        "  d [t] Check",
        "[   3.00s] round 2 done: answer",
    ]


def test_plain_mode_writes_each_line_whole_from_many_threads() -> None:
    stream = io.StringIO()
    display = Display(stream, live=False)
    display.handle(PlanReady(0.0, PLAN))
    threads = [
        threading.Thread(target=repeat(display, StepStarted(0.5, "a"), 50)) for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    started = stream.getvalue().splitlines()[4:]
    assert started == ["[   0.50s] a started"] * 400


# -- text from the model is shown, never obeyed ---------------------------------------------------

HOSTILE = "Write\x1b]0;TITLE\x07 then\x1b[2J"
SHOWN = "Write\\x1b]0;TITLE\\x07 then\\x1b[2J"


def hostile_events() -> list[Any]:
    plan = parse_plan([{"step_id": "a", "description": HOSTILE, "tool": "t"}])
    return [
        PlanRejected(0.0, 1, (f"unknown tool {HOSTILE!r}", HOSTILE)),
        PlanReady(0.1, plan, (HOSTILE,)),
        StepStarted(0.1, "a"),
        StepRetrying(0.2, "a", 2, HOSTILE),
        StepFailed(0.3, "a", HOSTILE, 0.2),
    ]


def test_plain_lines_show_control_characters_as_escapes() -> None:
    stream = io.StringIO()
    display = Display(stream, live=False)
    for event in hostile_events():
        display.handle(event)
    text = stream.getvalue()
    assert "\x1b" not in text and "\x07" not in text
    assert f"a [t] {SHOWN}" in text and f"a FAILED after 0.20s: {SHOWN}" in text
    assert f"warning: {SHOWN}" in text and f"retrying (attempt 2): {SHOWN}" in text


def test_the_live_tree_shows_control_characters_as_escapes() -> None:
    display, screen = live_display()
    for event in hostile_events():
        display.handle(event)
    display.stop()
    raw = screen.getvalue()
    assert "\x1b]0;" not in raw and "\x1b[2J" not in raw and "\x07" not in raw
    shown = " ".join(strip_ansi(raw).split())  # the last frame wraps at the screen's width
    assert f"✗ a [t] {SHOWN} 0.20s {SHOWN}" in shown


def test_on_the_real_clock_a_frame_comes_once_the_events_pause() -> None:
    screen = Screen()
    display = Display(screen)  # the default pause before a frame, on the real clock
    display.handle(PlanReady(0.0, PLAN))
    display.handle(StepStarted(0.0, "a"))
    screen.wait_for("▶ a [t] Write")
    display.stop()
