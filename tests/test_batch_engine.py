"""Many runs on one engine at once: ``Overseer.batch``, the caps they share, the batch id.

Real HTTP to a fake server on 127.0.0.1; the fake counts each tool's calls in flight.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from overseer import Overseer
from overseer.batch.inputs import BatchItem
from overseer.batch.local import run_local
from overseer.config import load_settings
from overseer.errors import ConfigError
from overseer.events import Event, RunStarted
from tests.batchhelp import batch_server, request_text
from tests.fake_openai import FakeOpenAI, FakeReply

CAPPED = """
tools:
  - name: translator
    max_concurrency: 2
"""


def engine_for(url: str, tmp_path: Path, **overrides: object) -> Overseer:
    config = tmp_path / "config.yaml"
    config.write_text(CAPPED)
    settings = load_settings(config, {"backend.base_url": url, "backend.model": "m", **overrides})
    return Overseer(settings, journal=False)


def test_batch_yields_one_report_per_request_as_they_finish(tmp_path: Path) -> None:
    requests = [request_text(n) for n in range(1, 31)]
    with batch_server() as (fake, _), engine_for(fake.url, tmp_path) as engine:
        reports = list(engine.batch(requests, concurrency=6))
    assert sorted(r.request for r in reports) == sorted(requests)
    assert sum(r.status == "failed" for r in reports) == 3
    assert len({r.run_id for r in reports}) == 30


def test_a_tools_cap_holds_over_the_whole_batch(tmp_path: Path) -> None:
    requests = [f"req-{n} write a joke" for n in range(1, 25)]
    with (
        batch_server(step_latency=0.02) as (fake, state),
        engine_for(fake.url, tmp_path, **{"run.max_workers": 32}) as engine,
    ):
        reports = list(engine.batch(requests, concurrency=12))
    assert all(r.status == "succeeded" for r in reports)
    assert state.overlap.is_set()  # two translator calls did run at once ...
    assert state.most["translator"] == 2  # ... and never more, across 12 requests at once


def test_max_workers_holds_over_the_whole_batch(tmp_path: Path) -> None:
    requests = [f"req-{n} write a joke" for n in range(1, 13)]
    with (
        batch_server(step_latency=0.02) as (fake, state),
        engine_for(fake.url, tmp_path, **{"run.max_workers": 3}) as engine,
    ):
        reports = list(engine.batch(requests, concurrency=8))
    assert all(r.status == "succeeded" for r in reports)
    assert 2 <= state.most["steps"] <= 3  # 8 requests at once, 3 steps at most over them all


def test_every_run_starts_with_the_batch_id(tmp_path: Path) -> None:
    seen: list[RunStarted] = []
    lock = threading.Lock()

    def keep(event: Event) -> None:
        if isinstance(event, RunStarted):
            with lock:
                seen.append(event)

    with batch_server() as (fake, _), engine_for(fake.url, tmp_path) as engine:
        engine.subscribe(keep)
        list(engine.batch([request_text(n) for n in range(1, 6)], batch_id="b-1"))
    assert [e.batch_id for e in seen] == ["b-1"] * 5


def test_a_request_without_a_plan_is_a_failed_report_not_a_crash(tmp_path: Path) -> None:
    with batch_server() as (fake, _), engine_for(fake.url, tmp_path) as engine:
        report = engine.run_settled("req-1 noplan")
    assert report.status == "failed" and "no valid plan" in report.outcome.reason
    assert report.to_json()["steps"] == [] and report.plan.steps == ()


def test_a_configuration_error_stops_the_batch(tmp_path: Path) -> None:
    with FakeOpenAI(lambda body: FakeReply(status=401, content="bad key")) as fake:
        engine = engine_for(fake.url, tmp_path)
        with engine, pytest.raises(Exception) as caught:
            list(engine.batch([request_text(n) for n in range(1, 20)], concurrency=2))
    assert "401" in str(caught.value) or isinstance(caught.value, ConfigError)


def test_run_local_reports_each_item_with_its_id(tmp_path: Path) -> None:
    items = [BatchItem(f"x{n}", request_text(n), n) for n in range(1, 11)]
    started: list[str] = []
    with batch_server() as (fake, _), engine_for(fake.url, tmp_path) as engine:
        done = list(
            run_local(
                engine, items, concurrency=3, batch_id="b", on_start=lambda i: started.append(i.key)
            )
        )
    assert sorted(f.item.key for f in done) == sorted(i.key for i in items)
    assert sorted(started) == sorted(i.key for i in items)
    line = next(f for f in done if f.item.key == "x10").line("b")
    assert line["id"] == "x10" and line["batch_id"] == "b" and line["status"] == "failed"
