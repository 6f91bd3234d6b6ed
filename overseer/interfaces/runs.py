"""``overseer runs``, ``overseer runs show ID`` and ``overseer resume ID``: the journal's commands.

Thin wiring of ``store.Journal`` for the shell; the text formatting is pure (``format_runs``,
``format_run``). ``cli.py`` registers these in its COMMANDS table.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from overseer.errors import OverseerError, UsageError
from overseer.interfaces.common import Parser, count, print_json, say
from overseer.interfaces.safe_text import visible

if TYPE_CHECKING:
    from overseer.config import Settings
    from overseer.core.report import RunReport
    from overseer.core.results import StepRecord
    from overseer.journal.store import Journal, RunSummary, StoredRun

__all__ = [
    "cmd_resume",
    "cmd_runs",
    "format_run",
    "format_runs",
    "resume_parser",
    "resume_settings",
    "runs_parser",
]

_REQUEST_WIDTH = 60
_HEAD_LINES = 3
_HEAD_WIDTH = 100
_SHOW_FORMATS = ("text", "json", "mermaid", "dot")


# -- parsers -------------------------------------------------------------------------------------


def runs_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="overseer runs",
        description="List the recorded runs, newest first. 'overseer runs show ID' shows one.",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON list on stdout")
    parser.add_argument(
        "--limit", type=count, default=20, metavar="N", help="at most N runs (0: all; 20)"
    )
    parser.add_argument(
        "--batch", metavar="ID", help="only the runs of the batch ID ('overseer batch')"
    )
    actions = parser.add_subparsers(dest="action", metavar="show ID")
    show = actions.add_parser(
        "show", prog="overseer runs show", help="show one run", description="Show one run."
    )
    show.add_argument("run_id", metavar="ID", help="a run id, or a prefix of exactly one")
    show.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="same as --format json"
    )
    show.add_argument(
        "--format",
        choices=_SHOW_FORMATS,
        default="text",
        help="text; json (the one-shot --json object); mermaid or dot (the plan's graph)",
    )
    return parser


def resume_parser() -> argparse.ArgumentParser:
    from overseer.interfaces.common import add_common_flags

    parser = Parser(
        prog="overseer resume",
        description="Continue an interrupted or failed run: the steps that succeeded are not "
        "run again and their outputs are reused.",
    )
    parser.add_argument("run_id", metavar="ID", help="a run id, or a prefix of exactly one")
    add_common_flags(parser)
    parser.add_argument(
        "--no-synthesize", action="store_true", help="print each step's output, no final answer"
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="resume even though the run looks live (its process seems to be still running)",
    )
    return parser


# -- handlers ------------------------------------------------------------------------------------


def cmd_runs(args: argparse.Namespace) -> int:
    journal = _journal()
    if args.action == "show":
        return _show(journal, args)
    summaries = journal.list_runs(args.limit or None, batch_id=args.batch)
    if args.json:
        print_json([s.to_dict() for s in summaries])
    elif summaries:
        sys.stdout.write(format_runs(summaries))
        if len(summaries) == args.limit:
            say(f"the newest {args.limit} runs; --limit 0 lists them all")
    elif args.batch is not None:
        say(f"no runs of batch {args.batch!r} in the journal {str(journal.path)!r}")
    else:
        say(f"no runs recorded yet (journal: {journal.path})")
    return 0


def _show(journal: Journal, args: argparse.Namespace) -> int:
    from overseer.core.graph import render_graph

    stored = journal.load(args.run_id)
    fmt = "json" if getattr(args, "json", False) else args.format
    if fmt == "json":
        print_json(stored.to_json())
    elif fmt == "text":
        sys.stdout.write(format_run(stored))
    elif stored.plan is None:
        raise OverseerError(f"run {stored.run_id!r} has no plan: it stopped while planning")
    else:
        statuses = {i: r.status for i, r in stored.records.items()}
        sys.stdout.write(visible(render_graph(stored.plan, fmt, statuses)))
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    """Continue a run with its recorded settings (flags given here win) and what it has left
    of its token budget."""
    from overseer.interfaces.common import make_engine, print_report

    stored = _journal().load(args.run_id)
    if stored.status == "succeeded":
        return _already_succeeded(args, stored)
    if stored.status == "running" and not getattr(args, "force", False):
        raise UsageError(
            f"run {stored.run_id!r} is still running (process {stored.summary.pid}); "
            "stop it or wait for it to finish (--force resumes it anyway)"
        )
    engine = make_engine(args, resume_settings(args, stored))
    report = _run_resumed(args, engine, stored)
    return int(print_report(args, report, resumable=engine.journal is not None))


_FLAG_KEYS = {
    "backend.base_url": "base_url",
    "backend.model": "model",
    "backend.planner_model": "planner_model",
    "run.max_workers": "max_workers",
    "run.step_timeout": "step_timeout",
    "run.on_error": "on_error",
    "run.max_tokens": "max_tokens",
}
"""The recorded settings a flag of ``resume`` can give instead (the flag wins)."""
_CAPS_KEY = "tools.max_concurrency"


def resume_settings(args: argparse.Namespace, stored: StoredRun) -> Settings:
    """The configuration and flags as for a new run, the run's recorded settings over the
    configuration, the flags over both; the budget is what is left after the tokens spent."""
    from overseer.engine import RECORDED_SETTINGS
    from overseer.interfaces.common import settings_from_args

    given = {key for key, name in _FLAG_KEYS.items() if getattr(args, name, None) is not None}
    recorded = {
        key: value
        for key, value in stored.settings.items()
        if key in RECORDED_SETTINGS and key not in given and value is not None
    }
    settings: Settings = settings_from_args(args).with_overrides(**recorded)
    settings = _with_caps(settings, stored.settings.get(_CAPS_KEY))
    return _remaining_budget(settings, stored)


def _with_caps(settings: Settings, caps: Any) -> Settings:
    """The tools' concurrency caps as the run had them (tools it no longer has are ignored)."""
    if not isinstance(caps, dict) or not caps:
        return settings
    tools = tuple(
        tool.model_copy(update={"max_concurrency": caps[tool.name]})
        if isinstance(caps.get(tool.name), int) and caps[tool.name] >= 1
        else tool
        for tool in settings.tools
    )
    return settings.model_copy(update={"tools": tools})


