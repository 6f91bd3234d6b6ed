"""How fast nodes start and call tools. Prints figures; asserts nothing.

    python benchmarks/bench_nodes.py [--runs N]

1. node start to first tool call: from ``run_node`` being called (folder, sandbox, ``python -I``,
   imports) to the parent receiving the node's first call, for each sandbox backend that works.
2. overhead per call: a no-op tool called 200 times in one ``call_tools_parallel``, and 50 times
   one after the other with ``call_tool`` (a full round trip each), timed inside the node.
3. ten 200 ms calls from a node: one ``call_tools_parallel`` of ten calls to a tool that takes
   200 ms, timed inside the node, and the node's whole run.
4. a node spinning past a 1 s CPU limit, under each backend: what its failure says, and how long
   from ``run_node`` to the report (the limit's SIGXCPU must be named, whatever the backend).
Targets: node start at most 150 ms with the sandbox on; ten 200 ms calls at most 260 ms.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

from overseer.config import load_settings
from overseer.config.nodes import SandboxSettings
from overseer.events import Event, EventBus, NodeCallStarted
from overseer.nodes.broker import Broker
from overseer.nodes.isolation import SandboxUnavailable, decide
from overseer.nodes.sandbox import NodeRun, run_node
from overseer.tools.registry import FunctionTool, ToolRegistry
from overseer.tools.services import RunServices

BACKENDS = ("bwrap", "unshare", "none")
FIRST_CALL = "from node_runtime import call_tool\ncall_tool('noop', 'x')\nprint(1)\n"
MANY = """import json, time
from node_runtime import call_tool, call_tools_parallel
t = time.perf_counter()
call_tools_parallel([("noop", str(i)) for i in range(200)])
parallel = time.perf_counter() - t
t = time.perf_counter()
for i in range(50):
    call_tool("noop", str(i))
serial = time.perf_counter() - t
print(json.dumps([parallel / 200, serial / 50]))
"""
TEN_SLOW = """import json, time
from node_runtime import call_tools_parallel
t = time.perf_counter()
call_tools_parallel([("slow", str(i)) for i in range(10)])
print(json.dumps(time.perf_counter() - t))
"""


def noop(prompt: str) -> str:
    return prompt


def slow(prompt: str) -> str:
    time.sleep(0.2)  # the tool's own work: a 200 ms call
    return prompt


def run_once(code: str, backend: str, on_event: Callable[[Event], None]) -> tuple[NodeRun, float]:
    """Run ``code`` once; returns the run and the time ``run_node`` was called (monotonic)."""
    settings = load_settings(overrides={"run.max_workers": 16})
    bus = EventBus()
    bus.subscribe(on_event)
    tools = ToolRegistry([FunctionTool("noop", "d", noop), FunctionTool("slow", "d", slow)])
    sandbox = SandboxSettings(backend=backend)  # type: ignore[arg-type]
    isolation = decide(sandbox)
    start = time.monotonic()
    services = RunServices.for_run(settings, tools, bus, t0=start)
    broker = Broker(services, step_id="bench", slot=None, deadline=None)
    run = run_node(
        code,
        {"task": "bench", "inputs": {}},
        isolation=isolation,
        settings=sandbox,
        timeout=60,
        max_output=100_000,
        channel=broker,
    )
    if not run.ok:
        raise SystemExit(f"the benchmark node failed: {run.failure()}\n{run.stderr}")
    return run, start


def first_call_ms(backend: str, runs: int) -> list[float]:
    figures = []
    for _ in range(runs):
        firsts: list[float] = []

        def keep(event: Event, firsts: list[float] = firsts) -> None:
            if isinstance(event, NodeCallStarted):
                firsts.append(event.t)

        run_once(FIRST_CALL, backend, keep)
        figures.append(firsts[0] * 1000)
    return figures


def cpu_limit_report(backend: str) -> tuple[str, float]:
    """The failure of a node killed at a 1 s CPU limit, and the seconds it took to hear of it."""
    sandbox = SandboxSettings(backend=backend, cpu_seconds=1)  # type: ignore[arg-type]
    start = time.monotonic()
    run = run_node(
        "while True:\n    pass\n",
        {"task": "bench", "inputs": {}},
        isolation=decide(sandbox),
        settings=sandbox,
        timeout=60,
        max_output=1000,
    )
    return run.failure() or "it did not fail", time.monotonic() - start


def available(backend: str) -> bool:
    try:
        decide(SandboxSettings(backend=backend))  # type: ignore[arg-type]
    except SandboxUnavailable:
        return False
    return True


def summary(values: list[float]) -> str:
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.9))]
    return f"median {statistics.median(ordered):7.1f}  p90 {p90:7.1f}  min {ordered[0]:7.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=20)
    runs = parser.parse_args().runs
    default = decide(SandboxSettings()).backend
    print(f"sandbox here: {default} (auto); runs per figure: {runs}\n")
    print("1. node start to its first tool call (ms)")
    for backend in BACKENDS:
        if not available(backend):
            print(f"   {backend:<8} not available here")
            continue
        run_once(FIRST_CALL, backend, lambda e: None)  # warm: probes, page cache
        print(f"   {backend:<8} {summary(first_call_ms(backend, runs))}")
    print("\n2. overhead per call, inside the node (ms)")
    parallel, serial = [], []
    for _ in range(max(3, runs // 4)):
        run, _ = run_once(MANY, default, lambda e: None)
        per_parallel, per_serial = json.loads(run.stdout)
        parallel.append(per_parallel * 1000)
        serial.append(per_serial * 1000)
    print(f"   call_tools_parallel, 200 no-op calls: {summary(parallel)}")
    print(f"   call_tool one after another (round trip): {summary(serial)}")
    print("\n3. ten 200 ms calls from a node (ms)")
    inside, whole = [], []
    for _ in range(max(3, runs // 4)):
        run, _ = run_once(TEN_SLOW, default, lambda e: None)
        inside.append(json.loads(run.stdout) * 1000)
        whole.append(run.duration * 1000)
    print(f"   call_tools_parallel of ten: {summary(inside)}")
    print(f"   whole node, start to exit:  {summary(whole)}")
    print("\n4. a node past a 1 s CPU limit")
    for backend in (b for b in BACKENDS if available(b)):
        failure, took = cpu_limit_report(backend)
        print(f"   {backend:<8} {took:5.2f}s  {failure}")


if __name__ == "__main__":
    main()
