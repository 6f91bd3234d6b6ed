"""One function over many items, a bounded number at once, results in the order they finish.

``concurrent.futures`` would do most of this, but its threads are joined at interpreter exit, so
an interrupted consumer (Ctrl-C in a batch of a thousand requests) would wait for every call in
flight. These threads are daemons: the consumer that stops iterating stops the feed at once and
the calls in flight are simply abandoned. Items are taken lazily, one per free thread, so a
generator of requests is never read far ahead of the work.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["fan_out"]

WAIT_SLICE_S = 0.2
"""The consumer waits in slices: the kernel may hand SIGINT to any thread, and a main thread
in one untimed wait would not notice it until the next result (as in ``engine.py``)."""

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class _Result(Generic[R]):
    value: R


@dataclass(frozen=True, slots=True)
class _Failure:
    error: BaseException


class _Exhausted:
    """A thread found no more items and ended."""


class _Feed(Generic[T]):
    """The items, handed out one at a time under a lock, until they run out or stop()."""

    def __init__(self, items: Iterable[T]) -> None:
        self._items = iter(items)
        self._lock = threading.Lock()
        self._stopped = False

    def take(self) -> tuple[bool, T | None]:
        with self._lock:
            if self._stopped:
                return False, None
            for item in self._items:
                return True, item
            self._stopped = True
            return False, None

    def stop(self) -> None:
        with self._lock:
            self._stopped = True


def fan_out(fn: Callable[[T], R], items: Iterable[T], concurrency: int) -> Generator[R, None, None]:
    """Yield ``fn(item)`` for every item, ``concurrency`` calls at once, as each finishes.

    The first exception a call raises is raised to the consumer, and nothing new starts after
    it; closing the iterator early (``break``, Ctrl-C) also starts nothing new.
    """
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, got {concurrency!r}")
    return _results(fn, _Feed(items), concurrency)


def _results(fn: Callable[[T], R], feed: _Feed[T], concurrency: int) -> Generator[R, None, None]:
    inbox: queue.SimpleQueue[_Result[R] | _Failure | _Exhausted] = queue.SimpleQueue()
    for number in range(concurrency):
        thread = threading.Thread(
            target=_serve, args=(fn, feed, inbox), name=f"overseer-fan-{number + 1}", daemon=True
        )
        thread.start()
    live = concurrency
    try:
        while live:
            try:
                message = inbox.get(timeout=WAIT_SLICE_S)
            except queue.Empty:
                continue  # back in Python code: a pending Ctrl-C is raised here

            if isinstance(message, _Exhausted):
                live -= 1
            elif isinstance(message, _Failure):
                raise message.error
            else:
                yield message.value
    finally:
        feed.stop()


def _serve(
    fn: Callable[[T], R],
    feed: _Feed[T],
    inbox: queue.SimpleQueue[_Result[R] | _Failure | _Exhausted],
) -> None:
    while True:
        try:
            found, item = feed.take()
        except BaseException as exc:  # the items' own iterator failed: the consumer hears of it
            inbox.put(_Failure(exc))
            feed.stop()
            break
        if not found:
            break
        try:
            inbox.put(_Result(fn(item)))  # type: ignore[arg-type]
        except BaseException as exc:
            feed.stop()
            inbox.put(_Failure(exc))
            break
    inbox.put(_Exhausted())