def _remaining_budget(settings: Settings, stored: StoredRun) -> Settings:
    budget, spent = settings.run.max_tokens, stored.spent.total_tokens
    if budget is None or not spent:
        return settings
    if budget <= spent:
        raise UsageError(
            f"run {stored.run_id!r} has already spent {spent} tokens, its whole budget of "
            f"{budget} (--max-tokens); give a larger --max-tokens to continue it"
        )
    return settings.with_overrides(**{"run.max_tokens": budget - spent})


def _run_resumed(args: argparse.Namespace, engine: Any, stored: StoredRun) -> RunReport:
    from overseer.interfaces.common import make_display

    done = len(stored.prior)
    say(f"resuming run {stored.run_id} ({done} step{'s' * (done != 1)} already done)")
    display = make_display(args)
    if display is not None:
        engine.subscribe(display.handle)
    try:
        report: RunReport = engine.resume(stored)  # in the round where it stopped
    finally:
        if display is not None:
            display.stop()
    return report


def _already_succeeded(args: argparse.Namespace, stored: StoredRun) -> int:
    say(f"run {stored.run_id} already succeeded; nothing to resume")
    if args.json:
        print_json(stored.to_json())
    else:
        print(visible(stored.answer))
    return 0


def _journal() -> Journal:
    from overseer.journal.store import Journal

    return Journal()


# -- text ----------------------------------------------------------------------------------------


