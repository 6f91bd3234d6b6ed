"""The chat's lines in process: requests, every slash command, errors, retry and scripting.

A scripted model (tests/fakes.py) stands in for the server; the end-to-end runs over a terminal
and over pipes are in test_repl_pty.py and test_repl_piped.py.
"""

from __future__ import annotations

import io
import json
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from overseer.backends.chat import ChatReply, ChatRequest
from overseer.config import load_settings
from overseer.errors import PermanentBackendError
from overseer.interfaces.chat.commands import COMMANDS, LEAVE, Commands, Output, redact_url
from overseer.interfaces.chat.repl import chat_parser, logical_lines, run_chat
from overseer.interfaces.chat.session import ChatSession, unfinished_steps
from tests.fakes import RuleChat, is_plan_request, plan_json

JOKE = plan_json(
    ("step1", "Write a joke", "content_generator", []),
    ("step2", "Translate the joke to French", "translator", ["step1"]),
)
TWO = plan_json(("a", "A", "general", []), ("b", "B after a", "general", ["a"]))


class Chat:
    """A session over a scripted model, with what it printed on stdout and stderr."""

    def __init__(self, model: Any, json_mode: bool = False, **overrides: object) -> None:
        self.model = model
        self.session = ChatSession(load_settings(overrides=overrides), chat=model)
        self.out, self.err = io.StringIO(), io.StringIO()
        self.commands = Commands(self.session, Output(self.out, self.err, json=json_mode))

    def __call__(self, line: str) -> int:
        return self.commands.handle(line)

    def take(self) -> tuple[str, str]:
        """What was printed since the last take: (stdout, stderr)."""
        out, err = self.out.getvalue(), self.err.getvalue()
        for stream in (self.out, self.err):
            stream.seek(0)
            stream.truncate()
        return out, err


def plan_requests(model: RuleChat) -> list[ChatRequest]:
    return [r for r in model.requests if is_plan_request(r)]


def worker_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("overseer-")]


def no_worker_left() -> bool:
    for thread in worker_threads():
        thread.join(timeout=10)
    return not any(t.is_alive() for t in worker_threads())


# -- requests ----------------------------------------------------------------------------------


def test_a_request_prints_its_answer_and_becomes_a_turn() -> None:
    chat = Chat(RuleChat([JOKE]))
    assert chat("write a joke and translate it") == 0
    out, err = chat.take()
    assert out == "FINAL ANSWER\n" and err == ""
    [turn] = chat.session.conversation.turns
    assert turn.status == "succeeded" and turn.request == "write a joke and translate it"
    assert turn.report is not None and turn.run_id == turn.report.run_id


def test_the_second_request_is_planned_with_the_first_turn_as_context() -> None:
    model = RuleChat([JOKE, TWO], answer="Why did the cat sit on the laptop?")
    chat = Chat(model)
    chat("write a joke about cats")
    chat("now translate it to German")
    first, second = (r.messages[-1]["content"] for r in plan_requests(model))
    assert "Turn" not in first and first.rstrip().endswith("Request: write a joke about cats")
    assert "Request: write a joke about cats" in second
    assert "Answer: Why did the cat sit on the laptop?" in second
    assert second.rstrip().endswith("Request: now translate it to German")


def test_a_context_budget_of_zero_sends_each_request_alone() -> None:
    model = RuleChat([JOKE, TWO])
    chat = Chat(model, False, **{"chat.context_tokens": 0})
    chat("write a joke")
    chat("again")
    assert "write a joke" not in plan_requests(model)[1].messages[-1]["content"]


def test_a_blank_line_does_nothing() -> None:
    model = RuleChat([])
    chat = Chat(model)
    assert chat("   ") == 0 and model.requests == [] and chat.take() == ("", "")


def test_a_double_slash_sends_a_request_that_starts_with_a_slash() -> None:
    model = RuleChat([JOKE])
    chat = Chat(model)
    assert chat("//etc/hosts: what is it for?") == 0
    assert chat.session.conversation.turns[0].request == "/etc/hosts: what is it for?"


