"""The requests of a batch as tasks on a Dask cluster: the one module that imports ``distributed``.

The client (this process) reads the input, submits at most ``concurrency`` tasks at a time, and
writes the output and the journal as results come back, in the order they finish. A task carries
the request, its run id and the non-secret settings (``Settings.model_dump``: URLs, models, caps,
never a key); the worker reads its API key from its own environment, as any engine does.

Each worker builds its engine once, in a worker plugin (``EnginePlugin.setup``), from the settings
registered with it; with no backend configured that engine starts the worker's own embedded
model, and the plugin's ``teardown`` stops it when the worker closes (or when the batch ends and
the client unregisters the plugin, so nothing of a batch outlives it on a shared cluster).

A worker that dies mid-request (or stops answering for ``WORKER_TTL``, on ``local:N``): the
scheduler runs the task again elsewhere. ``local:N`` clusters allow that once
(``allowed-failures: 1``), then the request fails with the scheduler's
``KilledWorker``; a ``tcp://`` cluster follows its own scheduler's setting. A task may thus run
twice, but the client writes each request once, from the one future ``as_completed`` yields.
On a cluster, ``run.max_workers`` and the tools' caps hold per worker (each has its own engine).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import math
import os
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "error")  # read when distributed is imported

import dask
from distributed import Client, Future, LocalCluster, as_completed, get_worker
from distributed.diagnostics.plugin import WorkerPlugin

from overseer.batch.inputs import BatchItem
from overseer.batch.journaling import record_report
from overseer.batch.results import Finished
from overseer.config.settings import Settings
from overseer.core.report import RunReport
from overseer.engine import (
    Overseer,
    failed_report,
    is_configuration_error,
    new_run_id,
)
from overseer.errors import ConfigError, OverseerError
from overseer.journal.store import Journal

__all__ = [
    "EnginePlugin",
    "Submitter",
    "open_client",
    "register_engines",
    "run_on_cluster",
    "run_request",
]

CONNECT_TIMEOUT = "10s"
WORKER_TTL = "60s"
"""On ``local:N``, a worker that sends no heartbeat for this long is restarted and its requests
run elsewhere, as if it had died (Dask's default waits 5 minutes)."""
WORKER_WAIT_S = 60.0
"""Seconds to wait for a ``tcp://`` cluster to have at least one worker."""


class EnginePlugin(WorkerPlugin):
    """One engine per worker (per distinct settings), built when the worker starts, closed
    when it stops. Picklable: the engines are made in ``setup``, on the worker."""

    idempotent = True

    def __init__(self, name: str, settings: dict[str, Any]) -> None:
        self.name = name
        self.settings = settings
        self._engines: dict[str, Overseer] = {}
        self._lock: threading.Lock | None = None
        self._threads = contextlib.ExitStack()  # each engine's shared step threads

    def __getstate__(self) -> dict[str, Any]:
        return {"name": self.name, "settings": self.settings}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["name"], state["settings"])  # type: ignore[misc]

    def setup(self, worker: Any) -> None:
        self._lock = threading.Lock()
        self.engine_for(
            self.settings
        )  # starts the embedded model now, once, if there is no backend

    def teardown(self, worker: Any) -> None:
        engines, self._engines = list(self._engines.values()), {}
        self._threads.close()
        for engine in engines:
            engine.close()

    def engine_for(self, settings: dict[str, Any]) -> Overseer:
        key = json.dumps(settings, sort_keys=True, default=str)
        lock = self._lock or threading.Lock()
        with lock:
            engine = self._engines.get(key)
            if engine is None:
                engine = Overseer(Settings.model_validate(settings), journal=False)
                self._threads.enter_context(engine.shared_threads())  # one pool, all its tasks
                self._engines[key] = engine
            return engine


def run_request(
    plugin: str, settings: dict[str, Any], request: str, run_id: str, batch_id: str
) -> RunReport:
    """The task: one request on this worker's engine (the client records it)."""
    found = get_worker().plugins[plugin]
    assert isinstance(found, EnginePlugin), f"worker plugin {plugin!r} is not overseer's"
    engine = found.engine_for(settings)
    report: RunReport = engine.run_settled(request, run_id=run_id, batch_id=batch_id)
    return report


@contextlib.contextmanager
def open_client(address: str, concurrency: int) -> Iterator[Client]:
    """A client of ``tcp://HOST:PORT``, or of a new ``local:N`` cluster bound to 127.0.0.1
    with enough threads per worker for ``concurrency`` requests at once."""
    logging.getLogger("distributed").setLevel(logging.CRITICAL)
    if address.startswith("local:"):
        workers = int(address.split(":", 1)[1])
        threads = math.ceil(concurrency / workers)
        with _local_cluster(workers, threads) as cluster, Client(cluster) as client:
            yield client
        return
    with _remote(address) as client:
        yield client


