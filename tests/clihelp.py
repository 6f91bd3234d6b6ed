"""Run the real ``overseer`` command in a subprocess against a fake server on 127.0.0.1."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Mapping
from typing import Any

from tests.fake_openai import FakeReply

SHARED_FLAGS = (
    "--config",
    "--base-url",
    "--model",
    "--planner-model",
    "--max-workers",
    "--step-timeout",
    "--on-error",
    "--max-tokens",
    "--json",
)
"""The flags DESIGN.md says every command that plans or runs takes."""

PLAN_SYSTEM_MARK = "You are the planner"
JOIN_SYSTEM_MARK = "You are the joiner"
ANSWER_SYSTEM_MARK = "final answer"
JOIN_ANSWER = FakeReply(
    content=json.dumps({"decision": "answer", "reason": "covered", "steps": []}),
    usage={"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
)
"""The joiner's "answer", free of tokens, so that figures written before it still add up."""


_PROGRESS = re.compile(r"^\[\s*\d+(\.\d+)?s\] ")


def problem_lines(stderr: str) -> list[str]:
    """stderr less the display's progress lines ("[   0.01s] planning…"): what a failure said."""
    return [line for line in stderr.strip().splitlines() if not _PROGRESS.match(line)]


def role_of(body: Mapping[str, Any]) -> str:
    """'plan', 'join', 'answer' or 'step', from the system prompt of a chat request."""
    system = body["messages"][0]["content"]
    if system.startswith(PLAN_SYSTEM_MARK):
        return "plan"
    if system.startswith(JOIN_SYSTEM_MARK):
        return "join"
    return "answer" if ANSWER_SYSTEM_MARK in system else "step"


def user_text(body: Mapping[str, Any]) -> str:
    return str(body["messages"][-1]["content"])


def responder(
    plans: list[str], step: Callable[[dict[str, Any]], FakeReply | str] | None = None
) -> Callable[[dict[str, Any]], FakeReply | str]:
    """Plans in order for planner requests; ``step`` for steps; a fixed final answer."""
    queue = list(plans)

    def respond(body: dict[str, Any]) -> FakeReply | str:
        kind = role_of(body)
        if kind == "plan":
            return queue.pop(0) if queue else FakeReply(status=500, content="no more plans")
        if kind == "answer":
            return "THE ANSWER"
        if kind == "join":
            return JOIN_ANSWER
        return step(body) if step else "did: " + user_text(body).splitlines()[0]

    return respond


def run_cli(
    *args: str, env: Mapping[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "OVERSEER_C"))}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "overseer", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def json_out(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(result.stdout)
    return data
