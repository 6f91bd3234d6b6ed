"""What every command shares: its flags, the settings and engine they make, and how a finished
run is printed. The commands import this module; it imports none of them."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any, NoReturn

from overseer.errors import UsageError
from overseer.interfaces.safe_text import json_safe, visible

__all__ = [
    "Parser",
    "add_common_flags",
    "count",
    "make_display",
    "make_engine",
    "positive_int",
    "print_json",
    "print_report",
    "say",
    "settings_from_args",
]


class Parser(argparse.ArgumentParser):
    """argparse that raises instead of printing usage and exiting, so errors stay one line."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    """Seconds above 0; ``inf`` (or any huge number) means no limit, ``nan`` is refused."""
    value = _number(text, float)
    if not value > 0:  # also false for nan
        raise argparse.ArgumentTypeError(f"must be a number of seconds above 0, got {text!r}")
    return float(value)


def _number(text: str, kind: Callable[[str], Any]) -> Any:
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None


def count(text: str) -> int:
    value = _number(text, int)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 0, got {text!r}")
    return int(value)


def add_common_flags(parser: argparse.ArgumentParser) -> None:
    """The flags every command that plans or runs shares (DESIGN.md)."""
    parser.add_argument("--config", metavar="PATH", help="configuration file (YAML)")
    parser.add_argument("--base-url", metavar="URL", help="OpenAI-compatible server URL")
    parser.add_argument("--model", metavar="NAME", help="model for the steps")
    parser.add_argument("--planner-model", metavar="NAME", help="model for plans and the answer")
    parser.add_argument("--max-workers", type=positive_int, metavar="N", help="steps at once")
    parser.add_argument(
        "--step-timeout", type=_positive_float, metavar="SECONDS", help="per step; inf: none"
    )
    parser.add_argument("--on-error", choices=["fail-fast", "continue"])
    parser.add_argument("--max-tokens", type=positive_int, metavar="N", help="token budget")
    parser.add_argument(
        "--max-replans", type=count, metavar="N", help="new planning rounds after the first"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress on stderr")


_FLAGS = {
    "backend.base_url": "--base-url",
    "backend.model": "--model",
    "backend.planner_model": "--planner-model",
    "run.max_workers": "--max-workers",
    "run.step_timeout": "--step-timeout",
    "run.on_error": "--on-error",
    "run.max_tokens": "--max-tokens",
    "run.synthesize": "--no-synthesize",
}
"""The flag behind each override, so that a bad value is blamed on it."""


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
        "planner.max_replans": getattr(args, "max_replans", None),
        "local.max_replans": getattr(args, "max_replans", None),  # the flag wins there too
        "run.synthesize": False if getattr(args, "no_synthesize", False) else None,
    }
    return load_settings(getattr(args, "config", None), overrides, flags=_FLAGS)


def make_display(args: argparse.Namespace) -> Any:
    from overseer.interfaces.display import Display

    return None if args.quiet else Display(sys.stderr)


def make_engine(args: argparse.Namespace, settings: Any = None) -> Any:
    """The engine the flags describe (or ``settings``, when given); it records into the run
    journal and, if the journal cannot record a run, says so in one line on stderr."""
    from overseer.interfaces.startup import starting

    with starting():
        from overseer.engine import Overseer

        engine = Overseer(settings if settings is not None else settings_from_args(args))
    engine.subscribe(_warn_about_journal)
    return engine


def _warn_about_journal(event: Any) -> None:
    from overseer.events import JournalProblem

    if isinstance(event, JournalProblem):
        say(f"warning: {event.message}")


def print_report(args: argparse.Namespace, report: Any, *, resumable: bool = False) -> int:
    """Print a finished run as the one-shot command does; returns its exit code. The answer
    (or, with ``--no-synthesize``, the step outputs) is the model's text: its control
    characters are shown, never sent to the terminal raw."""
    if args.json:
        print_json(report.to_json())
    else:
        print(visible(report.answer))
        for warning in report.warnings:  # in --json they are the "warnings" field
            say(f"warning: {warning}")
    if report.outcome.reason and not report.outcome.ok:
        say(f"run {report.status}: {report.outcome.reason}")
    if resumable and not report.outcome.ok:
        say(f"to continue it: overseer resume {report.run_id}")
    return int(report.exit_code)


def print_json(data: Any) -> None:
    """``data`` as JSON on stdout; no control character in it reaches the terminal raw."""
    sys.stdout.write(json_safe(json.dumps(data, ensure_ascii=False, indent=2)) + "\n")
    sys.stdout.flush()


def say(message: str) -> None:
    """One line on stderr; messages often quote a model or a server, so shown safely."""
    sys.stderr.write(f"overseer: {visible(message)}\n")
    sys.stderr.flush()