def test_json_mode_prints_the_run_object() -> None:
    chat = Chat(RuleChat([JOKE]), json_mode=True)
    chat("jokes")
    data = json.loads(chat.take()[0])
    assert data["status"] == "succeeded" and data["answer"] == "FINAL ANSWER"
    assert [s["step_id"] for s in data["steps"]] == ["step1", "step2"]


def test_no_valid_plan_is_one_line_and_exit_3_and_the_chat_goes_on() -> None:
    bad = plan_json(("a", "A", "painter", []))
    chat = Chat(RuleChat([bad, bad, bad, JOKE]))
    assert chat("paint") == 3
    out, err = chat.take()
    assert out == "" and err.count("\n") == 1 and "no valid plan" in err
    assert chat.session.conversation.turns[0].status == "no plan"
    assert chat("write a joke") == 0


def test_a_rejected_key_is_a_configuration_error() -> None:
    denied = PermanentBackendError("the server rejected the API key (HTTP 401)", 401)
    chat = Chat(RuleChat([denied]))
    assert chat("x") == 2
    assert "rejected the API key" in chat.take()[1]
    assert chat.session.conversation.turns[0].status == "error"


def test_a_failed_step_prints_what_was_done_and_how_to_retry() -> None:
    def step(request: ChatRequest) -> str | Exception:
        return RuntimeError("boom") if "French" in request.messages[-1]["content"] else "joke"

    chat = Chat(RuleChat([JOKE], step))
    assert chat("jokes") == 1
    out, err = chat.take()
    assert "## Write a joke" in out
    assert "run failed" in err and "boom" in err and "/retry" in err


def test_failed_planning_leaves_no_worker_threads_behind() -> None:
    bad = plan_json(("a", "A", "painter", []))
    chat = Chat(RuleChat([bad, bad, bad]))
    chat("paint")
    assert no_worker_left()


# -- Ctrl-C while planning ---------------------------------------------------------------------


class InterruptedPlanner(RuleChat):
    """Raises KeyboardInterrupt (as a Ctrl-C in the main thread would) on the first plan."""

    def __init__(self) -> None:
        super().__init__([JOKE])
        self.interrupted = False

    def complete(self, request: ChatRequest) -> ChatReply:
        if is_plan_request(request) and not self.interrupted:
            self.interrupted = True
            raise KeyboardInterrupt
        return super().complete(request)


def test_ctrl_c_while_planning_cancels_the_turn_and_the_chat_goes_on() -> None:
    chat = Chat(InterruptedPlanner())
    assert chat("write a joke") == 130
    assert chat.take() == ("", "cancelled\n")
    assert chat.session.conversation.turns[0].status == "cancelled"
    assert no_worker_left()
    assert chat("write a joke") == 0
    assert chat.take()[0] == "FINAL ANSWER\n"


def test_ctrl_c_during_plan_only_is_cancelled_too() -> None:
    chat = Chat(InterruptedPlanner())
    assert chat("/plan write a joke") == 130
    assert chat.take() == ("", "cancelled\n")
    assert chat.session.last_plan is None


# -- /plan, /run, /save --------------------------------------------------------------------------


def test_plan_shows_the_plan_and_runs_nothing() -> None:
    model = RuleChat([JOKE])
    chat = Chat(model)
    assert chat("/plan write a joke and translate it") == 0
    out, err = chat.take()
    assert out.splitlines() == [
        "plan: 2 steps",
        "  step1 [content_generator] Write a joke",
        "  step2 [translator] Translate the joke to French  (after step1)",
    ]
    assert "/run" in err and "/save" in err
    assert model.step_requests() == [] and chat.session.conversation.turns == []


def test_plan_in_json_mode_prints_the_plan_object() -> None:
    chat = Chat(RuleChat([JOKE]), json_mode=True)
    chat("/plan jokes")
    assert json.loads(chat.take()[0]) == json.loads(JOKE)


def test_run_runs_the_last_plan_without_planning_again() -> None:
    model = RuleChat([JOKE])
    chat = Chat(model)
    chat("/plan write a joke and translate it")
    chat.take()
    assert chat("/run") == 0
    assert chat.take()[0] == "FINAL ANSWER\n"
    assert len(plan_requests(model)) == 1 and len(model.step_requests()) == 2
    assert chat.session.conversation.turns[0].request == "write a joke and translate it"


