"""``fan_out``: bounded concurrency, finishing order, errors, and stopping early."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from overseer.core.fanout import fan_out


def test_results_come_in_finishing_order() -> None:
    second_done = threading.Event()

    def work(n: int) -> int:
        if n == 1:
            second_done.wait(5)
        else:
            second_done.set()
        return n

    assert list(fan_out(work, [1, 2], 2)) == [2, 1]


def test_never_more_than_concurrency_calls_at_once_and_it_reaches_it() -> None:
    lock, running, most = threading.Lock(), [0], [0]
    full = threading.Barrier(4, timeout=5)

    def work(n: int) -> int:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        if n < 4:
            full.wait()  # the first four meet: four at once
        with lock:
            running[0] -= 1
        return n

    assert sorted(fan_out(work, range(40), 4)) == list(range(40))
    assert most[0] == 4


def test_items_are_taken_lazily() -> None:
    taken: list[int] = []

    def items() -> Iterator[int]:
        for n in range(1000):
            taken.append(n)
            yield n

    release = threading.Event()

    def work(n: int) -> int:
        if n:
            release.wait(5)
        return n

    results = fan_out(work, items(), 2)
    assert next(results) == 0
    results.close()  # nothing new starts: the two threads hold one item each
    assert len(taken) <= 3
    release.set()


def test_the_first_error_reaches_the_consumer_and_stops_the_feed() -> None:
    calls: list[int] = []

    def work(n: int) -> int:
        calls.append(n)
        if n == 3:
            raise ValueError("three")
        return n

    with pytest.raises(ValueError, match="three"):
        list(fan_out(work, range(1000), 1))
    assert calls == [0, 1, 2, 3]


def test_a_failing_item_iterator_is_raised_too() -> None:
    def items() -> Iterator[int]:
        yield 1
        raise RuntimeError("bad source")

    with pytest.raises(RuntimeError, match="bad source"):
        list(fan_out(lambda n: n, items(), 2))


def test_no_items_and_bad_concurrency() -> None:
    assert list(fan_out(lambda n: n, [], 3)) == []
    with pytest.raises(ValueError, match="at least 1"):
        fan_out(lambda n: n, [1], 0)
