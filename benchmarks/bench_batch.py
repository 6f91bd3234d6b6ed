"""Throughput of ``overseer batch``: here on threads, and on a Dask ``local:2`` cluster.

    python benchmarks/bench_batch.py [--requests 1000] [--latency 0.2]

Each request is a three-step plan (a step, then two that need it, side by side) against a fake
OpenAI-compatible server on 127.0.0.1 whose step replies take ``--latency`` seconds (plans and
answers come back at once), so a request's critical path is about two latencies. Figures:
requests per minute locally at concurrency 8, 32 and 128, and on ``local:2`` at 32; and, measured
in the same run, each path's overhead per request: the time from a request's start (its
submission, on Dask) to its result reaching the caller, less the run's own wall time. The cluster's
start-up is timed apart. ``run.max_workers`` is 256 so that the shared step cap is not the limit.
The fake server shares this process's CPU with the local runs (2 cores on the test machine).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from overseer.batch.inputs import BatchItem
from overseer.batch.local import run_local
from overseer.batch.results import Finished
from overseer.config import Settings, load_settings
from overseer.engine import Overseer
from tests.batchhelp import batch_server


class Clock:
    """When each request started, and how long each took to come back beyond its run."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.started: dict[str, float] = {}
        self.overheads: list[float] = []

    def start(self, item: BatchItem) -> None:
        with self.lock:
            self.started[item.key] = time.perf_counter()

    def finish(self, finished: Finished) -> None:
        took = time.perf_counter() - self.started[finished.item.key]
        self.overheads.append(took - finished.report.timing.wall_s)


def items(count: int) -> list[BatchItem]:
    return [BatchItem(n, f"req-{n} write a joke", n) for n in range(1, count + 1)]


def measure(
    label: str, run: Callable[[Clock], Iterator[Finished]], count: int
) -> tuple[float, float]:
    clock = Clock()
    t0 = time.perf_counter()
    failed = 0
    for finished in run(clock):
        clock.finish(finished)
        failed += not finished.ok
    wall = time.perf_counter() - t0
    rate = count / wall * 60
    overhead = statistics.mean(clock.overheads) * 1000
    print(
        f"{label:<24} {count} requests in {wall:6.2f}s  {rate:8.1f} requests/min  "
        f"overhead {overhead:6.1f} ms/request  failed {failed}"
    )
    return rate, overhead


def local(settings: Settings, count: int, concurrency: int) -> tuple[float, float]:
    with Overseer(settings, journal=False) as engine:

        def run(clock: Clock) -> Iterator[Finished]:
            return run_local(
                engine,
                items(count),
                concurrency=concurrency,
                batch_id="bench",
                on_start=clock.start,
            )

        return measure(f"local, concurrency {concurrency}", run, count)


def dask(settings: Settings, count: int, concurrency: int) -> tuple[float, float]:
    from overseer.batch.cluster import Submitter, open_client, register_engines

    data = settings.model_dump(mode="json")
    t0 = time.perf_counter()
    with open_client("local:2", concurrency) as client:
        plugin = register_engines(client, data)
        print(f"local:2 cluster up with its engines in {time.perf_counter() - t0:.2f}s")

        def run(clock: Clock) -> Iterator[Finished]:
            return Submitter(client, plugin, data, "bench", clock.start).run(
                items(count), concurrency
            )

        return measure(f"local:2, concurrency {concurrency}", run, count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--latency", type=float, default=0.2)
    args = parser.parse_args()
    with batch_server(step_latency=args.latency) as (fake, _):
        overrides = {"backend.base_url": fake.url, "backend.model": "m", "run.max_workers": 256}
        settings = load_settings(None, overrides)
        print(f"{args.requests} requests of a three-step plan, {args.latency * 1000:.0f} ms a step")
        results = {c: local(settings, args.requests, c) for c in (8, 32, 128)}
        cluster = dask(settings, args.requests, 32)
    extra = cluster[1] - results[32][1]
    print(f"Dask path: {extra:+.1f} ms per request against local at concurrency 32")


if __name__ == "__main__":
    main()
