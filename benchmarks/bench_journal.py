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

Beside the wall time, the process CPU time of the same runs (every thread, the journal's writer
too), which a loaded machine disturbs less; and what the journal still writes once ``run()`` has
returned: a finished run's ``--json`` object (``close()``, a read in the process and the end of
the process wait for it).

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
from dataclasses import dataclass, field
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


@dataclass
class _Runs:
    """Seconds per run: wall and process CPU (every thread, the writer's too), off and on;
    ``after``: what the journal still wrote once ``run()`` had returned (wall, CPU)."""

    off: list[float] = field(default_factory=list)
    on: list[float] = field(default_factory=list)
    off_cpu: list[float] = field(default_factory=list)
    on_cpu: list[float] = field(default_factory=list)
    after: list[float] = field(default_factory=list)
    after_cpu: list[float] = field(default_factory=list)


def _run_once(
    plan: Plan, workers: int, delay: float, journal: Journal | None
) -> tuple[float, float]:
    settings = load_settings(overrides={"run.max_workers": workers, "run.synthesize": False})
    engine = Overseer(settings, chat=_Chat(delay), journal=journal if journal else False)
    gc.collect()
    start, cpu = time.perf_counter(), time.process_time()
    report = engine.run("bench", plan=plan)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    if report.status != "succeeded":
        raise SystemExit(f"the benchmark run failed: {report.outcome.reason}")
    return wall, cpu


def _pair(plan: Plan, workers: int, delay: float, journal: Journal, runs: _Runs) -> None:
    """One run journal off, one on, then what the journal left for after the run (a finished
    run's ``--json`` object)."""
    off, off_cpu = _run_once(plan, workers, delay, None)
    on, on_cpu = _run_once(plan, workers, delay, journal)
    start, cpu = time.perf_counter(), time.process_time()
    journal.flush()
    runs.after.append(time.perf_counter() - start)
    runs.after_cpu.append(time.process_time() - cpu)
    runs.off.append(off)
    runs.on.append(on)
    runs.off_cpu.append(off_cpu)
    runs.on_cpu.append(on_cpu)


def _measure(plan: Plan, workers: int, delay: float, repeat: int) -> _Runs:
    runs = _Runs()
    with tempfile.TemporaryDirectory(prefix="bench-journal-") as tmp:
        journal = Journal(Path(tmp) / "journal.sqlite3")  # one journal, as the default one is
        _pair(plan, workers, delay, journal, _Runs())  # warm-up: imports, the file, its tables
        for _ in range(repeat):
            _pair(plan, workers, delay, journal, runs)
        journal.close()
    return runs


def _line(label: str, off: list[float], on: list[float], scale: float, unit: str) -> str:
    a, b = statistics.median(off) * scale, statistics.median(on) * scale
    return f"{label:<34} off {a:9.1f} {unit}   on {b:9.1f} {unit}   on/off {b / a:5.3f}"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=8)
    args = parser.parse_args(argv)
    runs = _measure(_plan(args.steps), args.workers, 0.0, args.repeat)
    per_step = 1e6 / args.steps
    print(_line(f"{args.steps} independent 0 ms steps", runs.off, runs.on, per_step, "us/step"))
    print(_line("  the same, process CPU", runs.off_cpu, runs.on_cpu, per_step, "us/step"))
    pairs = zip(runs.off, runs.on, strict=True)
    print(
        "  each run, off/on us/step: "
        + ", ".join(f"{a * per_step:.0f}/{b * per_step:.0f}" for a, b in pairs)
    )
    after, after_cpu = statistics.median(runs.after), statistics.median(runs.after_cpu)
    print(
        f"  then, after run() returned, its --json object: {after * 1e3:.0f} ms wall, "
        f"{after_cpu * 1e3:.0f} ms CPU (median)"
    )
    runs = _measure(_plan(50), 50, 0.1, args.repeat)
    print(_line("fan-out 50 x 100 ms, makespan", runs.off, runs.on, 1e3, "ms"))
    off, on = statistics.median(runs.off) * 10, statistics.median(runs.on) * 10
    print(f"  makespan / critical path: off {off:.3f}, on {on:.3f}")


if __name__ == "__main__":
    main()