@contextlib.contextmanager
def _local_cluster(workers: int, threads: int) -> Iterator[LocalCluster]:
    with (
        dask.config.set(
            {
                "distributed.scheduler.allowed-failures": 1,
                "distributed.scheduler.worker-ttl": WORKER_TTL,
            }
        ),
        LocalCluster(
            n_workers=workers,
            threads_per_worker=threads,
            processes=True,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
            silence_logs=logging.CRITICAL,
        ) as cluster,
    ):
        yield cluster


@contextlib.contextmanager
def _remote(address: str) -> Iterator[Client]:
    try:
        client = Client(address, timeout=CONNECT_TIMEOUT)
    except (OSError, TimeoutError) as exc:
        raise ConfigError(f"cannot reach the Dask scheduler at {address!r}: {exc}") from None
    with client:
        try:
            client.wait_for_workers(1, timeout=WORKER_WAIT_S)
        except TimeoutError:
            raise ConfigError(
                f"the Dask cluster at {address!r} has no worker ({WORKER_WAIT_S:g}s waited)"
            ) from None
        yield client


def run_on_cluster(
    settings: Settings,
    items: Sequence[BatchItem],
    *,
    address: str,
    concurrency: int,
    batch_id: str,
    journal: Journal | None,
    on_start: Callable[[BatchItem], None] | None = None,
    on_problem: Callable[[str], None] | None = None,
) -> Iterator[Finished]:
    """Yield each request's ``Finished`` as its task comes back; record it in ``journal``."""
    if not items:
        return
    data = settings.model_dump(mode="json")
    with open_client(address, concurrency) as client:
        plugin = register_engines(client, data)
        try:
            batch = Submitter(client, plugin, data, batch_id, on_start)
            for finished in batch.run(items, concurrency):
                if journal is not None:
                    problem = record_report(journal, finished.report, batch_id)
                    if problem is not None and on_problem is not None:
                        on_problem(problem)
                yield finished
        finally:
            with contextlib.suppress(Exception):
                client.unregister_worker_plugin(plugin)


def register_engines(client: Client, data: dict[str, Any]) -> str:
    """Register a plugin of this batch's own name; setup failing on a worker is re-raised."""
    name = f"overseer-engine-{uuid.uuid4().hex[:8]}"
    try:
        client.register_plugin(EnginePlugin(name, data), name=name)
    except BaseException:
        with contextlib.suppress(Exception):
            client.unregister_worker_plugin(name)
        raise
    return name


class Submitter:
    """Keeps ``concurrency`` tasks in flight and turns each result into a ``Finished``."""

    def __init__(
        self,
        client: Client,
        plugin: str,
        data: dict[str, Any],
        batch_id: str,
        on_start: Callable[[BatchItem], None] | None,
    ) -> None:
        self.client, self.plugin, self.data, self.batch_id = client, plugin, data, batch_id
        self.on_start = on_start
        self.pending: dict[str, tuple[BatchItem, str]] = {}
        self.flight = as_completed(with_results=True, raise_errors=False)

    def run(self, items: Sequence[BatchItem], concurrency: int) -> Iterator[Finished]:
        feed = iter(items)
        for item in itertools.islice(feed, concurrency):
            self._submit(item)
        for future, result in self.flight:
            item, run_id = self.pending.pop(str(future.key))
            report = self._report(future, result, item, run_id)
            future.release()
            yield Finished(item, report)
            following = next(feed, None)
            if following is not None:
                self._submit(following)

    def _submit(self, item: BatchItem) -> None:
        run_id = new_run_id()
        key = f"overseer-{self.batch_id}-{run_id}"
        future = self.client.submit(
            run_request,
            self.plugin,
            self.data,
            item.request,
            run_id,
            self.batch_id,
            key=key,
            pure=False,
            retries=0,
        )
        self.pending[str(future.key)] = (item, run_id)
        self.flight.add(future)
        if self.on_start is not None:
            self.on_start(item)

    def _report(self, future: Future[Any], result: Any, item: BatchItem, run_id: str) -> RunReport:
        if future.status == "finished" and isinstance(result, RunReport):
            return result
        if isinstance(result, OverseerError) and is_configuration_error(result):
            raise result
        why = f"{type(result).__name__}: {result}" if isinstance(result, BaseException) else result
        return failed_report(run_id, item.request, f"the task failed on the cluster ({why})")