def format_runs(summaries: list[RunSummary]) -> str:
    """The ``overseer runs`` table: id, when, status, steps done/total, the request shortened
    (control characters shown as escapes)."""
    rows = [("ID", "WHEN", "STATUS", "STEPS", "REQUEST")]
    rows += [
        (
            s.run_id,
            _when(s.created_at),
            s.status,
            f"{s.steps_done}/{s.steps_total}",
            _shorten(s.request, _REQUEST_WIDTH),
        )
        for s in summaries
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return visible("".join(_table_row(row, widths) for row in rows))


def _table_row(row: tuple[str, ...], widths: list[int]) -> str:
    cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
    return "  ".join([*cells, row[-1]]) + "\n"


def format_run(stored: StoredRun) -> str:
    """``overseer runs show ID``: the run, its plan, each step with the head of its output.
    Most of it is the model's text, so control characters are shown as escapes."""
    parts = [_run_header(stored), _plan_lines(stored), _step_lines(stored)]
    if stored.answer:
        parts.append("answer\n" + _indent(stored.answer.rstrip(), "  "))
    return visible("\n\n".join(p for p in parts if p) + "\n")


def _run_header(stored: StoredRun) -> str:
    s = stored.summary
    u = stored.usage
    lines = [
        f"run {s.run_id}: {s.status}",
        f"  request   {stored.request}",
        f"  started   {_when(s.created_at, seconds=True)}"
        + (f" ({s.attempts} attempts)" if s.attempts > 1 else ""),
        f"  steps     {s.steps_done}/{s.steps_total} succeeded"
        + (f" in {stored.rounds} rounds" if stored.rounds > 1 else ""),
        f"  tokens    {u.total_tokens} ({u.prompt_tokens} in, {u.completion_tokens} out)",
    ]
    if stored.timing.wall_s:
        lines.append(f"  wall time {stored.timing.wall_s:.2f}s")
    if stored.reason:
        lines.append(f"  reason    {stored.reason}")
    if stored.batch_id:
        lines.append(f"  batch     {stored.batch_id}")
    return "\n".join(lines)


def _plan_lines(stored: StoredRun) -> str:
    if stored.plan is None:
        return "plan\n  (none: the run stopped while planning)"
    lines = [f"plan ({len(stored.plan.steps)} steps)"]
    current = 1
    for step in stored.plan.steps:
        round_ = stored.steps_round.get(step.step_id, 1)
        if stored.rounds > 1 and round_ != current:
            lines.append(f"  round {round_}")
            current = round_
        after = f"  after {', '.join(step.depends_on)}" if step.depends_on else ""
        lines.append(f"  {step.step_id} [{step.tool}] {step.description}{after}")
    return "\n".join(lines)


def _step_lines(stored: StoredRun) -> str:
    if not stored.records:
        return ""
    lines = ["steps"]
    for record in stored.records.values():
        lines.append("  " + _step_line(record))
        body = record.output if record.status == "succeeded" else record.error
        if body:
            lines.append(_indent(_head(body), "      "))
    return "\n".join(lines)


def _step_line(record: StepRecord) -> str:
    line = f"{record.step_id}  {record.status}"
    if record.started_at is not None and record.finished_at is not None:
        line += f"  {record.duration:.2f}s"
    if record.attempts > 1:
        line += f"  {record.attempts} attempts"
    if record.usage.total_tokens:
        line += f"  {record.usage.total_tokens} tokens"
    return line


def _head(text: str) -> str:
    lines = text.strip().splitlines() or [""]
    head = [_shorten(line, _HEAD_WIDTH) for line in lines[:_HEAD_LINES]]
    if len(lines) > _HEAD_LINES:
        head.append(f"... ({len(lines) - _HEAD_LINES} more lines)")
    return "\n".join(head)


def _indent(text: str, prefix: str) -> str:
    return "\n".join(prefix + line if line else line for line in text.splitlines())


def _shorten(text: str, width: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 3].rstrip() + "..."


def _when(unix: float, *, seconds: bool = False) -> str:
    from datetime import datetime

    return datetime.fromtimestamp(unix).strftime("%Y-%m-%d %H:%M" + (":%S" if seconds else ""))
