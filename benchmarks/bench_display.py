"""What the live display costs a run: the same parallel run on a terminal and piped, side by side.

    python benchmarks/bench_display.py [--repeat 5] [--steps 50] [--latency 0.3]
    (from a checkout: PYTHONPATH=. python benchmarks/bench_display.py; Linux or macOS: the
    terminal is a pseudo-terminal from the standard library's ``pty``)

The real command, ``overseer --json --max-workers N "..."``, runs in a subprocess against a fake
OpenAI-compatible server on 127.0.0.1: the plan has N independent steps, each step's reply comes
after ``--latency`` seconds, the plan and the final answer at once. Each repeat runs it twice, in
alternating order:

- piped: stderr is a pipe, so the display writes plain lines;
- terminal: stderr (and stdin) is a pseudo-terminal of 40 x 160 whose other end is read as fast as
  a terminal would, so the display draws its live tree; stdout stays a pipe for the JSON report.

For each it reports the medians of the run's own wall time (``timing.wall_s`` of the report), that
wall time over the critical path, and the moment the last step started (seconds since the run
began: the display's cost shows first there), then the terminal's median wall time over the
piped one. The target is a ratio within 1.03. First it prints what one ``Display.handle`` call
costs the thread that emits the event, and what one tick of the refresh thread costs, both in
process, for that plan and for a 10,000-step one (idle, one step finished, a screenful of
steps finished). The server is not the bottleneck: a listen backlog of 512, TCP_NODELAY, each reply
written in one ``sendall``, a thread per connection.
Prints; asserts nothing.
"""

from __future__ import annotations

import argparse
import fcntl
import io
import json
import os
import pty
import resource
import socket
import socketserver
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

__all__ = ["FastFake", "Measure", "main"]

_ROWS, _COLS = 40, 160
_PLAN_MARK = "You are the planner"
_ANSWER_MARK = "final answer"


# -- the fake server -------------------------------------------------------------------------------


class _Server(socketserver.ThreadingTCPServer):
    request_queue_size = 512
    daemon_threads = True
    allow_reuse_address = True
    fake: FastFake


class _Handler(socketserver.StreamRequestHandler):
    """HTTP/1.1 with keep-alive, just enough for the openai client: one reply per request."""

    server: _Server

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def handle(self) -> None:
        while True:
            body = self._read_request()
            if body is None:
                return
            self.connection.sendall(self.server.fake.reply(body))

    def _read_request(self) -> dict[str, Any] | None:
        line = self.rfile.readline()
        if not line:
            return None
        length = 0
        while (header := self.rfile.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = header.decode("latin-1").partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip())
        raw = self.rfile.read(length) if length else b"{}"
        data: dict[str, Any] = json.loads(raw or b"{}") if line.startswith(b"POST") else {}
        return data


class FastFake:
    """Plans ``steps`` independent steps; each step answers after ``latency`` seconds."""

    def __init__(self, steps: int, latency: float) -> None:
        self.steps, self.latency = steps, latency
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.fake = self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __enter__(self) -> FastFake:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def reply(self, body: dict[str, Any]) -> bytes:
        if not body:
            return _http(json.dumps({"object": "list", "data": [{"id": "m"}]}).encode(), "")
        system = str((body.get("messages") or [{}])[0].get("content", ""))
        if system.startswith(_PLAN_MARK):
            return _completion(body, self._plan())
        if _ANSWER_MARK not in system:
            time.sleep(self.latency)
        return _completion(body, "done")

    def _plan(self) -> str:
        steps: list[dict[str, Any]] = [
            {"step_id": f"step{i}", "description": f"Say the number {i}", "tool": "general"}
            for i in range(1, self.steps + 1)
        ]
        for step in steps:
            step.update(depends_on=[], parallel_group=1)
        return json.dumps({"steps": steps})


def _completion(body: dict[str, Any], content: str) -> bytes:
    usage = {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}
    base = {"id": "x", "created": int(time.time()), "model": body.get("model") or "m"}
    if not body.get("stream"):
        choice = {"index": 0, "message": {"role": "assistant", "content": content}}
        payload = {**base, "object": "chat.completion", "usage": usage}
        payload["choices"] = [{**choice, "finish_reason": "stop"}]
        return _http(json.dumps(payload).encode(), "application/json")
    return _http(_sse(base, content, usage), "text/event-stream")


def _sse(base: dict[str, Any], content: str, usage: dict[str, int]) -> bytes:
    chunk = {**base, "object": "chat.completion.chunk"}
    delta = {"index": 0, "delta": {"role": "assistant", "content": content}, "finish_reason": None}
    end = {"index": 0, "delta": {}, "finish_reason": "stop"}
    events = [{**chunk, "choices": [delta]}, {**chunk, "choices": [end]}]
    events.append({**chunk, "choices": [], "usage": usage})
    text = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
    return text.encode()