def test_run_after_a_request_runs_its_plan_again_as_a_new_run() -> None:
    model = RuleChat([JOKE])
    chat = Chat(model)
    chat("jokes")
    assert chat("/run") == 0
    first, second = chat.session.conversation.turns
    assert first.run_id != second.run_id and len(model.step_requests()) == 4


def test_run_without_a_plan_says_how_to_get_one() -> None:
    chat = Chat(RuleChat([]))
    assert chat("/run") == 2
    err = chat.take()[1]
    assert "no plan yet" in err and "/plan REQUEST" in err


def test_save_writes_the_last_plan_as_json(tmp_path: Path) -> None:
    chat = Chat(RuleChat([JOKE]))
    chat("/plan jokes")
    target = tmp_path / "my plan.json"
    assert chat(f'/save "{target}"') == 0
    assert json.loads(target.read_text()) == json.loads(JOKE)
    assert str(target) in chat.take()[1]


def test_save_without_a_plan_or_to_a_bad_place_is_one_line(tmp_path: Path) -> None:
    chat = Chat(RuleChat([JOKE]))
    assert chat(f"/save {tmp_path / 'x.json'}") == 2
    assert "no plan to save" in chat.take()[1]
    chat("/plan jokes")
    chat.take()
    assert chat(f"/save {tmp_path / 'missing' / 'x.json'}") == 1
    err = chat.take()[1]
    assert err.startswith("overseer: cannot write") and err.count("\n") == 1


# -- /retry ------------------------------------------------------------------------------------


def flaky_until(fixed: threading.Event) -> Any:
    def step(request: ChatRequest) -> str | Exception:
        text = request.messages[-1]["content"]
        if text.startswith("B") and not fixed.is_set():
            return RuntimeError("server melted")
        return "out:" + text.splitlines()[0]

    return step


def test_retry_runs_only_the_steps_that_did_not_succeed() -> None:
    fixed = threading.Event()
    plan = plan_json(
        ("a", "A", "general", []),
        ("b", "B", "general", []),
        ("c", "C after b", "general", ["b"]),
    )
    model = RuleChat([plan], flaky_until(fixed))
    chat = Chat(model, False, **{"run.on_error": "continue"})
    assert chat("abc") == 1
    first = chat.session.conversation.turns[0]
    assert first.report is not None and unfinished_steps(first.report) == ["b", "c"]
    chat.take()
    fixed.set()
    before = len(model.step_requests())
    assert chat("/retry") == 0
    out, err = chat.take()
    assert "retrying b, c; reusing the outputs of 1 steps" in err
    assert out == "\nFINAL ANSWER\n"  # a blank line sets it apart from the first turn's answer
    rerun = [r.messages[-1]["content"].splitlines()[0] for r in model.step_requests()[before:]]
    assert sorted(rerun) == ["B", "C after b"]
    old, new = chat.session.conversation.turns
    assert new.retry_of == 1 and old.superseded and new.run_id == old.run_id
    assert new.report is not None and new.report.outcome.steps["a"].output == "out:A"


def test_retry_with_nothing_to_retry_says_so() -> None:
    chat = Chat(RuleChat([JOKE]))
    assert chat("/retry") == 2
    assert "no request has run" in chat.take()[1]
    chat("jokes")
    chat.take()
    assert chat("/retry") == 0
    assert "every step of run" in chat.take()[1]


# -- /help, /tools, /config, /history, /exit, mistakes ------------------------------------------


def test_help_lists_every_command_and_the_keys() -> None:
    chat = Chat(RuleChat([]))
    assert chat("/help") == 0
    out = chat.take()[0]
    for name in COMMANDS:
        assert name in out
    assert "Esc then Enter" in out and "backslash" in out and "Ctrl-C" in out and "Ctrl-D" in out


