"""A cancellation token: a ``threading.Event`` whose ``set()`` also runs registered callbacks.

``CallContext.cancelled`` is one. Code that only polls or waits keeps using the ``Event``
interface; code that blocks where no flag can reach it (a socket read, say) registers a callback
with ``on_cancel`` that unblocks it. Nothing here does I/O.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

__all__ = ["CancelToken", "Remove"]

log = logging.getLogger(__name__)

Remove = Callable[[], None]
"""Unregisters a callback; calling it again, or after the token was set, does nothing."""


class CancelToken(threading.Event):
    """An ``Event`` that runs callbacks once, on the first ``set()``.

    Thread-safe. The callbacks run on the thread that calls ``set()``, in the order they were
    registered, after the flag is up; one that raises is logged and the others still run. A
    callback registered once the token is set runs at once, on the registering thread.
    """

    def __init__(self) -> None:
        super().__init__()
        self._guard = threading.Lock()
        self._callbacks: dict[object, Callable[[], None]] = {}

    def set(self) -> None:
        with self._guard:
            if self.is_set():
                return
            super().set()
            callbacks = list(self._callbacks.values())
            self._callbacks.clear()
        for callback in callbacks:
            _run(callback)

    def on_cancel(self, callback: Callable[[], None]) -> Remove:
        """Run ``callback`` when the token is set (now, if it is set already)."""
        with self._guard:
            if not self.is_set():
                key = object()
                self._callbacks[key] = callback
                return lambda: self._remove(key)
        _run(callback)
        return _nothing

    def _remove(self, key: object) -> None:
        with self._guard:
            self._callbacks.pop(key, None)


def _run(callback: Callable[[], None]) -> None:
    try:
        callback()
    except Exception:
        log.exception("a cancel callback failed")


def _nothing() -> None:
    """The ``Remove`` of a callback that has already run."""
