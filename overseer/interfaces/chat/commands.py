"""What each line of the chat does, and how its result is shown.

A line that starts with ``/`` is a command; any other line (or one starting with ``//``, sent
without its first slash) is a request. Results go to ``out`` (stdout), progress, notes and
problems to ``err`` (stderr). A bad command or argument is one line on ``err``; the chat goes on.
Each handler returns an exit code (DESIGN.md's), or ``LEAVE`` for ``/exit``.
"""

from __future__ import annotations

import difflib
import json
import os
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal
from urllib.parse import urlsplit, urlunsplit

import yaml

from overseer.core.plan import Plan
from overseer.errors import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_RUN_FAILED,
    OverseerError,
    UsageError,
)
from overseer.events import Event, JournalProblem
from overseer.interfaces.chat.conversation import Turn
from overseer.interfaces.chat.session import ChatSession, unfinished_steps
from overseer.interfaces.runs import format_run, format_runs
from overseer.interfaces.safe_text import json_safe, visible

__all__ = [
    "COMMANDS",
    "LEAVE",
    "RUNS_SHOWN",
    "Command",
    "Commands",
    "JournalWarnings",
    "Output",
    "config_text",
    "help_text",
    "plan_text",
    "redact_url",
    "tools_text",
    "turn_line",
]

LEAVE = -1
"""Returned by ``/exit``: leave the chat."""

RUNS_SHOWN = 20
"""How many runs ``/runs`` lists."""

KEYS_HELP = (
    "Enter sends. Esc then Enter, or a line ending in a backslash, starts a new line.\n"
    "Ctrl-C stops the request that is running (or clears the line); Ctrl-D or /exit leaves.\n"
    "Up and Down walk through the history of earlier chats; Tab completes a command.\n"
    "A line starting with // is sent as a request starting with /."
)


@dataclass
class Output:
    """Where results (``out``) and everything else (``err``) go; ``json`` for ``--json``.
    Text goes through ``safe_text``: much of it is the model's, and must not drive a terminal."""

    out: IO[str]
    err: IO[str]
    json: bool = False
    indent: int | None = 2
    answers: int = 0  # answers shown so far

    def answer(self, text: str) -> None:
        """A turn's answer; a blank line sets it apart from the answer before it, so that piped
        output shows where each turn's answer begins."""
        if self.answers:
            self.out.write("\n")
        self.answers += 1
        self.show(text)

    def show(self, text: str) -> None:
        self._write(self.out, visible(text))

    def data(self, value: Any) -> None:
        self._write(self.out, json_safe(json.dumps(value, ensure_ascii=False, indent=self.indent)))

    def note(self, text: str) -> None:
        self._write(self.err, visible(text))

    def problem(self, text: str) -> None:
        self._write(self.err, f"overseer: {visible(text)}")

    @staticmethod
    def _write(stream: IO[str], text: str) -> None:
        stream.write(text.rstrip("\n") + "\n")
        stream.flush()


class JournalWarnings:
    """Watches a run for the journal's one-line problems and shows each as a warning."""

    def __init__(self, output: Output) -> None:
        self.output = output

    def handle(self, event: Event) -> None:
        if isinstance(event, JournalProblem):
            self.output.problem(f"warning: {event.message}")

    def stop(self) -> None:
        return None


Arity = Literal["none", "one", "text"]
Handler = Callable[["Commands", str], int]


@dataclass(frozen=True)
class Command:
    """``usage`` starts with the command's name; ``arity`` says what argument it takes."""

    usage: str
    summary: str
    arity: Arity
    handler: Handler

    @property
    def name(self) -> str:
        return self.usage.split()[0]


class Commands:
    """Runs lines of the chat against one ``ChatSession``."""

    def __init__(self, session: ChatSession, output: Output) -> None:
        self.session = session
        self.output = output

    def handle(self, line: str) -> int:
        """Do what ``line`` asks; a blank line does nothing."""
        text = line.strip()
        if not text:
            return EXIT_OK
        try:
            if text.startswith("/") and not text.startswith("//"):
                return self._command(text)
            return self.ask(text.removeprefix("/") if text.startswith("//") else text)
        except OverseerError as exc:
            self.output.problem(str(exc))
            return exc.exit_code

    def ask(self, request: str) -> int:
        return self.present(self.session.ask(request))

    def present(self, turn: Turn) -> int:
        """Print a turn's answer (or its JSON) on ``out`` and what went wrong on ``err``."""
        if self.output.json and turn.report is not None:
            self.output.data(turn.report.to_json())
        elif turn.status != "cancelled" and turn.answer:
            self.output.answer(turn.answer)
        if turn.status == "cancelled":
            self.output.note(_cancelled_note(turn))
        elif turn.error:
            self.output.problem(_failure_note(turn))
        return turn.code

    def _command(self, text: str) -> int:
        name, arg = [*text.split(maxsplit=1), ""][:2]  # any space or newline ends the name
        command = COMMANDS.get(name.lower())
        if command is None:
            raise UsageError(_unknown(name))
        return command.handler(self, _argument(command, arg.strip()))


