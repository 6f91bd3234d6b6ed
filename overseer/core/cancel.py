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

    Every step of a run gets one, and most are never waited on nor set: so a token is a flag and
    nothing more until someone waits (the condition is made then) or registers a callback (the
    dict is made then). The few changes of state go through one lock shared by all tokens.
    """

    def __init__(self) -> None:  # no super().__init__(): no Condition until someone waits
        self._flag = False
        self._cond: threading.Condition | None = None
        self._callbacks: dict[object, Callable[[], None]] | None = None

    def is_set(self) -> bool:
        return self._flag

    isSet = is_set  # threading.Event's old name

    def set(self) -> None:
        with _GUARD:
            if self._flag:
                return
            self._flag = True
            cond = self._cond
            callbacks = list((self._callbacks or {}).values())
            self._callbacks = None
        if cond is not None:
            with cond:
                cond.notify_all()
        for callback in callbacks:
            _run(callback)

    def clear(self) -> None:
        """Lower the flag; callbacks that already ran do not run again on the next ``set()``."""
        with _GUARD:
            self._flag = False

    def wait(self, timeout: float | None = None) -> bool:
        if self._flag:
            return True
        cond = self._condition()
        with cond:
            if not self._flag:
                cond.wait(timeout)
            return self._flag

    def on_cancel(self, callback: Callable[[], None]) -> Remove:
        """Run ``callback`` when the token is set (now, if it is set already)."""
        with _GUARD:
            if not self._flag:
                key = object()
                if self._callbacks is None:
                    self._callbacks = {}
                self._callbacks[key] = callback
                return lambda: self._remove(key)
        _run(callback)
        return _nothing

    def _condition(self) -> threading.Condition:
        with _GUARD:
            if self._cond is None:
                self._cond = threading.Condition(threading.Lock())
            return self._cond

    def _remove(self, key: object) -> None:
        with _GUARD:
            if self._callbacks is not None:
                self._callbacks.pop(key, None)

    def _at_fork_reinit(self) -> None:
        self._cond = None


_GUARD = threading.Lock()
"""Guards the state changes of every token: they are rare (a wait's first call, a callback
registered or removed, a set), and short."""


def _run(callback: Callable[[], None]) -> None:
    try:
        callback()
    except Exception:
        log.exception("a cancel callback failed")


def _nothing() -> None:
    """The ``Remove`` of a callback that has already run."""
