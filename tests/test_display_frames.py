"""The live display's frames: drawn only when something shown changed, each row made once per
change of its step, never taller or wider than the terminal, bounded for a big plan.

Each display here refreshes once in 100 s by itself, so the test draws its frames (``tick``)."""

from __future__ import annotations

from typing import Any

import pytest

from overseer.core.plan import Plan, parse_plan
from overseer.events import (
    Event,
    PlanningProgress,
    PlanningStarted,
    PlanReady,
    StepFailed,
    StepFinished,
    StepSkipped,
    StepStarted,
)
from overseer.interfaces import display as display_module
from overseer.interfaces.display import Display
from tests.displayhelp import Clock, Screen, step
from tests.replhelp import strip_ansi

PLAN = Plan(steps=(step("a", "Write"), step("b", "Translate", "a"), step("c", "Check")))


def drawn_by_hand(
    clock: Clock, lines: int = 40, columns: int = 120, quiet: float = 0.0
) -> tuple[Display, Screen]:
    screen = Screen()
    display = Display(screen, clock=clock, refresh_per_second=0.01, quiet=quiet)
    display.console.size = (columns, lines)
    return display, screen


def last_frame(screen: Screen) -> list[str]:
    """The lines of the last frame written (rich writes a frame in one write)."""
    text = strip_ansi(screen.writes[-1][1])
    return [line for line in text.split("\n") if line.strip()]


def feed(display: Display, *events: Event) -> None:
    for event in events:
        display.handle(event)


