"""Hostile replies, flags and configs (issue 11) through the real command: a subprocess talking
HTTP to a fake server on 127.0.0.1. Each ends in one line on stderr and the exit code DESIGN.md
gives, never a traceback or a hang."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.clihelp import SHARED_FLAGS, json_out, responder, run_cli
from tests.fake_openai import FakeOpenAI, FakeReply
from tests.fakes import plan_json
from tests.test_config import BOMB

PLAN = plan_json(("step1", "Write a joke", "content_generator", []))
DEEP_PLAN = '{"steps": ' + "[" * 200_000 + "]" * 200_000 + "}"
NOWHERE = "http://127.0.0.1:9/v1"  # no test here may reach a server


@pytest.fixture
def server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(responder([PLAN])) as fake:
        yield fake


def base(fake: FakeOpenAI, *extra: str) -> list[str]:
    return ["--base-url", fake.url, "--model", "m", "-q", *extra]


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr and lines[0].startswith("overseer: error: ")
    return lines[0]


def hostile_plans(text: str) -> FakeOpenAI:
    """A server whose every plan reply is ``text`` (so repairs get it too)."""
    return FakeOpenAI(responder([text] * 3))


# -- replies ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text", ["{" * 100_000, DEEP_PLAN, "```" + "a" * 100_000], ids=["open", "deep", "fence"]
)
def test_a_hostile_plan_reply_exits_3_with_one_line(text: str) -> None:
    with hostile_plans(text) as fake:
        result = run_cli("plan", "x", *base(fake))
        plans = len(fake.requests)
    assert result.returncode == 3, result.stderr
    line = one_line(result.stderr)
    assert line.startswith("overseer: error: no valid plan after 3 attempts: ")
    assert plans == 3


def test_a_deeply_nested_http_body_for_the_plan_exits_3_with_one_line() -> None:
    body = DEEP_PLAN.encode()
    with FakeOpenAI(lambda _: FakeReply(raw_body=body, headers={"Content-Type": "x"})) as fake:
        result = run_cli("plan", "x", *base(fake))
    assert result.returncode == 3, result.stderr
    line = one_line(result.stderr)
    assert "nested too deeply" in line and len(line) < 400


def test_a_huge_bad_reply_is_not_sent_back_whole() -> None:
    with FakeOpenAI(responder(["no plan here " * 60_000, PLAN])) as fake:  # 780 KB
        result = run_cli("plan", "x", *base(fake))
        repair = fake.requests[1]
    assert result.returncode == 0, result.stderr
    assert len(json.dumps(repair)) < 60_000


def test_a_blank_description_is_an_invalid_plan_and_nothing_runs() -> None:
    blank = plan_json(("step1", "   ", "content_generator", []))
    with hostile_plans(blank) as fake:
        result = run_cli("x", *base(fake))
        sent = len(fake.requests)
    assert result.returncode == 3
    assert "description: must not be blank" in one_line(result.stderr)
    assert sent == 3  # three plans, no step


def test_numeric_step_ids_are_named_as_such() -> None:
    text = json.dumps({"steps": [{"step_id": 1, "description": "d", "tool": "general"}]})
    with hostile_plans(text) as fake:
        result = run_cli("plan", "x", *base(fake))
    line = one_line(result.stderr)
    assert "step_id: must be a string such as 'step1', got 1" in line
    assert "no steps" not in line


# -- flags -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("timeout", ["inf", "1e10", "1e308"])
def test_a_huge_step_timeout_means_none(server: FakeOpenAI, timeout: str) -> None:
    result = run_cli("x", *base(server, "--json", "--step-timeout", timeout))
    assert result.returncode == 0, result.stderr
    assert json_out(result)["status"] == "succeeded"


def test_inf_as_the_step_timeout_in_the_config_means_none(
    server: FakeOpenAI, tmp_path: Path
) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("run:\n  step_timeout: .inf\n")
    result = run_cli("x", *base(server, "--config", str(config)))
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--step-timeout", "nan"], "argument --step-timeout: must be a number of seconds above 0"),
        (["--max-workers", "100000"], "--max-workers: Input should be less than or equal to 256"),
        (["--max-workers", "1e3"], "argument --max-workers: must be a whole number of at least 1"),
    ],
)
def test_a_bad_flag_is_blamed_on_the_flag(args: list[str], expected: str) -> None:
    result = run_cli("x", "--base-url", NOWHERE, *args)
    assert result.returncode == 2
    line = one_line(result.stderr)
    assert expected in line and "packaged defaults" not in line


def test_doctor_takes_the_shared_flags() -> None:
    result = run_cli("doctor", "--help")
    for flag in SHARED_FLAGS:
        assert flag in result.stdout
    checked = run_cli(
        "doctor", "--json", "--planner-model", "X", "--max-workers", "2", "--base-url", NOWHERE
    )
    checks = {c["name"]: c for c in json_out(checked)["checks"]}
    assert checks["config"]["status"] == "ok", checks


# -- configs ---------------------------------------------------------------------------------------


def test_an_alias_bomb_through_config_is_one_line(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(BOMB)
    result = run_cli("x", "--config", str(bomb), "--base-url", NOWHERE)
    assert result.returncode == 2
    assert "expands to more than 100,000 values" in one_line(result.stderr)


def test_an_alias_bomb_in_the_current_directory_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text(BOMB)
    result = _run_in(tmp_path, "x", "--base-url", NOWHERE)
    assert result.returncode == 2
    assert "'config.yaml' expands to more than" in one_line(result.stderr)


def test_a_config_that_is_not_utf8_is_one_line(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_bytes(b"backend:\n  model: \xff\xfe\n")
    result = run_cli("x", "--config", str(config), "--base-url", NOWHERE)
    assert result.returncode == 2
    assert "is not UTF-8 text" in one_line(result.stderr)


@pytest.mark.parametrize("kind", ["directory", "device"])
def test_a_config_that_is_not_a_file_says_what_it_is(tmp_path: Path, kind: str) -> None:
    path = str(tmp_path) if kind == "directory" else "/dev/null"
    result = run_cli("x", "--config", path, "--base-url", NOWHERE)
    assert result.returncode == 2
    assert f"is a {kind}, not a file" in one_line(result.stderr)


def _run_in(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "OVERSEER_C"))}
    return subprocess.run(
        [sys.executable, "-m", "overseer", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
