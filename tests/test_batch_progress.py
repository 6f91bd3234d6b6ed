"""``BatchProgress``: plain lines off a terminal, a bar on one, and the closing line."""

from __future__ import annotations

import io
import threading

from overseer.interfaces.display import BatchProgress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_lines_say_done_failed_running_tokens_and_eta() -> None:
    stream = io.StringIO()
    progress = BatchProgress(4, stream, skipped=2, live=False, interval=0).start()
    progress.started()
    progress.started()
    progress.finished(True, 10)
    progress.finished(False, 5)
    closing = progress.stop()
    lines = stream.getvalue().splitlines()
    assert lines[0] == "skipping 2 requests that already succeeded"
    assert "1/4 done · 0 failed · 1 running · 10 tokens · ETA" in lines[1]
    assert "2/4 done · 1 failed · 0 running · 15 tokens" in lines[2]
    assert closing == lines[-1]
    assert closing.startswith("batch: 2 of 4 requests (1 succeeded, 1 failed, 2 skipped")
    assert "requests/min" in closing and closing.endswith("15 tokens")


def test_plain_lines_come_at_most_every_interval() -> None:
    stream = io.StringIO()
    progress = BatchProgress(50, stream, live=False, interval=3600).start()
    for _ in range(50):
        progress.started()
        progress.finished(True, 1)
    progress.stop()
    assert len(stream.getvalue().splitlines()) == 1  # the closing line only


def test_the_bar_on_a_terminal_goes_away_and_leaves_the_closing_line() -> None:
    stream = Terminal()
    progress = BatchProgress(3, stream, live=True).start()

    def one() -> None:
        progress.started()
        progress.finished(True, 2)

    worker = threading.Thread(target=one)
    worker.start()
    worker.join()
    closing = progress.stop()
    assert closing.startswith("batch: 1 of 3 requests") and closing in stream.getvalue()