def test_tools_lists_the_registry_with_kinds() -> None:
    chat = Chat(RuleChat([]))
    assert chat("/tools") == 0
    out = chat.take()[0]
    assert "content_generator  [llm] Writes original content" in out
    assert "word_count" in out and "[python]" in out


def test_config_shows_the_effective_settings_and_no_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-very-secret")
    url = "http://user:hunter2@llm.local:8000/v1?api-key=topsecret"
    chat = Chat(RuleChat([]), False, **{"backend.base_url": url, "run.max_workers": 3})
    assert chat("/config") == 0
    out = chat.take()[0]
    assert "max_workers: 3" in out and "context_tokens: 2000" in out
    assert "$OPENAI_API_KEY is set" in out
    for secret in ("sk-very-secret", "hunter2", "topsecret", "user:"):
        assert secret not in out
    assert "***@llm.local:8000/v1" in out


def test_redact_url_keeps_plain_urls() -> None:
    assert redact_url("http://127.0.0.1:8000/v1") == "http://127.0.0.1:8000/v1"
    assert redact_url(None) is None


def test_history_lists_this_sessions_turns() -> None:
    bad = plan_json(("a", "A", "painter", []))
    chat = Chat(RuleChat([JOKE, bad, bad, bad]))
    assert chat("/history") == 0
    assert chat.take()[0] == "no turns yet\n"
    chat("write a joke\nabout cats")
    chat("paint it")
    chat.take()
    chat("/history")
    lines = chat.take()[0].splitlines()
    assert lines[0].startswith("#1 write a joke…  (succeeded, run ")
    assert lines[1] == "    FINAL ANSWER"
    assert lines[2] == "#2 paint it  (no plan)" and "no valid plan" in lines[3]


def test_exit_leaves() -> None:
    assert Chat(RuleChat([]))("/exit") == LEAVE


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("/bogus", "unknown command '/bogus'; /help lists the commands"),
        ("/pla write", "unknown command '/pla'; did you mean /plan? /help lists the commands"),
        ("/plan", "/plan needs an argument (usage: /plan REQUEST)"),
        ("/run now", "/run takes no argument (usage: /run)"),
        ("/help me", "/help takes no argument (usage: /help)"),
        ("/save a b", "/save takes one argument, got 'a b'"),
        ("/save 'a", "/save: No closing quotation"),
    ],
)
def test_a_mistake_is_one_line_and_exit_2(line: str, message: str) -> None:
    model = RuleChat([])
    chat = Chat(model)
    assert chat(line) == 2
    out, err = chat.take()
    assert out == "" and err.startswith("overseer: " + message) and err.count("\n") == 1
    assert model.requests == []


def test_a_command_and_its_argument_may_be_split_over_lines() -> None:
    chat = Chat(RuleChat([JOKE]))
    assert chat("/plan\nwrite a joke\nand translate it") == 0
    assert chat.session.last_plan is not None
    assert chat.session.last_plan.request == "write a joke\nand translate it"


def test_commands_are_case_insensitive() -> None:
    chat = Chat(RuleChat([]))
    assert chat("/HELP") == 0


# -- the scripted loop -------------------------------------------------------------------------


