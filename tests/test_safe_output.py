"""Terminal escapes from the model never reach the terminal: checked on the real output bytes of
the real command (a subprocess, on a pipe and on a pseudo-terminal) against the fake server."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pexpect
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from overseer.interfaces.chat.commands import Output
from overseer.interfaces.safe_text import json_safe, visible
from tests.clihelp import role_of
from tests.fake_openai import FakeOpenAI, FakeReply
from tests.fakes import plan_json

TITLE = "\x1b]0;PWNED\x07"
CLEAR = "\x1b[2J"
HOSTILE = f"Write{TITLE} a joke{CLEAR}"
SHOWN = "Write\\x1b]0;PWNED\\x07 a joke\\x1b[2J"
RAW = (b"\x1b]0;", b"\x1b[2J", b"\x07")


# -- the function --------------------------------------------------------------------------------


def test_visible_writes_control_characters_as_escapes_and_keeps_layout() -> None:
    assert visible(HOSTILE) == SHOWN
    assert visible("a\tb\nc\r\nd\re") == "a\tb\nc\nd\\x0de"
    assert visible("\x00\x7f\x9b\u202eok") == "\\x00\\x7f\\x9b\\u202eok"
    assert visible("héllo — ✓ 日本") == "héllo — ✓ 日本"


@settings(deadline=None)  # a shared, loaded machine must not fail a test of correctness
@given(st.text())
def test_visible_leaves_no_control_character_but_newline_and_tab(text: str) -> None:
    shown = visible(text)
    assert all(c in "\n\t" or not (ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0) for c in shown)
    assert visible(shown) == shown


@settings(deadline=None)
@given(st.recursive(st.text(), lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner)))
def test_json_safe_json_decodes_to_the_same_value_with_no_raw_control(value: Any) -> None:
    text = json_safe(json.dumps(value, ensure_ascii=False, indent=2))
    assert json.loads(text) == value
    assert not any((ord(c) < 0x20 and c != "\n") or 0x7F < ord(c) < 0xA0 for c in text)


def test_the_chat_output_shows_escapes_on_both_streams() -> None:
    out, err = io.StringIO(), io.StringIO()
    output = Output(out, err)
    output.answer(HOSTILE)
    output.note(HOSTILE)
    output.problem(HOSTILE)
    output.data({"answer": HOSTILE})
    assert "\x1b" not in out.getvalue() + err.getvalue()
    assert out.getvalue().startswith(SHOWN + "\n")
    assert json.loads(out.getvalue().split("\n", 1)[1]) == {"answer": HOSTILE}
    assert err.getvalue() == f"{SHOWN}\noverseer: {SHOWN}\n"


# -- the command ---------------------------------------------------------------------------------


def hostile(body: dict[str, Any]) -> FakeReply | str:
    """A plan, step outputs and an answer that all try to drive the terminal."""
    kind = role_of(body)
    if kind == "plan":
        return plan_json(("step1", HOSTILE, "content_generator", []))
    return f"{kind} output{TITLE}{CLEAR}\nsecond line\tend"


@pytest.fixture
def server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(hostile) as fake:
        yield fake


def env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "OVERSEER_C"))}


def run(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "overseer", *args],
        capture_output=True,
        env=env(),
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def assert_safe(data: bytes) -> None:
    for raw in RAW:
        assert raw not in data, f"{raw!r} reached the terminal: {data!r}"


def test_no_synthesize_output_and_progress_show_escapes(server: FakeOpenAI) -> None:
    result = run("--base-url", server.url, "--no-synthesize", "write a joke")
    assert result.returncode == 0, result.stderr
    assert_safe(result.stdout + result.stderr)
    assert result.stdout.startswith(f"## {SHOWN}\n\nstep output\\x1b]0;PWNED".encode())
    assert b"second line\tend" in result.stdout
    assert f"step1 [content_generator] {SHOWN}".encode() in result.stderr


def test_the_answer_shows_escapes(server: FakeOpenAI) -> None:
    result = run("--base-url", server.url, "-q", "write a joke")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"answer output\\x1b]0;PWNED\\x07\\x1b[2J\nsecond line\tend\n"


def test_json_stays_json_with_the_model_text_intact(server: FakeOpenAI) -> None:
    result = run("--base-url", server.url, "--json", "write a joke")
    assert_safe(result.stdout)
    data = json.loads(result.stdout)
    assert data["plan"]["steps"][0]["description"] == HOSTILE
    assert data["answer"] == f"answer output{TITLE}{CLEAR}\nsecond line\tend"


def test_runs_show_text_shows_escapes(server: FakeOpenAI) -> None:
    done = json.loads(run("--base-url", server.url, "--json", "write a joke").stdout)
    shown = run("runs", "show", done["run_id"])
    listed = run("runs")
    graph = run("runs", "show", done["run_id"], "--format", "mermaid")
    assert shown.returncode == listed.returncode == graph.returncode == 0
    for result in (shown, listed, graph):
        assert_safe(result.stdout + result.stderr)
    assert f"step1 [content_generator] {SHOWN}".encode() in shown.stdout
    assert b"step output\\x1b]0;PWNED\\x07\\x1b[2J" in shown.stdout
    assert SHOWN.encode() in graph.stdout


def test_on_a_terminal_the_live_display_and_the_answer_show_escapes(server: FakeOpenAI) -> None:
    child = pexpect.spawn(
        sys.executable,
        ["-m", "overseer", "--base-url", server.url, "--no-synthesize", "write a joke"],
        env={**env(), "TERM": "xterm"},
        dimensions=(50, 200),
        timeout=60,
    )
    child.expect(pexpect.EOF)
    data = child.before if isinstance(child.before, bytes) else b""
    child.close()
    assert child.exitstatus == 0, data
    assert_safe(data)
    assert b"\x1b[" in data, "the live display did not draw"
    assert SHOWN.encode() in data and b"step output\\x1b]0;PWNED" in data


def test_a_plan_written_as_mermaid_shows_escapes(tmp_path: Path) -> None:
    with FakeOpenAI(hostile) as fake:
        result = run("plan", "--base-url", fake.url, "--format", "mermaid", "write a joke")
    assert result.returncode == 0, result.stderr
    assert_safe(result.stdout)
    assert SHOWN.encode() in result.stdout
