"""The shell command: thin wiring of settings, engine and display.

``overseer "REQUEST"`` runs a request; ``overseer plan "REQUEST"`` prints the plan. Expected
failures print one line ``overseer: error: ...`` on stderr and exit with the code DESIGN.md gives.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from overseer.errors import (
    EXIT_CONFIG,
    EXIT_INTERRUPTED,
    OverseerError,
    PermanentBackendError,
    UsageError,
)
from overseer.interfaces.common import (
    Parser,
    add_common_flags,
    make_display,
    make_engine,
    print_json,
    print_report,
    say,
    settings_from_args,
)
from overseer.interfaces.safe_text import visible
from overseer.interfaces.signals import handling_signals, received
from overseer.interfaces.startup import finishing, own_process, starting

__all__ = ["main"]

Handler = Callable[[argparse.Namespace], int]


def _run_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="overseer",
        description="Split a request into steps with an LLM and run the independent ones at once.",
        epilog="commands: overseer plan REQUEST | overseer chat | overseer runs | "
        "overseer resume ID | overseer doctor",
    )
    parser.add_argument("request", help="what you want done")
    add_common_flags(parser)
    parser.add_argument(
        "--no-synthesize", action="store_true", help="print each step's output, no final answer"
    )
    return parser


def _plan_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="overseer plan", description="Print the validated plan and stop.")
    parser.add_argument("request")
    add_common_flags(parser)
    parser.add_argument(
        "--format",
        choices=["json", "mermaid", "dot"],
        default="json",
        help="json (the default), or the dependency graph as Mermaid or Graphviz dot",
    )
    return parser


def _cmd_run(args: argparse.Namespace) -> int:
    if not args.request.strip():
        raise UsageError("the request is empty; say what you want done")
    with starting():  # the display's rich is loaded with the rest of start-up
        engine = make_engine(args)
        display = make_display(args)
    if display is not None:
        engine.subscribe(display.handle)
    try:
        report = engine.run(args.request)
    finally:
        if display is not None:
            display.stop()
        engine.close()  # stops the embedded model's server, if this run started one
    return print_report(args, report, resumable=engine.journal is not None)


def _cmd_plan(args: argparse.Namespace) -> int:
    with starting():
        from overseer.engine import Overseer

        engine = Overseer(settings_from_args(args), journal=False)  # no run: nothing to record
    with engine:
        result = engine.plan(args.request)
    if args.format == "json":
        print_json(result.plan.to_dict())
    else:
        from overseer.core.graph import render_graph

        sys.stdout.write(visible(render_graph(result.plan, args.format)))
    for warning in result.warnings:
        say(f"warning: {warning}")
    return 0


def _chat_parser() -> argparse.ArgumentParser:
    from overseer.interfaces.chat.repl import chat_parser

    return chat_parser()


def _cmd_chat(args: argparse.Namespace) -> int:
    from overseer.interfaces.chat.repl import run_chat

    return run_chat(args)


def _runs_parser() -> argparse.ArgumentParser:
    from overseer.interfaces.runs import runs_parser

    return runs_parser()


def _cmd_runs(args: argparse.Namespace) -> int:
    from overseer.interfaces.runs import cmd_runs

    return cmd_runs(args)


def _resume_parser() -> argparse.ArgumentParser:
    from overseer.interfaces.runs import resume_parser

    return resume_parser()


def _cmd_resume(args: argparse.Namespace) -> int:
    from overseer.interfaces.runs import cmd_resume

    return cmd_resume(args)


def _batch_parser() -> argparse.ArgumentParser:
    from overseer.interfaces.batch import batch_parser

    return batch_parser()


def _cmd_batch(args: argparse.Namespace) -> int:
    from overseer.interfaces.batch import cmd_batch

    return cmd_batch(args)


def _doctor_parser() -> argparse.ArgumentParser:
    from overseer.interfaces.doctor import parser

    return parser()


def _cmd_doctor(args: argparse.Namespace) -> int:
    from overseer.interfaces.doctor import main as doctor_main

    return doctor_main(args)


COMMANDS: dict[str, tuple[Callable[[], argparse.ArgumentParser], Handler]] = {
    "plan": (_plan_parser, _cmd_plan),
    "runs": (_runs_parser, _cmd_runs),
    "resume": (_resume_parser, _cmd_resume),
    "chat": (_chat_parser, _cmd_chat),
    "doctor": (_doctor_parser, _cmd_doctor),
    "batch": (_batch_parser, _cmd_batch),
}


def _dispatch(argv: Sequence[str]) -> int:
    if argv and argv[0] in COMMANDS:
        make_parser, handler = COMMANDS[argv[0]]
        return handler(make_parser().parse_args(argv[1:]))
    if argv and argv[0] in ("-V", "--version"):
        from importlib.metadata import version

        print(f"overseer {version('overseer')}")
        return 0
    return _cmd_run(_run_parser().parse_args(argv))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``overseer`` command; returns the exit code.

    SIGTERM and SIGHUP are handled as Ctrl-C is (see ``signals``): the run is cancelled and
    recorded as interrupted, and the exit code is 143 or 129 instead of 130."""
    args = list(sys.argv[1:] if argv is None else argv)
    with handling_signals():
        try:
            code = _main(args)
        except OSError:  # after SIGHUP the terminal may be gone: the lines cannot be written
            if received() is None:
                raise
            _silence_output()
            code = EXIT_INTERRUPTED
        signum = received()
    return 128 + signum if signum is not None and code == EXIT_INTERRUPTED else code


def _silence_output() -> None:
    """Point stdout and stderr at /dev/null, so that the flush at exit cannot fail again (the
    way Python's documentation gives for a closed pipe)."""
    null = os.open(os.devnull, os.O_WRONLY)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            os.dup2(null, stream.fileno())
    os.close(null)


def _main(args: list[str]) -> int:
    try:
        return _dispatch(args)
    except KeyboardInterrupt as exc:
        say(str(exc) or "interrupted")
        return EXIT_INTERRUPTED
    except PermanentBackendError as exc:
        say(f"error: {exc}")
        return EXIT_CONFIG if exc.is_configuration else exc.exit_code
    except OverseerError as exc:
        say(f"error: {exc}")
        return exc.exit_code


def entry() -> NoReturn:
    """The ``overseer`` process: ``main`` in a process that is the command's own (``startup``)."""
    own_process()
    code = main()
    finishing()
    sys.exit(code)


if __name__ == "__main__":
    entry()
