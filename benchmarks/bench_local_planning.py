"""How well the embedded model plans: a fixed set of requests, each planned as overseer plans it.

    PYTHONPATH=. python benchmarks/bench_local_planning.py [--temperature 0 0.4] [--repeat 3]
        [--requests benchmarks/local_planning_requests.json benchmarks/local_planning_shapes.json]
        [--only N] [--parallel 1] [--json]
    # against another OpenAI-compatible server, with the embedded model's planner settings:
    PYTHONPATH=. python benchmarks/bench_local_planning.py --base-url http://127.0.0.1:8080/v1

By default the script starts overseer's own embedded default, exactly as ``overseer "REQUEST"``
does with no key and no base URL: one ``Overseer`` with no backend, which starts llama.cpp's native
server (xllamacpp, ``overseer.backends.llama_server``) in a child process with ``local.model``,
``local.parallel`` slots of ``local.context_size`` tokens and ``local.repeat_penalty``, and points
the planner at it (``local_model.point_settings_at``: structured output ``json_schema``, ordered
steps, one attempt per request, reply limit ``local.plan_max_tokens``). Each request is then planned
through ``Overseer.plan``: the same prompts, few-shot examples, validation and bounded repairs
(``planner.max_repairs``) as a run. Nothing here changes a setting except ``--temperature``,
``--max-tokens`` (``local.plan_max_tokens``) and ``--model`` (``local.model``) when given.
``--parallel N`` plans N requests at once over the one server (its slots); the default, 1, plans
one at a time like a run does, which also keeps temperature 0 deterministic (llama.cpp's batched
decoding can round differently from a lone request).

With ``--base-url`` the planner talks to that server instead, with the same planner settings as
the embedded model gets.

Scores, over the requests of each ``--requests`` file:

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
- copied: some step's description equals one of a few-shot example (``prompts/plan_examples*.json``,
  the fixed examples and the pool alike, whichever the planner shows)
- borrowed: some step's description names a word found only in the examples the planner showed
  for this request (``overseer.planning.borrowing``: in a shown example, and in neither the
  request, the system prompt nor the short list of words any plan may use); the words are
  printed after the plan

Prints a table per request file and temperature, and the totals; asserts nothing. Timings are
indicative only (a shared 2-core machine); the scores do not depend on them.
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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from overseer.backends.local_model import missing_packages
from overseer.config import Settings, load_settings
from overseer.core.plan import Plan, Step
from overseer.engine import Overseer
from overseer.errors import PlanError
from overseer.events import Event, PlanRejected
from overseer.planning.borrowing import Borrowing
from overseer.planning.planner import Planner

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
    borrowed: bool = False
    borrowed_words: list[str] = field(default_factory=list)
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


def score_plan(score: Score, plan: Plan, case: Case, borrowing: Borrowing | None = None) -> None:
    """Fill ``score`` from a valid ``plan`` for ``case`` (planned with ``borrowing``'s examples
    shown)."""
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
    found = [w for s in plan.steps for w in (borrowing or Borrowing()).words_in(s.description)]
    score.borrowed_words = list(dict.fromkeys(found))
    score.borrowed = bool(found)
    score.steps = [
        f"{s.step_id}[{s.tool}]<-{','.join(s.depends_on) or '-'}: {s.description}"
        for s in plan.steps
    ]


def plan_case(engine: Overseer, case: Case) -> Score:
    """Plan ``case`` once with ``engine`` (whose bus no other plan uses meanwhile)."""
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
        score_plan(score, result.plan, case, _borrowing(engine, case.request))
    finally:
        unsubscribe()
        score.seconds = time.monotonic() - start
    score.problems = score.problems or [p for r in rejected for p in r.problems]
    return score


def _borrowing(engine: Overseer, request: str) -> Borrowing:
    """The words ``engine``'s planner would see as borrowed in a plan of ``request``."""
    registry = engine.registry
    planner = Planner(engine.chat, registry.names(), registry.describe(), engine.settings.planner)
    return planner.borrowing(request)


def embedded_settings(model: str | None = None, max_tokens: int | None = None) -> Settings:
    """The packaged defaults with no backend at all, so that overseer starts its embedded model
    (``local.model``, or ``model``) the way a run with no key does."""
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OVERSEER_CONFIG"):
        os.environ.pop(name, None)
    overrides: dict[str, Any] = {}
    if model:
        overrides["local.model"] = model
    if max_tokens:
        overrides["local.plan_max_tokens"] = max_tokens
    settings = load_settings(overrides=overrides)
    return settings.model_copy(
        update={"backend": settings.backend.model_copy(update={"base_url": None})}
    )


def server_settings(base_url: str, max_tokens: int | None = None) -> Settings:
    """Plan on the server at ``base_url`` with the planner settings the embedded model gets."""
    settings = embedded_settings(max_tokens=max_tokens)
    local = settings.local
    backend = settings.backend.model_copy(
        update={
            "base_url": base_url,
            "planner_model": None,
            "structured_output": "json_schema",
            "request_timeout": local.request_timeout,
            "retry": settings.backend.retry.model_copy(update={"max_attempts": 1}),
        }
    )
    planner = settings.planner.model_copy(
        update={
            "ordered_steps": True,
            "max_tokens": min(settings.planner.max_tokens, local.plan_max_tokens),
            "max_replans": local.max_replans,
        }
    )
    return settings.model_copy(update={"backend": backend, "planner": planner})


def at_temperature(settings: Settings, temperature: float | None) -> Settings:
    if temperature is None:
        return settings
    planner = settings.planner.model_copy(update={"temperature": temperature})
    return settings.model_copy(update={"planner": planner})


