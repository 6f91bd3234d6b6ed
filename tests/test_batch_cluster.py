"""``overseer batch --cluster`` on a real Dask ``LocalCluster`` of 2 worker processes.

One cluster serves the session (starting one takes seconds); each test drives the real command
in a subprocess against it (``--cluster tcp://...``), plus one ``local:2`` run that makes its own.
The workers hold the API key in their own environment; the command that submits has none.
"""

from __future__ import annotations

import logging
import os
import pickle
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

distributed = pytest.importorskip("distributed")
import dask  # noqa: E402

from overseer.journal.store import Journal, default_journal_path  # noqa: E402
from tests.batchhelp import (  # noqa: E402
    batch_server,
    expected_status,
    read_output,
    write_requests,
)
from tests.clihelp import run_cli  # noqa: E402

KEY = "sk-cluster-secret-0123456789"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.fixture(scope="session")
def cluster() -> Iterator[Any]:
    """Two worker processes; one that stops answering for 20s is restarted (as ``local:N``
    does after 60s), so that a stuck worker shows up as a slow test, not a hung one."""
    ttl = {"distributed.scheduler.worker-ttl": "20s"}
    with (
        dask.config.set(ttl),
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=4,
            processes=True,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
            silence_logs=logging.CRITICAL,
            env={"OPENAI_API_KEY": KEY},
        ) as local,
    ):
        yield local


@pytest.fixture
def client(cluster: Any) -> Iterator[Any]:
    with distributed.Client(cluster) as connected:
        yield connected


def flags(url: str, cluster: Any, *extra: str) -> list[str]:
    return ["--base-url", url, "--model", "m", "--cluster", cluster.scheduler_address, *extra]


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "OVERSEER_C"))}


def _start(args: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "overseer", "batch", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )


def test_two_hundred_requests_on_the_cluster_each_once_and_journaled(
    cluster: Any, tmp_path: Path
) -> None:
    requests, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    ids = write_requests(requests, 200)
    with batch_server() as (fake, _):
        args = [str(requests), "-o", str(out), *flags(fake.url, cluster, "--concurrency", "8")]
        result = run_cli("batch", *args, timeout=300)
    assert result.returncode == 1, result.stderr  # every 10th fails on purpose
    lines = read_output(out)
    assert sorted(line["id"] for line in lines) == sorted(ids)
    assert all(line["status"] == expected_status(line["id"]) for line in lines)
    journal = Journal(default_journal_path())  # written by the client, not the workers
    assert all(journal.load(line["run_id"]).status == line["status"] for line in lines)
    assert "Traceback" not in result.stderr


def test_a_worker_killed_mid_request_still_gives_every_id_once(
    cluster: Any, client: Any, tmp_path: Path
) -> None:
    requests, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    ids = write_requests(requests, 30)
    with batch_server() as (fake, state):
        state.hold_from = 1  # every plan call waits until the worker is dead
        process = _start([str(requests), "-o", str(out), *flags(fake.url, cluster, "-q")])
        state.wait_held(4)
        busy = next(addr for addr, keys in client.processing().items() if keys)
        pid = client.run(os.getpid, workers=[busy])[busy]
        os.kill(pid, signal.SIGKILL)
        state.release.set()
        _, stderr = process.communicate(timeout=240)
        rerun = {name for name, calls in state.planned.items() if calls > 1}
    assert process.returncode == 1, stderr
    lines = read_output(out)
    assert sorted(line["id"] for line in lines) == sorted(ids)
    assert all(line["status"] == expected_status(line["id"]) for line in lines)
    assert rerun  # the requests in flight on the dead worker ran again elsewhere
    client.wait_for_workers(2, timeout=60)  # the nanny restarts it for the next tests


def test_no_key_in_any_task_or_worker_log(cluster: Any, client: Any, tmp_path: Path) -> None:
    requests, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_requests(requests, 8)
    with batch_server() as (fake, state):
        state.hold_from = 1
        process = _start([str(requests), "-o", str(out), *flags(fake.url, cluster, "-q")])
        state.wait_held(2)
        tasks = client.run_on_scheduler(_task_specs)
        state.release.set()
        _, stderr = process.communicate(timeout=120)
        keys = {headers.get("authorization") for headers in fake.headers}
    assert process.returncode == 0, stderr
    assert "req-" in tasks and KEY not in tasks  # the tasks held requests, and no key
    assert keys == {f"Bearer {KEY}"}  # each worker used the key of its own environment
    assert KEY not in str(client.get_worker_logs()) and KEY not in stderr
    assert KEY not in out.read_text()


def _task_specs(dask_scheduler: Any) -> str:
    """What the scheduler holds of every task: its repr and its pickle, as text."""
    specs = [ts.run_spec for ts in dask_scheduler.tasks.values()]
    return repr(specs) + repr([pickle.dumps(spec) for spec in specs])


def test_local_n_starts_and_stops_its_own_cluster(tmp_path: Path) -> None:
    requests, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    ids = write_requests(requests, 9)
    with batch_server() as (fake, _):
        args = ["--base-url", fake.url, "--model", "m", "--cluster", "local:2"]
        result = run_cli("batch", str(requests), "-o", str(out), *args, timeout=180)
    assert result.returncode == 0, result.stderr
    assert sorted(line["id"] for line in read_output(out)) == sorted(ids)
    assert "distributed." not in result.stderr and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("batch: 9 of 9 requests")
