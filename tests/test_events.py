"""The event bus: fan-out to every subscriber, safe to change while an event is delivered."""

from __future__ import annotations

import threading

from overseer.events import Event, EventBus, StepStarted


def test_every_subscriber_gets_every_event_in_order() -> None:
    bus = EventBus()
    seen: list[tuple[str, str]] = []
    bus.subscribe(lambda e: seen.append(("a", e.step_id)))  # type: ignore[attr-defined]
    bus.subscribe(lambda e: seen.append(("b", e.step_id)))  # type: ignore[attr-defined]
    bus.emit(StepStarted(0.0, "s1"))
    bus.emit(StepStarted(0.1, "s2"))
    assert seen == [("a", "s1"), ("b", "s1"), ("a", "s2"), ("b", "s2")]


def test_a_subscriber_that_raises_is_skipped_for_that_event_only() -> None:
    bus = EventBus()
    seen: list[str] = []

    def broken(event: Event) -> None:
        raise RuntimeError("boom")

    bus.subscribe(broken)
    bus.subscribe(lambda e: seen.append(e.step_id))  # type: ignore[attr-defined]
    bus.emit(StepStarted(0.0, "s1"))
    bus.emit(StepStarted(0.0, "s2"))
    assert seen == ["s1", "s2"]


def test_changing_subscriptions_while_an_event_is_delivered() -> None:
    """One that unsubscribes itself still lets the rest get the event; one added meanwhile
    gets the next event, not the current one."""
    bus = EventBus()
    seen: list[str] = []
    unsubscribe = None

    def once(event: Event) -> None:
        seen.append("once")
        assert unsubscribe is not None
        unsubscribe()
        bus.subscribe(lambda e: seen.append("late"))

    unsubscribe = bus.subscribe(once)
    bus.subscribe(lambda e: seen.append("steady"))
    bus.emit(StepStarted(0.0, "s1"))
    assert seen == ["once", "steady"]
    bus.emit(StepStarted(0.0, "s2"))
    assert seen == ["once", "steady", "steady", "late"]
    unsubscribe()  # a second call changes nothing
    bus.emit(StepStarted(0.0, "s3"))
    assert seen[-2:] == ["steady", "late"]


def test_subscribing_from_many_threads_loses_no_subscriber() -> None:
    bus = EventBus()
    counts = [0] * 64
    lock = threading.Lock()
    start = threading.Barrier(8)

    def add(first: int) -> None:
        start.wait()
        for i in range(first, first + 8):

            def count(event: Event, i: int = i) -> None:
                with lock:
                    counts[i] += 1

            bus.subscribe(count)

    threads = [threading.Thread(target=add, args=(n * 8,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    bus.emit(StepStarted(0.0, "s1"))
    assert counts == [1] * 64
