"""``CancelToken``: an ``Event`` that runs callbacks once, made lazily (every step has one)."""

from __future__ import annotations

import threading

import pytest

from overseer.core.cancel import CancelToken

pytestmark = pytest.mark.timeout(30)

WAIT = 10.0  # an upper bound for waits on another thread, never a duration being measured


def test_a_token_is_an_event() -> None:
    token = CancelToken()
    assert isinstance(token, threading.Event)
    assert not token.is_set()
    assert not token.isSet()
    token.set()
    assert token.is_set()
    assert token.wait(0)


def test_wait_times_out_while_unset() -> None:
    assert CancelToken().wait(0.001) is False


def test_a_waiter_on_another_thread_wakes_on_set() -> None:
    token = CancelToken()
    waiting = threading.Event()
    woke: list[bool] = []

    def wait() -> None:
        waiting.set()
        woke.append(token.wait(WAIT))

    thread = threading.Thread(target=wait)
    thread.start()
    assert waiting.wait(WAIT)
    token.set()
    thread.join(WAIT)
    assert woke == [True]


def test_many_waiters_all_wake() -> None:
    token = CancelToken()
    barrier = threading.Barrier(9)
    woke: list[bool] = []
    lock = threading.Lock()

    def wait() -> None:
        barrier.wait(WAIT)
        result = token.wait(WAIT)
        with lock:
            woke.append(result)

    threads = [threading.Thread(target=wait) for _ in range(8)]
    for thread in threads:
        thread.start()
    barrier.wait(WAIT)
    token.set()
    for thread in threads:
        thread.join(WAIT)
    assert woke == [True] * 8


def test_callbacks_run_once_in_order_on_the_first_set() -> None:
    token = CancelToken()
    calls: list[str] = []
    token.on_cancel(lambda: calls.append("a"))
    token.on_cancel(lambda: calls.append("b"))
    token.set()
    token.set()
    assert calls == ["a", "b"]


def test_a_removed_callback_never_runs_and_removing_twice_is_harmless() -> None:
    token = CancelToken()
    calls: list[str] = []
    remove = token.on_cancel(lambda: calls.append("gone"))
    remove()
    remove()
    token.set()
    assert calls == []


def test_a_callback_registered_after_set_runs_at_once() -> None:
    token = CancelToken()
    token.set()
    calls: list[str] = []
    remove = token.on_cancel(lambda: calls.append("now"))
    assert calls == ["now"]
    remove()  # does nothing


def test_a_failing_callback_does_not_stop_the_others(caplog: pytest.LogCaptureFixture) -> None:
    token = CancelToken()
    calls: list[str] = []

    def broken() -> None:
        raise RuntimeError("boom")

    token.on_cancel(broken)
    token.on_cancel(lambda: calls.append("still"))
    token.set()
    assert calls == ["still"]
    assert "a cancel callback failed" in caplog.text


def test_clear_lowers_the_flag() -> None:
    token = CancelToken()
    token.set()
    token.clear()
    assert not token.is_set()
    assert token.wait(0.001) is False