def _argument(command: Command, arg: str) -> str:
    if command.arity == "none" and arg:
        raise UsageError(f"{command.name} takes no argument (usage: {command.usage})")
    if command.arity != "none" and not arg:
        raise UsageError(f"{command.name} needs an argument (usage: {command.usage})")
    if command.arity == "one":
        return _one_word(command, arg)
    return arg


def _one_word(command: Command, arg: str) -> str:
    try:
        words = shlex.split(arg)
    except ValueError as exc:
        raise UsageError(f"{command.name}: {exc} in {arg!r} (usage: {command.usage})") from None
    if len(words) != 1:
        raise UsageError(
            f"{command.name} takes one argument, got {arg!r} (usage: {command.usage}; "
            "quote a name with spaces)"
        )
    return words[0]


def _unknown(name: str) -> str:
    close = difflib.get_close_matches(name.lower(), list(COMMANDS), n=1)
    hint = f"did you mean {close[0]}? " if close else ""
    return f"unknown command {name!r}; {hint}/help lists the commands"


def _cancelled_note(turn: Turn) -> str:
    if turn.report is None:
        return "cancelled"
    left = unfinished_steps(turn.report)
    return f"cancelled: {len(left)} of {len(turn.report.plan.steps)} steps did not finish; " + (
        "/retry runs them"
    )


def _failure_note(turn: Turn) -> str:
    if turn.report is None:
        return f"error: {turn.error}"
    return f"run {turn.report.status}: {turn.error} (/retry runs the steps that did not succeed)"


# -- the commands ------------------------------------------------------------------------------


def _help(commands: Commands, arg: str) -> int:
    commands.output.show(help_text())
    return EXIT_OK


def _exit(commands: Commands, arg: str) -> int:
    return LEAVE


def _plan(commands: Commands, request: str) -> int:
    try:
        result = commands.session.plan(request)
    except KeyboardInterrupt:
        commands.output.note("cancelled")
        return EXIT_INTERRUPTED
    if commands.output.json:
        commands.output.data(result.plan.to_dict())
    else:
        commands.output.show(plan_text(result.plan))
    for warning in result.warnings:
        commands.output.note(f"warning: {warning}")
    commands.output.note("/run runs this plan; /save FILE writes it as JSON")
    return EXIT_OK


def _run(commands: Commands, arg: str) -> int:
    return commands.present(commands.session.run_plan())


def _retry(commands: Commands, arg: str) -> int:
    last = commands.session.conversation.last_run()
    if last is None or last.report is None:
        raise UsageError("nothing to retry: no request has run in this chat yet")
    left = unfinished_steps(last.report)
    if not left:
        commands.output.note(f"nothing to retry: every step of run {last.report.run_id} succeeded")
        return EXIT_OK
    kept = len(last.report.plan.steps) - len(left)
    commands.output.note(f"retrying {', '.join(left)}; reusing the outputs of {kept} steps")
    return commands.present(commands.session.retry())


def _save(commands: Commands, name: str) -> int:
    planned = commands.session.last_plan
    if planned is None:
        raise UsageError("there is no plan to save yet: make one with /plan REQUEST")
    path = Path(name).expanduser()
    text = json.dumps(planned.plan.to_dict(), ensure_ascii=False, indent=2) + "\n"
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        commands.output.problem(f"cannot write {str(path)!r}: {exc.strerror or exc}")
        return EXIT_RUN_FAILED
    commands.output.note(f"saved the plan of {planned.request!r} to {str(path)!r}")
    return EXIT_OK


def _tools(commands: Commands, arg: str) -> int:
    commands.output.show(tools_text(commands.session))
    return EXIT_OK


def _config(commands: Commands, arg: str) -> int:
    commands.output.show(config_text(commands.session))
    return EXIT_OK


def _runs(commands: Commands, arg: str) -> int:
    journal = commands.session.runs()
    summaries = journal.list_runs(RUNS_SHOWN)
    if commands.output.json:
        commands.output.data([s.to_dict() for s in summaries])
    elif summaries:
        commands.output.show(format_runs(summaries))
        if len(summaries) == RUNS_SHOWN:
            commands.output.note(f"the newest {RUNS_SHOWN} runs; 'overseer runs --limit 0' has all")
    else:
        commands.output.note(f"no runs recorded yet (journal: {str(journal.path)!r})")
    return EXIT_OK


