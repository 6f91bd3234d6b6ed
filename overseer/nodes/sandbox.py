"""Start one node in a sandbox, feed it its input, collect its output, and leave nothing behind.

Every node runs as ``python -I -S`` in a fresh folder that is deleted afterwards, with a scrubbed
environment (no API key, no secret: only PATH, HOME, TMPDIR, the locale and the channel's
descriptor), under the isolation ``overseer.nodes.isolation.decide`` picks. Limits (CPU seconds,
memory, file size, open files, processes) are set by ``node_runtime/_boot.py`` inside the node's own
process, so this threaded parent never uses ``preexec_fn``. A wall-clock timeout, a cancel or an
oversized stdout kills the whole process group (and pid namespace and pids cgroup, when in use),
grandchildren included.

The tool channel is one end of a ``socketpair`` handed over with ``pass_fds``; the node's stdout
stays its own. Its stdin is a file holding the input JSON, so a large input never blocks a pipe.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import selectors
import signal
import site
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

from node_runtime import wire
from overseer.config.nodes import SandboxSettings
from overseer.nodes.cgroup import PidsCgroup
from overseer.nodes.folders import make_folder, remove_folder
from overseer.nodes.isolation import BWRAP_ARGS, Isolation, bwrap_mounts, capabilities
from overseer.nodes.proctree import group_members, kill_and_wait

__all__ = ["SETUP_FAILED", "ChannelServer", "NodeRun", "run_node"]

SETUP_FAILED = 70  # node_runtime._boot: the sandbox could not be applied


def _runtime_folder() -> Path:
    """Where ``node_runtime`` lives, found without importing the package (and, through it, the
    standalone path that imports overseer back)."""
    spec = importlib.util.find_spec("node_runtime")
    if spec is None or spec.origin is None:
        raise ImportError("node_runtime is not installed beside overseer; reinstall overseer")
    return Path(spec.origin).resolve().parent


_BOOT = str(_runtime_folder() / "_boot.py")
_RUNTIME_ROOT = str(_runtime_folder().parent)
_STDERR_TAIL = 64 * 1024
_CHUNK = 65536
_CANCEL_TICK = 0.1  # how soon a cancelled run notices (ctx.cancelled offers no callback)


class ChannelServer(Protocol):
    """Serves the parent's end of the tool channel (``overseer.nodes.broker.Broker``)."""

    def serve(self, sock: socket.socket) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class NodeRun:
    """How one node process ended. ``stopped``: None, "timeout", "cancelled" or "output"."""

    stdout: bytes
    stderr: str
    returncode: int
    stopped: str | None
    duration: float
    timeout: float
    isolation: Isolation
    peak_processes: int | None = None

    @property
    def ok(self) -> bool:
        return self.stopped is None and self.returncode == 0

    def failure(self) -> str | None:
        """One sentence saying why the node failed, or None if it exited cleanly."""
        if self.stopped == "timeout":
            return f"the node timed out after {self.timeout:g}s and was killed"
        if self.stopped == "cancelled":
            return "the node was cancelled (the run stopped)"
        if self.stopped == "output":
            return "the node printed too much on stdout and was killed"
        if self.returncode == SETUP_FAILED and "overseer sandbox:" in self.stderr:
            return self.stderr.strip().splitlines()[-1]
        if self.returncode != 0:
            return f"the node {_exit_words(self.returncode, self.isolation)}{self._memory_words()}"
        return None

    def _memory_words(self) -> str:
        """A node that hit its address-space limit dies of a MemoryError: say so."""
        limit = self.isolation.limits.get("memory_bytes")
        lines = self.stderr.strip().splitlines()
        if limit is None or not lines or not lines[-1].startswith("MemoryError"):
            return ""
        return f" (out of memory: the limit is {limit // (1024 * 1024)} MiB)"


def run_node(
    code: str,
    payload: Mapping[str, Any],
    *,
    isolation: Isolation,
    settings: SandboxSettings,
    timeout: float,
    max_output: int,
    channel: ChannelServer | None = None,
    cancelled: threading.Event | None = None,
) -> NodeRun:
    """Run ``code`` with ``payload`` as its stdin JSON under ``isolation``."""
    with _Folder() as folder:
        folder.write(code, payload)
        cgroup = _cgroup(isolation, settings)
        launch = _Launch(folder, isolation, cgroup)
        try:
            return launch.run(timeout, max_output, channel, cancelled)
        finally:
            if cgroup is not None:
                cgroup.remove()


def _cgroup(isolation: Isolation, settings: SandboxSettings) -> PidsCgroup | None:
    base = capabilities().cgroup_base
    if not isolation.use_cgroup or base is None or settings.processes is None:
        return None
    return PidsCgroup.create(base, settings.processes + _launchers(isolation))


def _launchers(isolation: Isolation) -> int:
    """Processes that run before the node's own: bubblewrap and its init, or ``unshare`` and,
    in a pid namespace, the boot process that stays behind as its init."""
    if isolation.backend == "bwrap":
        return 2
    if isolation.backend == "unshare":
        return 2 if isolation.pid_namespace else 1
    return 0


