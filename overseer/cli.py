"""The shell command: thin wiring of settings, engine and display.

``overseer "REQUEST"`` runs a request; ``overseer plan "REQUEST"`` prints the plan. Expected
failures print one line ``overseer: error: ...`` on stderr and exit with the code DESIGN.md gives.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from overseer import doctor
from overseer.errors import (
    EXIT_CONFIG,
    EXIT_INTERRUPTED,
    OverseerError,
    PermanentBackendError,
    UsageError,
)

__all__ = ["main"]

Handler = Callable[[argparse.Namespace], int]


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of printing usage and exiting, so errors stay one line."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see 'overseer --help')")


def _positive_int(text: str) -> int:
    value = _number(text, int)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text!r}")
    return int(value)


def _positive_float(text: str) -> float:
    value = _number(text, float)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a number of seconds above 0, got {text!r}")
    return float(value)


def _number(text: str, kind: Callable[[str], Any]) -> Any:
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None


def add_common_flags(parser: argparse.ArgumentParser) -> None:
    """The flags every command that plans or runs shares (DESIGN.md)."""
    parser.add_argument("--config", metavar="PATH", help="configuration file (YAML)")
    parser.add_argument("--base-url", metavar="URL", help="OpenAI-compatible server URL")
    parser.add_argument("--model", metavar="NAME", help="model for the steps")
    parser.add_argument("--planner-model", metavar="NAME", help="model for plans and the answer")
    parser.add_argument("--max-workers", type=_positive_int, metavar="N", help="steps at once")
    parser.add_argument("--step-timeout", type=_positive_float, metavar="SECONDS")
    parser.add_argument("--on-error", choices=["fail-fast", "continue"])
    parser.add_argument("--max-tokens", type=_positive_int, metavar="N", help="token budget")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress on stderr")


def _run_parser() -> argparse.ArgumentParser:
    parser = _Parser(
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
    parser = _Parser(prog="overseer plan", description="Print the validated plan and stop.")
    parser.add_argument("request")
    add_common_flags(parser)
    parser.add_argument(
        "--format",
        choices=["json", "mermaid", "dot"],
        default="json",
        help="json (the default), or the dependency graph as Mermaid or Graphviz dot",
    )
    return parser


def settings_from_args(args: argparse.Namespace) -> Any:
    from overseer.config import load_settings

    overrides = {
        "backend.base_url": getattr(args, "base_url", None),
        "backend.model": getattr(args, "model", None),
        "backend.planner_model": getattr(args, "planner_model", None),
        "run.max_workers": getattr(args, "max_workers", None),
        "run.step_timeout": getattr(args, "step_timeout", None),
        "run.on_error": getattr(args, "on_error", None),
        "run.max_tokens": getattr(args, "max_tokens", None),
        "run.synthesize": False if getattr(args, "no_synthesize", False) else None,
    }
    return load_settings(getattr(args, "config", None), overrides)


def make_display(args: argparse.Namespace) -> Any:
    from overseer.display import Display

    return None if args.quiet else Display(sys.stderr)


def make_engine(args: argparse.Namespace) -> Any:
    """The engine the flags describe; it records into the run journal and, if the journal
    cannot record a run, says so in one line on stderr."""
    from overseer.engine import Overseer

    engine = Overseer(settings_from_args(args))
    engine.subscribe(_warn_about_journal)
    return engine


def _warn_about_journal(event: Any) -> None:
    from overseer.events import JournalProblem

    if isinstance(event, JournalProblem):
        say(f"warning: {event.message}")


def print_report(args: argparse.Namespace, report: Any, *, resumable: bool = False) -> int:
    """Print a finished run as the one-shot command does; returns its exit code."""
    if args.json:
        print_json(report.to_json())
    else:
        print(report.answer)
        for warning in report.warnings:  # in --json they are the "warnings" field
            say(f"warning: {warning}")
    if report.outcome.reason and not report.outcome.ok:
        say(f"run {report.status}: {report.outcome.reason}")
    if resumable and not report.outcome.ok:
        say(f"to continue it: overseer resume {report.run_id}")
    return int(report.exit_code)


def _cmd_run(args: argparse.Namespace) -> int:
    if not args.request.strip():
        raise UsageError("the request is empty; say what you want done")
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
    from overseer.engine import Overseer

    with Overseer(settings_from_args(args)) as engine:
        result = engine.plan(args.request)
    if args.format == "json":
        print_json(result.plan.to_dict())
    else:
        from overseer.graph import render_graph

        sys.stdout.write(render_graph(result.plan, args.format))
    for warning in result.warnings:
        say(f"warning: {warning}")
    return 0


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=2) + "\n")
    sys.stdout.flush()


def say(message: str) -> None:
    sys.stderr.write(f"overseer: {message}\n")
    sys.stderr.flush()


def _chat_parser() -> argparse.ArgumentParser:
    from overseer.repl import chat_parser

    return chat_parser()


def _cmd_chat(args: argparse.Namespace) -> int:
    from overseer.repl import run_chat

    return run_chat(args)


def _runs_parser() -> argparse.ArgumentParser:
    from overseer.cli_runs import runs_parser

    return runs_parser()


def _cmd_runs(args: argparse.Namespace) -> int:
    from overseer.cli_runs import cmd_runs

    return cmd_runs(args)


def _resume_parser() -> argparse.ArgumentParser:
    from overseer.cli_runs import resume_parser

    return resume_parser()


def _cmd_resume(args: argparse.Namespace) -> int:
    from overseer.cli_runs import cmd_resume

    return cmd_resume(args)


COMMANDS: dict[str, tuple[Callable[[], argparse.ArgumentParser], Handler]] = {
    "plan": (_plan_parser, _cmd_plan),
    "runs": (_runs_parser, _cmd_runs),
    "resume": (_resume_parser, _cmd_resume),
    "chat": (_chat_parser, _cmd_chat),
    "doctor": (doctor.parser, doctor.main),
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
    """Entry point of the ``overseer`` command; returns the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        return _dispatch(args)
    except KeyboardInterrupt:
        say("interrupted")
        return EXIT_INTERRUPTED
    except PermanentBackendError as exc:
        say(f"error: {exc}")
        return EXIT_CONFIG if exc.is_configuration else exc.exit_code
    except OverseerError as exc:
        say(f"error: {exc}")
        return exc.exit_code


def entry() -> NoReturn:
    sys.exit(main())


if __name__ == "__main__":
    entry()