def bench_cases(
    engine: Overseer, settings: Settings, cases: Sequence[Case], parallel: int
) -> list[Score]:
    """Plan every case with ``settings`` over ``engine``'s chat client, ``parallel`` at once (an
    engine of its own per worker, so that each sees only its own plan's events)."""
    todo: queue.Queue[int] = queue.Queue()
    for index in range(len(cases)):
        todo.put(index)
    scores: list[Score | None] = [None] * len(cases)

    def work() -> None:
        with Overseer(settings, chat=engine.chat, journal=False) as worker:
            while True:
                try:
                    index = todo.get_nowait()
                except queue.Empty:
                    return
                score = scores[index] = plan_case(worker, cases[index])
                print(
                    f"  planned {index + 1}/{len(cases)} in {score.seconds:.1f}s: {score.request}",
                    file=sys.stderr,
                )
                for line in score.steps or score.problems[:2]:
                    print(f"    {line}", file=sys.stderr, flush=True)

    workers = [threading.Thread(target=work) for _ in range(max(1, parallel))]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return [s for s in scores if s is not None]


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
        "borrowed": _rate(s.borrowed for s in scores),
        "mean s/plan": f"{sum(s.seconds for s in scores) / max(len(scores), 1):.1f}",
    }


def _mark(value: bool | None) -> str:
    return "-" if value is None else ("yes" if value else "no")


def print_model(model: str, scores: Sequence[Score]) -> None:
    print(f"\n== {model}")
    names = ("first", "valid", "shape", "tools", "indep", "dep", "kept", "copy", "borr")
    print(" ".join(f"{n:>5}" for n in names) + f" {'s':>6}  request")
    for s in scores:
        values = (s.first_try, s.valid, s.shape, s.tools, s.independent, s.dependent, s.kept)
        marks = [_mark(v) for v in (*values, s.copied, s.borrowed)]
        print(" ".join(f"{m:>5}" for m in marks) + f" {s.seconds:6.1f}  {s.request}")
        for line in s.steps or [f"(no plan) {'; '.join(s.problems[:2])}"]:
            print(f"{'':60}{line[:110]}")
        if s.borrowed_words:
            print(f"{'':60}borrowed: {', '.join(s.borrowed_words)}")
    print("totals: " + ", ".join(f"{k} {v}" for k, v in summary(scores).items()))


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", nargs="+", type=Path, default=list(DEFAULT_REQUESTS))
    parser.add_argument("--base-url", help="plan on this OpenAI-compatible server instead")
    parser.add_argument(
        "--model", help="local.model (a bundled model or a .gguf), or the model at --base-url"
    )
    parser.add_argument("--parallel", type=int, default=1, help="plans at once (default 1)")
    parser.add_argument(
        "--temperature", nargs="+", type=float, default=[None], help="default: the planner's"
    )
    parser.add_argument("--repeat", type=int, default=1, help="times each set is planned")
    parser.add_argument(
        "--max-tokens", type=int, help="planner reply limit (local.plan_max_tokens)"
    )
    parser.add_argument("--only", type=int, default=0, help="the first N requests of each file")
    parser.add_argument("--json", action="store_true", help="print the scores as JSON")
    return parser.parse_args(argv)


def _revision() -> str:
    try:
        found = subprocess.run(
            ["git", "-C", str(HERE), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError:
        return "?"
    return found.stdout.strip() or "?"


def _describe(settings: Settings) -> str:
    planner, local = settings.planner, settings.local
    return (
        f"{settings.backend.base_url} model {settings.backend.model}: temperature "
        f"{planner.temperature}, max_tokens {planner.max_tokens}, max_repairs "
        f"{planner.max_repairs}, ordered_steps {planner.ordered_steps}, structured_output "
        f"{settings.backend.structured_output}, local.parallel {local.parallel}, context_size "
        f"{local.context_size}, repeat_penalty {local.repeat_penalty}"
    )


def _run(args: argparse.Namespace, engine: Overseer) -> dict[str, list[Score]]:
    results: dict[str, list[Score]] = {}
    for temperature in args.temperature:
        settings = at_temperature(engine.settings, temperature)
        print(f"# {_revision()}: {_describe(settings)}", file=sys.stderr, flush=True)
        for run in range(1, args.repeat + 1):
            for path in args.requests:
                label = f"{path.name} @ t={settings.planner.temperature}"
                label += f" #{run}" if args.repeat > 1 else ""
                cases = load_cases(path)[: args.only or None]
                results[label] = bench_cases(engine, settings, cases, args.parallel)
                if not args.json:
                    print_model(label, results[label])
    return results


def main(argv: Sequence[str] | None = None) -> int:
    args = _arguments(argv)
    if args.base_url:
        settings = server_settings(args.base_url, args.max_tokens)
        if args.model:
            backend = settings.backend.model_copy(update={"model": args.model})
            settings = settings.model_copy(update={"backend": backend})
    else:
        settings = embedded_settings(args.model, args.max_tokens)
        missing = missing_packages(settings.local.model)
        if missing:
            print(f"the embedded model is not installed ({', '.join(missing)})", file=sys.stderr)
            return 2
    with Overseer(settings, journal=False) as engine:  # starts the embedded server if need be
        results = _run(args, engine)
    if args.json:
        data = {
            m: {"summary": summary(s), "cases": [asdict(x) for x in s]} for m, s in results.items()
        }
        print(json.dumps(data, indent=2, ensure_ascii=False))
    else:
        print(f"\n== totals ({_revision()})")
        for label, scores in results.items():
            print(f"{label}: " + ", ".join(f"{k} {v}" for k, v in summary(scores).items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