def scripted(model: RuleChat, text: str, *flags: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    args = chat_parser().parse_args(list(flags))
    code = run_chat(args, chat=model, stdin=io.StringIO(text), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def test_piped_lines_are_one_message_each_with_plain_progress() -> None:
    code, out, err = scripted(RuleChat([JOKE]), "write a joke\n/history\n")
    assert code == 0
    assert out.startswith("FINAL ANSWER\n#1 write a joke  (succeeded")
    assert "plan: 2 steps" in err and "step1 started" in err and "run succeeded" in err
    assert "\x1b[" not in err


def test_piped_exit_code_is_the_last_failure_and_exit_stops_reading() -> None:
    bad = plan_json(("a", "A", "painter", []))
    code, out, _ = scripted(RuleChat([bad, bad, bad, JOKE]), "paint\njoke\n/exit\nnever\n", "-q")
    assert code == 3 and out == "FINAL ANSWER\n"


def test_piped_json_is_one_object_a_line() -> None:
    code, out, err = scripted(RuleChat([JOKE, JOKE]), "a\nb\n", "--json", "-q")
    assert code == 0 and err == ""
    assert [json.loads(line)["request"] for line in out.splitlines()] == ["a", "b"]


def test_a_trailing_backslash_continues_the_message() -> None:
    assert list(logical_lines(["one\\\n", "two\n", "three\n", "dangling\\"])) == [
        "one\ntwo",
        "three",
        "dangling",
    ]
    model = RuleChat([JOKE])
    scripted(model, "write a joke\\\nabout cats\n", "-q")
    assert "Request: write a joke\nabout cats" in plan_requests(model)[0].messages[-1]["content"]


# -- /runs and /show: the run journal ------------------------------------------------------------


def test_runs_and_show_read_the_journal_this_chat_records_into() -> None:
    chat = Chat(RuleChat([JOKE]))
    chat("write a joke and translate it")
    run_id = chat.session.conversation.turns[0].run_id
    assert run_id is not None
    chat.take()
    assert chat("/runs") == 0
    out = chat.take()[0]
    assert out.splitlines()[0].split() == ["ID", "WHEN", "STATUS", "STEPS", "REQUEST"]
    assert run_id in out and "succeeded" in out and "2/2" in out
    assert chat(f"/show {run_id[:-2]}") == 0
    shown = chat.take()[0]
    assert shown.startswith(f"run {run_id}: succeeded")
    assert "step2 [translator] Translate the joke to French" in shown
    assert "FINAL ANSWER" in shown


def test_no_runs_yet_says_where_it_looked() -> None:
    chat = Chat(RuleChat([]))
    assert chat("/runs") == 0
    out, err = chat.take()
    assert out == "" and err.startswith("no runs recorded yet (journal: ")


def test_runs_and_show_in_json_mode() -> None:
    chat = Chat(RuleChat([JOKE]), json_mode=True)
    chat("jokes")
    chat.take()
    chat("/runs")
    [summary] = json.loads(chat.take()[0])
    assert summary["request"] == "jokes" and summary["status"] == "succeeded"
    chat(f"/show {summary['run_id']}")
    assert json.loads(chat.take()[0])["answer"] == "FINAL ANSWER"


def test_a_retry_is_recorded_as_another_attempt_of_the_same_run() -> None:
    fixed = threading.Event()
    plan = plan_json(("a", "A", "general", []), ("b", "B", "general", []))
    chat = Chat(RuleChat([plan], flaky_until(fixed)), False, **{"run.on_error": "continue"})
    chat("ab")
    fixed.set()
    chat("/retry")
    run_id = chat.session.conversation.turns[-1].run_id
    chat.take()
    chat(f"/show {run_id}")
    shown = chat.take()[0]
    assert shown.startswith(f"run {run_id}: succeeded") and "(2 attempts)" in shown


def test_show_an_unknown_run_is_one_line() -> None:
    chat = Chat(RuleChat([]))
    assert chat("/show nosuchrun") == 2
    out, err = chat.take()
    assert out == "" and err.count("\n") == 1 and "no run 'nosuchrun'" in err


def test_with_the_journal_off_turns_are_not_recorded() -> None:
    chat = Chat(RuleChat([JOKE]), False, journal=False)
    chat("jokes")
    chat.take()
    chat("/runs")
    assert chat.take()[1].startswith("no runs recorded yet")


def test_a_damaged_journal_is_a_warning_and_never_stops_the_chat(tmp_path: Path) -> None:
    home = Path(os.environ["OVERSEER_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    (home / "journal.sqlite3").write_bytes(b"this is not a database" * 100)
    out, err = io.StringIO(), io.StringIO()
    args = chat_parser().parse_args(["-q"])
    code = run_chat(
        args, chat=RuleChat([JOKE]), stdin=io.StringIO("jokes\n/runs\n"), stdout=out, stderr=err
    )
    assert out.getvalue() == "FINAL ANSWER\n"
    lines = err.getvalue().splitlines()
    assert lines[0].startswith("overseer: warning: ") and "journal" in lines[0]
    assert lines[-1].startswith("overseer: ") and len(lines) == 2
    assert code == 1
