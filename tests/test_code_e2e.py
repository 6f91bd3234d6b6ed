"""A plan with a ``code`` step, end to end: the ``overseer`` command in a subprocess, real HTTP to
the fake server, the step model's reply is the node, and the node calls tools in parallel."""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from overseer.nodes.folders import sweep_stale
from tests.clihelp import json_out, responder, run_cli, user_text
from tests.fake_openai import FakeOpenAI, FakeReply
from tests.fakes import plan_json
from tests.nodehelp import processes_with

KEY = "sk-e2e-secret-abcdef0123456789"
PLAN = plan_json(
    ("step1", "List three fruits", "content_generator", []),
    ("step2", "Translate each fruit into French and count them", "code", ["step1"]),
)
NODE = """Here you go:

```python
import json, sys
from node_runtime import call_tools_parallel

data = json.load(sys.stdin)
fruits = data["inputs"]["step1"].split()
french = call_tools_parallel([("translator", f"To French: {f}") for f in fruits])
environ = open("/proc/self/environ", "rb").read()
print(json.dumps({
    "count": len(fruits),
    "french": french,
    "env": sorted(v.split(b"=")[0].decode() for v in environ.split(b"\\0") if v),
    "leaked": b"sk-e2e" in environ,
}))
```
"""


def node_script(node: str = NODE, barrier: threading.Barrier | None = None) -> Any:
    def step(body: dict[str, Any]) -> FakeReply | str:
        system = body["messages"][0]["content"]
        if system.startswith("You write one small Python 3 program"):
            return node
        if "translat" in system.lower():
            if barrier is not None:
                barrier.wait()  # the three translations must be in flight together
            return "fr:" + user_text(body).split(": ")[-1]
        return "apple banana cherry"

    return step


def fruits(fake: FakeOpenAI, *flags: str) -> subprocess.CompletedProcess[str]:
    """``overseer "translate some fruits" --json`` against ``fake``, with a key in its
    environment (which no node may see)."""
    return run_cli(
        "translate some fruits",
        "--base-url",
        fake.url,
        *flags,
        "--json",
        "--quiet",
        env={"OPENAI_API_KEY": KEY},
        timeout=120,
    )


def test_a_code_step_runs_through_the_command() -> None:
    barrier = threading.Barrier(3, timeout=30)
    with FakeOpenAI(responder([PLAN], node_script(barrier=barrier))) as fake:
        result = fruits(fake)
    assert result.returncode == 0, result.stderr
    data = json_out(result)
    assert data["status"] == "succeeded" and data["answer"] == "THE ANSWER"
    output = json.loads(data["steps"][1]["output"])
    assert output["count"] == 3
    assert output["french"] == ["fr:apple", "fr:banana", "fr:cherry"]
    assert output["leaked"] is False and "OPENAI_API_KEY" not in output["env"]
    node = data["nodes"]["step2"]
    assert node["calls"] == 3 and node["attempts"] == 1
    assert node["isolation"]["backend"] in ("bwrap", "unshare", "none")
    assert KEY not in result.stdout and KEY not in result.stderr


def test_a_node_that_keeps_failing_fails_the_run_with_its_error() -> None:
    broken = "```python\nimport json\nraise SystemExit('no fruit today')\n```"
    with FakeOpenAI(responder([PLAN], node_script(node=broken))) as fake:
        result = fruits(fake)
    assert result.returncode == 1, result.stderr
    data = json_out(result)
    step = data["steps"][1]
    assert step["status"] == "failed"
    assert "the node failed (2 attempts)" in step["error"] and "no fruit today" in step["error"]
    fixes = [b for b in fake.requests if "That node failed" in user_text(b)]
    assert len(fixes) == 1 and "no fruit today" in user_text(fixes[0])
    assert "Traceback" not in result.stderr


LOOPING = "```python\nimport time\nwhile True:\n    time.sleep(0.05)\n```"


