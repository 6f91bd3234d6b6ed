"""``overseer runs``, ``runs show``, ``resume`` and plan pictures, as real subprocesses talking HTTP
to a fake server on 127.0.0.1. The journal lives in the per-test ``$OVERSEER_HOME``."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from overseer.core.plan import parse_plan
from overseer.events import PlanReady, RunStarted
from overseer.journal.store import JOURNAL_FILE, Journal, default_journal_path
from tests.clihelp import responder, role_of
from tests.fake_openai import FakeOpenAI, FakeReply
from tests.fakes import plan_json
from tests.test_graph import DOT_PLAIN, MERMAID_PLAIN

JOKE = plan_json(
    ("step1", "Write a joke", "content_generator", []),
    ("step2", "Translate the joke to French", "translator", ["step1"]),
    ("step3", "Translate the joke to Spanish", "translator", ["step1"]),
)
DIAMOND = plan_json(
    ("step1", "Write a joke", "content_generator", []),
    ("step2", "Translate the joke to French", "translator", ["step1"]),
    ("step3", "Translate the joke to Spanish", "translator", ["step1"]),
    ("step4", "Compare both", "general", ["step2", "step3"]),
)
FOUR = plan_json(
    ("a", "Alpha part", "general", []),
    ("b", "Beta part", "general", []),
    ("c", "Gamma after both", "general", ["a", "b"]),
    ("d", "Delta at the end", "general", ["c"]),
)
KEY = "sk-journal-test-secret-9f8e7d6c5b4a"
WAIT = 60.0  # an upper bound for a broken test, never a pause

StepFn = Callable[[dict[str, Any]], "FakeReply | str"]


# -- helpers ---------------------------------------------------------------------------------------


def first_line(body: dict[str, Any]) -> str:
    return str(body["messages"][-1]["content"]).splitlines()[0]


def step_counts(fake: FakeOpenAI) -> Counter[str]:
    """Requests by step (first line) or role; the joiner's (one a round) are left out."""
    roles = [(role_of(b), b) for b in fake.requests]
    return Counter(first_line(b) if r == "step" else r for r, b in roles if r != "join")


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "OVERSEER_C"))}
    env.update(extra or {})
    return env


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "overseer.interfaces.cli", *args]


def cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command(*args),
        capture_output=True,
        text=True,
        env=child_env(env),
        cwd=cwd,
        timeout=WAIT,
        stdin=subprocess.DEVNULL,
    )


def flags(fake: FakeOpenAI, *extra: str) -> list[str]:
    return ["--base-url", fake.url, "--model", "m", "-q", *extra]


def only_run_id() -> str:
    [summary] = Journal().list_runs()
    return summary.run_id


@pytest.fixture
def server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(responder([JOKE, JOKE, JOKE])) as fake:
        yield fake


# -- the journal after a command run ---------------------------------------------------------------


