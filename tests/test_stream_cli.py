"""Streamed plans and rounds from the command line: real subprocesses, signals, the journal."""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from overseer.journal.store import Journal
from tests.clihelp import role_of
from tests.fake_stream import FakeStream, Hold, Streamed
from tests.streamhelp import Roles, first_line, plan_pieces, step_obj
from tests.test_cli_runs import WAIT, _start, cli, command, only_run_id

JOKE = [
    step_obj(1, "Write a joke", "content_generator"),
    step_obj(2, "Translate the joke to French", "translator", [1]),
    step_obj(3, "Translate the joke to Spanish", "translator", [1]),
]
BOOT = (
    "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "sys.argv[0] = 'overseer'; from overseer.interfaces.cli import entry; entry()"
)


def flags(fake: FakeStream, *extra: str) -> list[str]:
    return ["--base-url", fake.url, "--model", "m", "-q", *extra]


def arrived(fake: FakeStream, line: str) -> bool:
    return fake.wait_for(lambda b: role_of(b) == "step" and first_line(b) == line, WAIT)


def step_counts(roles: Roles) -> Counter[str]:
    return Counter(roles.step_lines())


def test_ctrl_c_during_a_streamed_plan_stops_the_run_cleanly(tmp_path: Path) -> None:
    never = threading.Event()
    roles = Roles(plans=[Streamed(plan_pieces(JOKE, {0: never}))])
    with FakeStream(roles) as fake:
        proc = _start([sys.executable, "-c", BOOT, "a joke", *flags(fake)], tmp_path)
        try:
            assert arrived(fake, "Write a joke")  # a step started while the plan streams
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=WAIT)
        finally:
            proc.kill()
            never.set()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    run_id = only_run_id()
    assert f"overseer resume {run_id}" in err
    assert Journal().load(run_id).status == "cancelled"


def test_a_run_killed_mid_stream_resumes_without_rerunning_finished_steps(tmp_path: Path) -> None:
    never = threading.Event()
    roles = Roles(plans=[Streamed(plan_pieces(JOKE, {1: never})), Streamed(plan_pieces(JOKE))])
    with FakeStream(roles) as fake:
        proc = _start(command("a joke", *flags(fake)), tmp_path)
        try:
            # step2 is sent only once step1 succeeded and was journaled
            assert arrived(fake, "Translate the joke to French")
        finally:
            proc.kill()
            proc.communicate(timeout=WAIT)
            never.set()
        assert proc.returncode == -signal.SIGKILL
        run_id = only_run_id()
        result = cli("resume", run_id, *flags(fake, "--json"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["status"] == "succeeded"
    assert [s["status"] for s in data["steps"]] == ["succeeded"] * 3
    counts = step_counts(roles)
    assert counts["Write a joke"] == 1  # finished before the kill: reused
    assert counts["Translate the joke to Spanish"] == 1


def test_a_run_killed_in_its_second_round_resumes_there(tmp_path: Path) -> None:
    hold = threading.Event()
    extra = step_obj(4, "Compare both translations", "general", [2, 3])
    head = '{"decision": "replan", "reason": "compare", "steps": ['
    # the joiner's reply stays open after step4's object: the kill comes mid-round-2
    held = Streamed(plan_pieces([extra], {0: hold}, head=head))
    rest = json.dumps({"steps": []})  # asked on resume: nothing came after step4
    roles = Roles(plans=[Streamed(plan_pieces(JOKE)), rest], joins=[held, rest])
    with FakeStream(roles) as fake:
        proc = _start(command("a joke", *flags(fake)), tmp_path)
        try:
            assert arrived(fake, extra["description"])
            run_id = journaled(lambda stored: "step4" in stored.steps_round)
        finally:
            proc.kill()
            proc.communicate(timeout=WAIT)
            hold.set()
        stored = Journal().load(run_id)
        assert stored.plan is not None and stored.plan.ids == ["step1", "step2", "step3", "step4"]
        assert stored.rounds == 2 and stored.plan_complete is False  # killed mid-round-2
        result = cli("resume", run_id, *flags(fake, "--json"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert [s["step_id"] for s in data["steps"]] == ["step1", "step2", "step3", "step4"]
    assert data["steps"][3]["output"] == "did: Compare both translations"
    counts = step_counts(roles)
    assert [counts[s["description"]] for s in JOKE] == [1, 1, 1]  # round 1 never re-run
    # step4 ran again only if the kill came before it was journaled as done
    ran_before = stored.records["step4"].status == "succeeded"
    assert counts[extra["description"]] == (1 if ran_before else 2)
    assert data["rounds"] == 2 and data["steps"][3]["round"] == 2
    # resume asked the planner for the rest of round 2 (nothing), not the joiner for a new round
    assert len(roles.bodies("plan")) == 2 and len(roles.bodies("join")) == 1


def journaled(test: Callable[[Any], bool]) -> str:
    """The only run's id once its journal row passes ``test``. The journal is another process's
    file, so this polls it (every 10 ms, for at most WAIT seconds)."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        runs = Journal().list_runs()
        if runs and test(Journal().load(runs[0].run_id)):
            return runs[0].run_id
        time.sleep(0.01)
    raise AssertionError("the journal never recorded it")


def test_json_shows_each_steps_round_and_the_rounds(tmp_path: Path) -> None:
    extra = step_obj(4, "Compare both translations", "general", [2, 3])
    replan = json.dumps({"decision": "replan", "reason": "compare", "steps": [extra]})
    roles = Roles(plans=[Streamed(plan_pieces(JOKE)), Streamed(plan_pieces(JOKE))], joins=[replan])
    with FakeStream(roles) as fake:
        result = cli("a joke", *flags(fake, "--json"), cwd=tmp_path)
        zero = cli("a joke", *flags(fake, "--json", "--max-replans", "0"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["rounds"] == 2 and [s["round"] for s in data["steps"]] == [1, 1, 1, 2]
    assert zero.returncode == 0, zero.stderr
    assert json.loads(zero.stdout)["rounds"] == 1
    assert len(roles.bodies("join")) == 1  # --max-replans 0 asked no joiner
    assert len(roles.bodies("plan")) == 2


def test_planner_timeout_exits_3_with_one_clear_line(tmp_path: Path) -> None:
    never = threading.Event()
    config = tmp_path / "slow.yaml"
    config.write_text("planner:\n  timeout: 0.5\n")
    roles = Roles(plans=[Streamed([*plan_pieces(JOKE[:1])[:-1], Hold(never)])])
    with FakeStream(roles) as fake:
        result = cli("a joke", *flags(fake, "--config", str(config)), cwd=tmp_path)
        never.set()
    assert result.returncode == 3, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("overseer: error: planning did not finish within planner.timeout (0.5s)")
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_a_bad_max_replans_flag_is_a_usage_error(tmp_path: Path) -> None:
    result = cli("x", "--max-replans", "-1", "--base-url", "http://127.0.0.1:9/v1", cwd=tmp_path)
    assert result.returncode == 2
    assert "--max-replans" in result.stderr and "'-1'" in result.stderr
    assert "Traceback" not in result.stderr
