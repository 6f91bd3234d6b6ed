"""Streamed plans against plan-then-run, on a planner that writes at a set pace.

    PYTHONPATH=. python benchmarks/bench_streaming.py [--rate 40] [--repeat 1]

A fake OpenAI-compatible server on 127.0.0.1 (``tests/fake_stream.py``) writes the plan at
``--rate`` tokens a second (a token is 4 characters of the JSON) and answers each step after
its set latency. The real engine runs each plan twice in the same process: streamed
(``planner.stream: true``, steps start as their objects complete) and plan-then-run
(``planner.stream: false``: the same reply, sent whole when its stream would have ended). No
joiner (``max_replans 0``), no final answer, ``max_workers`` above the widest plan. Plans:

- joke: write (1.0 s), then two translations (0.6 s each) that need it
- fan-out 10: ten independent steps of 1.0 s
- uneven layers: 3 layers of 3 steps, 0.3-1.2 s, each needing 1-2 steps of the layer before

Printed per plan, all on the server's clock from the plan request's arrival: the plan's writing
time, the makespan of each mode, the *bound* (the ideal schedule where each step starts once its
object has been written and its dependencies are done, with zero overhead: at most the arrival of
the last step plus the longest chain after it), streamed / bound (target <= 1.05), and the delay
from a step's object completing in the stream (the piece holding its closing brace sent) to its
request reaching the server (or from its last dependency's answer, when that came later):
median and max (target: median < 50 ms). Asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from overseer import Overseer
from overseer.config import load_settings
from tests.clihelp import role_of
from tests.fake_stream import FakeStream, Streamed, pieces_of
from tests.streamhelp import first_line, step_obj

__all__ = ["Case", "main"]

CHARS_PER_TOKEN = 4


@dataclass(frozen=True)
class Case:
    name: str
    steps: list[dict[str, Any]]
    latency: dict[str, float]  # description -> seconds


def cases() -> list[Case]:
    joke = [
        step_obj(1, "Write a joke", "content_generator"),
        step_obj(2, "Translate the joke to French", "translator", [1]),
        step_obj(3, "Translate the joke to Spanish", "translator", [1]),
    ]
    fan = [step_obj(i, f"Independent part {i}", "general") for i in range(1, 11)]
    uneven_deps = [[], [], [], [1], [1, 2], [3], [4], [5, 6], [6]]
    uneven_lat = [0.3, 1.2, 0.6, 0.9, 0.3, 1.2, 0.6, 0.3, 0.9]
    uneven = [step_obj(i + 1, f"Layered part {i + 1}", "general", uneven_deps[i]) for i in range(9)]
    return [
        Case(
            "joke", joke, {joke[0]["description"]: 1.0, **{s["description"]: 0.6 for s in joke[1:]}}
        ),
        Case("fan-out 10", fan, {s["description"]: 1.0 for s in fan}),
        Case(
            "uneven layers",
            uneven,
            {s["description"]: t for s, t in zip(uneven, uneven_lat, strict=True)},
        ),
    ]


class Script:
    """The fake's answers: the plan at the set rate, each step after its latency."""

    def __init__(self, case: Case, rate: float) -> None:
        self.case = case
        self.rate = rate
        self.text = json.dumps({"steps": case.steps})

    def __call__(self, body: dict[str, Any]) -> Streamed | str:
        if role_of(body) == "plan":
            return Streamed(pieces_of(self.text, CHARS_PER_TOKEN), rate=self.rate)
        latency = self.case.latency.get(first_line(body), 0.0)
        return Streamed(["done"], rate=1.0 / latency) if latency else "done"

    def object_ends(self) -> list[int]:
        """For each step, the index of the piece holding its object's closing brace."""
        decoder = json.JSONDecoder()
        ends, position = [], self.text.index("[") + 1
        for _ in self.case.steps:
            while self.text[position] in " ,":
                position += 1
            _, position = decoder.raw_decode(self.text, position)
            ends.append((position - 1) // CHARS_PER_TOKEN)
        return ends


@dataclass
class Measured:
    makespan: float
    plan_written: float
    arrived: dict[str, float]  # step description -> object complete in the stream (s)
    delays: list[float]


def run_once(case: Case, rate: float, streamed: bool) -> Measured:
    script = Script(case, rate)
    with FakeStream(script) as fake:
        overrides = {
            "backend.base_url": fake.url,
            "backend.model": "m",
            "planner.stream": streamed,
            "planner.max_replans": 0,
            "run.synthesize": False,
            "run.max_workers": 16,
        }
        engine = Overseer(load_settings(overrides=overrides), journal=False)
        report = engine.run(case.name)
        assert report.status == "succeeded", report.outcome.reason
        return measure(fake, script, streamed)


def measure(fake: FakeStream, script: Script, streamed: bool) -> Measured:
    arrivals = fake.arrivals()
    start = next(a.at for a in arrivals if role_of(a.body) == "plan")
    ends = fake.ends()
    finish = max(e.at for e in ends if role_of(e.body) == "step")
    plan_end = next(e.at for e in ends if role_of(e.body) == "plan")
    step_at = {first_line(a.body): a.at for a in arrivals if role_of(a.body) == "step"}
    done_at = {first_line(e.body): e.at for e in ends if role_of(e.body) == "step"}
    by_id = {s["step_id"]: s["description"] for s in script.case.steps}
    arrived: dict[str, float] = {}
    delays: list[float] = []
    pieces = [t for t, _ in fake.piece_times]
    for step, end in zip(script.case.steps, script.object_ends(), strict=True):
        written = pieces[end] if streamed else plan_end
        arrived[step["description"]] = written - start
        # from the moment the step could go: written, and every step it needs answered
        could = max([written, *(done_at[by_id[d]] for d in step["depends_on"])])
        delays.append(step_at[step["description"]] - could)
    return Measured(finish - start, plan_end - start, arrived, delays)


def ideal(case: Case, arrived: dict[str, float]) -> float:
    """Zero-overhead makespan: each step starts at max(its arrival, its deps' finishes)."""
    finish: dict[str, float] = {}
    for step in case.steps:
        ready = max([arrived[step["description"]], *(finish[d] for d in step["depends_on"])])
        finish[step["step_id"]] = ready + case.latency[step["description"]]
    return max(finish.values())


def chain_after_last(case: Case, arrived: dict[str, float]) -> float:
    """The issue's form of the bound: last arrival + the longest chain of latencies."""
    longest: dict[str, float] = {}
    for step in case.steps:
        before = max((longest[d] for d in step["depends_on"]), default=0.0)
        longest[step["step_id"]] = before + case.latency[step["description"]]
    return max(arrived.values()) + max(longest.values())


def report(case: Case, streamed: Sequence[Measured], whole: Sequence[Measured]) -> None:
    s = statistics.median(m.makespan for m in streamed)
    w = statistics.median(m.makespan for m in whole)
    bound = statistics.median(ideal(case, m.arrived) for m in streamed)
    loose = statistics.median(chain_after_last(case, m.arrived) for m in streamed)
    delays = [d for m in streamed for d in m.delays]
    written = statistics.median(m.plan_written for m in streamed)
    middle = statistics.median(delays) * 1000
    print(
        f"{case.name:14} plan written {written:5.2f}s | plan-then-run {w:5.2f}s | "
        f"streamed {s:5.2f}s ({s / w:4.0%}) | bound {bound:5.2f}s (last+chain {loose:5.2f}s) "
        f"streamed/bound {s / bound:5.3f} | delay median {middle:5.1f} ms, "
        f"max {max(delays) * 1000:5.1f} ms"
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rate", type=float, default=40.0, help="planner tokens a second")
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args(argv)
    print(f"planner at {args.rate:g} tokens/s ({CHARS_PER_TOKEN} characters a token)")
    for case in cases():
        streamed = [run_once(case, args.rate, True) for _ in range(args.repeat)]
        whole = [run_once(case, args.rate, False) for _ in range(args.repeat)]
        report(case, streamed, whole)


if __name__ == "__main__":
    main()