def _http(payload: bytes, kind: str) -> bytes:
    head = (
        f"HTTP/1.1 200 OK\r\nContent-Type: {kind or 'application/json'}\r\n"
        f"Content-Length: {len(payload)}\r\nConnection: keep-alive\r\n\r\n"
    )
    return head.encode() + payload


# -- one run of the command ----------------------------------------------------------------------


@dataclass(frozen=True)
class Measure:
    """One run: the report's wall time and critical path, when its last step started, and the
    CPU time (user + system) of the whole process."""

    wall_s: float
    critical_path_s: float
    last_start_s: float
    cpu_s: float = 0.0

    @property
    def over_critical(self) -> float:
        return self.wall_s / self.critical_path_s if self.critical_path_s else float("nan")


def _command(url: str, steps: int, config: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "overseer",
        "--config",
        str(config),
        "--base-url",
        url,
        "--model",
        "m",
        "--max-workers",
        str(steps),
        "--json",
        f"say the numbers from 1 to {steps}",
    ]


def _measure(stdout: str) -> Measure:
    report = json.loads(stdout)
    timing = report["timing"]
    starts = [s["started_at"] for s in report["steps"] if s.get("started_at") is not None]
    return Measure(timing["wall_s"], timing["critical_path_s"], max(starts, default=0.0))


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_piped(command: list[str], env: dict[str, str]) -> Measure:
    cpu = _children_cpu()
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    _check(done.returncode, done.stderr)
    return replace(_measure(done.stdout), cpu_s=_children_cpu() - cpu)


def run_on_terminal(command: list[str], env: dict[str, str]) -> Measure:
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", _ROWS, _COLS, 0, 0))
    seen: list[bytes] = []
    cpu = _children_cpu()
    try:
        process = subprocess.Popen(
            command, stdin=slave, stdout=subprocess.PIPE, stderr=slave, env=env
        )
        os.close(slave)
        reader = threading.Thread(target=_drain, args=(master, seen), daemon=True)
        reader.start()
        out, _ = process.communicate(timeout=300)
        reader.join(10)
    finally:
        os.close(master)
    _check(process.returncode, b"".join(seen).decode(errors="replace")[-2000:])
    return replace(_measure(out.decode()), cpu_s=_children_cpu() - cpu)


def _drain(fd: int, seen: list[bytes]) -> None:
    """Read the terminal's output as fast as it comes, as a terminal emulator does."""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the child closed the terminal
            return
        if not chunk:
            return
        seen.append(chunk)


def _check(code: int | None, err: str) -> None:
    if code != 0:
        raise SystemExit(f"the run failed with exit code {code}:\n{err}")


# -- the comparison ------------------------------------------------------------------------------


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "OVERSEER_"))}
    env.pop("NO_COLOR", None)
    env.update(OVERSEER_HOME=str(home), TERM="xterm-256color", COLUMNS=str(_COLS), LINES=str(_ROWS))
    return env


def _config(folder: Path, steps: int) -> Path:
    path = folder / "bench.yaml"
    path.write_text(f"planner:\n  max_steps: {steps + 10}\nbackend:\n  request_timeout: 60\n")
    return path


def compare(repeat: int, steps: int, latency: float) -> dict[str, list[Measure]]:
    results: dict[str, list[Measure]] = {"piped": [], "terminal": []}
    runners = {"piped": run_piped, "terminal": run_on_terminal}
    with FastFake(steps, latency) as fake, tempfile.TemporaryDirectory() as folder:
        home = Path(folder)
        command, env = _command(fake.url, steps, _config(home, steps)), _env(home)
        run_piped(command, env)  # warm the disk cache and the journal file
        for i in range(repeat):
            order = ("piped", "terminal") if i % 2 == 0 else ("terminal", "piped")
            for mode in order:
                results[mode].append(runners[mode](command, env))
    return results


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def report(results: dict[str, list[Measure]], steps: int, latency: float) -> str:
    lines = [
        f"{steps} parallel steps of {latency * 1000:.0f} ms over HTTP, "
        f"{len(results['piped'])} runs each, medians",
        f"{'mode':<10}{'wall s':>9}{'x critical path':>18}{'last step started s':>22}"
        f"{'process CPU s':>16}",
    ]
    for mode, measures in results.items():
        wall = _median([m.wall_s for m in measures])
        over = _median([m.over_critical for m in measures])
        last = _median([m.last_start_s for m in measures])
        cpu = _median([m.cpu_s for m in measures])
        lines.append(f"{mode:<10}{wall:>9.3f}{over:>18.3f}{last:>22.3f}{cpu:>16.3f}")
    piped = _median([m.wall_s for m in results["piped"]])
    terminal = _median([m.wall_s for m in results["terminal"]])
    lines.append(f"terminal / piped wall time: {terminal / piped:.3f} (target at most 1.03)")
    runs = zip(results["terminal"], results["piped"], strict=True)
    pairs = [t.wall_s / p.wall_s for t, p in runs]
    lines.append(f"terminal / piped per repeat: {', '.join(f'{r:.3f}' for r in pairs)}")
    lines.append(f"median of the per-repeat ratios: {_median(pairs):.3f}")
    return "\n".join(lines)


