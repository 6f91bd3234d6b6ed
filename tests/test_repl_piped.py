"""``overseer chat`` with piped stdin: a real subprocess, real HTTP to the fake server."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.clihelp import SHARED_FLAGS, responder, role_of, user_text
from tests.fake_openai import FakeOpenAI, FakeReply
from tests.fakes import plan_json
from tests.replhelp import chat_env, child_processes, run_piped

JOKE = plan_json(
    ("step1", "Write a joke", "content_generator", []),
    ("step2", "Translate the joke to French", "translator", ["step1"]),
)
GERMAN = plan_json(("step1", "Translate the cat joke to German", "translator", []))


@pytest.fixture
def server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(responder([JOKE, GERMAN, JOKE])) as fake:
        yield fake


def plans_sent(fake: FakeOpenAI) -> list[str]:
    return [user_text(b) for b in fake.requests if role_of(b) == "plan"]


def chat(fake: FakeOpenAI, home: Path, lines: str, *flags: str) -> subprocess.CompletedProcess[str]:
    return run_piped(["--base-url", fake.url, "--model", "m", *flags], lines, chat_env(home))


def test_answers_go_to_stdout_and_progress_to_stderr(server: FakeOpenAI, tmp_path: Path) -> None:
    result = chat(server, tmp_path, "write a joke and translate it\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "THE ANSWER\n"
    assert "plan: 2 steps" in result.stderr and "run succeeded" in result.stderr
    assert "\x1b[" not in result.stdout + result.stderr and "overseer>" not in result.stdout
    assert "Traceback" not in result.stderr


def test_the_second_request_is_planned_with_the_first_as_context(
    server: FakeOpenAI, tmp_path: Path
) -> None:
    result = chat(server, tmp_path, "write a joke about cats\nnow in German\n", "-q")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "THE ANSWER\n\nTHE ANSWER\n"
    first, second = plans_sent(server)
    assert "earlier_turns" not in first
    assert "Request: write a joke about cats\nAnswer: THE ANSWER" in second
    assert second.rstrip().endswith("Request: now in German")


def test_slash_commands_work_and_mistakes_do_not_stop_the_script(
    server: FakeOpenAI, tmp_path: Path
) -> None:
    plan_file = tmp_path / "plan.json"
    script = f"/tools\n/nope\n/plan write a joke\n/save {plan_file}\n/run\n/history\n/config\n"
    result = chat(server, tmp_path, script, "-q")
    assert result.returncode == 2  # the unknown command was the last failure
    assert "translator" in result.stdout and "plan: 2 steps" in result.stdout
    assert "#1 write a joke  (succeeded" in result.stdout and "context_tokens:" in result.stdout
    assert "overseer: unknown command '/nope'" in result.stderr
    assert json.loads(plan_file.read_text()) == json.loads(JOKE)
    assert len(plans_sent(server)) == 1  # /run ran the plan /plan made


def test_runs_and_show_list_the_runs_of_the_chat(server: FakeOpenAI, tmp_path: Path) -> None:
    result = chat(server, tmp_path, "write a joke\n/runs\n", "-q")
    assert result.returncode == 0, result.stderr
    answer, header, row = result.stdout.splitlines()[:3]
    assert answer == "THE ANSWER" and header.startswith("ID ")
    run_id = row.split()[0]
    shown = chat(server, tmp_path, f"/show {run_id}\n", "-q")
    assert shown.stdout.startswith(f"run {run_id}: succeeded")
    assert "request   write a joke" in shown.stdout


def test_json_prints_one_object_per_request(server: FakeOpenAI, tmp_path: Path) -> None:
    result = chat(server, tmp_path, "one\ntwo\n", "--json")
    objects = [json.loads(line) for line in result.stdout.splitlines()]
    assert [o["request"] for o in objects] == ["one", "two"]
    assert all(o["status"] == "succeeded" for o in objects)


def test_exit_stops_reading(server: FakeOpenAI, tmp_path: Path) -> None:
    result = chat(server, tmp_path, "/exit\nwrite a joke\n")
    assert result.returncode == 0 and result.stdout == "" and server.requests == []


def test_piped_input_keeps_no_history_file(server: FakeOpenAI, tmp_path: Path) -> None:
    chat(server, tmp_path, "/help\n")
    assert not (tmp_path / "chat_history").exists()


def test_a_bad_flag_is_one_line_and_exit_2(tmp_path: Path) -> None:
    result = run_piped(["--max-workers", "zero"], "", chat_env(tmp_path))
    assert result.returncode == 2
    assert "overseer chat --help" in result.stderr and result.stderr.count("\n") == 1


def test_chat_help_lists_the_shared_flags(tmp_path: Path) -> None:
    result = run_piped(["--help"], "", chat_env(tmp_path))
    assert result.returncode == 0
    for flag in SHARED_FLAGS:
        assert flag in result.stdout


def test_sigint_during_a_piped_run_stops_it_and_exits_130(tmp_path: Path) -> None:
    arrived, release = threading.Event(), threading.Event()

    def step(body: dict[str, Any]) -> FakeReply | str:
        arrived.set()
        return FakeReply(content="HELD OUTPUT", wait=release)

    with FakeOpenAI(responder([JOKE], step)) as fake:
        process = subprocess.Popen(
            [sys.executable, "-m", "overseer", "chat", "--base-url", fake.url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=chat_env(tmp_path),
        )
        try:
            assert process.stdin is not None
            process.stdin.write("write a joke\nnever run\n")
            process.stdin.flush()
            assert arrived.wait(30), "the step never reached the server"
            process.send_signal(signal.SIGINT)
            out, err = process.communicate(timeout=30)
            assert child_processes(process.pid) == []
        finally:
            release.set()
            if process.poll() is None:
                process.kill()
    assert process.returncode == 130
    assert "HELD OUTPUT" not in out and "THE ANSWER" not in out
    assert "step1 cancelled" in err and "Traceback" not in err
    assert [role_of(b) for b in fake.requests] == ["plan", "step"]


THREE = plan_json(
    ("step1", "Write a joke", "content_generator", []),
    ("step2", "Translate the joke to French", "translator", ["step1"]),
    ("step3", "Translate the joke to Spanish", "translator", ["step1"]),
)


def test_answers_of_successive_turns_are_set_apart_and_carry_no_step_label(tmp_path: Path) -> None:
    answers = iter(["ANSWER ONE", "ANSWER TWO"])

    def respond(body: dict[str, Any]) -> FakeReply | str:
        kind = role_of(body)
        if kind == "plan":
            return THREE
        if kind == "answer":  # a small model copying the listing of results it was shown
            return f"[step4]\n{next(answers)}\n[step2] Translate the joke to French\n[step4]"
        return "did: " + user_text(body).splitlines()[0]

    with FakeOpenAI(respond) as fake:
        result = chat(fake, tmp_path, "write a joke\nand another\n", "-q")
        composing = [user_text(b) for b in fake.requests if role_of(b) == "answer"]
    assert result.returncode == 0, result.stderr
    assert result.stdout == "ANSWER ONE\n\nANSWER TWO\n"
    assert len(composing) == 2 and all("[step" not in text for text in composing)
    assert 'Result of "Translate the joke to Spanish":\ndid: Translate' in composing[0]
