"""What display tests share: a clock moved by hand and a screen rich takes for a terminal."""

from __future__ import annotations

import io
import threading

from overseer.core.plan import Step
from overseer.interfaces.display import Display
from tests.replhelp import strip_ansi

__all__ = ["Clock", "Screen", "live_display", "step"]


class Clock:
    """The display's clock, moved by hand: elapsed times tick without a test waiting."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Screen(io.StringIO):
    """A terminal as rich sees one; ``wait_for`` blocks until a text shows in a later write."""

    def __init__(self) -> None:
        super().__init__()
        self.changed = threading.Condition()
        self.seen = 0
        self.writes: list[tuple[str, str]] = []  # (thread name, text)

    def isatty(self) -> bool:
        return True

    def write(self, text: str) -> int:
        with self.changed:
            count = super().write(text)
            self.writes.append((threading.current_thread().name, text))
            self.changed.notify_all()
        return count

    def wait_for(self, text: str, timeout: float = 20) -> str:
        """The screen's text (escapes stripped) from the last match up to ``text``."""
        with self.changed:
            shown = self.changed.wait_for(lambda: text in self._since(), timeout)
            assert shown, f"{text!r} never showed; after the last match: {self._since()!r}"
            since = self._since()
            self.seen += len(self.getvalue()[self.seen :])
            return since

    def _since(self) -> str:
        return strip_ansi(self.getvalue()[self.seen :])


def live_display(clock: Clock | None = None) -> tuple[Display, Screen]:
    """A live display on a clock that moves only by hand, so with no pause to wait for before
    a frame (``quiet=0``)."""
    screen = Screen()
    return Display(screen, clock=clock or Clock(), quiet=0.0), screen


def step(step_id: str, description: str, *deps: str) -> Step:
    return Step(step_id=step_id, description=description, tool="t", depends_on=deps)