def _show(commands: Commands, ref: str) -> int:
    stored = commands.session.runs().load(ref)
    if commands.output.json:
        commands.output.data(stored.to_json())
    else:
        commands.output.show(format_run(stored))
    return EXIT_OK


def _history(commands: Commands, arg: str) -> int:
    turns = commands.session.conversation.turns
    commands.output.show("\n".join(map(turn_line, turns)) if turns else "no turns yet")
    return EXIT_OK


_TABLE = (
    Command("/help", "this help", "none", _help),
    Command("/plan REQUEST", "plan a request and show the plan; run nothing", "text", _plan),
    Command("/run", "run the last plan (from /plan or the last request)", "none", _run),
    Command(
        "/retry", "run the failed, skipped and cancelled steps of the last run", "none", _retry
    ),
    Command("/tools", "the tools the planner may use", "none", _tools),
    Command("/config", "the effective settings (no secrets)", "none", _config),
    Command("/history", "this chat's requests and what became of them", "none", _history),
    Command("/runs", "the newest recorded runs, of this chat and any other", "none", _runs),
    Command("/show RUN", "one recorded run (an id or a unique prefix of one)", "one", _show),
    Command("/save FILE", "write the last plan to FILE as JSON", "one", _save),
    Command("/exit", "leave (Ctrl-D does too)", "none", _exit),
)
COMMANDS: dict[str, Command] = {c.name: c for c in _TABLE}


# -- formatting ----------------------------------------------------------------------------


def help_text() -> str:
    """Every command with its usage, then the keys."""
    width = max(len(c.usage) for c in COMMANDS.values())
    lines = ["Type a request to plan and run it; earlier turns are its context.", ""]
    lines += [f"  {c.usage:<{width}}  {c.summary}" for c in COMMANDS.values()]
    return "\n".join([*lines, "", KEYS_HELP])


def plan_text(plan: Plan) -> str:
    """One line per step: id, tool, description and what it waits for."""
    lines = [f"plan: {len(plan.steps)} steps"]
    for step in plan.steps:
        after = f"  (after {', '.join(step.depends_on)})" if step.depends_on else ""
        lines.append(f"  {step.step_id} [{step.tool}] {step.description}{after}")
    return "\n".join(lines)


def tools_text(session: ChatSession) -> str:
    kinds = {t.name: t.kind for t in session.settings.enabled_tools}
    names = session.registry.names()
    width = max((len(n) for n in names), default=0)
    lines = []
    for name in names:
        tool = session.registry.get(name)
        cap = f" (at most {tool.max_concurrency} at once)" if tool.max_concurrency else ""
        kind = f"[{kinds[name]}] " if name in kinds else ""
        lines.append(f"  {name:<{width}}  {kind}{tool.description}{cap}")
    return "\n".join(lines) or "no tools"


def config_text(session: ChatSession) -> str:
    """The effective settings as YAML, with credentials in the server URL masked."""
    settings = session.settings
    data = settings.model_dump(mode="json", exclude={"source"})
    data["backend"]["base_url"] = redact_url(settings.backend.base_url)
    key_env = settings.backend.api_key_env
    key_state = "set" if os.environ.get(key_env) else "not set"
    header = f"# from {settings.source}, with flags applied; API key: ${key_env} is {key_state}"
    return header + "\n" + yaml.safe_dump(data, sort_keys=False, allow_unicode=True).rstrip()


def redact_url(url: str | None) -> str | None:
    """``url`` without a password or query values (which may hold keys)."""
    if not url:
        return url
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    query = "&".join(f"{p.split('=', 1)[0]}=***" for p in parts.query.split("&") if p)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def turn_line(turn: Turn) -> str:
    """``#2 succeeded  request…`` and, below it, the start of the answer or the error."""
    marks: list[str] = [turn.status]
    if turn.run_id:
        marks.append(f"run {turn.run_id}")
    if turn.retry_of is not None:
        marks.append(f"retry of #{turn.retry_of}")
    if turn.superseded:
        marks.append("retried later")
    first = f"#{turn.number} {_first_line(turn.request)}  ({', '.join(marks)})"
    detail = turn.error if turn.status != "succeeded" else turn.answer
    return first + (f"\n    {_first_line(detail)}" if detail.strip() else "")


def _first_line(text: str, width: int = 100) -> str:
    lines = text.strip().splitlines() or [""]
    line = lines[0]
    more = len(lines) > 1 or len(line) > width
    return line[:width] + ("…" if more else "")