class Labels:
    """Counts the rows the display makes (the work of a frame lies there)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.made: list[str] = []
        label = display_module._label

        def counted(view: Any, *args: Any) -> Any:
            self.made.append(view.step_id)
            return label(view, *args)

        monkeypatch.setattr(display_module, "_label", counted)

    def take(self) -> list[str]:
        made, self.made = self.made, []
        return made


def test_an_idle_tick_draws_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    display, screen = drawn_by_hand(clock)
    feed(display, PlanReady(0.0, PLAN))
    assert display.tick()
    writes = len(screen.writes)
    clock.now += 5  # no step runs: nothing shown depends on the time
    assert not display.tick() and not display.tick()
    assert len(screen.writes) == writes
    display.stop()


def test_a_changed_step_makes_only_its_own_row_again(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    labels = Labels(monkeypatch)
    display, screen = drawn_by_hand(clock)
    feed(display, PlanReady(0.0, PLAN))
    display.tick()
    assert sorted(labels.take()) == ["a", "b", "c"]
    feed(display, StepStarted(0.1, "a"))
    assert display.tick()
    assert labels.take() == ["a"]
    assert "└── · c [t] Check" in last_frame(screen)  # a row made before, shown again
    display.stop()


def test_a_running_row_ticks_each_second_and_updates_when_its_step_finishes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = Clock()
    labels = Labels(monkeypatch)
    display, screen = drawn_by_hand(clock)
    feed(display, PlanReady(0.0, PLAN), StepStarted(0.0, "a"))
    display.tick()
    assert "├── ▶ a [t] Write  running 0s" in last_frame(screen)
    labels.take()
    clock.now += 0.6
    assert not display.tick()  # still "0s"
    clock.now += 0.6
    assert display.tick()
    assert "├── ▶ a [t] Write  running 1s" in last_frame(screen)
    assert labels.take() == ["a"]
    feed(display, StepFinished(1.2, "a", "out", 1.2))
    assert display.tick()
    assert "├── ✓ a [t] Write  1.20s" in last_frame(screen)
    clock.now += 5
    assert not display.tick()  # a finished step's row no longer ticks
    display.stop()


def test_planning_ticks_in_tenths_and_shows_new_tokens() -> None:
    clock = Clock()
    display, screen = drawn_by_hand(clock)
    feed(display, PlanningStarted(0.0))
    display.tick()
    assert last_frame(screen) == ["planning… 0.0s"]
    clock.now += 0.04
    assert not display.tick()
    clock.now += 0.03
    assert display.tick() and last_frame(screen) == ["planning… 0.1s"]
    feed(display, PlanningProgress(0.1, tokens=7, elapsed=0.07))
    assert display.tick() and last_frame(screen) == ["planning… 0.1s · 7 tokens received"]
    display.stop()


def test_a_line_is_cut_to_the_width_with_an_ellipsis_and_again_after_a_resize() -> None:
    clock = Clock()
    display, screen = drawn_by_hand(clock, columns=30)
    long = Plan(steps=(step("a", "Write a very long story about a lighthouse keeper"),))
    feed(display, PlanReady(0.0, long))
    display.tick()
    row = last_frame(screen)[1]
    assert row == "└── · a [t] Write a very long…" and len(row) == 30
    display.console.size = (40, 40)
    assert display.tick()  # nothing changed but the width
    assert last_frame(screen)[1] == "└── · a [t] Write a very long story abo…"
    display.stop()


def test_model_text_stays_on_one_line_of_the_tree() -> None:
    clock = Clock()
    display, screen = drawn_by_hand(clock)
    plan = parse_plan([{"step_id": "a", "description": "Write\nthen\tstop\x1b[2J", "tool": "t"}])
    feed(display, PlanReady(0.0, plan))
    display.tick()
    assert last_frame(screen) == ["plan", "└── · a [t] Write then stop\\x1b[2J"]
    display.stop()


def big_plan(n: int) -> Plan:
    steps = [{"step_id": f"s{i}", "description": "x", "tool": "t"} for i in range(1, n + 1)]
    return parse_plan(steps, max_steps=n)


def test_a_big_plan_shows_a_summary_and_the_steps_worth_a_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = Clock()
    labels = Labels(monkeypatch)
    display, screen = drawn_by_hand(clock, lines=12)
    feed(display, PlanReady(0.0, big_plan(10_000)))
    feed(display, *(StepStarted(0.0, f"s{i}") for i in (1, 2, 5, 7, 9000)))
    feed(display, StepFinished(0.1, "s1", "out", 0.1), StepFailed(0.1, "s2", "boom", 0.1))
    display.tick()
    assert last_frame(screen) == [
        "plan · 10000 steps: 3 running, 9995 pending, 1 done, 1 failed",
        "├── ✓ s1 [t] x  0.10s",
        "├── ✗ s2 [t] x  0.10s  boom",
        "├── · s3 [t] x",  # room left: the next pending steps, all in the plan's order
        "├── · s4 [t] x",
        "├── ▶ s5 [t] x  running 0s",
        "├── · s6 [t] x",
        "├── ▶ s7 [t] x  running 0s",
        "├── · s8 [t] x",
        "├── · s9 [t] x",
        "├── ▶ s9000 [t] x  running 0s",
        "└── … 9990 more steps",
    ]
    assert len(labels.take()) == 10  # not a row for each of 10,000 steps
    assert len(display.lines()) == 10_001  # the whole tree is still there to ask for
    display.stop()


def test_the_bounded_view_puts_failures_then_running_then_the_last_to_end() -> None:
    clock = Clock()
    display, screen = drawn_by_hand(clock, lines=7)  # room for five steps
    feed(display, PlanReady(0.0, big_plan(30)))
    feed(display, *(StepStarted(0.0, f"s{i}") for i in range(1, 11)))
    feed(display, *(StepFinished(0.1, f"s{i}", "out", 0.1) for i in (1, 2, 3)))
    feed(display, *(StepFailed(0.1, f"s{i}", "boom", 0.1) for i in (4, 5, 6, 7)))
    feed(display, StepSkipped(0.2, "s30", "depends on failed step 's4'"))
    display.tick()
    frame = last_frame(screen)
    assert frame[0] == "plan · 30 steps: 3 running, 19 pending, 3 done, 4 failed, 1 skipped"
    assert [line.split()[2] for line in frame[1:6]] == ["s4", "s5", "s8", "s9", "s10"]
    assert frame[6] == "└── … 25 more steps"
    feed(display, *(StepFinished(0.3, f"s{i}", "out", 0.1) for i in (8, 9, 10)))
    display.tick()
    shown = [line.split()[1:3] for line in last_frame(screen)[1:6]]
    assert shown == [["✗", "s4"], ["✗", "s5"], ["✓", "s8"], ["✓", "s9"], ["✓", "s10"]]
    display.stop()


def test_the_last_frame_of_a_very_big_plan_is_bounded_too(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(display_module, "FINAL_TREE_STEPS", 20)
    clock = Clock()
    display, screen = drawn_by_hand(clock, lines=10)
    feed(display, PlanReady(0.0, big_plan(21)))
    display.stop()
    text = strip_ansi(screen.getvalue())
    assert "plan · 21 steps: 21 pending" in text and "more steps" in text
    assert "s21" not in text


def test_the_last_frame_of_a_plan_taller_than_the_screen_is_the_whole_tree() -> None:
    clock = Clock()
    display, screen = drawn_by_hand(clock, lines=10)
    feed(display, PlanReady(0.0, big_plan(20)), StepStarted(0.0, "s20"))
    display.tick()
    assert len(last_frame(screen)) <= 10
    display.stop()
    assert "└── ▶ s20 [t] x  running 0s" in strip_ansi(screen.getvalue())


def test_a_frame_waits_for_a_pause_in_the_events_but_not_for_long() -> None:
    clock = Clock()
    display, screen = drawn_by_hand(clock, quiet=0.025)
    feed(display, PlanReady(0.0, big_plan(30)))
    assert not display.tick()  # an event has just come: it waits
    clock.now += 0.03
    assert display.tick()
    for i in range(1, 11):  # steps start every 10 ms: a burst
        clock.now += 0.01
        feed(display, StepStarted(0.0, f"s{i}"))
        assert not display.tick()
    clock.now += 0.03  # a pause
    assert display.tick()
    assert "├── ▶ s10 [t] x  running 0s" in last_frame(screen)
    for i in range(11, 31):  # a burst that goes on: a frame every quarter of a second still
        clock.now += 0.02
        feed(display, StepStarted(0.0, f"s{i}"))
        display.tick()
    assert "└── ▶ s30 [t] x  running 0s" not in last_frame(screen)
    assert "├── ▶ s21 [t] x  running 0s" in last_frame(screen)
    display.stop()  # the last frame waits for nothing
    assert "└── ▶ s30 [t] x  running 0s" in strip_ansi(screen.getvalue())
