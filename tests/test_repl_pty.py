"""``overseer chat`` on a pseudo-terminal: prompt_toolkit, Ctrl-C, Ctrl-D, history, multi-line.

Each test reads the terminal until the marker it waits for shows (with an overall timeout),
against the fake OpenAI-compatible server on 127.0.0.1.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.clihelp import responder, role_of, user_text
from tests.fake_openai import FakeOpenAI, FakeReply
from tests.fakes import plan_json
from tests.replhelp import PROMPT_MARK, Terminal, chat_env, child_processes

JOKE = plan_json(("step1", "Write a joke about cats", "content_generator", []))
GERMAN = plan_json(("step1", "Translate the cat joke to German", "translator", []))
SLOW = plan_json(
    ("slow", "Take your time", "general", []), ("after", "Then this", "general", ["slow"])
)
QUICK = plan_json(("quick", "Say hi", "general", []))


def plans_sent(fake: FakeOpenAI) -> list[str]:
    return [user_text(b) for b in fake.requests if role_of(b) == "plan"]


@pytest.fixture
def server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(responder([JOKE, GERMAN])) as fake:
        yield fake


@pytest.fixture
def open_terminal(tmp_path: Path) -> Iterator[Any]:
    terminals: list[Terminal] = []

    def start(fake: FakeOpenAI, *flags: str) -> Terminal:
        terminal = Terminal(["--base-url", fake.url, *flags], chat_env(tmp_path))
        terminals.append(terminal)
        terminal.expect(PROMPT_MARK)
        return terminal

    yield start
    for terminal in terminals:
        terminal.close()


def ask(terminal: Terminal, line: str, marker: str) -> str:
    """Send ``line``; return what showed before ``marker``; wait for the next prompt."""
    terminal.send_line(line)
    before = terminal.expect(marker)
    terminal.expect(PROMPT_MARK)
    return before


def test_two_requests_the_second_planned_with_the_first_as_context(
    server: FakeOpenAI, open_terminal: Any
) -> None:
    terminal = open_terminal(server)
    progress = ask(terminal, "write a joke about cats", "THE ANSWER")
    assert "Write a joke about cats" in progress and "run succeeded" in progress
    ask(terminal, "now in German", "THE ANSWER")
    first, second = plans_sent(server)
    assert "earlier_turns" not in first
    assert "Request: write a joke about cats\nAnswer: THE ANSWER" in second
    assert second.rstrip().endswith("Request: now in German")
    assert terminal.end() == 0


def test_slash_commands_answer_and_mistakes_keep_the_chat_going(
    server: FakeOpenAI, open_terminal: Any, tmp_path: Path
) -> None:
    terminal = open_terminal(server)
    ask(terminal, "/help", "Esc then Enter")
    ask(terminal, "/tools", "translator")
    ask(terminal, "/config", "context_tokens: 2000")
    ask(terminal, "/frobnicate", "unknown command '/frobnicate'")
    ask(terminal, "/run", "there is no plan yet")
    ask(terminal, "/plan write a joke", "step1 [content_generator] Write a joke about cats")
    ask(terminal, f"/save {tmp_path / 'plan.json'}", "saved the plan")
    ask(terminal, "/run", "THE ANSWER")
    history = ask(terminal, "/history", "THE ANSWER")
    run_id = re.search(r"#1 write a joke  \(succeeded, run (\S+)\)", history)
    assert run_id is not None, history
    ask(terminal, "/runs", run_id[1])
    ask(terminal, f"/show {run_id[1]}", f"run {run_id[1]}: succeeded")
    ask(terminal, "/show nosuchrun", "no run 'nosuchrun'")
    assert (tmp_path / "plan.json").is_file()
    assert terminal.end() == 0


def test_ctrl_c_during_a_run_stops_it_and_returns_to_the_prompt(
    open_terminal: Any,
) -> None:
    arrived, release = threading.Event(), threading.Event()

    def step(body: dict[str, Any]) -> FakeReply | str:
        if user_text(body).startswith("Take your time"):
            arrived.set()
            return FakeReply(content="HELD OUTPUT", wait=release)
        return "quick output"

    with FakeOpenAI(responder([SLOW, QUICK], step)) as fake:
        try:
            terminal = open_terminal(fake)
            terminal.send_line("slow then more")
            assert arrived.wait(30), "the step never reached the server"
            terminal.interrupt()
            terminal.expect("cancelled: 2 of 2 steps did not finish")
            terminal.expect(PROMPT_MARK)
            assert child_processes(terminal.pid) == []
            release.set()  # the held reply is sent now: the cancelled step must not take it
            ask(terminal, "something quick", "THE ANSWER")
            ask(terminal, "/history", "#2 something quick  (succeeded")
            assert terminal.end() == 0
        finally:
            release.set()
    text = terminal.text()
    assert "HELD OUTPUT" not in text and "Traceback" not in text
    assert "#1 slow then more  (cancelled" in text
    roles = [role_of(b) for b in fake.requests if role_of(b) != "join"]  # the joiner: round 2
    assert roles == ["plan", "step", "plan", "step", "answer"]


def test_ctrl_c_at_the_prompt_clears_the_line_and_sends_nothing(
    server: FakeOpenAI, open_terminal: Any
) -> None:
    terminal = open_terminal(server)
    terminal.interrupt()  # at an empty prompt
    terminal.child.send("half a thought")
    terminal.expect("half a thought")
    terminal.interrupt()
    ask(terminal, "/history", "no turns yet")
    assert server.requests == []
    assert terminal.end() == 0


def test_ctrl_d_and_exit_leave_with_status_0(server: FakeOpenAI, open_terminal: Any) -> None:
    assert open_terminal(server).end() == 0
    terminal = open_terminal(server)
    terminal.send_line("/exit")
    assert terminal.wait() == 0


def test_history_is_written_and_recalled_in_the_next_session(
    server: FakeOpenAI, open_terminal: Any, tmp_path: Path
) -> None:
    terminal = open_terminal(server)
    ask(terminal, "/tools", "word_count")
    assert terminal.end() == 0
    history = (tmp_path / "chat_history").read_text()
    assert "+/tools" in history
    assert (tmp_path / "chat_history").stat().st_mode & 0o077 == 0
    again = open_terminal(server)
    again.child.send("\x1b[A")  # Up: the last line of the earlier session
    again.expect("/tools")
    again.send_line("")
    again.expect("word_count")
    again.expect(PROMPT_MARK)
    assert again.end() == 0


def test_esc_enter_and_a_trailing_backslash_make_one_multi_line_message(
    server: FakeOpenAI, open_terminal: Any
) -> None:
    terminal = open_terminal(server)
    terminal.child.send("line one\x1b\rline two\\\rline three\r")
    terminal.expect("THE ANSWER")
    terminal.expect(PROMPT_MARK)
    [plan] = plans_sent(server)
    assert "Request: line one\nline two\nline three" in plan
    assert terminal.end() == 0
