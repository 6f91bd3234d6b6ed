"""How close the executor gets to the critical path, beside a level-by-level baseline.

    python benchmarks/bench_scheduling.py [--repeat 3] [--seed 7]
    (with the package installed: pip install -e . ; or from a checkout: PYTHONPATH=. python ...)

Simulated plans whose steps ``time.sleep`` for a set duration (no LLM, no network):

- fan-out 50: 50 independent steps x 100 ms, max_workers=50
- fan-out/in 50: a root, 50 children, a join, each 100 ms, max_workers=50
- uneven layers: 5 layers x 8 steps of 50-500 ms, 1-3 random parents in the previous layer
- chained diamonds: 10 diamonds in a chain (top -> left, right -> bottom), 20-200 ms each
- 10,000 zero-time steps: a random DAG (0-3 parents among the 200 steps before), max_workers=8

For each: makespan, critical path, makespan / critical path, and overhead per step ((makespan -
critical path) / steps; for the zero-time plan simply wall / steps). The baseline runs each depth
level on a ThreadPoolExecutor and waits for the whole level before the next, measured in the same
process. The executor's workers are warmed first, as the CLI does while the planner thinks; the
fan-out is also shown cold (thread start-up inside the measured time). Prints; asserts nothing.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass

from overseer.core.executor import Executor
from overseer.core.plan import Plan, Step
from overseer.core.scheduler import critical_path, levels
from overseer.core.toolbase import CallContext, ToolResult
from overseer.events import EventBus

__all__ = ["Shape", "main"]


@dataclass(frozen=True)
class Shape:
    name: str
    steps: tuple[Step, ...]
    durations: dict[str, float]
    max_workers: int


def _step(step_id: str, deps: Sequence[str] = ()) -> Step:
    return Step(step_id=step_id, description=step_id, tool="sleep", depends_on=tuple(deps))


def fan_out(n: int = 50, seconds: float = 0.1) -> Shape:
    steps = tuple(_step(f"s{i}") for i in range(n))
    return Shape(f"fan-out {n}", steps, {s.step_id: seconds for s in steps}, n)


def fan_out_in(n: int = 50, seconds: float = 0.1) -> Shape:
    children = [_step(f"c{i}", ["root"]) for i in range(n)]
    steps = (_step("root"), *children, _step("join", [c.step_id for c in children]))
    return Shape(f"fan-out/in {n}", steps, {s.step_id: seconds for s in steps}, n)


def uneven_layers(rng: random.Random, layers: int = 5, width: int = 8) -> Shape:
    steps: list[Step] = []
    previous: list[str] = []
    for layer in range(layers):
        current = [f"L{layer}s{i}" for i in range(width)]
        for step_id in current:
            parents = rng.sample(previous, rng.randint(1, 3)) if previous else []
            steps.append(_step(step_id, parents))
        previous = current
    durations = {s.step_id: rng.uniform(0.05, 0.5) for s in steps}
    return Shape(f"uneven layers {layers}x{width}", tuple(steps), durations, layers * width)


def chained_diamonds(rng: random.Random, count: int = 10) -> Shape:
    steps = [_step("d0top")]
    top = "d0top"
    for i in range(count):
        left, right, bottom = f"d{i}left", f"d{i}right", f"d{i}bottom"
        steps += [_step(left, [top]), _step(right, [top]), _step(bottom, [left, right])]
        top = bottom
    durations = {s.step_id: rng.uniform(0.02, 0.2) for s in steps}
    return Shape(f"chained diamonds x{count}", tuple(steps), durations, 8)


def random_dag(rng: random.Random, n: int = 10_000, window: int = 200) -> Shape:
    steps = []
    for i in range(n):
        earlier = range(max(0, i - window), i)
        parents = rng.sample(earlier, min(len(earlier), rng.randint(0, 3)))
        steps.append(_step(f"z{i}", [f"z{p}" for p in parents]))
    return Shape(
        f"zero-time DAG {n}", tuple(steps), dict.fromkeys((s.step_id for s in steps), 0.0), 8
    )


def _sleeper(
    durations: Mapping[str, float],
) -> Callable[[Step, Mapping[str, str], CallContext], ToolResult]:
    def run(step: Step, inputs: Mapping[str, str], ctx: CallContext) -> ToolResult:
        seconds = durations[step.step_id]
        if seconds:
            time.sleep(seconds)
        return ToolResult(step.step_id)

    return run


def run_executor(shape: Shape, *, cold: bool = False) -> float:
    executor = Executor(_sleeper(shape.durations), bus=EventBus(), max_workers=shape.max_workers)
    if not cold:
        executor.warm()
    plan = Plan(steps=shape.steps)
    start = time.perf_counter()
    outcome = executor.run(plan)
    elapsed = time.perf_counter() - start
    if not outcome.ok:
        raise SystemExit(f"{shape.name}: the run failed: {outcome.reason}")
    return elapsed


def run_levels(shape: Shape) -> float:
    """Baseline: each depth level on a thread pool, waiting for the whole level."""
    by_id = {s.step_id: s for s in shape.steps}
    runner = _sleeper(shape.durations)
    with ThreadPoolExecutor(shape.max_workers) as pool:
        start = time.perf_counter()
        for level in levels(shape.steps):
            wait([pool.submit(runner, by_id[i], {}, CallContext()) for i in level])
        return time.perf_counter() - start


def _median(fn: Callable[[], float], repeat: int) -> float:
    return statistics.median(fn() for _ in range(repeat))


def report(shape: Shape, repeat: int) -> None:
    cp, _ = critical_path(shape.steps, shape.durations)
    rows = [("executor", _median(lambda: run_executor(shape), repeat))]
    if shape.name.startswith("fan-out "):
        rows.append(("executor cold", _median(lambda: run_executor(shape, cold=True), repeat)))
    rows.append(("level-by-level", _median(lambda: run_levels(shape), repeat)))
    n = len(shape.steps)
    head = f"{shape.name}: {n} steps, max_workers={shape.max_workers}"
    print(f"\n{head}, critical path {cp * 1e3:.1f} ms")
    for label, wall in rows:
        print(_row(label, wall, cp, n))


def _row(label: str, wall: float, cp: float, n: int) -> str:
    if cp == 0:
        return f"  {label:<15} makespan {wall * 1e3:9.1f} ms   wall/step {wall / n * 1e6:6.1f} us"
    per_step = (wall - cp) / n * 1e6
    return (
        f"  {label:<15} makespan {wall * 1e3:9.1f} ms   x{wall / cp:.3f} of critical path"
        f"   overhead {(wall - cp) * 1e3:6.1f} ms ({per_step:6.1f} us/step)"
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (median shown)")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    shapes = [fan_out(), fan_out_in(), uneven_layers(rng), chained_diamonds(rng), random_dag(rng)]
    for shape in shapes:
        report(shape, args.repeat)


if __name__ == "__main__":
    main()