class _Folder:
    """``<tmp>/overseer-node-<pid>-<start>-XXXX/`` holding node.py, input.json and ``work/``
    (the cwd); removed whatever way the node ended (``overseer.nodes.folders``)."""

    def __enter__(self) -> _Folder:
        self.root = make_folder()
        self.work = self.root / "work"
        self.work.mkdir()
        self.node = self.root / "node.py"
        self.input = self.root / "input.json"
        return self

    def write(self, code: str, payload: Mapping[str, Any]) -> None:
        self.node.write_text(code, encoding="utf-8")
        self.input.write_text(json.dumps(payload, ensure_ascii=False), encoding="utf-8")

    def __exit__(self, *exc_info: object) -> None:
        remove_folder(self.root)


class _Launch:
    def __init__(self, folder: _Folder, isolation: Isolation, cgroup: PidsCgroup | None) -> None:
        self.folder = folder
        self.isolation = isolation
        self.cgroup = cgroup

    def run(
        self,
        timeout: float,
        max_output: int,
        channel: ChannelServer | None,
        cancelled: threading.Event | None,
    ) -> NodeRun:
        with _Ends() as ends:
            started = time.monotonic()
            proc = self._spawn(ends)
            ends.close_child_ends()
            try:
                if channel is not None:
                    channel.serve(ends.parent)
                watch = _Watch(proc, started + timeout, cancelled, max_output)
                try:
                    stdout, stderr, stopped = watch.run()
                finally:
                    _kill_tree(proc, self.cgroup, self.isolation.pid_namespace)
                stdout, stderr = stdout + watch.drain_out(), stderr + watch.drain_err()
            finally:
                if channel is not None:
                    channel.close()
        return NodeRun(
            stdout=bytes(stdout),
            stderr=_tail(stderr).decode("utf-8", "replace"),
            returncode=int(proc.returncode),
            stopped=stopped,
            duration=time.monotonic() - started,
            timeout=timeout,
            isolation=self.isolation,
            peak_processes=self.cgroup.peak() if self.cgroup is not None else None,
        )

    def _spawn(self, ends: _Ends) -> subprocess.Popen[bytes]:
        channel, lifeline = ends.child_fds
        with open(self.folder.input, "rb") as stdin:
            return subprocess.Popen(
                self._command(lifeline),
                stdin=stdin,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                pass_fds=(channel, lifeline),
                env=_environment(str(self.folder.work), channel),
                cwd=self.folder.work,
                start_new_session=True,
            )

    def _command(self, lifeline: int) -> list[str]:
        spec = json.dumps(self._spec(lifeline))
        python = [sys.executable, "-I", "-S", "-X", "utf8", _BOOT, spec]
        command = _isolate(self.isolation, str(self.folder.work), python)
        if self.cgroup is not None:  # join the cgroup first, so every later process is in it
            join = 'echo $$ > "$0" && exec "$@"'
            command = ["/bin/sh", "-c", join, str(self.cgroup.procs_file), *command]
        return command

    def _spec(self, lifeline: int) -> dict[str, Any]:
        iso = self.isolation
        limits = dict(iso.limits)
        if limits.get("processes") is not None:
            limits["processes"] = _nproc(int(limits["processes"] or 0), iso.backend)
        landlock = {"abi": iso.landlock_abi, "deny_tcp": not iso.network.startswith("allowed")}
        return {
            "node": str(self.folder.node),
            "workdir": str(self.folder.work),
            "path": _import_path(),
            "limits": limits,
            "landlock": landlock if iso.use_landlock else None,
            "lifeline": lifeline,
        }


class _Ends:
    """The tool channel (a socketpair) and the lifeline (a pipe whose write end only this
    process holds: when it goes away, for whatever reason, the node kills itself)."""

    def __enter__(self) -> _Ends:
        self.parent, self.child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.life_read, self.life_write = os.pipe()
        return self

    @property
    def child_fds(self) -> tuple[int, int]:
        return self.child.fileno(), self.life_read

    def close_child_ends(self) -> None:
        self.child.close()
        if self.life_read >= 0:
            os.close(self.life_read)
            self.life_read = -1

    def __exit__(self, *exc_info: object) -> None:
        self.close_child_ends()
        self.parent.close()
        os.close(self.life_write)


def _isolate(isolation: Isolation, work: str, python: list[str]) -> list[str]:
    caps = capabilities()
    network = isolation.network.startswith("allowed")
    if isolation.backend == "bwrap" and caps.bwrap:
        share = ["--share-net"] if network else []
        return [caps.bwrap, *BWRAP_ARGS, *share, *bwrap_mounts(work), "--", *python]
    if isolation.backend == "unshare" and caps.unshare:
        net = [] if network else ["--net"]
        return [caps.unshare, *caps.unshare_args, *net, "--", *python]
    return python


def _environment(work: str, fd: int) -> dict[str, str]:
    """Everything the node's environment holds: nothing secret."""
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": work,
        "TMPDIR": work,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        wire.FD_ENV: str(fd),
    }


