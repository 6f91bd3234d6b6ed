"""A python tool that waits (bounded) until the run is interrupted: for the Ctrl-C tests."""

from __future__ import annotations

import threading

__all__ = ["wait_for_interrupt"]

_LIMIT = 120.0  # seconds; a test that forgets to interrupt still ends


def wait_for_interrupt(prompt: str) -> str:
    threading.Event().wait(_LIMIT)
    return "nobody interrupted the run"