def test_a_looping_node_under_step_timeout_is_not_re_asked() -> None:
    """Issue 11: '--step-timeout 3' re-asked the model with no time left, then reported
    'timed out after 0.001s'."""
    with FakeOpenAI(responder([PLAN], node_script(node=LOOPING))) as fake:
        result = fruits(fake, "--step-timeout", "3")
    data = json_out(result)
    error = data["steps"][1]["error"]
    assert "the step's timeout of 3s ran out" in error and "0.001" not in error, error
    assert "(1 attempt)" in error
    assert [b for b in fake.requests if "That node failed" in user_text(b)] == []


def test_the_whole_traceback_is_kept_in_the_journal_not_in_the_error() -> None:
    deep = "```python\ndef f():\n    raise ValueError('bad fruit')\n\nf()\n```"
    with FakeOpenAI(responder([PLAN], node_script(node=deep))) as fake:
        result = fruits(fake)
    data = json_out(result)
    error = data["steps"][1]["error"]
    assert error.endswith("ValueError: bad fruit (node.py line 2)") and "\n" not in error
    shown = run_cli("runs", "show", data["run_id"], "--json", timeout=60)
    node = json_out(shown)["nodes"]["step2"]
    assert node["stderr"].startswith("Traceback") and "in f" in node["stderr"]


SPIN_AFTER_TELLING = """```python
import sys, time
from node_runtime import call_tool
call_tool("translator", "FOLDER " + sys.argv[0])
while True:
    time.sleep(0.05)
```"""
FOLDER = re.compile(r"FOLDER (\S+)/node\.py")


def _start_overseer(url: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "OVERSEER_C"))}
    return subprocess.Popen(
        [sys.executable, "-m", "overseer", "fruits", "--base-url", url, "--json", "--quiet"],
        env={**env, "OPENAI_API_KEY": KEY},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _interrupt_a_running_node(signum: int) -> tuple[Path, int]:
    """Start overseer on a node that tells its folder and spins; signal overseer then.
    Returns the node's folder (holding node.py, input.json and work/) and overseer's status."""
    told: list[str] = []
    running = threading.Event()
    others: Callable[[dict[str, Any]], FakeReply | str] = node_script(node=SPIN_AFTER_TELLING)

    def step(body: dict[str, Any]) -> FakeReply | str:
        found = FOLDER.search(user_text(body))
        if found:
            told.append(found[1])
            running.set()
            return "noted"
        return others(body)

    with FakeOpenAI(responder([PLAN], step)) as fake:
        proc = _start_overseer(fake.url)
        try:
            assert running.wait(60), "the node never ran"
            proc.send_signal(signum)
            proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return Path(told[0]), proc.returncode


def test_ctrl_c_while_a_node_runs_removes_its_folder_and_its_processes() -> None:
    folder, code = _interrupt_a_running_node(signal.SIGINT)
    assert code == 130
    assert not folder.exists()  # with input.json, which holds the step's task
    assert processes_with(str(folder)) == []


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_or_sighup_while_a_node_runs_leaves_no_node_behind(signum: int) -> None:
    """Handled like Ctrl-C, the folder goes at once; killed outright, the next start sweeps it."""
    folder, _ = _interrupt_a_running_node(signum)
    assert wait_gone(folder), "the node outlived overseer"
    assert not folder.exists() or folder in sweep_stale()
    assert not folder.exists()


def wait_gone(folder: Path) -> bool:
    """The node's processes exit once overseer's lifeline closes: wait on their pidfds."""
    fds = []
    for pid in processes_with(str(folder)):
        with contextlib.suppress(OSError):
            fds.append(os.pidfd_open(pid))
    try:
        waiting, deadline = list(fds), time.monotonic() + 30
        while waiting and time.monotonic() < deadline:
            ready, _, _ = select.select(waiting, [], [], deadline - time.monotonic())
            waiting = [fd for fd in waiting if fd not in ready]
        return not waiting
    finally:
        for fd in fds:
            os.close(fd)