def _import_path() -> list[str]:
    """node_runtime's folder, then the site folders (``-S`` skips site's slow start-up)."""
    dirs = [_RUNTIME_ROOT, *site.getsitepackages()]
    return [d for i, d in enumerate(dirs) if os.path.isdir(d) and d not in dirs[:i]]


def _nproc(processes: int, backend: str) -> int:
    """RLIMIT_NPROC counts every process of the user, except inside a fresh user namespace."""
    if backend != "none" or os.geteuid() == 0:
        return processes
    return _user_tasks(os.getuid()) + processes


def _user_tasks(uid: int) -> int:
    count = 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if entry.stat().st_uid == uid:
                    count += len(os.listdir(f"/proc/{entry.name}/task"))
    return count


def _kill_tree(
    proc: subprocess.Popen[bytes], cgroup: PidsCgroup | None, pid_namespace: bool
) -> None:
    """Kill everything the node started: its process group, then what its pids cgroup holds;
    without a pid namespace (whose end takes every member with it), wait for the group too."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    if cgroup is not None:
        cgroup.kill_all()
    elif not pid_namespace:
        kill_and_wait(group_members(proc.pid))
    proc.wait()


def _tail(data: bytearray | bytes) -> bytes:
    return bytes(data[-_STDERR_TAIL:])


def _exit_words(returncode: int, isolation: Isolation) -> str:
    signum = -returncode if returncode < 0 else returncode - 128 if returncode > 128 else 0
    try:
        name = signal.Signals(signum).name if signum else ""
    except ValueError:
        name = ""
    if not name:
        return f"exited with status {returncode}"
    hint = {
        "SIGXCPU": f" (CPU limit of {isolation.limits.get('cpu_seconds')}s)",
        "SIGKILL": " (a limit was hit, or it was killed)",
        "SIGXFSZ": " (file size limit)",
    }.get(name, "")
    return f"was killed by {name}{hint}"


class _Watch:
    """Reads stdout and stderr until the process exits, the deadline passes or it is cancelled."""

    def __init__(
        self,
        proc: subprocess.Popen[bytes],
        deadline: float,
        cancelled: threading.Event | None,
        max_output: int,
    ) -> None:
        self.proc = proc
        self.deadline = deadline
        self.cancelled = cancelled
        self.max_output = max_output
        self.out = bytearray()
        self.err = bytearray()
        self.selector = selectors.DefaultSelector()

    def run(self) -> tuple[bytearray, bytearray, str | None]:
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self.selector.register(self.proc.stdout, selectors.EVENT_READ, self.out)
        self.selector.register(self.proc.stderr, selectors.EVENT_READ, self.err)
        pidfd = _pidfd(self.proc.pid)
        if pidfd is not None:
            self.selector.register(pidfd, selectors.EVENT_READ, None)
        try:
            return self.out, self.err, self._loop(pidfd is not None)
        finally:
            self.selector.close()
            if pidfd is not None:
                os.close(pidfd)

    def _loop(self, has_pidfd: bool) -> str | None:
        while True:
            if not has_pidfd and not self.selector.get_map():
                return self._wait_without_pidfd()
            exited = False
            for key, _ in self.selector.select(self._wait_time()):
                if key.data is None:
                    exited = True
                else:
                    self._read(key.fileobj, key.data)
            if len(self.out) > self.max_output:
                return "output"
            if exited:
                return None
            if self.cancelled is not None and self.cancelled.is_set():
                return "cancelled"
            if time.monotonic() >= self.deadline:
                return "timeout"

    def _wait_without_pidfd(self) -> str | None:
        """Both pipes are closed and the kernel has no pidfd: wait for the exit itself."""
        try:
            self.proc.wait(max(0.0, self.deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            return "timeout"
        return None

    def _wait_time(self) -> float:
        left = max(0.0, self.deadline - time.monotonic())
        return min(left, _CANCEL_TICK) if self.cancelled is not None else left

    def _read(self, stream: Any, buffer: bytearray) -> None:
        chunk = os.read(stream.fileno(), _CHUNK)
        if not chunk:
            self.selector.unregister(stream)
            return
        buffer += chunk
        if buffer is self.err and len(buffer) > 2 * _STDERR_TAIL:
            del buffer[:-_STDERR_TAIL]

    def drain_out(self) -> bytes:
        return _drain(self.proc.stdout, self.max_output + 1 - len(self.out))

    def drain_err(self) -> bytes:
        return _drain(self.proc.stderr, 2 * _STDERR_TAIL)


def _drain(stream: IO[bytes] | None, limit: int) -> bytes:
    """What is left in a pipe once the process is dead, without waiting on stray holders."""
    if stream is None:
        return b""
    os.set_blocking(stream.fileno(), False)
    data = bytearray()
    with contextlib.suppress(BlockingIOError, OSError):
        while len(data) < max(limit, 0) and (chunk := os.read(stream.fileno(), _CHUNK)):
            data += chunk
    stream.close()
    return bytes(data)


def _pidfd(pid: int) -> int | None:
    opener: Callable[[int], int] | None = getattr(os, "pidfd_open", None)
    if opener is None:
        return None
    try:
        return opener(pid)
    except OSError:
        return None