def test_a_command_run_is_recorded_step_by_step(server: FakeOpenAI, tmp_path: Path) -> None:
    result = cli("write a joke and translate it", *flags(server), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "THE ANSWER\n" and result.stderr == ""
    stored = Journal().load(only_run_id())
    assert stored.status == "succeeded" and stored.request == "write a joke and translate it"
    assert stored.plan is not None and stored.plan.ids == ["step1", "step2", "step3"]
    assert {i: r.output for i, r in stored.records.items()} == {
        "step1": "did: Write a joke",
        "step2": "did: Translate the joke to French",
        "step3": "did: Translate the joke to Spanish",
    }
    assert all(r.attempts == 1 and r.usage.total_tokens > 0 for r in stored.records.values())
    assert stored.answer == "THE ANSWER" and stored.usage.total_tokens > 0


def test_the_api_key_is_never_written_to_the_journal(tmp_path: Path) -> None:
    with FakeOpenAI(responder([JOKE])) as fake:
        result = cli("jokes", *flags(fake), cwd=tmp_path, env={"OPENAI_API_KEY": KEY})
        sent = fake.headers[0].get("authorization")
    assert result.returncode == 0, result.stderr
    assert sent == f"Bearer {KEY}"  # the key was there to leak
    files = list(default_journal_path().parent.iterdir())
    assert default_journal_path() in files
    everything = b"".join(p.read_bytes() for p in files if p.is_file())
    assert b"did: Translate the joke to French" in everything
    assert KEY.encode() not in everything and KEY[-12:].encode() not in everything


# -- runs, runs show -------------------------------------------------------------------------------


def test_runs_lists_newest_first_with_status_and_steps(server: FakeOpenAI, tmp_path: Path) -> None:
    long_request = "please " + "write a very long request " * 5
    for request in ("first request", long_request):
        assert cli(request, *flags(server), cwd=tmp_path).returncode == 0
    result = cli("runs", cwd=tmp_path)
    assert result.returncode == 0 and result.stderr == ""
    header, newest, oldest = result.stdout.splitlines()
    assert header.split() == ["ID", "WHEN", "STATUS", "STEPS", "REQUEST"]
    ids = [s.run_id for s in Journal().list_runs()]
    assert newest.startswith(ids[0]) and oldest.startswith(ids[1])
    assert "succeeded" in newest and " 3/3 " in newest
    assert newest.endswith("...") and len(newest) < len(long_request) + 40
    assert oldest.endswith("first request")


def test_runs_json_is_a_list_of_objects(server: FakeOpenAI, tmp_path: Path) -> None:
    cli("jokes", *flags(server), cwd=tmp_path)
    result = cli("runs", "--json", cwd=tmp_path)
    assert result.returncode == 0
    [run] = json.loads(result.stdout)
    assert set(run) >= {"run_id", "request", "status", "created_at"}
    assert run["request"] == "jokes" and run["status"] == "succeeded"
    assert run["steps_done"] == run["steps_total"] == 3
    assert run["run_id"] == only_run_id()


def test_runs_limit(server: FakeOpenAI, tmp_path: Path) -> None:
    for request in ("one", "two", "three"):
        cli(request, *flags(server), cwd=tmp_path)
    limited = json.loads(cli("runs", "--json", "--limit", "2", cwd=tmp_path).stdout)
    assert [r["request"] for r in limited] == ["three", "two"]
    every = json.loads(cli("runs", "--json", "--limit", "0", cwd=tmp_path).stdout)
    assert len(every) == 3
    bad = cli("runs", "--limit", "-1", cwd=tmp_path)
    assert bad.returncode == 2 and len(bad.stderr.splitlines()) == 1


def test_no_runs_yet(tmp_path: Path) -> None:
    result = cli("runs", cwd=tmp_path)
    assert result.returncode == 0 and result.stdout == ""
    assert "no runs recorded yet" in result.stderr
    assert json.loads(cli("runs", "--json", cwd=tmp_path).stdout) == []


def test_runs_show_json_is_exactly_the_one_shot_json(server: FakeOpenAI, tmp_path: Path) -> None:
    once = cli("jokes", *flags(server, "--json"), cwd=tmp_path)
    assert once.returncode == 0
    data = json.loads(once.stdout)
    shown = cli("runs", "show", data["run_id"], "--json", cwd=tmp_path)
    assert shown.returncode == 0 and shown.stderr == ""
    assert json.loads(shown.stdout) == data
    same = cli("runs", "show", data["run_id"], "--format", "json", cwd=tmp_path)
    assert json.loads(same.stdout) == data


def test_runs_show_text_has_plan_steps_and_answer(server: FakeOpenAI, tmp_path: Path) -> None:
    cli("jokes", *flags(server), cwd=tmp_path)
    run_id = only_run_id()
    result = cli("runs", "show", run_id[:-2], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert text.startswith(f"run {run_id}: succeeded\n")
    assert "  request   jokes\n" in text
    assert "plan (3 steps)\n  step1 [content_generator] Write a joke\n" in text
    assert "  step2 [translator] Translate the joke to French  after step1\n" in text
    assert "\n  step2  succeeded  " in text
    assert "      did: Translate the joke to French\n" in text
    assert text.endswith("answer\n  THE ANSWER\n")


def test_runs_show_draws_the_plan_with_statuses(server: FakeOpenAI, tmp_path: Path) -> None:
    cli("jokes", *flags(server), cwd=tmp_path)
    run_id = only_run_id()
    mermaid = cli("runs", "show", run_id, "--format", "mermaid", cwd=tmp_path).stdout
    assert mermaid.splitlines()[:2] == [
        "flowchart TD",
        '    s1["step1 [content_generator]<br/>Write a joke<br/>succeeded"]:::succeeded',
    ]
    assert "    s1 --> s3\n" in mermaid and "classDef succeeded" in mermaid
    dot = cli("runs", "show", run_id, "--format", "dot", cwd=tmp_path).stdout
    assert dot.startswith("digraph plan {\n") and dot.endswith("}\n")
    assert '    "step1" -> "step2";\n' in dot and 'fillcolor="#d3f9d8"' in dot


@pytest.mark.parametrize("args", [("runs", "show", "nope"), ("resume", "nope")])
def test_an_unknown_id_is_one_line_and_exit_2(
    server: FakeOpenAI, tmp_path: Path, args: tuple[str, ...]
) -> None:
    cli("jokes", *flags(server), cwd=tmp_path)
    result = cli(*args, cwd=tmp_path)
    assert result.returncode == 2 and result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith("overseer: error: no run 'nope'") and "Traceback" not in line


def test_an_ambiguous_prefix_is_exit_2(server: FakeOpenAI, tmp_path: Path) -> None:
    for _ in range(2):
        cli("jokes", *flags(server), cwd=tmp_path)
    result = cli("runs", "show", "2", cwd=tmp_path)  # every id starts with the year
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert "matches several runs" in line


def test_a_damaged_journal_makes_runs_fail_in_one_line(tmp_path: Path) -> None:
    path = default_journal_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x00garbage" * 500)
    result = cli("runs", cwd=tmp_path)
    assert result.returncode == 1 and result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith("overseer: error: cannot read the run journal")


# -- plan pictures ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("fmt", "golden"), [("mermaid", MERMAID_PLAIN), ("dot", DOT_PLAIN)])
def test_plan_draws_the_graph(tmp_path: Path, fmt: str, golden: str) -> None:
    with FakeOpenAI(responder([DIAMOND])) as fake:
        result = cli("plan", "jokes", *flags(fake, "--format", fmt), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == golden
    assert not default_journal_path().exists()  # planning alone records nothing


def test_plan_json_stays_the_default(tmp_path: Path) -> None:
    with FakeOpenAI(responder([DIAMOND])) as fake:
        result = cli("plan", "jokes", *flags(fake), cwd=tmp_path)
    assert json.loads(result.stdout)["steps"][3]["depends_on"] == ["step2", "step3"]


# -- a journal that cannot be written --------------------------------------------------------------


def _one_warning(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    assert result.stdout == "THE ANSWER\n"
    [line] = result.stderr.splitlines()
    assert line.startswith("overseer: warning: the run journal ")
    assert line.endswith("this run is not recorded")
    return line


def test_a_damaged_journal_is_one_warning_and_the_run_completes(
    server: FakeOpenAI, tmp_path: Path
) -> None:
    path = default_journal_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not sqlite at all " * 300)
    line = _one_warning(cli("jokes", *flags(server), cwd=tmp_path))
    assert "is damaged" in line and str(path) in line


def test_a_locked_journal_is_one_warning_and_the_run_completes(
    server: FakeOpenAI, tmp_path: Path
) -> None:
    assert cli("before", *flags(server), cwd=tmp_path).returncode == 0
    holder = sqlite3.connect(default_journal_path(), isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        line = _one_warning(cli("jokes", *flags(server), cwd=tmp_path))
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert "is locked" in line
    assert [s.request for s in Journal().list_runs()] == ["before"]


def test_an_unwritable_journal_is_one_warning_and_the_run_completes(
    server: FakeOpenAI, tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    home = blocker / "overseer"
    line = _one_warning(
        cli("jokes", *flags(server), cwd=tmp_path, env={"OVERSEER_HOME": str(home)})
    )
    assert "cannot be written" in line and str(home / JOURNAL_FILE) in line


def test_a_journal_path_that_is_a_directory_is_one_warning(
    server: FakeOpenAI, tmp_path: Path
) -> None:
    default_journal_path().mkdir(parents=True)
    _one_warning(cli("jokes", *flags(server), cwd=tmp_path))


# -- resume ----------------------------------------------------------------------------------------


class _Blocker:
    """A step whose first request is held until ``release``; ``arrived`` is set when it comes."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.arrived = threading.Event()
        self.release = threading.Event()
        self.calls = 0
        self._lock = threading.Lock()

    def step(self, body: dict[str, Any]) -> FakeReply | str:
        text = first_line(body)
        if text.startswith(self.prefix):
            with self._lock:
                self.calls += 1
                first = self.calls == 1
            if first:
                self.arrived.set()
                return FakeReply(content="never delivered", wait=self.release)
        return "did: " + text


def _start(args: list[str], tmp_path: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        args,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=child_env(),
        cwd=tmp_path,
    )


def _plan_first(tmp_path: Path) -> None:
    """Plan-then-run for the run in ``tmp_path`` (its ``./config.yaml``): these tests stop a run
    once a step is running and expect its whole plan journaled, which a streamed plan need not
    be by then (resuming a run stopped mid-stream: tests/test_stream_cli.py)."""
    (tmp_path / "config.yaml").write_text("planner:\n  stream: false\n")


def _statuses() -> dict[str, str]:
    stored = Journal().load(only_run_id())
    return {i: r.status for i, r in stored.records.items()}


def test_a_killed_run_resumes_without_resending_finished_steps(tmp_path: Path) -> None:
    blocker = _Blocker("Gamma")
    _plan_first(tmp_path)
    with FakeOpenAI(responder([FOUR], blocker.step)) as fake:
        proc = _start(command("four parts", *flags(fake)), tmp_path)
        try:
            assert blocker.arrived.wait(WAIT), "the blocked step never reached the server"
            # Gamma is only sent once Alpha and Beta are done and journaled: a step others
            # depend on is committed before they start. Gamma's start is written behind it
            # (the emitter never waits for a step's start), so it may not be there yet.
            statuses = _statuses()
            assert statuses.pop("c") in ("running", "pending")
            assert statuses == {"a": "succeeded", "b": "succeeded", "d": "pending"}
        finally:
            proc.kill()
            proc.communicate(timeout=WAIT)
            blocker.release.set()
        assert proc.returncode == -signal.SIGKILL
        run_id = only_run_id()
        [listed] = json.loads(cli("runs", "--json", cwd=tmp_path).stdout)
        assert listed["status"] == "interrupted" and listed["steps_done"] == 2
        shown = cli("runs", "show", run_id, cwd=tmp_path).stdout
        assert shown.startswith(f"run {run_id}: interrupted\n")
        before = step_counts(fake)
        result = cli("resume", run_id[:-3], *flags(fake, "--json"), cwd=tmp_path)
        after = step_counts(fake)
    assert result.returncode == 0, result.stderr
    assert before == Counter({"plan": 1, "Alpha part": 1, "Beta part": 1, "Gamma after both": 1})
    assert after - before == Counter({"Gamma after both": 1, "Delta at the end": 1, "answer": 1})
    data = json.loads(result.stdout)
    assert data["run_id"] == run_id and data["status"] == "succeeded"
    assert {s["step_id"]: s["output"] for s in data["steps"]} == {
        "a": "did: Alpha part",
        "b": "did: Beta part",
        "c": "did: Gamma after both",
        "d": "did: Delta at the end",
    }
    assert data["answer"] == "THE ANSWER"
    assert f"resuming run {run_id} (2 steps already done)" in result.stderr
    stored = Journal().load(run_id)
    assert stored.status == "succeeded" and stored.summary.attempts == 2
    assert stored.to_json() == data


def test_an_interrupted_run_ctrl_c_resumes(tmp_path: Path) -> None:
    blocker = _Blocker("Gamma")
    _plan_first(tmp_path)
    boot = (
        "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
        "sys.argv[0] = 'overseer'; from overseer.interfaces.cli import entry; entry()"
    )
    with FakeOpenAI(responder([FOUR], blocker.step)) as fake:
        proc = _start([sys.executable, "-c", boot, "four parts", *flags(fake)], tmp_path)
        try:
            assert blocker.arrived.wait(WAIT)
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=WAIT)
        finally:
            proc.kill()
            blocker.release.set()
        assert proc.returncode == 130, err
        run_id = only_run_id()
        assert f"overseer resume {run_id}" in err
        assert Journal().load(run_id).status == "cancelled"
        result = cli("resume", run_id, *flags(fake), cwd=tmp_path)
        counts = step_counts(fake)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "THE ANSWER\n"
    assert counts["Alpha part"] == counts["Beta part"] == 1 and counts["plan"] == 1
    assert counts["Gamma after both"] == 2
    assert Journal().load(run_id).status == "succeeded"


def test_a_failed_run_resumes_only_what_failed(tmp_path: Path) -> None:
    failures: list[str] = []

    def step(body: dict[str, Any]) -> FakeReply | str:
        text = first_line(body)
        if "French" in text and not failures:
            failures.append(text)
            return FakeReply(status=400, content="the French model is unavailable")
        return "did: " + text

    with FakeOpenAI(responder([JOKE], step)) as fake:
        failed = cli("jokes", *flags(fake, "--on-error", "continue"), cwd=tmp_path)
        run_id = only_run_id()
        before = step_counts(fake)
        resumed = cli("resume", run_id, *flags(fake, "--json"), cwd=tmp_path)
        after = step_counts(fake)
    assert failed.returncode == 1
    assert failed.stderr.splitlines()[-1] == f"overseer: to continue it: overseer resume {run_id}"
    assert resumed.returncode == 0, resumed.stderr
    assert after - before == Counter({"Translate the joke to French": 1, "answer": 1})
    data = json.loads(resumed.stdout)
    assert data["run_id"] == run_id and {s["status"] for s in data["steps"]} == {"succeeded"}


def test_resuming_a_run_that_succeeded_prints_its_answer(
    server: FakeOpenAI, tmp_path: Path
) -> None:
    first = json.loads(cli("jokes", *flags(server, "--json"), cwd=tmp_path).stdout)
    sent = len(server.requests)
    result = cli("resume", first["run_id"], *flags(server), cwd=tmp_path)
    assert result.returncode == 0
    assert result.stdout == "THE ANSWER\n"
    assert "already succeeded" in result.stderr
    as_json = cli("resume", first["run_id"], *flags(server, "--json"), cwd=tmp_path)
    assert json.loads(as_json.stdout) == first
    assert len(server.requests) == sent


def test_a_run_still_running_is_not_resumed(tmp_path: Path) -> None:
    journal = Journal()  # this test process records a run that is, as far as anyone knows, live
    plan = parse_plan([{"step_id": "a", "description": "A", "tool": "general"}])
    journal.record(RunStarted(0.0, "live-run", "x"))
    journal.record(PlanReady(0.0, plan, run_id="live-run"))
    result = cli("resume", "live-run", "--base-url", "http://127.0.0.1:9/v1", cwd=tmp_path)
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert f"still running (process {os.getpid()})" in line


def test_resume_takes_the_one_shot_flags(tmp_path: Path) -> None:
    result = cli("resume", "--help", cwd=tmp_path)
    assert result.returncode == 0
    for flag in ("--config", "--base-url", "--model", "--max-workers", "--json", "--on-error"):
        assert flag in result.stdout
    bad = cli("resume", "x", "--max-workers", "0", cwd=tmp_path)
    assert bad.returncode == 2 and len(bad.stderr.splitlines()) == 1


# -- resume continues with the run's own settings --------------------------------------------------


def _fails_french_once() -> Callable[[dict[str, Any]], FakeReply | str]:
    failures: list[str] = []

    def step(body: dict[str, Any]) -> FakeReply | str:
        text = first_line(body)
        if "French" in text and not failures:
            failures.append(text)
            return FakeReply(status=400, content="the French model is unavailable")
        return "did: " + text

    return step


def test_a_plain_resume_goes_where_the_run_went(tmp_path: Path) -> None:
    """The run was made with --base-url and --model: 'resume ID' with no flags uses them (it
    used to go to the default endpoint with the default model)."""
    with FakeOpenAI(responder([JOKE], _fails_french_once())) as fake:
        args = ["--base-url", fake.url, "--model", "m-first", "--on-error", "continue", "-q"]
        assert cli("jokes", *args, cwd=tmp_path).returncode == 1
        run_id = only_run_id()
        before = len(fake.requests)
        resumed = cli("resume", run_id, "-q", cwd=tmp_path)
        sent = fake.requests[before:]
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout == "THE ANSWER\n"
    assert [first_line(b) for b in sent if role_of(b) == "step"] == ["Translate the joke to French"]
    assert {b["model"] for b in sent} == {"m-first"}
    stored = Journal().load(run_id)
    assert stored.settings["backend.base_url"] == fake.url
    assert stored.settings["run.on_error"] == "continue"


def test_flags_given_to_resume_win_over_the_recorded_settings(tmp_path: Path) -> None:
    with FakeOpenAI(responder([JOKE], _fails_french_once())) as first:
        failed = cli("jokes", *flags(first, "--on-error", "continue"), cwd=tmp_path)
    assert failed.returncode == 1  # the first server is gone now
    run_id = only_run_id()
    with FakeOpenAI(responder([])) as second:
        resumed = cli("resume", run_id, *flags(second, "--json"), "--model", "m2", cwd=tmp_path)
        models = {b["model"] for b in second.requests}
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["status"] == "succeeded" and models == {"m2"}
    assert Journal().load(run_id).settings["backend.model"] == "m2"


def _costly(plan_tokens: int) -> Callable[[dict[str, Any]], FakeReply | str]:
    """The plan costs ``plan_tokens``, every other reply 10 tokens."""

    def respond(body: dict[str, Any]) -> FakeReply | str:
        kind = role_of(body)
        usage = {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10}
        if kind == "plan":
            tokens = {"prompt_tokens": plan_tokens, "completion_tokens": 0}
            return FakeReply(content=JOKE, usage={**tokens, "total_tokens": plan_tokens})
        text = "THE ANSWER" if kind == "answer" else "did: " + first_line(body)
        return FakeReply(content=text, usage=usage)

    return respond


def test_the_tokens_already_spent_count_against_the_budget_on_resume(tmp_path: Path) -> None:
    # plan-then-run: a streamed plan's tokens are known only when its stream ends, by which time
    # its first step may be running; this test needs the plan's 1000 tokens spent before any step
    _plan_first(tmp_path)
    with FakeOpenAI(_costly(1000)) as fake:
        spent = cli("jokes", *flags(fake, "--max-tokens", "1"), cwd=tmp_path)
        run_id = only_run_id()
        assert spent.returncode == 1 and Journal().load(run_id).spent.total_tokens == 1000
        refused = cli("resume", run_id, cwd=tmp_path)  # its recorded budget: 1 token
        assert refused.returncode == 2 and refused.stdout == ""
        [line] = refused.stderr.splitlines()
        assert "already spent 1000 tokens, its whole budget of 1" in line
        short = cli("resume", run_id, *flags(fake, "--max-tokens", "1005"), cwd=tmp_path)
        steps = [b for b in fake.requests if role_of(b) == "step"]
    assert short.returncode == 1  # 5 tokens left: the first step spent them
    assert len(steps) == 1
    stored = Journal().load(run_id)
    assert stored.status == "failed" and "budget" in stored.reason
    assert stored.settings["run.max_tokens"] == 1005


def test_runs_can_be_listed_by_batch(tmp_path: Path) -> None:
    journal = Journal()
    for run_id, batch in (("r1", "b1"), ("r2", None), ("r3", "b1")):
        journal.record(RunStarted(0.0, run_id, f"request {run_id}", batch_id=batch))
    listed = json.loads(cli("runs", "--batch", "b1", "--json", cwd=tmp_path).stdout)
    assert [(r["run_id"], r["batch_id"]) for r in listed] == [("r3", "b1"), ("r1", "b1")]
    text = cli("runs", "--batch", "b1", cwd=tmp_path).stdout.splitlines()
    assert [line.split()[0] for line in text[1:]] == ["r3", "r1"]
    none = cli("runs", "--batch", "nope", cwd=tmp_path)
    assert none.returncode == 0 and none.stdout == ""
    assert "no runs of batch 'nope'" in none.stderr


def test_force_resumes_a_run_that_looks_live(tmp_path: Path) -> None:
    journal = Journal()  # recorded by this test process, which is alive
    plan = parse_plan([{"step_id": "a", "description": "Alpha part", "tool": "general"}])
    journal.record(RunStarted(0.0, "live-run", "x"))
    journal.record(PlanReady(0.0, plan, run_id="live-run"))
    with FakeOpenAI(responder([])) as fake:
        refused = cli("resume", "live-run", *flags(fake), cwd=tmp_path)
        forced = cli("resume", "live-run", *flags(fake, "--force"), cwd=tmp_path)
    assert refused.returncode == 2 and "--force" in refused.stderr
    assert forced.returncode == 0, forced.stderr
    assert Journal().load("live-run").status == "succeeded"


# -- a journal locked by another program for longer than a write waits ----------------------------

SIX = plan_json(
    *((f"step{n}", f"Part {n}", "general", [f"step{n - 1}"] if n > 1 else []) for n in range(1, 7))
)


class _LockHolder:
    """When step 2 reaches the server, another connection locks the journal for ``hold`` s."""

    def __init__(self, hold: float) -> None:
        self.hold = hold
        self.locked = threading.Event()
        self.released = threading.Event()

    def step(self, body: dict[str, Any]) -> FakeReply | str:
        text = first_line(body)
        if text == "Part 2" and not self.locked.is_set():
            threading.Thread(target=self._hold, daemon=True).start()
            assert self.locked.wait(WAIT)
        return "did: " + text

    def _hold(self) -> None:
        holder = sqlite3.connect(default_journal_path(), isolation_level=None)
        try:
            holder.execute("BEGIN EXCLUSIVE")
            self.locked.set()
            time.sleep(self.hold)  # the lock held: the one pause this test is about
            holder.execute("ROLLBACK")
        finally:
            holder.close()
            self.released.set()


def test_a_journal_locked_for_seconds_still_records_the_run_whole(tmp_path: Path) -> None:
    holder = _LockHolder(2.5)
    with FakeOpenAI(responder([SIX], holder.step)) as fake:
        result = cli("six parts in a chain", *flags(fake), cwd=tmp_path)
        assert holder.released.wait(WAIT)
        run_id = only_run_id()
        [listed] = json.loads(cli("runs", "--json", cwd=tmp_path).stdout)
        before = step_counts(fake)
        resumed = cli("resume", run_id, *flags(fake), cwd=tmp_path)
        after = step_counts(fake)
    assert holder.locked.is_set()
    assert result.returncode == 0 and result.stdout == "THE ANSWER\n"
    assert result.stderr == ""  # no warning: nothing was lost
    assert (listed["status"], listed["steps_done"], listed["steps_total"]) == ("succeeded", 6, 6)
    assert resumed.returncode == 0 and "already succeeded" in resumed.stderr
    assert after == before and before["Part 2"] == 1
    stored = Journal().load(run_id)
    assert {r.status for r in stored.records.values()} == {"succeeded"}
