"""``overseer batch FILE``: run a file of requests, one JSON line of results per request.

Thin wiring: the input and output files, the runner (threads here, or a Dask cluster), the
progress on stderr and the exit code. What a rerun skips and how ids stay unique is in
``overseer.batch.output``.
"""

from __future__ import annotations

import argparse
import importlib.util
from collections.abc import Callable, Iterator
from typing import Any

from overseer.batch.inputs import BatchInput, BatchItem, read_input
from overseer.batch.output import OutputFile
from overseer.batch.results import Finished
from overseer.errors import EXIT_CONFIG, EXIT_INTERRUPTED, EXIT_OK, EXIT_RUN_FAILED, UsageError
from overseer.interfaces.common import (
    Parser,
    add_common_flags,
    positive_int,
    say,
    settings_from_args,
)

__all__ = ["batch_parser", "check_cluster_address", "cmd_batch"]

DASK_MISSING = (
    "--cluster needs Dask's distributed scheduler, which is not installed: "
    "pip install 'overseer[dask]' (or pip install distributed)"
)


def batch_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="overseer batch",
        description="Run every request of FILE (JSON Lines, or one request a line; - for "
        "stdin) and write one JSON line per request as each finishes.",
    )
    parser.add_argument("file", metavar="FILE")
    parser.add_argument(
        "--output",
        "-o",
        metavar="FILE",
        help="results file (default stdout); "
        "running again with the same file skips what already succeeded",
    )
    parser.add_argument("--concurrency", type=positive_int, metavar="N", help="requests at once")
    parser.add_argument(
        "--cluster",
        metavar="ADDRESS",
        help="run on Dask: tcp://HOST:PORT or local:N (N worker processes here)",
    )
    parser.add_argument("--strict", action="store_true", help="stop on the first bad line")
    parser.add_argument("--input-format", choices=["auto", "jsonl", "text"], default="auto")
    add_common_flags(parser)
    return parser


def check_cluster_address(address: str) -> str:
    """``tcp://HOST:PORT`` (or tls://) or ``local:N``; anything else is a usage error."""
    if address.startswith("local:"):
        count = address.split(":", 1)[1]
        if not count.isdigit() or int(count) < 1:
            raise UsageError(
                f"--cluster local:N needs a number of workers of at least 1, got {address!r}"
            )
        return address
    scheme, _, rest = address.partition("://")
    host, _, port = rest.rpartition(":")
    if scheme not in ("tcp", "tls") or not host or not port.isdigit():
        raise UsageError(f"--cluster must be tcp://HOST:PORT or local:N, got {address!r}")
    return address


def cmd_batch(args: argparse.Namespace) -> int:
    settings = settings_from_args(args).with_overrides(
        **{"batch.concurrency": args.concurrency, "batch.cluster": args.cluster}
    )
    cluster = settings.batch.cluster
    if cluster is not None:
        check_cluster_address(cluster)
        if importlib.util.find_spec("distributed") is None:
            raise UsageError(DASK_MISSING)
    source = _read(args)
    output = OutputFile(args.output)
    todo = [item for item in source.items if item.key not in output.prior.succeeded]
    progress = _progress(args, len(todo), len(source.items) - len(todo))
    try:
        with output:
            failed = _run(settings, todo, output, progress, cluster)
    except KeyboardInterrupt:
        say("interrupted; run the same command again to continue the batch")
        return EXIT_INTERRUPTED
    if source.problems:
        return EXIT_CONFIG
    return EXIT_RUN_FAILED if failed else EXIT_OK


def _read(args: argparse.Namespace) -> BatchInput:
    source = read_input(args.file, args.input_format)
    for problem in source.problems:
        say(f"{args.file}: {problem}" + ("" if args.strict else " (skipped)"))
    if source.problems and args.strict:
        raise UsageError(
            f"{len(source.problems)} bad line(s) in {args.file!r}; nothing was run (--strict)"
        )
    return source


def _progress(args: argparse.Namespace, total: int, skipped: int) -> Any:
    from overseer.interfaces.display import BatchProgress

    return None if args.quiet else BatchProgress(total, skipped=skipped).start()


def _run(
    settings: Any, todo: list[BatchItem], output: OutputFile, progress: Any, cluster: str | None
) -> int:
    """Write each finished request's line; returns how many failed."""
    failed = 0
    try:
        for finished in _finishing(settings, todo, output.batch_id, progress, cluster):
            output.write(finished.line(output.batch_id))
            failed += not finished.ok
            if progress is not None:
                progress.finished(finished.ok, finished.tokens)
    finally:
        _stop(progress)
    return failed


def _stop(progress: Any) -> None:
    if progress is not None:
        progress.stop()


def _finishing(
    settings: Any, todo: list[BatchItem], batch_id: str, progress: Any, cluster: str | None
) -> Iterator[Finished]:
    on_start = (lambda item: progress.started()) if progress is not None else None
    concurrency = settings.batch.concurrency
    if cluster is not None:
        from overseer.batch.cluster import run_on_cluster
        from overseer.journal.store import journal_for

        journal = journal_for(True, settings.journal)
        yield from run_on_cluster(
            settings,
            todo,
            address=cluster,
            concurrency=concurrency,
            batch_id=batch_id,
            journal=journal,
            on_start=on_start,
            on_problem=_once(lambda message: say(f"warning: {message}")),
        )
        return
    yield from _local(settings, todo, batch_id, concurrency, on_start)


def _local(
    settings: Any, todo: list[BatchItem], batch_id: str, concurrency: int, on_start: Any
) -> Iterator[Finished]:
    from overseer.interfaces.startup import starting

    if not todo:
        return
    with starting():
        from overseer.batch.local import run_local
        from overseer.engine import Overseer

        engine = Overseer(settings)
    with engine:
        engine.subscribe(_warn_about_journal)
        yield from run_local(
            engine, todo, concurrency=concurrency, batch_id=batch_id, on_start=on_start
        )


def _once(say_it: Callable[[str], None]) -> Callable[[str], None]:
    said: list[str] = []

    def once(message: str) -> None:
        if not said:
            said.append(message)
            say_it(message)

    return once


def _warn_about_journal(event: Any) -> None:
    from overseer.events import JournalProblem

    if isinstance(event, JournalProblem):
        say(f"warning: {event.message}")
