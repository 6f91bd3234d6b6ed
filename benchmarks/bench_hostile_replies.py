"""How long hostile input takes to refuse. Prints figures; asserts nothing.

    python benchmarks/bench_hostile_replies.py [--repeat N]

1. plan extraction (``jsontext.extract_json``) on hostile replies of growing size: unclosed
   brackets, deep nesting, a fence followed by one long word, many broken spans, unclosed strings.
   Each time should grow with the size, not its square (the old scan took 1.0 s for 5 KB of ``{``,
   4.5 s for 10 KB and 20.9 s for 20 KB; the old fence pattern 23 s for 2 KB).
2. the whole of planning on one reply (``Planner.plan`` with a scripted chat, no re-ask), the same
   code path the command takes, which adds validation to the extraction.
3. loading settings from a 367-byte YAML alias bomb (it grew to 2 GB in 38 s before).
4. the whole command, ``overseer plan x`` in a subprocess against a fake server on 127.0.0.1 whose
   every plan reply is ``"{" * 100000`` (no output for 90 s before), to its exit code 3.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from overseer.config import PlannerSettings, load_settings
from overseer.errors import ConfigError, PlanError
from overseer.planning.jsontext import extract_json
from overseer.planning.planner import Planner
from tests.clihelp import responder
from tests.fake_openai import FakeOpenAI
from tests.fakes import ScriptedChat, reply
from tests.test_config import BOMB

SIZES = (5_000, 20_000, 100_000, 1_000_000)
SHAPES: dict[str, Callable[[int], str]] = {
    "unclosed {": lambda n: "{" * n,
    "deep [ ]": lambda n: '{"steps": ' + "[" * (n // 2) + "]" * (n // 2) + "}",
    "fence + word": lambda n: "```" + "a" * n,
    "broken [,]": lambda n: "[,]" * (n // 3),
    'unclosed {"': lambda n: '{"' * (n // 2),
    "prose {a}": lambda n: "{a} " * (n // 4),
}


def best_of(repeat: int, call: Callable[[], object]) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        with contextlib.suppress(ValueError, PlanError, ConfigError):
            call()
        times.append(time.perf_counter() - started)
    return min(times)


def planning(text: str) -> object:
    planner = Planner(
        chat=ScriptedChat(reply(text)),
        tool_names=["general"],
        tool_lines="- general",
        settings=PlannerSettings(max_repairs=0),
    )
    return planner.plan("a request")


def table(title: str, repeat: int, run: Callable[[str], object]) -> None:
    print(f"\n{title} (best of {repeat}, seconds; µs per KB at 1 MB)")
    print(f"  {'shape':<14}" + "".join(f"{n:>11,}" for n in SIZES) + "   µs/KB")
    for name, make in SHAPES.items():
        texts = [make(n) for n in SIZES]
        times = [best_of(repeat, lambda t=t: run(t)) for t in texts]
        per_kb = times[-1] / (len(texts[-1]) / 1024) * 1e6
        print(f"  {name:<14}" + "".join(f"{t:>11.4f}" for t in times) + f"{per_kb:>8.0f}")


def alias_bomb(repeat: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "bomb.yaml"
        path.write_text(BOMB)
        times = [best_of(1, lambda: load_settings(path)) for _ in range(repeat)]
    print(f"\nalias bomb ({len(BOMB.encode())} bytes): refused in {statistics.median(times):.4f}s")


def command(repeat: int) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "OVERSEER_C"))}
    times, codes = [], set()
    with FakeOpenAI(responder(["{" * 100_000] * 3 * repeat)) as fake:
        for _ in range(repeat):
            started = time.perf_counter()
            done = subprocess.run(
                [sys.executable, "-m", "overseer", "plan", "x", "--base-url", fake.url, "-q"],
                capture_output=True,
                env=env,
                timeout=600,
                check=False,
            )
            times.append(time.perf_counter() - started)
            codes.add(done.returncode)
    print(
        f"\noverseer plan, 3 replies of 100,000 '{{': exit {sorted(codes)} in "
        f"{statistics.median(times):.2f}s (median of {repeat}, with the interpreter's start)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    table("1. extract_json", args.repeat, extract_json)
    table("2. planning one reply", args.repeat, planning)
    alias_bomb(args.repeat)
    command(args.repeat)


if __name__ == "__main__":
    main()
