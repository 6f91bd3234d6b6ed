"""SIGTERM and SIGHUP are handled as Ctrl-C is (issue 11): a real ``overseer`` subprocess talking
HTTP to a fake server on 127.0.0.1 gets the signal while a step is in flight; it stops the steps,
removes the node's folder, records the run as stopped (``cancelled``, as Ctrl-C does: resumable,
with the signal as its reason), prints the usual lines (or the
``--json`` object) and exits 143 or 129; ``overseer resume ID`` then finishes the run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from overseer.errors import EXIT_HANGUP, EXIT_TERMINATED, Terminated
from overseer.interfaces.signals import handling_signals, raise_if_terminated, received
from overseer.journal.store import Journal
from tests.clihelp import responder, role_of, user_text
from tests.fake_openai import FakeOpenAI, FakeReply
from tests.fakes import plan_json
from tests.replhelp import chat_env, child_processes
from tests.test_cli_runs import FOUR, WAIT, child_env, cli, command, flags, step_counts

SIGNALS = [
    pytest.param(signal.SIGTERM, EXIT_TERMINATED, "terminated (SIGTERM)", id="SIGTERM"),
    pytest.param(signal.SIGHUP, EXIT_HANGUP, "hung up (SIGHUP)", id="SIGHUP"),
]
CODE_PLAN = plan_json(("step1", "Count the fruits with code", "code", []))
HELD_NODE = """```python
from node_runtime import call_tool
print(call_tool("translator", "To French: apple"))
```"""


class Held:
    """Holds the first request whose user text starts with ``prefix`` until ``release``."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.arrived = threading.Event()
        self.release = threading.Event()
        self._lock = threading.Lock()
        self._held = False

    def step(self, body: dict[str, Any]) -> FakeReply | str:
        text = user_text(body).splitlines()[0]
        with self._lock:
            first = text.startswith(self.prefix) and not self._held
            self._held = self._held or first
        if first:
            self.arrived.set()
            return FakeReply(content="never delivered", wait=self.release)
        return "did: " + text


def start(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        args,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env or child_env(),
        cwd=cwd,
    )


def signal_when(proc: subprocess.Popen[str], held: Held, signum: int) -> tuple[str, str]:
    """Send ``signum`` once the held request is in flight; the output once the process ended."""
    try:
        assert held.arrived.wait(WAIT), "the held request never reached the server"
        proc.send_signal(signum)
        return proc.communicate(timeout=WAIT)
    finally:
        held.release.set()
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=WAIT)


@pytest.fixture
def held_gamma() -> Iterator[tuple[Held, FakeOpenAI]]:
    held = Held("Gamma")
    with FakeOpenAI(responder([FOUR], held.step)) as fake:
        yield held, fake


