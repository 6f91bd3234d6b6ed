"""What the run journal costs a run: journal on against journal off, side by side in one process.

    python benchmarks/bench_journal.py [--repeat 5] [--steps 10000] [--workers 8]
    (from a checkout: PYTHONPATH=. python benchmarks/bench_journal.py)

Both cases go through the library (``Overseer.run`` with a given plan, no final answer), with
``llm`` steps answered by an in-process chat client (no network), so every step emits what a
real one does: StepStarted, StepFinished and UsageRecorded.

- independent 0 ms steps: ``--steps`` steps with no dependencies, ``--workers`` at once:
  microseconds per step (wall / steps), journal off and on, and their ratio;
- fan-out 50 x 100 ms: 50 independent steps sleeping 100 ms each, 50 at once: makespan, off
  and on, and their ratio (the critical path is 100 ms).

Runs alternate off, on, off, on ... so that load on the machine hits both alike; medians are
printed. Each "on" run writes into a fresh journal file in a temporary folder. Asserts nothing.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from overseer import Overseer
from overseer.backends.chat import ChatReply, ChatRequest
from overseer.config import load_settings
from overseer.core.plan import Plan, Step
from overseer.journal.store import Journal
from overseer.usage import Usage

__all__ = ["main"]


class _Chat:
    """Answers every step at once, or after ``delay`` seconds, with a little usage."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay

    def complete(self, request: ChatRequest) -> ChatReply:
        if self.delay:
            time.sleep(self.delay)
        return ChatReply(text="done", usage=Usage(3, 2), model="bench")


def _plan(n: int) -> Plan:
    return Plan(
        steps=tuple(
            Step(step_id=f"s{i}", description=f"part {i}", tool="general") for i in range(n)
        )
    )


def _run_once(plan: Plan, workers: int, delay: float, journal: Journal | None) -> float:
    settings = load_settings(overrides={"run.max_workers": workers, "run.synthesize": False})
    engine = Overseer(settings, chat=_Chat(delay), journal=journal if journal else False)
    gc.collect()
    start = time.perf_counter()
    report = engine.run("bench", plan=plan)
    wall = time.perf_counter() - start
    if report.status != "succeeded":
        raise SystemExit(f"the benchmark run failed: {report.outcome.reason}")
    return wall


def _pair(plan: Plan, workers: int, delay: float, journal: Journal) -> tuple[float, float, float]:
    """One run journal off, one on, and the time the journal then takes to write what it
    left for after the run (a finished run's ``--json`` object): seconds each."""
    off = _run_once(plan, workers, delay, None)
    on = _run_once(plan, workers, delay, journal)
    start = time.perf_counter()
    journal.flush()
    return off, on, time.perf_counter() - start


def _measure(
    plan: Plan, workers: int, delay: float, repeat: int
) -> tuple[list[float], list[float], list[float]]:
    offs, ons, afters = [], [], []
    with tempfile.TemporaryDirectory(prefix="bench-journal-") as tmp:
        journal = Journal(Path(tmp) / "journal.sqlite3")  # one journal, as the default one is
        _pair(plan, workers, delay, journal)  # warm-up: imports, the file and its tables
        for _ in range(repeat):
            off, on, after = _pair(plan, workers, delay, journal)
            offs.append(off)
            ons.append(on)
            afters.append(after)
        journal.close()
    return offs, ons, afters


def _line(label: str, off: float, on: float, unit: str) -> str:
    return f"{label:<34} off {off:9.1f} {unit}   on {on:9.1f} {unit}   on/off {on / off:5.3f}"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=8)
    args = parser.parse_args(argv)
    offs, ons, afters = _measure(_plan(args.steps), args.workers, 0.0, args.repeat)
    per_step = 1e6 / args.steps
    off, on = statistics.median(offs) * per_step, statistics.median(ons) * per_step
    print(_line(f"{args.steps} independent 0 ms steps", off, on, "us/step"))
    pairs = zip(offs, ons, strict=True)
    print(
        f"{'':<34} each run (off/on, us/step): "
        + ", ".join(f"{a * per_step:.0f}/{b * per_step:.0f}" for a, b in pairs)
    )
    print(
        f"{'':<34} then, after run() returned, the --json object: "
        f"{statistics.median(afters) * 1e3:.0f} ms (median)"
    )
    offs, ons, _ = _measure(_plan(50), 50, 0.1, args.repeat)
    off, on = statistics.median(offs) * 1e3, statistics.median(ons) * 1e3
    print(_line("fan-out 50 x 100 ms, makespan", off, on, "ms"))
    print(f"{'':<34} makespan / critical path: off {off / 100:.3f}, on {on / 100:.3f}")


if __name__ == "__main__":
    main()
