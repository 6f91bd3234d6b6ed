"""SIGTERM and SIGHUP, handled as Ctrl-C is: each raises ``Terminated`` (a ``KeyboardInterrupt``)
in the main thread, so the run in flight is cancelled, its steps stopped, its node folders
removed and the run recorded as interrupted and resumable; the command then exits 143 or 129.

Python runs signal handlers in the main thread only, between bytecodes: the engine's main thread
waits for a run in short slices (``engine.wait_interruptibly``), so the handler runs soon even when
the kernel hands the signal to a worker thread.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

from overseer.errors import Terminated

__all__ = ["HANDLED", "handling_signals", "raise_if_terminated", "received"]

HANDLED: tuple[int, ...] = (signal.SIGTERM, signal.SIGHUP)

_received: list[int] = []


def received() -> int | None:
    """The first termination signal that arrived while handled, if any."""
    return _received[0] if _received else None


def raise_if_terminated() -> None:
    """Raise ``Terminated`` again if a signal came: for loops (the chat) that take a Ctrl-C as
    "cancel this and go on", which a SIGTERM or SIGHUP must not be."""
    signum = received()
    if signum is not None:
        raise Terminated(signum)


@contextmanager
def handling_signals() -> Iterator[None]:
    """Handle SIGTERM and SIGHUP inside the block (main thread only), then restore what was.

    A signal the process was started with ignored (``nohup``) stays ignored."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous: dict[int, Any] = {}
    for signum in HANDLED:
        if signal.getsignal(signum) != signal.SIG_IGN:
            previous[signum] = signal.signal(signum, _on_signal)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _received.clear()


def _on_signal(signum: int, frame: FrameType | None) -> None:
    if not _received:
        _received.append(signum)
    raise Terminated(signum)