@pytest.mark.parametrize(("signum", "code", "reason"), SIGNALS)
def test_a_signal_during_a_step_is_recorded_as_interrupted_and_resumes(
    held_gamma: tuple[Held, FakeOpenAI], tmp_path: Path, signum: int, code: int, reason: str
) -> None:
    held, fake = held_gamma
    proc = start(command("four parts", *flags(fake, "--json")), tmp_path)
    out, err = signal_when(proc, held, signum)
    assert proc.returncode == code, err
    data = json.loads(out)  # the one --json object, as after Ctrl-C
    assert data["status"] == "failed" and data["reason"] == reason
    statuses = {s["step_id"]: s["status"] for s in data["steps"]}
    assert statuses["a"] == statuses["b"] == "succeeded" and statuses["c"] == "cancelled"
    run_id = data["run_id"]
    assert err.splitlines()[-1] == f"overseer: to continue it: overseer resume {run_id}"
    assert "Traceback" not in err
    [listed] = json.loads(cli("runs", "--json", cwd=tmp_path).stdout)
    assert listed["run_id"] == run_id
    assert listed["status"] == "cancelled" and listed["steps_done"] == 2  # as after Ctrl-C
    assert reason in cli("runs", "show", run_id, cwd=tmp_path).stdout
    resumed = cli("resume", run_id, *flags(fake), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout == "THE ANSWER\n"
    counts = step_counts(fake)
    assert counts["Alpha part"] == counts["Beta part"] == 1 and counts["plan"] == 1
    assert Journal().load(run_id).status == "succeeded"


def test_sigterm_in_text_mode_prints_the_usual_lines(
    held_gamma: tuple[Held, FakeOpenAI], tmp_path: Path
) -> None:
    held, fake = held_gamma
    proc = start(command("four parts", *flags(fake)), tmp_path)
    out, err = signal_when(proc, held, signal.SIGTERM)
    assert proc.returncode == EXIT_TERMINATED
    run_id = Journal().list_runs()[0].run_id
    assert err.splitlines()[-2:] == [
        "overseer: run failed: terminated (SIGTERM)",
        f"overseer: to continue it: overseer resume {run_id}",
    ]
    assert "did: Alpha part" in out and "THE ANSWER" not in out


def test_sigterm_while_planning_exits_143_in_one_line(tmp_path: Path) -> None:
    held = Held("")

    def respond(body: dict[str, Any]) -> FakeReply | str:
        return held.step(body) if role_of(body) == "plan" else "x"

    with FakeOpenAI(respond) as fake:
        proc = start(command("anything", *flags(fake)), tmp_path)
        out, err = signal_when(proc, held, signal.SIGTERM)
    assert proc.returncode == EXIT_TERMINATED
    assert out == "" and err.strip().splitlines() == ["overseer: terminated (SIGTERM)"]
    [summary] = Journal().list_runs()
    assert Journal().load(summary.run_id).status == "cancelled"


def test_sigterm_during_a_code_node_removes_its_folder(tmp_path: Path) -> None:
    held = Held("To French")
    temp = tmp_path / "tmp"
    temp.mkdir()

    def respond(body: dict[str, Any]) -> FakeReply | str:
        system = body["messages"][0]["content"]
        if role_of(body) == "plan":
            return CODE_PLAN
        if system.startswith("You write one small Python 3 program"):
            return HELD_NODE
        return held.step(body)

    with FakeOpenAI(respond) as fake:
        env = child_env({"TMPDIR": str(temp)})
        proc = start(command("count", *flags(fake, "--json")), tmp_path, env)
        assert held.arrived.wait(WAIT), "the node's call never reached the server"
        folders = list(temp.glob("overseer-node-*"))
        assert folders, "the node's folder was not where TMPDIR says"
        out, err = signal_when(proc, held, signal.SIGTERM)
    assert proc.returncode == EXIT_TERMINATED, err
    assert json.loads(out)["steps"][0]["status"] == "cancelled"
    assert list(temp.glob("overseer-node-*")) == []  # input.json held the step's task
    assert child_processes(proc.pid) == []


def test_sigterm_ends_a_piped_chat_with_143(tmp_path: Path) -> None:
    held = Held("Write")
    with FakeOpenAI(responder([plan_json(("s1", "Write", "general", []))] * 2, held.step)) as fake:
        proc = subprocess.Popen(
            [sys.executable, "-m", "overseer", "chat", "--base-url", fake.url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=chat_env(tmp_path),
        )
        assert proc.stdin is not None
        proc.stdin.write("write a thing\nnever run\n")
        proc.stdin.flush()
        out, err = signal_when(proc, held, signal.SIGTERM)
    assert proc.returncode == EXIT_TERMINATED, err
    assert "Traceback" not in err and "never delivered" not in out
    assert [role_of(b) for b in fake.requests] == ["plan", "step"]  # the next line never ran


def test_a_hangup_ignored_at_start_stays_ignored(
    held_gamma: tuple[Held, FakeOpenAI], tmp_path: Path
) -> None:
    """``nohup overseer ...``: the run goes on after SIGHUP."""
    held, fake = held_gamma
    proc = subprocess.Popen(
        command("four parts", *flags(fake)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=child_env(),
        cwd=tmp_path,
        preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN),
    )
    try:
        assert held.arrived.wait(WAIT)
        proc.send_signal(signal.SIGHUP)
    finally:
        held.release.set()
    out, err = proc.communicate(timeout=WAIT)
    assert proc.returncode == 0, err  # the held reply was sent on release: the run went on
    assert "hung up" not in err and out == "THE ANSWER\n"


# -- in process ------------------------------------------------------------------------------------


def test_a_signal_inside_the_block_raises_terminated_and_is_remembered() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with handling_signals():
        with pytest.raises(Terminated) as caught:
            os.kill(os.getpid(), signal.SIGTERM)
            threading.Event().wait(WAIT)  # the handler raises here, at once
        assert caught.value.exit_code == EXIT_TERMINATED
        assert str(caught.value) == "terminated (SIGTERM)"
        assert isinstance(caught.value, KeyboardInterrupt)
        assert received() == signal.SIGTERM
        with pytest.raises(Terminated):
            raise_if_terminated()
    assert received() is None
    assert signal.getsignal(signal.SIGTERM) == before


def test_nothing_is_raised_again_without_a_signal() -> None:
    with handling_signals():
        raise_if_terminated()
        assert received() is None


def test_outside_the_main_thread_nothing_is_installed() -> None:
    seen: list[object] = []

    def body() -> None:
        with handling_signals():
            seen.append(signal.getsignal(signal.SIGTERM))

    thread = threading.Thread(target=body)
    thread.start()
    thread.join(WAIT)
    assert seen == [signal.getsignal(signal.SIGTERM)]


def test_a_hangup_with_the_output_gone_still_exits_129(
    held_gamma: tuple[Held, FakeOpenAI], tmp_path: Path
) -> None:
    """After SIGHUP the terminal may be gone; writing the --json object then fails."""
    held, fake = held_gamma
    proc = start(command("four parts", *flags(fake, "--json")), tmp_path)
    assert proc.stdout is not None
    proc.stdout.close()  # writes to stdout now fail with a broken pipe
    _, err = signal_when(proc, held, signal.SIGHUP)
    assert proc.returncode == EXIT_HANGUP, err
    assert "Traceback" not in err
    [summary] = Journal().list_runs()
    assert Journal().load(summary.run_id).status == "cancelled"
