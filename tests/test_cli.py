"""The ``overseer`` command end to end: a real subprocess, real HTTP to a fake server."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.clihelp import (
    SHARED_FLAGS,
    json_out,
    problem_lines,
    responder,
    role_of,
    run_cli,
    user_text,
)
from tests.fake_openai import FakeOpenAI, FakeReply
from tests.fakes import plan_json

JOKE = plan_json(
    ("step1", "Write a joke", "content_generator", []),
    ("step2", "Translate the joke to French", "translator", ["step1"]),
    ("step3", "Translate the joke to Spanish", "translator", ["step1"]),
)
KEY = "sk-test-secret-0123456789"


@pytest.fixture
def server() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI(responder([JOKE]))
    with fake:
        yield fake


def base(fake: FakeOpenAI, *extra: str) -> list[str]:
    return ["--base-url", fake.url, "--model", "m", *extra]


def test_a_request_prints_the_answer_on_stdout_and_progress_on_stderr(server: FakeOpenAI) -> None:
    result = run_cli("write a joke and translate it", *base(server))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "THE ANSWER\n"
    assert "step1" in result.stderr and "run succeeded" in result.stderr
    assert "critical path" in result.stderr and "tokens" in result.stderr
    assert "Traceback" not in result.stderr


def test_json_prints_exactly_one_design_object(server: FakeOpenAI) -> None:
    result = run_cli("jokes", *base(server, "--json"))
    assert result.returncode == 0, result.stderr
    data = json_out(result)
    assert data["status"] == "succeeded" and data["request"] == "jokes"
    assert data["answer"] == "THE ANSWER"
    assert [s["step_id"] for s in data["plan"]["steps"]] == ["step1", "step2", "step3"]
    assert {s["status"] for s in data["steps"]} == {"succeeded"}
    assert data["steps"][1]["output"].startswith("did: Translate the joke to French")
    assert data["usage"]["total_tokens"] == sum(
        data["usage"][k] for k in ("prompt_tokens", "completion_tokens")
    )
    assert set(data["timing"]) >= {"wall_s", "plan_s", "steps_sum_s", "critical_path_s"}
    assert isinstance(data["run_id"], str) and data["run_id"]


def test_steps_reach_the_server_with_dependency_outputs(server: FakeOpenAI) -> None:
    run_cli("jokes", *base(server, "--quiet"))
    french = next(b for b in server.requests if "French" in user_text(b))
    assert "did: Write a joke" in user_text(french)
    assert [role_of(b) for b in server.requests].count("step") == 3


def test_no_synthesize_prints_each_output_under_its_description(server: FakeOpenAI) -> None:
    result = run_cli("jokes", *base(server, "--no-synthesize", "-q"))
    assert result.returncode == 0
    assert result.stdout.startswith("## Write a joke\n\ndid: Write a joke")
    assert "## Translate the joke to Spanish" in result.stdout
    assert all(role_of(b) != "answer" for b in server.requests)


def test_a_failed_step_exits_1_and_says_why() -> None:
    def step(body: dict[str, Any]) -> FakeReply | str:
        if "French" in user_text(body):
            return FakeReply(status=400, content="bad request")
        return "fine"

    with FakeOpenAI(responder([JOKE], step)) as fake:
        result = run_cli("jokes", *base(fake, "--json"))
    assert result.returncode == 1
    data = json_out(result)
    assert data["status"] == "failed"
    status = {s["step_id"]: s["status"] for s in data["steps"]}
    assert status["step1"] == "succeeded" and status["step2"] == "failed"
    assert "400" in next(s["error"] for s in data["steps"] if s["step_id"] == "step2")
    assert "run failed" in result.stderr and "step2" in result.stderr


def test_continue_runs_everything_that_does_not_depend_on_the_failure() -> None:
    plan = plan_json(
        ("a", "Alpha", "general", []),
        ("b", "Beta", "general", []),
        ("c", "Gamma after beta", "general", ["b"]),
    )

    def step(body: dict[str, Any]) -> FakeReply | str:
        return FakeReply(status=403, content="no") if "Beta" in user_text(body) else "ok"

    with FakeOpenAI(responder([plan], step)) as fake:
        result = run_cli("x", *base(fake, "--json", "--on-error", "continue"))
    assert result.returncode == 1
    status = {s["step_id"]: s["status"] for s in json_out(result)["steps"]}
    assert status == {"a": "succeeded", "b": "failed", "c": "skipped"}


def test_transient_server_errors_are_retried_by_the_one_retry_layer() -> None:
    calls = {"n": 0}

    def step(body: dict[str, Any]) -> FakeReply | str:
        calls["n"] += 1
        return FakeReply(status=503, headers={"Retry-After": "0"}) if calls["n"] == 1 else "ok"

    plan = plan_json(("a", "Alpha", "general", []))
    with FakeOpenAI(responder([plan], step)) as fake:
        result = run_cli("x", *base(fake, "--json"))
    assert result.returncode == 0, result.stderr
    assert calls["n"] == 2


def test_an_invalid_plan_is_repaired() -> None:
    bad = plan_json(("a", "Alpha", "painter", []))
    with FakeOpenAI(responder([bad, JOKE])) as fake:
        result = run_cli("x", *base(fake, "--json"))
        plans = [b for b in fake.requests if role_of(b) == "plan"]
    assert result.returncode == 0, result.stderr
    assert len(plans) == 2
    assert "'painter'" in plans[1]["messages"][-1]["content"]


def test_no_valid_plan_exits_3_with_what_was_wrong_and_runs_nothing() -> None:
    cyclic = plan_json(("a", "A", "general", ["b"]), ("b", "B", "general", ["a"]))
    with FakeOpenAI(responder([cyclic, cyclic, cyclic])) as fake:
        result = run_cli("x", *base(fake))
        roles = [role_of(b) for b in fake.requests]
    assert result.returncode == 3
    assert result.stdout == ""
    assert result.stderr.strip().splitlines()[-1].startswith("overseer: error: no valid plan")
    assert "cycle" in result.stderr and "Traceback" not in result.stderr
    assert roles == ["plan", "plan", "plan"]


def test_plan_command_prints_the_validated_plan_only() -> None:
    with FakeOpenAI(responder([JOKE])) as fake:
        result = run_cli("plan", "jokes", *base(fake))
        roles = [role_of(b) for b in fake.requests]
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == json.loads(JOKE)
    assert roles == ["plan"]


def test_the_budget_stops_the_run_with_exit_1() -> None:
    plan = plan_json(("a", "A", "general", []), ("b", "B", "general", ["a"]))
    big = {"prompt_tokens": 500, "completion_tokens": 500, "total_tokens": 1000}

    def step(body: dict[str, Any]) -> FakeReply:
        return FakeReply(content="x", usage=big)

    with FakeOpenAI(responder([plan], step)) as fake:
        result = run_cli("x", *base(fake, "--json", "--max-tokens", "900"))
    assert result.returncode == 1
    data = json_out(result)
    assert "budget" in data["reason"]
    assert {s["step_id"]: s["status"] for s in data["steps"]}["b"] == "cancelled"


def test_the_step_timeout_fails_a_hung_step() -> None:
    release = threading.Event()
    plan = plan_json(("a", "Hang", "general", []), ("b", "Quick", "general", []))

    def step(body: dict[str, Any]) -> FakeReply | str:
        return FakeReply(content="late", wait=release) if "Hang" in user_text(body) else "ok"

    try:
        with FakeOpenAI(responder([plan], step)) as fake:
            result = run_cli(
                "x", *base(fake, "--json", "--step-timeout", "1", "--on-error", "continue")
            )
    finally:
        release.set()
    assert result.returncode == 1
    steps = {s["step_id"]: s for s in json_out(result)["steps"]}
    assert steps["a"]["status"] == "failed" and "timed out" in steps["a"]["error"]
    assert steps["b"]["status"] == "succeeded"


@pytest.mark.parametrize(
    "args",
    [
        ["--bogus", "x"],
        ["x", "--max-workers", "zero"],
        ["x", "--max-workers", "0"],
        ["x", "--on-error", "explode"],
        ["x", "--step-timeout", "-1"],
        [""],
        [],
    ],
)
def test_bad_usage_is_one_line_and_exit_2(args: list[str]) -> None:
    result = run_cli(*args, "--base-url", "http://127.0.0.1:9/v1") if args else run_cli()
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("overseer: error:"), result.stderr


def test_a_broken_config_file_is_one_line_and_exit_2(tmp_path: Path) -> None:
    broken = tmp_path / "config.yaml"
    broken.write_text("run:\n  max_workers: [1,\n")
    result = run_cli("x", "--config", str(broken))
    assert result.returncode == 2
    [line] = problem_lines(result.stderr)
    assert str(broken) in line and "YAML" in line


def test_a_bad_config_value_is_one_line_and_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "c.yaml"
    bad.write_text("run:\n  on_error: sometimes\n")
    result = run_cli(
        "x", env={"OVERSEER_CONFIG": str(bad), "OPENAI_BASE_URL": "http://127.0.0.1:9/v1"}
    )
    assert result.returncode == 2
    [line] = problem_lines(result.stderr)
    assert "run.on_error" in line and "'sometimes'" in line


def test_a_rejected_key_is_a_configuration_error_without_the_key() -> None:
    def respond(body: dict[str, Any]) -> FakeReply:
        return FakeReply(status=401, content=f"Incorrect API key provided: {KEY}")

    with FakeOpenAI(respond) as fake:
        result = run_cli("x", *base(fake), env={"OPENAI_API_KEY": KEY})
        sent = fake.headers[0].get("Authorization") or fake.headers[0].get("authorization")
    assert result.returncode == 2
    assert sent == f"Bearer {KEY}"
    assert KEY not in result.stderr and KEY not in result.stdout
    [line] = problem_lines(result.stderr)
    assert "401" in line


def test_a_server_answering_garbage_is_one_clear_line() -> None:
    def respond(body: dict[str, Any]) -> FakeReply:
        return FakeReply(raw_body=b"<html>502 Bad Gateway</html>")

    cfg = ["--config", str(Path(__file__).parent / "data" / "fast_retry.yaml")]
    with FakeOpenAI(respond) as fake:
        result = run_cli("x", *base(fake, *cfg))
    assert result.returncode == 3
    [line] = problem_lines(result.stderr)
    assert line.startswith("overseer: error: no plan could be obtained")


def test_an_unreachable_server_is_one_clear_line() -> None:
    cfg = ["--config", str(Path(__file__).parent / "data" / "fast_retry.yaml")]
    result = run_cli("x", "--base-url", "http://127.0.0.1:9/v1", *cfg)
    assert result.returncode == 3
    [line] = problem_lines(result.stderr)
    assert "127.0.0.1:9" in line or "connect" in line.lower()


def test_no_backend_is_a_configuration_error_naming_the_ways_to_get_one(tmp_path: Path) -> None:
    config = tmp_path / "no-local.yaml"  # the embedded model may be installed: turn it off
    config.write_text("local:\n  enabled: false\n")
    result = run_cli("x", "--config", str(config))
    assert result.returncode == 2
    assert "OPENAI_API_KEY" in result.stderr and "--base-url" in result.stderr


def test_no_color_and_a_pipe_give_plain_progress(server: FakeOpenAI) -> None:
    result = run_cli("jokes", *base(server), env={"NO_COLOR": "1"})
    assert "\x1b[" not in result.stderr
    assert "[" in result.stderr and "step1 started" in result.stderr


def test_version_and_help() -> None:
    assert run_cli("--version").stdout.startswith("overseer ")
    help_text = run_cli("--help").stdout
    for flag in SHARED_FLAGS:
        assert flag in help_text


def test_a_failed_final_answer_is_explained_on_stderr_and_the_outputs_printed() -> None:
    def respond(body: dict[str, Any]) -> FakeReply | str:
        if role_of(body) == "answer":
            return FakeReply(status=400, content="too long")
        return responder([JOKE])(body) if role_of(body) == "plan" else "out"

    with FakeOpenAI(respond) as fake:
        result = run_cli("jokes", *base(fake, "-q"))
    assert result.returncode == 0
    assert result.stdout.startswith("## Write a joke")
    assert "warning: the final answer could not be composed" in result.stderr
