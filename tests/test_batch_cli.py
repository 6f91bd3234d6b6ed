"""``overseer batch`` end to end: a real subprocess, real HTTP to a fake server, a real journal."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from overseer.journal.store import Journal, default_journal_path
from tests.batchhelp import (
    batch_server,
    expected_status,
    read_output,
    request_text,
    write_requests,
)
from tests.clihelp import run_cli

KEY = "sk-batch-secret-0123456789"


def flags(url: str, *extra: str) -> list[str]:
    return ["--base-url", url, "--model", "m", *extra]


def test_two_hundred_requests_each_come_out_once_with_its_status(tmp_path: Path) -> None:
    requests, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    ids = write_requests(requests, 200)
    with batch_server() as (fake, _):
        result = run_cli(
            "batch",
            str(requests),
            "--output",
            str(out),
            *flags(fake.url, "--concurrency", "8"),
            timeout=300,
        )
    assert result.returncode == 1, result.stderr  # every 10th request fails on purpose
    lines = read_output(out)
    assert sorted(line["id"] for line in lines) == sorted(ids)
    assert all(line["status"] == expected_status(line["id"]) for line in lines)
    good = next(line for line in lines if line["status"] == "succeeded")
    assert good["answer"].startswith("THE ANSWER") and len(good["steps"]) == 3
    assert {"run_id", "request", "plan", "usage", "timing", "batch_id"} <= set(good)
    assert len({line["batch_id"] for line in lines}) == 1
    assert "batch: 200 of 200 requests (180 succeeded, 20 failed)" in result.stderr
    assert "requests/min" in result.stderr and "tokens" in result.stderr
    assert "Traceback" not in result.stderr


def test_every_request_is_a_run_in_the_journal(tmp_path: Path) -> None:
    requests, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_requests(requests, 12)
    with batch_server() as (fake, _):
        result = run_cli("batch", str(requests), "-o", str(out), *flags(fake.url, "-q"))
    assert result.returncode == 1, result.stderr
    journal = Journal(default_journal_path())
    for line in read_output(out):
        assert journal.load(line["run_id"]).status == line["status"]


def test_all_succeeded_exits_0_and_plain_text_from_stdin_works(tmp_path: Path) -> None:
    text = "".join(f"req-{n} write a joke\n\n" for n in range(1, 6))
    with batch_server() as (fake, _):
        result = subprocess.run(
            [sys.executable, "-m", "overseer", "batch", "-", *flags(fake.url, "-q")],
            input=text,
            capture_output=True,
            text=True,
            timeout=60,
            env=_env(),
        )
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert sorted(line["id"] for line in lines) == [1, 3, 5, 7, 9]  # line numbers
    assert {line["status"] for line in lines} == {"succeeded"}
    assert result.stderr == ""


def test_a_malformed_line_is_reported_by_number_skipped_and_exits_2(tmp_path: Path) -> None:
    requests = tmp_path / "in.jsonl"
    requests.write_text('"req-1 write"\n{"request": "req-2 write"\nnot json\n"req-4 write"\n')
    with batch_server() as (fake, state):
        result = run_cli("batch", str(requests), *flags(fake.url, "-q"))
    assert result.returncode == 2
    assert "line 2: not valid JSON" in result.stderr and "line 3: not valid JSON" in result.stderr
    assert "'not json'" in result.stderr and "(skipped)" in result.stderr
    assert sorted(json.loads(line)["id"] for line in result.stdout.splitlines()) == [1, 4]
    assert set(state.planned) == {"req-1", "req-4"}


def test_strict_stops_at_a_bad_line_before_anything_runs(tmp_path: Path) -> None:
    requests = tmp_path / "in.jsonl"
    requests.write_text('"req-1 write"\n[1, 2]\n')
    with batch_server() as (fake, state):
        result = run_cli("batch", str(requests), "--strict", *flags(fake.url, "-q"))
    assert result.returncode == 2
    assert "line 2: expected a string or an object with 'request', got '[1, 2]'" in result.stderr
    assert "nothing was run (--strict)" in result.stderr
    assert result.stdout == "" and not state.planned
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--cluster", "somewhere"],
            "--cluster must be tcp://HOST:PORT or local:N, got 'somewhere'",
        ),
        (["--cluster", "local:0"], "got 'local:0'"),
        (["--concurrency", "0"], "at least 1, got '0'"),
    ],
)
def test_bad_flags_are_one_line_and_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    requests = tmp_path / "in.txt"
    requests.write_text("req-1 write\n")
    result = run_cli("batch", str(requests), "--base-url", "http://127.0.0.1:9/v1", *args)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


def test_a_missing_request_file_is_named(tmp_path: Path) -> None:
    result = run_cli("batch", str(tmp_path / "nope.jsonl"), "--base-url", "http://127.0.0.1:9/v1")
    assert result.returncode == 2
    assert f"the request file {str(tmp_path / 'nope.jsonl')!r} does not exist" in result.stderr


def test_a_rerun_skips_what_succeeded_and_runs_failed_ones_again(tmp_path: Path) -> None:
    requests, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    ids = write_requests(requests, 20)
    with batch_server() as (fake, _):
        first = run_cli("batch", str(requests), "-o", str(out), *flags(fake.url, "-q"))
    assert first.returncode == 1
    batch_id = read_output(out)[0]["batch_id"]
    with batch_server() as (fake, state):
        second = run_cli("batch", str(requests), "-o", str(out), *flags(fake.url))
    assert second.returncode == 1  # the failing ones fail again
    assert set(state.planned) == {"req-10", "req-20"}
    lines = read_output(out)
    assert sorted(line["id"] for line in lines) == sorted(ids)
    assert {line["batch_id"] for line in lines} == {batch_id}
    assert "skipping 18 requests that already succeeded" in second.stderr


def test_a_batch_killed_midway_reruns_only_the_missing_and_failed(tmp_path: Path) -> None:
    requests, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    ids = write_requests(requests, 40)
    with batch_server() as (fake, state):
        state.hold_from = 26  # from the 26th request on, plan calls wait until after the kill
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "overseer",
                "batch",
                str(requests),
                "-o",
                str(out),
                *flags(fake.url, "-q", "--concurrency", "4"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=_env(),
        )
        state.wait_held(4)  # 4 requests in flight, all held: kill it now
        process.send_signal(signal.SIGKILL)
        process.wait(30)
        state.release.set()
    before = read_output(out)
    done = {line["id"] for line in before if line["status"] == "succeeded"}
    assert len({line["id"] for line in before}) == len(before) and 15 <= len(before) <= 25
    with batch_server() as (fake, state):
        rerun = run_cli("batch", str(requests), "-o", str(out), *flags(fake.url, "-q"))
    assert rerun.returncode == 1
    assert {f"id-{name.split('-')[1]}" for name in state.planned} == set(ids) - done
    after = read_output(out)
    assert sorted(line["id"] for line in after) == sorted(ids)
    assert all(line["status"] == expected_status(line["id"]) for line in after)


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "OVERSEER_C"))}


def test_progress_lines_and_a_closing_line_on_a_pipe(tmp_path: Path) -> None:
    requests = tmp_path / "in.txt"
    requests.write_text("".join(f"{request_text(n)}\n" for n in range(1, 4)))
    with batch_server() as (fake, _):
        result = run_cli("batch", str(requests), *flags(fake.url))
    closing = result.stderr.strip().splitlines()[-1]
    assert closing.startswith("batch: 3 of 3 requests (3 succeeded, 0 failed) in ")
    assert "\x1b[" not in result.stderr  # no terminal codes on a pipe


def test_cluster_without_distributed_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from overseer.interfaces.cli import main

    monkeypatch.setitem(sys.modules, "distributed", None)  # as if it were not installed
    requests = tmp_path / "in.txt"
    requests.write_text("req-1 write\n")
    code = main(["batch", str(requests), "--cluster", "local:2", "--base-url", "http://x/v1"])
    assert code == 2
    assert "pip install 'overseer[dask]'" in capsys.readouterr().err


def test_the_batch_section_of_the_config_gives_the_defaults(tmp_path: Path) -> None:
    from overseer.config import load_settings

    assert load_settings().batch.concurrency == 4 and load_settings().batch.cluster is None
    config = tmp_path / "config.yaml"
    config.write_text("batch:\n  concurrency: 0\n")
    result = run_cli("batch", "-", "--config", str(config))
    assert result.returncode == 2 and "batch.concurrency" in result.stderr


def test_ctrl_c_keeps_what_finished_and_a_rerun_completes(tmp_path: Path) -> None:
    requests, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    ids = write_requests(requests, 12)
    with batch_server() as (fake, state):
        state.hold_from = 6
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "overseer", "batch", str(requests), "-o", str(out)),
                *flags(fake.url, "-q", "--concurrency", "2"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(),
        )
        state.wait_held(2)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
        state.release.set()
    assert process.returncode == 130, stderr
    assert "interrupted; run the same command again" in stderr and "Traceback" not in stderr
    done = {line["id"] for line in read_output(out)}
    assert done <= {f"id-{n}" for n in range(1, 6)} and len(done) >= 3  # the last may be unwritten
    with batch_server() as (fake, state):
        rerun = run_cli("batch", str(requests), "-o", str(out), *flags(fake.url, "-q"))
    assert rerun.returncode == 1
    assert {f"id-{name.split('-')[1]}" for name in state.planned} == set(ids) - done
    assert sorted(line["id"] for line in read_output(out)) == sorted(ids)