# -- the cost of one event, in process -------------------------------------------------------------


class _Terminal(io.StringIO):
    """Output that rich takes for a terminal (and that is thrown away)."""

    def isatty(self) -> bool:
        return True


def handle_cost(steps: int, events: int = 20000) -> dict[str, float]:
    """Microseconds one ``Display.handle`` call takes on the emitting thread, while the live
    display redraws (terminal) or writing a line to /dev/null (pipe)."""
    from overseer.core.plan import Plan, Step
    from overseer.events import PlanReady, StepStarted
    from overseer.interfaces.display import Display

    plan = Plan(steps=tuple(Step(step_id=f"s{i}", description="x", tool="t") for i in range(steps)))
    costs = {}
    with open(os.devnull, "w") as devnull:
        for mode, stream, live in (("terminal", _Terminal(), True), ("pipe", devnull, False)):
            display = Display(stream, live=live)
            display.handle(PlanReady(0.0, plan))
            started = time.perf_counter()
            for i in range(events):
                display.handle(StepStarted(0.0, f"s{i % steps}"))
            costs[mode] = (time.perf_counter() - started) / events * 1e6
            display.stop()
    return costs


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def frame_cost(steps: int, repeat: int = 200) -> dict[str, float]:
    """Microseconds of the refresh thread per tick (``Display.tick``) for a ``steps``-step plan,
    every step running, on a 40 x 160 terminal: a tick where nothing changed, one where one
    step finished, one where as many steps finished as the screen has rows for."""
    from overseer.core.plan import Plan, Step
    from overseer.events import PlanReady, StepFinished, StepStarted
    from overseer.interfaces.display import Display

    plan = Plan(steps=tuple(Step(step_id=f"s{i}", description="x", tool="t") for i in range(steps)))
    clock = _Clock()
    display = Display(_Terminal(), live=True, refresh_per_second=0.01, clock=clock, quiet=0.0)
    display.console.size = (_COLS, _ROWS)
    display.handle(PlanReady(0.0, plan))
    for i in range(steps):
        display.handle(StepStarted(0.0, f"s{i}"))
    display.tick()

    def per_tick(change: Any) -> float:
        started = time.perf_counter()
        for k in range(repeat):
            change(k)
            display.tick()
        return (time.perf_counter() - started) / repeat * 1e6

    shown = min(steps, _ROWS - 3)  # the steps a bounded frame shows, when not all fit

    def every_row(k: int) -> None:
        for i in range(shown):
            display.handle(StepFinished(0.0, f"s{i}", "out", float(k)))

    costs = {
        "idle": per_tick(lambda k: None),
        "one step finished": per_tick(
            lambda k: display.handle(StepFinished(0.0, f"s{k % steps}", "out", float(k)))
        ),
        f"{shown} steps finished at once": per_tick(every_row),
    }
    display.stop()
    return costs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeat", type=int, default=5, help="runs of each mode (5)")
    parser.add_argument("--steps", type=int, default=50, help="independent steps (50)")
    parser.add_argument("--latency", type=float, default=0.3, help="seconds per step (0.3)")
    args = parser.parse_args(argv)
    costs = handle_cost(args.steps)
    print(
        f"Display.handle per event, {args.steps}-step plan: {costs['terminal']:.1f} us on a "
        f"terminal (live tree redrawing), {costs['pipe']:.1f} us on a pipe (one line written)"
    )
    for steps in sorted({args.steps, 10_000}):
        frame = frame_cost(steps)
        print(
            f"a frame of a {steps}-step plan, refresh thread: "
            + ", ".join(f"{what} {us:.0f} us" for what, us in frame.items())
        )
    print(report(compare(args.repeat, args.steps, args.latency), args.steps, args.latency))


if __name__ == "__main__":
    main()
