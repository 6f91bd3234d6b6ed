"""``overseer chat``: the interactive REPL, and its scriptable twin for piped input.

On a terminal, prompt_toolkit reads each message: history kept across sessions in the user's
state directory, Esc-Enter or a trailing backslash for a new line, Tab to complete a command,
Ctrl-C to clear the line, Ctrl-D to leave. Ctrl-C while a request runs stops it (the engine turns
the interrupt into a cancel of the steps in flight) and returns to the prompt. When stdin is not a
terminal, each line is one message, answers go to stdout and progress to stderr.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

from prompt_toolkit import PromptSession
from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document
from prompt_toolkit.history import FileHistory, History, InMemoryHistory
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent
from prompt_toolkit.output import Output as TerminalOutput
from prompt_toolkit.output import create_output

from overseer.backends.chat import ChatClient
from overseer.errors import EXIT_INTERRUPTED, EXIT_OK
from overseer.interfaces.chat.commands import COMMANDS, LEAVE, Commands, JournalWarnings, Output
from overseer.interfaces.chat.session import ChatSession, WatcherFactory
from overseer.interfaces.common import Parser, add_common_flags, settings_from_args
from overseer.interfaces.display import Display
from overseer.interfaces.signals import raise_if_terminated

__all__ = [
    "HISTORY_FILE",
    "PROMPT",
    "chat_parser",
    "history_path",
    "logical_lines",
    "run_chat",
    "state_dir",
]

PROMPT = "overseer> "
HISTORY_FILE = "chat_history"
WELCOME = "overseer chat: type a request; /help lists the commands; Ctrl-D leaves"


def chat_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="overseer chat",
        description="Chat with overseer: each message is planned and run, and earlier turns "
        "are its context. Type /help inside for the commands.",
    )
    add_common_flags(parser)
    parser.add_argument(
        "--no-synthesize", action="store_true", help="print each step's output, no final answer"
    )
    return parser


def state_dir() -> Path:
    """``$OVERSEER_HOME``, else ``$XDG_STATE_HOME/overseer``, else ``~/.local/state/overseer``."""
    home = os.environ.get("OVERSEER_HOME")
    if home:
        return Path(home).expanduser()
    xdg = os.environ.get("XDG_STATE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "state"
    return base / "overseer"


def history_path() -> Path:
    """Where the chat's input history is kept across sessions."""
    return state_dir() / HISTORY_FILE


def run_chat(
    args: argparse.Namespace,
    *,
    chat: ChatClient | None = None,
    stdin: IO[str] | None = None,
    stdout: IO[str] | None = None,
    stderr: IO[str] | None = None,
) -> int:
    """The ``overseer chat`` command; returns the exit code."""
    stdin, stdout, stderr = stdin or sys.stdin, stdout or sys.stdout, stderr or sys.stderr
    interactive = stdin.isatty()
    output = Output(stdout, stderr, json=args.json, indent=2 if interactive else None)
    watchers = (*_progress(args, stderr, interactive), lambda: JournalWarnings(output))
    session = ChatSession(settings_from_args(args), chat=chat, watchers=watchers)
    commands = Commands(session, output)
    if interactive:
        return _interactive(commands, _terminal_prompt(output))
    return _scripted(commands, stdin)


def _progress(
    args: argparse.Namespace, stderr: IO[str], interactive: bool
) -> tuple[WatcherFactory, ...]:
    """The live display on a terminal, plain lines otherwise, nothing with ``--quiet``."""
    if args.quiet:
        return ()
    live = None if interactive else False
    return (lambda: Display(stderr, live=live),)


# -- the two loops -----------------------------------------------------------------------------


def _interactive(commands: Commands, prompt: PromptSession[str]) -> int:
    commands.output.note(WELCOME)
    while True:
        try:
            line = prompt.prompt()
        except KeyboardInterrupt:
            raise_if_terminated()  # SIGTERM/SIGHUP end the chat; Ctrl-C does not
            continue  # Ctrl-C at the prompt clears the line
        except EOFError:
            return EXIT_OK
        if _handle(commands, line) == LEAVE:
            return EXIT_OK


def _scripted(commands: Commands, lines: Iterable[str]) -> int:
    """One message a line; exit with the code of the last failure (0 if none); Ctrl-C ends."""
    status = EXIT_OK
    try:
        for line in logical_lines(lines):
            code = _handle(commands, line)
            if code in (LEAVE, EXIT_INTERRUPTED):
                return status if code == LEAVE else code
            status = code or status
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    return status


def _handle(commands: Commands, line: str) -> int:
    """One message; an interrupt the engine did not take (say, while printing) cancels it."""
    try:
        code = commands.handle(line)
    except KeyboardInterrupt:
        commands.output.note("cancelled")
        code = EXIT_INTERRUPTED
    raise_if_terminated()  # a run cancelled by SIGTERM/SIGHUP ends the chat too
    return code


def logical_lines(lines: Iterable[str]) -> Iterator[str]:
    """Lines with a trailing backslash joined to the next one by a newline."""
    pending: list[str] = []
    for raw in lines:
        line = raw.rstrip("\r\n")
        if line.endswith("\\"):
            pending.append(line[:-1])
            continue
        yield "\n".join([*pending, line])
        pending = []
    if pending:
        yield "\n".join(pending)


# -- the terminal ------------------------------------------------------------------------------


class _SlashCompleter(Completer):
    """Tab after ``/``: the command names."""

    def get_completions(self, document: Document, event: CompleteEvent) -> Iterator[Completion]:
        text = document.text_before_cursor
        if not text.startswith("/") or " " in text or "\n" in text:
            return
        for name, command in COMMANDS.items():
            if name.startswith(text.lower()):
                yield Completion(name, -len(text), display_meta=command.summary)


def _terminal_prompt(output: Output) -> PromptSession[str]:
    return PromptSession(
        PROMPT,
        multiline=True,
        key_bindings=_key_bindings(),
        history=_history(output),
        prompt_continuation=_continuation,
        completer=_SlashCompleter(),
        complete_while_typing=False,
        output=_prompt_output(),
    )


def _continuation(width: int, line_number: int, wrap_count: int) -> str:
    return "." * (width - 1) + " "


def _key_bindings() -> KeyBindings:
    """Enter sends, unless the line ends in a backslash; Esc-Enter always starts a new line."""
    bindings = KeyBindings()

    @bindings.add("escape", "enter")
    def _newline(event: KeyPressEvent) -> None:
        event.current_buffer.insert_text("\n")

    @bindings.add("enter")
    def _enter(event: KeyPressEvent) -> None:
        buffer = event.current_buffer
        if buffer.document.is_cursor_at_the_end and buffer.text.endswith("\\"):
            buffer.delete_before_cursor(1)
            buffer.insert_text("\n")
        else:
            buffer.validate_and_handle()

    return bindings


def _history(output: Output) -> History:
    """The history file (private to the user), or one in memory if it cannot be written."""
    path = history_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600, exist_ok=True)
    except OSError as exc:
        output.problem(f"history is not kept: cannot write {str(path)!r}: {exc.strerror or exc}")
        return InMemoryHistory()
    return FileHistory(str(path))


def _prompt_output() -> TerminalOutput | None:
    """Draw the prompt on stdout, or on stderr when only stderr is a terminal."""
    if sys.stdout.isatty() or not sys.stderr.isatty():
        return None
    return create_output(stdout=sys.stderr)
