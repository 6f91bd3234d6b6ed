"""What a run costs beyond its steps: every row of issue 12's table, each beside its reference.

    python benchmarks/bench_overhead.py [--repeat 3] [--quick]
    (from a checkout: PYTHONPATH=. python benchmarks/bench_overhead.py)

Rows (medians of ``--repeat`` runs, all measured in this one run on this machine):

1. 50 parallel 300 ms HTTP steps, ``overseer REQUEST --json`` as a whole process against a fake
   server: with stderr on a pseudo-terminal (the live tree) and piped; the makespan of the steps
   (plan ready to last step done) over the critical path (300 ms), and the time from the plan's
   reply leaving the server to each step's request arriving (median and worst). References: 50
   threads each with its own ``http.client`` connection, and 50 threads sharing one ``httpx2``
   client, all started at once.
2. The library (``Overseer.run`` with a given plan, no server): 10,000 independent 0 ms steps,
   journal on and off, beside an eager ``ThreadPoolExecutor`` (and LangGraph, when installed).
3. A 2,000-step random DAG of 0 ms steps, journal on and off.
4. A fan-out of 50 x 100 ms steps, journal on and off, beside ``asyncio.gather``.
5. ``overseer plan`` against the fake server, the whole process, split into process start to
   the planning request arriving, the server's own reply time and the reply to the exit; beside
   the same without a bytecode cache, the openai client made with nothing sent, ``import
   openai`` alone, ``overseer --help`` and ``python -c pass``. These children run with a
   bytecode cache of their own (``PYTHONPYCACHEPREFIX``, warmed by one run), as an installed
   overseer has its ``.pyc`` files, unless the row says otherwise.

The fake server runs in its own process (``--serve``), so it never competes with overseer for
the GIL: one thread per connection, a listen backlog of 512, TCP_NODELAY, and each reply's
headers and body in one write (``http.server`` has a backlog of 5 and writes them separately,
which adds 1 s SYN retries and 40 ms delayed-ACK stalls that are not overseer's). The machine's
load average is printed first: on a shared machine every figure moves with it. Prints; asserts
nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import http.client
import json
import os
import pty
import random
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

__all__ = ["FastServer", "main"]

HTTP_STEPS = 50
HTTP_DELAY = 0.3
CHAIN = 10
CHAIN_DELAY = 0.05
ROOT = Path(__file__).resolve().parent.parent

# -- the fake server -------------------------------------------------------------------------------


class FastServer:
    """An OpenAI-compatible server that is never the bottleneck (see the module docstring).

    A request with a ``response_format`` is a planning request: it is answered at once with a
    plan of ``steps`` independent steps. Any other chat request is answered after ``delay``
    seconds with a short reply. ``GET /stats`` returns (and forgets) what happened since the
    last call: when each plan reply left and when each step request arrived (``time.time()``).
    """

    def __init__(self, steps: int, delay: float, port: int = 0, *, chain: bool = False) -> None:
        self.steps = steps
        self.delay = delay
        self.chain = chain
        self._lock = threading.Lock()
        self._log: list[tuple[str, float]] = []
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", port))
        self._sock.listen(512)
        self.port = self._sock.getsockname()[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def serve_forever(self) -> None:
        while True:
            conn, _ = self._sock.accept()
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self._connection, args=(conn,), daemon=True).start()

    def _connection(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            buffer = b""
            while True:
                request = _read_request(conn, buffer)
                if request is None:
                    return
                method, path, body, buffer = request
                reply = self._answer(method, path, body)
                conn.sendall(reply)
                if b"Connection: close" in reply[:200]:
                    return  # a stream ends when the connection does

    def _answer(self, method: str, path: str, body: bytes) -> bytes:
        if path.startswith("/v1/stats"):
            with self._lock:
                log, self._log = self._log, []
            return _http(200, json.dumps(log).encode())
        if method == "GET":
            return _http(200, json.dumps({"data": [{"id": "fake-model"}]}).encode())
        request = json.loads(body or b"{}")
        if request.get("response_format"):
            self._note("asked", time.time())  # a planning request has arrived (whole)
            plan = json.dumps(_plan(self.steps, self.chain))
            reply = _sse(plan) if request.get("stream") else _http(200, _completion(plan))
            self._note("plan", time.time())
            return reply
        self._note("step", time.time())
        time.sleep(self.delay)
        self._note("reply", time.time())  # a moment before it leaves: sendall comes next
        return _http(200, _completion("ok"))

    def _note(self, kind: str, at: float) -> None:
        with self._lock:
            self._log.append((kind, at))


def _read_request(conn: socket.socket, buffer: bytes) -> tuple[str, str, bytes, bytes] | None:
    while b"\r\n\r\n" not in buffer:
        data = conn.recv(65536)
        if not data:
            return None
        buffer += data
    head, buffer = buffer.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    method, path = lines[0].split(" ")[:2]
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    while len(buffer) < length:
        data = conn.recv(65536)
        if not data:
            return None
        buffer += data
    return method, path, buffer[:length], buffer[length:]


def _http(status: int, body: bytes) -> bytes:
    head = (
        f"HTTP/1.1 {status} OK\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body  # one write: headers and body together


def _sse(content: str) -> bytes:
    """A streamed reply in one write: the whole content in one chunk, then the usage, then DONE."""
    base = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 0}
    base["model"] = "fake-model"
    delta = {"index": 0, "delta": {"role": "assistant", "content": content}, "finish_reason": None}
    end = {"index": 0, "delta": {}, "finish_reason": "stop"}
    usage = {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}
    events = [{**base, "choices": [delta]}, {**base, "choices": [end]}]
    events.append({**base, "choices": [], "usage": usage})
    body = "".join(f"data: {json.dumps(event)}\n\n" for event in events) + "data: [DONE]\n\n"
    head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"
    return (head + body).encode()


def _completion(content: str) -> bytes:
    body = {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 0,
        "model": "fake-model",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12},
    }
    return json.dumps(body).encode()


def _plan(steps: int, chain: bool) -> dict[str, Any]:
    return {
        "steps": [
            {
                "step_id": f"step{i}",
                "description": f"Answer question number {i}",
                "tool": "general",
                "depends_on": [f"step{i - 1}"] if chain and i > 1 else [],
                "parallel_group": None if chain else 1,
            }
            for i in range(1, steps + 1)
        ]
    }


@contextlib.contextmanager
def server_process(steps: int, delay: float, *, chain: bool = False) -> Iterator[str]:
    """The fake server in a child process; yields its base URL."""
    command = [sys.executable, __file__, "--serve", "--steps", str(steps), "--delay", str(delay)]
    child = subprocess.Popen(
        [*command, "--chain"] if chain else command,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        yield child.stdout.readline().strip()
    finally:
        child.terminate()
        child.wait()


def _stats(url: str) -> list[tuple[str, float]]:
    host, port = url.split("//")[1].split("/")[0].split(":")
    conn = http.client.HTTPConnection(host, int(port))
    conn.request("GET", "/v1/stats")
    data: list[tuple[str, float]] = json.loads(conn.getresponse().read())
    conn.close()
    return data


# -- row 1: HTTP steps through the command ------------------------------------------------------


def _env(state: Path, journal: bool = True) -> dict[str, str]:
    config = state / "config.yaml"
    config.write_text(f"planner:\n  max_steps: {HTTP_STEPS}\njournal: {str(journal).lower()}\n")
    env = dict(os.environ)
    env.pop("OPENAI_API_KEY", None)
    env["OVERSEER_CONFIG"] = str(config)
    env.update(XDG_STATE_HOME=str(state), HOME=str(state), PYTHONPATH=str(ROOT))
    env.update(COLUMNS="120", LINES="60", TERM=env.get("TERM", "xterm-256color"))
    env.pop("NO_COLOR", None)
    return env


def _cli_run(url: str, state: Path, *, terminal: bool, journal: bool) -> dict[str, Any]:
    """One ``overseer REQUEST --json`` run; stdout piped, stderr on a pty or piped."""
    command = [sys.executable, "-m", "overseer", "answer fifty questions", "--json"]
    command += ["--base-url", url, "--max-workers", str(HTTP_STEPS), "--no-synthesize"]
    command += ["--max-replans", "0"]  # the steps' overhead, not a joiner round
    env = _env(state, journal)
    if not terminal:
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        return _parsed(done.stdout, done.stderr)
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 60, 120, 0, 0))
    drained = threading.Thread(target=_drain, args=(master,), daemon=True)
    drained.start()
    try:
        done = subprocess.run(
            command, env=env, stdout=subprocess.PIPE, stderr=slave, text=True, check=False
        )
    finally:
        os.close(slave)
    drained.join(5)
    os.close(master)
    return _parsed(done.stdout, "")


def _drain(fd: int) -> None:
    with contextlib.suppress(OSError):
        while os.read(fd, 65536):
            pass


def _parsed(stdout: str, stderr: str) -> dict[str, Any]:
    try:
        report: dict[str, Any] = json.loads(stdout)
    except ValueError:
        problem = f"overseer printed no JSON report: {stdout[:300]!r} {stderr[-600:]!r}"
        raise SystemExit(problem) from None
    if report.get("status") != "succeeded":
        raise SystemExit(f"the benchmark run failed: {stderr[-600:]!r}")
    return report


def _makespan(report: dict[str, Any]) -> float:
    """Plan ready to the last step done (the steps' own clock: seconds since the run began)."""
    finished = max(step["finished_at"] for step in report["steps"])
    return float(finished - report["timing"]["plan_s"])


def http_cli(
    url: str, repeat: int, terminal: bool, journal: bool = True
) -> tuple[float, float, float]:
    """(makespan / critical path, median and worst ms from plan reply sent to a step's request)."""
    ratios, medians, worsts = [], [], []
    with tempfile.TemporaryDirectory() as state:
        for _ in range(repeat):
            _stats(url)
            report = _cli_run(url, Path(state), terminal=terminal, journal=journal)
            log = _stats(url)
            sent = max(t for kind, t in log if kind == "plan")
            lags = sorted((t - sent) * 1e3 for kind, t in log if kind == "step")
            ratios.append(_makespan(report) / HTTP_DELAY)
            medians.append(statistics.median(lags))
            worsts.append(lags[-1])
    return statistics.median(ratios), statistics.median(medians), statistics.median(worsts)


def chain_lags(url: str, repeat: int, terminal: bool, journal: bool) -> list[float]:
    """Sorted ms from each step's reply leaving the server to the next step's request arriving."""
    lags: list[float] = []
    with tempfile.TemporaryDirectory() as state:
        for _ in range(repeat):
            _stats(url)
            _cli_run(url, Path(state), terminal=terminal, journal=journal)
            log = _stats(url)
            arrivals = [t for kind, t in log if kind == "step"]
            replies = [t for kind, t in log if kind == "reply"]
            lags += [(a - r) * 1e3 for r, a in zip(replies, arrivals[1:], strict=False)]
    return sorted(lags)


def http_threads(url: str, repeat: int, call: Callable[[], Callable[[], None]]) -> float:
    """50 threads released at once, each making one call; makespan / critical path."""
    ratios = []
    for _ in range(repeat):
        calls = [call() for _ in range(HTTP_STEPS)]
        barrier = threading.Barrier(HTTP_STEPS + 1)
        threads = [threading.Thread(target=_at_barrier, args=(barrier, c)) for c in calls]
        for thread in threads:
            thread.start()
        barrier.wait()
        start = time.perf_counter()
        for thread in threads:
            thread.join()
        ratios.append((time.perf_counter() - start) / HTTP_DELAY)
    return statistics.median(ratios)


def _at_barrier(barrier: threading.Barrier, call: Callable[[], None]) -> None:
    barrier.wait()
    call()


_STEP_BODY = json.dumps(
    {"model": "fake-model", "messages": [{"role": "user", "content": "question"}]}
).encode()


def http_client_call(url: str) -> Callable[[], Callable[[], None]]:
    host, port = url.split("//")[1].split("/")[0].split(":")

    def make() -> Callable[[], None]:
        conn = http.client.HTTPConnection(host, int(port))

        def call() -> None:
            conn.request("POST", "/v1/chat/completions", _STEP_BODY, _JSON_HEADERS)
            conn.getresponse().read()
            conn.close()

        return call

    return make


_JSON_HEADERS = {"Content-Type": "application/json"}


def httpx_call(url: str) -> Callable[[], Callable[[], None]]:
    import httpx2

    client = httpx2.Client(limits=httpx2.Limits(max_connections=100, max_keepalive_connections=100))

    def make() -> Callable[[], None]:
        def call() -> None:
            client.post(url + "/chat/completions", content=_STEP_BODY, headers=_JSON_HEADERS).read()

        return call

    return make


def report_cpu_per_call(repeat: int, calls: int = 400) -> None:
    """Row 1c: the CPU one call costs its thread (``time.thread_time``), ``calls`` calls in a row
    against a server that answers at once, beside row 1's references: in a fan-out of 50 these
    costs queue on the GIL."""
    from overseer.backends.chat import ChatRequest
    from overseer.backends.llm import OpenAIChat

    print(f"\n1c. one thread, {calls} calls in a row: CPU per call")
    with server_process(3, 0.0) as url:
        chat = OpenAIChat(base_url=url, api_key=None, model="fake-model")
        request = ChatRequest(messages=[{"role": "user", "content": "question"}])
        cases = (
            ("overseer OpenAIChat.complete", lambda: chat.complete(request)),
            ("httpx2 client", httpx_call(url)()),
            ("http.client (a connection a call)", http_client_call(url)()),
        )
        for label, call in cases:
            call()  # warm: the connection, the SDK's import
            figures = []
            for _ in range(repeat):
                start = time.thread_time()
                for _ in range(calls):
                    call()
                figures.append((time.thread_time() - start) / calls)
            print(f"  {label:<34} {statistics.median(figures) * 1e3:6.3f} ms CPU/call")


# -- rows 2-4: the library -----------------------------------------------------------------------


def _engine(journal: bool, state: Path, max_workers: int) -> Any:
    from overseer.config import load_settings
    from overseer.engine import Overseer
    from overseer.journal.store import Journal
    from overseer.tools.registry import FunctionTool, ToolRegistry

    overrides = {
        "run.max_workers": max_workers,
        "run.synthesize": False,
        "planner.max_replans": 0,  # the plan is given: no joiner round either
        "backend.base_url": "http://127.0.0.1:9/v1",  # never called: the plan is given
    }
    registry = ToolRegistry()
    registry.register(FunctionTool("zero", "returns at once", lambda prompt: "ok"))
    registry.register(FunctionTool("sleep", "sleeps 100 ms", _sleep_100ms))
    store = Journal(state / f"journal-{time.monotonic_ns()}.sqlite3") if journal else False
    return Overseer(
        load_settings(None, overrides), chat=_NoChat(), registry=registry, journal=store
    )


def _sleep_100ms(prompt: str) -> str:
    time.sleep(0.1)
    return "ok"


class _NoChat:
    def complete(self, request: Any) -> Any:
        raise AssertionError("the library rows call no model")


def _steps(n: int, tool: str, parents: Callable[[int], list[int]]) -> Any:
    from overseer.core.plan import Plan, Step

    steps = [
        Step(
            step_id=f"step{i + 1}",
            description=f"step {i + 1}",
            tool=tool,
            depends_on=tuple(f"step{p + 1}" for p in parents(i)),
        )
        for i in range(n)
    ]
    return Plan(steps=tuple(steps))


def library_runs(plan: Any, max_workers: int, repeat: int) -> dict[bool, tuple[float, float]]:
    """Median (wall, CPU of the whole process) seconds of ``Overseer.run`` with the plan given
    (no planning, no server), journal on (True) and off (False), the two alternating run by run
    (on a shared machine its speed drifts; alternating, the drift falls on both alike). Each run
    follows a one-step run on the same engine: a user's journal file exists after the first
    run, and creating one (15-30 ms) is not what a run costs. The journal is flushed before each
    run, so what an earlier run left it to write is not measured as this one's. CPU counts every
    thread, up to the journal's flush after the run (it writes the run's ``--json`` object after
    ``run()`` returns): on a shared machine it moves less."""
    walls: dict[bool, list[float]] = {True: [], False: []}
    cpus: dict[bool, list[float]] = {True: [], False: []}
    with tempfile.TemporaryDirectory() as state:
        for turn in range(repeat):
            for journal in (True, False) if turn % 2 == 0 else (False, True):
                wall, cpu = _library_run(plan, journal, max_workers, Path(state))
                walls[journal].append(wall)
                cpus[journal].append(cpu)
    return {j: (statistics.median(walls[j]), statistics.median(cpus[j])) for j in (True, False)}


def _library_run(plan: Any, journal: bool, max_workers: int, state: Path) -> tuple[float, float]:
    engine = _engine(journal, state, max_workers)
    engine.run("warm-up", plan=_steps(1, "zero", lambda i: []))  # the journal file exists
    _settle(engine)
    before = os.times()
    start = time.perf_counter()
    report = engine.run("benchmark", plan=plan)
    wall = time.perf_counter() - start
    _settle(engine)  # its --json object, written after run() returned: not in the next
    after = os.times()  # the CPU counts that write too
    if report.status != "succeeded":
        raise SystemExit(f"the library run failed: {report.outcome.reason}")
    engine.close()
    return wall, after.user + after.system - before.user - before.system


def _settle(engine: Any) -> None:
    """Wait for what the journal writes after ``run()`` returned (a finished run's ``--json``
    object, off the run's path): left running, it would be measured as part of the next run."""
    if engine.journal is not None:
        engine.journal.flush()


def thread_pool_run(n: int, max_workers: int, repeat: int) -> tuple[float, float]:
    """The eager baseline: every 0 ms job submitted to a ThreadPoolExecutor at once."""
    walls, cpus = [], []
    for _ in range(repeat):
        with ThreadPoolExecutor(max_workers) as pool:
            before = os.times()
            start = time.perf_counter()
            for future in [pool.submit(str, i) for i in range(n)]:
                future.result()
            walls.append(time.perf_counter() - start)
            after = os.times()
            cpus.append(after.user + after.system - before.user - before.system)
    return statistics.median(walls), statistics.median(cpus)


def asyncio_fan_out(n: int, seconds: float, repeat: int) -> float:
    async def all_of() -> None:
        await asyncio.gather(*(asyncio.sleep(seconds) for _ in range(n)))

    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        asyncio.run(all_of())
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def langgraph_run(n: int, repeat: int) -> float | None:
    try:
        from langgraph.graph import END, START, StateGraph  # type: ignore[import-not-found]
    except ImportError:
        return None
    from typing import Annotated, TypedDict

    def add(a: int, b: int) -> int:
        return a + b

    class State(TypedDict):
        done: Annotated[int, add]

    graph = StateGraph(State)
    for i in range(n):
        graph.add_node(f"n{i}", lambda state: {"done": 1})
        graph.add_edge(START, f"n{i}")
        graph.add_edge(f"n{i}", END)
    app = graph.compile()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        app.invoke({"done": 0})
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# -- row 5: start-up ------------------------------------------------------------------------------


def process_seconds(
    command: Sequence[str], env: dict[str, str], repeat: int
) -> tuple[float, float]:
    """Median (wall, CPU) seconds of a whole process."""
    walls, cpus = [], []
    for _ in range(repeat):
        before = os.times()
        start = time.perf_counter()
        subprocess.run(command, env=env, capture_output=True, check=True)
        walls.append(time.perf_counter() - start)
        cpus.append(_children_cpu(before, os.times()))
    return statistics.median(walls), statistics.median(cpus)


# -- the report -----------------------------------------------------------------------------------


def _journal(on: bool) -> str:
    return "journal on" if on else "journal off"


def _us(seconds: float, n: int) -> str:
    return f"{seconds / n * 1e6:7.1f} us/step"


def report_http(repeat: int) -> None:
    print(f"\n1. {HTTP_STEPS} parallel {HTTP_DELAY * 1e3:.0f} ms HTTP steps (x critical path)")
    with server_process(HTTP_STEPS, HTTP_DELAY) as url:
        cases = (
            ("overseer on a terminal (pty)", True, True),
            ("overseer piped --json", False, True),
            ("overseer piped --json, journal off", False, False),
        )
        for label, terminal, journal in cases:
            ratio, median, worst = http_cli(url, repeat, terminal, journal)
            print(
                f"  {label:<34} x{ratio:.3f}   plan reply -> step request: "
                f"median {median:6.1f} ms, last {worst:6.1f} ms"
            )
        for label, call in (
            ("50 threads, http.client", http_client_call(url)),
            ("50 threads, one httpx2 client", httpx_call(url)),
        ):
            print(f"  {label:<34} x{http_threads(url, repeat, call):.3f}")
    print(f"\n1b. a chain of {CHAIN} HTTP steps: a step's dependency done -> its request arriving")
    with server_process(CHAIN, CHAIN_DELAY, chain=True) as url:
        for label, terminal, journal in cases:
            lags = chain_lags(url, repeat, terminal, journal)
            print(
                f"  {label:<34} median {statistics.median(lags):6.1f} ms, worst {lags[-1]:6.1f} ms"
            )
    report_cpu_per_call(repeat)


def report_library(repeat: int, quick: bool) -> None:
    n = 2_000 if quick else 10_000
    plan = _steps(n, "zero", lambda i: [])
    print(f"\n2. library, {n:,} independent 0 ms steps (max_workers=8)")
    for journal, (wall, cpu) in library_runs(plan, 8, repeat).items():
        print(f"  {_journal(journal):<34} {_us(wall, n)}   CPU {_us(cpu, n)}")
    pool_wall, pool_cpu = thread_pool_run(n, 8, repeat)
    print(f"  {'eager ThreadPoolExecutor':<34} {_us(pool_wall, n)}   CPU {_us(pool_cpu, n)}")
    graph = langgraph_run(min(n, 1_000), repeat)
    text = "not installed" if graph is None else _us(graph, min(n, 1_000)) + " (1,000 steps)"
    print(f"  {'LangGraph':<34} {text}")

    rng = random.Random(7)
    parents = [
        rng.sample(range(max(0, i - 50), i), min(i, rng.randint(0, 3))) for i in range(2_000)
    ]
    dag = _steps(2_000, "zero", lambda i: parents[i])
    print("\n3. library, 2,000-step random DAG of 0 ms steps (0-3 parents, max_workers=8)")
    for journal, (wall, cpu) in library_runs(dag, 8, repeat).items():
        print(f"  {_journal(journal):<34} {_us(wall, 2_000)}   CPU {_us(cpu, 2_000)}")

    fan = _steps(50, "sleep", lambda i: [])
    print("\n4. library, fan-out 50 x 100 ms (x critical path)")
    for journal, (wall, _) in library_runs(fan, 50, repeat).items():
        print(f"  {_journal(journal):<34} x{wall / 0.1:.3f}")
    print(f"  {'asyncio.gather':<34} x{asyncio_fan_out(50, 0.1, repeat) / 0.1:.3f}")


def report_startup(repeat: int) -> None:
    print("\n5. start-up, whole process (median wall s / CPU s)")
    with server_process(3, 0.0) as url, tempfile.TemporaryDirectory() as state:
        bare = _env(Path(state))
        env = _with_bytecode_cache(bare, Path(state) / "pycache")
        plan = ["-m", "overseer", "plan", "three things", "--base-url", url]
        subprocess.run([sys.executable, *plan], env=env, capture_output=True, check=True)
        wall, cpu, parts = plan_seconds(url, plan, env, repeat)
        print(f"  {'overseer plan (local server)':<34} {wall:6.2f} s wall {cpu:6.2f} s CPU")
        asked, served, after = parts
        print(
            f"  {'':<34} start -> request at the server {asked:5.3f} s, the server's reply "
            f"{served * 1e3:4.1f} ms, reply -> exit {after:5.3f} s"
        )
        wall, cpu, _ = plan_seconds(url, plan, bare, repeat)
        print(f"  {'overseer plan, no bytecode cache':<34} {wall:6.2f} s wall {cpu:6.2f} s CPU")
        rows = [
            ("openai client made, nothing sent", ["-c", _CLIENT_ONLY]),
            ("import openai alone", ["-c", "import openai"]),
            ("overseer --help", ["-m", "overseer", "--help"]),
            ("python -c pass", ["-c", "pass"]),
        ]
        for label, args in rows:
            wall, cpu = process_seconds([sys.executable, *args], env, repeat)
            print(f"  {label:<34} {wall:6.2f} s wall {cpu:6.2f} s CPU")


_CLIENT_ONLY = (
    "import httpx2, openai; "
    "openai.OpenAI(base_url='http://127.0.0.1:9/v1', api_key='x', http_client=httpx2.Client())"
)


def _with_bytecode_cache(env: dict[str, str], cache: Path) -> dict[str, str]:
    """``env`` with Python writing and reading bytecode under ``cache`` (not in the checkout)."""
    compiled = {k: v for k, v in env.items() if k != "PYTHONDONTWRITEBYTECODE"}
    compiled["PYTHONPYCACHEPREFIX"] = str(cache)
    return compiled


def plan_seconds(
    url: str, args: Sequence[str], env: dict[str, str], repeat: int
) -> tuple[float, float, tuple[float, float, float]]:
    """Median wall and CPU seconds of ``overseer plan``, and the medians of its three parts:
    process start to the planning request at the server, the server's reply, reply to exit."""
    walls, cpus, asked, served, after = [], [], [], [], []
    for _ in range(repeat):
        _stats(url)
        before, start = os.times(), time.time()
        subprocess.run([sys.executable, *args], env=env, capture_output=True, check=True)
        end, spent = time.time(), os.times()
        log = dict(_stats(url))  # one planning request: one "asked", one "plan"
        walls.append(end - start)
        cpus.append(_children_cpu(before, spent))
        asked.append(log["asked"] - start)
        served.append(log["plan"] - log["asked"])
        after.append(end - log["plan"])
    median = statistics.median
    return median(walls), median(cpus), (median(asked), median(served), median(after))


def _children_cpu(before: os.times_result, after: os.times_result) -> float:
    return (
        after.children_user + after.children_system - before.children_user - before.children_system
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (median shown)")
    parser.add_argument("--quick", action="store_true", help="2,000 steps instead of 10,000")
    parser.add_argument("--only", choices=["http", "library", "startup"], help="one group of rows")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=HTTP_STEPS, help=argparse.SUPPRESS)
    parser.add_argument("--delay", type=float, default=HTTP_DELAY, help=argparse.SUPPRESS)
    parser.add_argument("--chain", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        server = FastServer(args.steps, args.delay, chain=args.chain)
        print(server.url, flush=True)
        server.serve_forever()
        return
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"bench_overhead: {os.cpu_count()} cores, load average {load}; medians of {args.repeat}")
    if args.only in (None, "http"):
        report_http(args.repeat)
    if args.only in (None, "library"):
        report_library(args.repeat, args.quick)
    if args.only in (None, "startup"):
        report_startup(args.repeat)


if __name__ == "__main__":
    main()
