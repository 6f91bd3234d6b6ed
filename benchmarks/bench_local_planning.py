"""How well the embedded models plan: each request of a fixed set, planned once per model.

    python benchmarks/bench_local_planning.py [--models smollm2-135m-instruct gemma-3-270m]
        [--requests benchmarks/local_planning_requests.json] [--json]

Each model is served the way overseer serves its embedded default (llama.cpp's OpenAI-compatible
server on 127.0.0.1, structured output json_object with the plan schema, temperature 0) and plans
through ``Overseer.plan``: the same prompts, validation and bounded repairs as any model. Scores per
model, over the requests of ``local_planning_requests.json``:

- first try: a valid plan from the first reply
- after repairs: a valid plan at all (``planner.max_repairs`` re-asks with the problems)
- tools: every expected piece of work has a step whose description names it and whose tool is one
  of the sensible ones (``expect``)
- independent: the steps that should run at the same time do not depend on each other, directly or
  not (``independent``; scored only on requests that have such pairs)
- dependent: the steps that need another step's output depend on it (``dependent``; likewise)

Prints a table per model and the totals; asserts nothing. Timings are indicative only (a shared
2-core machine); the scores do not depend on them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from overseer.backends.local_model import BUNDLED_MODELS, missing_packages
from overseer.config import Settings, load_settings
from overseer.core.plan import Plan, Step
from overseer.engine import Overseer
from overseer.errors import PlanError
from overseer.events import Event, PlanRejected

__all__ = ["Case", "Score", "main", "score_plan"]

HERE = Path(__file__).resolve().parent
DEFAULT_REQUESTS = HERE / "local_planning_requests.json"


@dataclass(frozen=True)
class Case:
    """One request and what a sensible plan for it looks like."""

    request: str
    expect: tuple[tuple[str, tuple[str, ...]], ...]
    independent: tuple[tuple[str, str], ...]
    dependent: tuple[tuple[str, str], ...]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Case:
        return cls(
            request=data["request"],
            expect=tuple((e["about"].lower(), tuple(e["tools"])) for e in data["expect"]),
            independent=tuple((a.lower(), b.lower()) for a, b in data["independent"]),
            dependent=tuple((a.lower(), b.lower()) for a, b in data["dependent"]),
        )


@dataclass
class Score:
    """One request planned by one model."""

    request: str
    first_try: bool = False
    valid: bool = False
    tools: bool = False
    independent: bool | None = None
    dependent: bool | None = None
    attempts: int = 0
    seconds: float = 0.0
    steps: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def load_cases(path: Path) -> list[Case]:
    return [Case.from_dict(item) for item in json.loads(path.read_text(encoding="utf-8"))]


def _about(plan: Plan, word: str) -> list[Step]:
    return [s for s in plan.steps if word in s.description.lower()]


def _ancestors(plan: Plan, step: Step) -> set[str]:
    by_id = {s.step_id: s for s in plan.steps}
    found: set[str] = set()
    stack = list(step.depends_on)
    while stack:
        dep = stack.pop()
        if dep not in found and dep in by_id:
            found.add(dep)
            stack.extend(by_id[dep].depends_on)
    return found


def _tools_ok(plan: Plan, case: Case) -> bool:
    return all(any(s.tool in tools for s in _about(plan, word)) for word, tools in case.expect)


def _apart(plan: Plan, a: str, b: str) -> bool:
    """Some step about ``a`` and another about ``b`` that neither waits for the other."""
    for x in _about(plan, a):
        for y in _about(plan, b):
            unrelated = y.step_id not in _ancestors(plan, x) and x.step_id not in _ancestors(
                plan, y
            )
            if x is not y and unrelated:
                return True
    return False


def _waits(plan: Plan, a: str, b: str) -> bool:
    """Some step about ``a`` depends, directly or not, on another step about ``b``."""
    return any(
        y is not x and y.step_id in _ancestors(plan, x)
        for x in _about(plan, a)
        for y in _about(plan, b)
    )


def _all_or_none(pairs: Iterable[tuple[str, str]], check: Any, plan: Plan) -> bool | None:
    pairs = list(pairs)
    return all(check(plan, a, b) for a, b in pairs) if pairs else None


def score_plan(score: Score, plan: Plan, case: Case) -> None:
    """Fill ``score`` from a valid ``plan`` for ``case``."""
    score.valid = True
    score.first_try = score.attempts == 1
    score.tools = _tools_ok(plan, case)
    score.independent = _all_or_none(case.independent, _apart, plan)
    score.dependent = _all_or_none(case.dependent, _waits, plan)
    score.steps = [
        f"{s.step_id}[{s.tool}]<-{','.join(s.depends_on) or '-'}: {s.description}"
        for s in plan.steps
    ]


def plan_case(engine: Overseer, case: Case) -> Score:
    score = Score(case.request)
    rejected: list[PlanRejected] = []

    def on_event(event: Event) -> None:
        if isinstance(event, PlanRejected):
            rejected.append(event)

    unsubscribe = engine.subscribe(on_event)
    start = time.monotonic()
    try:
        result = engine.plan(case.request)
    except PlanError as exc:
        score.attempts = len(rejected)
        score.problems = list(exc.problems) or [str(exc)]
    else:
        score.attempts = result.attempts
        score_plan(score, result.plan, case)
    finally:
        unsubscribe()
        score.seconds = time.monotonic() - start
    score.problems = score.problems or [p for r in rejected for p in r.problems]
    return score


def model_settings(model: str) -> Settings:
    """The packaged defaults with no backend, so that overseer serves ``model`` itself."""
    os.environ.pop("OPENAI_API_KEY", None)
    settings = load_settings(overrides={"local.model": model})
    return settings.model_copy(
        update={"backend": settings.backend.model_copy(update={"base_url": None})}
    )


def bench_model(model: str, cases: Sequence[Case]) -> list[Score]:
    with Overseer(model_settings(model), journal=False) as engine:
        return [plan_case(engine, case) for case in cases]


def _rate(values: Iterable[bool | None]) -> str:
    scored = [v for v in values if v is not None]
    return f"{sum(scored)}/{len(scored)}" if scored else "-"


def summary(scores: Sequence[Score]) -> dict[str, str]:
    return {
        "first try": _rate(s.first_try for s in scores),
        "after repairs": _rate(s.valid for s in scores),
        "tools": _rate(s.tools for s in scores),
        "independent": _rate(s.independent for s in scores),
        "dependent": _rate(s.dependent for s in scores),
        "mean s/plan": f"{sum(s.seconds for s in scores) / max(len(scores), 1):.1f}",
    }


def _mark(value: bool | None) -> str:
    return "-" if value is None else ("yes" if value else "no")


def print_model(model: str, scores: Sequence[Score]) -> None:
    print(f"\n== {model}")
    print(f"{'first':>5} {'valid':>5} {'tools':>5} {'indep':>5} {'dep':>5} {'s':>6}  request")
    for s in scores:
        marks = [_mark(v) for v in (s.first_try, s.valid, s.tools, s.independent, s.dependent)]
        print(" ".join(f"{m:>5}" for m in marks) + f" {s.seconds:6.1f}  {s.request}")
        for line in s.steps or [f"(no plan) {'; '.join(s.problems[:2])}"]:
            print(f"{'':36}{line[:110]}")
    print("totals: " + ", ".join(f"{k} {v}" for k, v in summary(scores).items()))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--models", nargs="+", default=list(BUNDLED_MODELS))
    parser.add_argument("--requests", type=Path, default=DEFAULT_REQUESTS)
    parser.add_argument("--json", action="store_true", help="print the scores as JSON")
    args = parser.parse_args(argv)
    cases = load_cases(args.requests)
    results: dict[str, list[Score]] = {}
    for model in args.models:
        missing = missing_packages(model)
        if missing:
            print(f"skipping {model}: not installed ({', '.join(missing)})", file=sys.stderr)
            continue
        results[model] = bench_model(model, cases)
        if not args.json:
            print_model(model, results[model])
    if args.json:
        data = {
            m: {"summary": summary(s), "cases": [asdict(x) for x in s]} for m, s in results.items()
        }
        print(json.dumps(data, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
