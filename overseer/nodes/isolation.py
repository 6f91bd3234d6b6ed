"""What this machine can isolate a node with, and the isolation a node gets under the settings.

Backends, best first: bubblewrap (new user, network, pid and mount namespaces, the file system
read-only except the node's folder), ``unshare`` (user, network and, where the kernel lets it
mount a fresh /proc, pid namespaces; else plain ``unshare -rn``), none.
Landlock, where the kernel has it, adds "write only in the node's folder" (and no TCP when the
network is off) on top of any backend. A pids cgroup caps processes where RLIMIT_NPROC is not
enforced (root). The result is a plain record, kept with the run and shown by ``overseer doctor``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from typing import Any

from overseer.config.nodes import SandboxSettings
from overseer.nodes.cgroup import pids_cgroup_base

__all__ = ["Capabilities", "Isolation", "SandboxUnavailable", "capabilities", "decide"]

_TRUE = shutil.which("true") or "/bin/true"
_PROBE_TIMEOUT = 10.0
BWRAP_ARGS = ("--unshare-all", "--die-with-parent")
UNSHARE_WITH_PIDS = ("--user", "--map-root-user", "--pid", "--fork", "--kill-child", "--mount-proc")
UNSHARE_PLAIN = ("--user", "--map-root-user")


class SandboxUnavailable(RuntimeError):
    """The configured sandbox backend cannot run here."""


@dataclass(frozen=True)
class Capabilities:
    """What works on this machine (probed once per process)."""

    bwrap: str | None
    unshare: str | None
    landlock_abi: int
    cgroup_base: Path | None
    root: bool
    unshare_args: tuple[str, ...] = UNSHARE_WITH_PIDS  # the variant that works here


@dataclass(frozen=True)
class Isolation:
    """The isolation one node runs under, in words a user can check."""

    backend: str  # bwrap | unshare | none
    network: str
    filesystem: str
    processes: str
    landlock_abi: int
    use_landlock: bool
    use_cgroup: bool
    network_isolated: bool
    pid_namespace: bool
    limits: dict[str, int | None]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def lines(self) -> list[str]:
        landlock = f"ABI {self.landlock_abi}" if self.use_landlock else "not in use"
        limits = ", ".join(f"{k} {v}" for k, v in self.limits.items() if v is not None)
        return [
            f"backend: {self.backend}",
            f"network: {self.network}",
            f"file system: {self.filesystem}",
            f"processes: {self.processes}",
            f"pid namespace: {'yes' if self.pid_namespace else 'no'}",
            f"landlock: {landlock}",
            f"limits: {limits or 'none'}",
        ]


@cache
def capabilities() -> Capabilities:
    bwrap = shutil.which("bwrap")
    unshare, unshare_args = _unshare()
    return Capabilities(
        bwrap=bwrap if bwrap and _works([bwrap, *BWRAP_ARGS, *bwrap_mounts(), _TRUE]) else None,
        unshare=unshare,
        landlock_abi=_landlock_abi(),
        cgroup_base=pids_cgroup_base() if os.geteuid() == 0 else None,
        root=os.geteuid() == 0,
        unshare_args=unshare_args,
    )


def _unshare() -> tuple[str | None, tuple[str, ...]]:
    """``unshare`` and the best variant that works: with a pid namespace, else ``-rn``."""
    path = shutil.which("unshare")
    for variant in (UNSHARE_WITH_PIDS, UNSHARE_PLAIN):
        if path and _works([path, *variant, "--net", _TRUE]):
            return path, variant
    return None, UNSHARE_WITH_PIDS


def bwrap_mounts(workdir: str | None = None) -> list[str]:
    mounts = ["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
    if workdir is not None:
        mounts += ["--bind", workdir, workdir, "--chdir", workdir]
    return mounts


def _works(command: list[str]) -> bool:
    try:
        done = subprocess.run(command, capture_output=True, timeout=_PROBE_TIMEOUT, check=False)
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


def _landlock_abi() -> int:
    try:
        from node_runtime import _landlock

        return _landlock.abi()
    except (OSError, AttributeError, ImportError):
        return 0


def decide(settings: SandboxSettings, caps: Capabilities | None = None) -> Isolation:
    """The isolation a node gets under ``settings`` here (SandboxUnavailable if impossible)."""
    caps = caps or capabilities()
    backend = _backend(settings, caps)
    landlock = settings.landlock and caps.landlock_abi > 0
    cgroup = settings.processes is not None and caps.cgroup_base is not None
    return Isolation(
        backend=backend,
        network=_network(settings, backend, landlock, caps.landlock_abi),
        filesystem=_filesystem(backend, landlock),
        processes=_processes(settings, caps, cgroup),
        landlock_abi=caps.landlock_abi if landlock else 0,
        use_landlock=landlock,
        use_cgroup=cgroup,
        network_isolated=not settings.network and backend != "none",
        pid_namespace=backend == "bwrap" or (backend == "unshare" and "--pid" in caps.unshare_args),
        limits=_limits(settings),
    )


def _backend(settings: SandboxSettings, caps: Capabilities) -> str:
    available = {"bwrap": caps.bwrap, "unshare": caps.unshare, "none": "none"}
    if settings.backend == "auto":
        return next(name for name in ("bwrap", "unshare", "none") if available[name])
    if not available[settings.backend]:
        raise SandboxUnavailable(
            f"sandbox backend {settings.backend!r} does not work here "
            f"(available: {', '.join(n for n, ok in available.items() if ok)})"
        )
    return settings.backend


def _network(settings: SandboxSettings, backend: str, landlock: bool, abi: int) -> str:
    if settings.network:
        return "allowed (sandbox.network is true)"
    if backend != "none":
        return f"none (empty network namespace, {backend})"
    if landlock and abi >= 4:
        return "no TCP (landlock); other protocols allowed"
    return "NOT isolated (no user namespaces and no landlock network rules here)"


def _filesystem(backend: str, landlock: bool) -> str:
    if backend == "bwrap":
        return "read-only except the node's folder (bubblewrap)"
    if landlock:
        return "writes only in the node's folder (landlock)"
    return "NOT restricted (no bubblewrap and no landlock here)"


def _processes(settings: SandboxSettings, caps: Capabilities, cgroup: bool) -> str:
    if settings.processes is None:
        return "not limited (sandbox.processes is null)"
    if cgroup:
        return f"at most {settings.processes} (pids cgroup)"
    if caps.root:
        return "NOT limited (running as root, where RLIMIT_NPROC is ignored, without a pids cgroup)"
    return f"at most {settings.processes} (RLIMIT_NPROC)"


def _limits(settings: SandboxSettings) -> dict[str, int | None]:
    mib = 1024 * 1024
    return {
        "cpu_seconds": settings.cpu_seconds,
        "memory_bytes": None if settings.memory_mb is None else settings.memory_mb * mib,
        "file_size_bytes": None if settings.file_size_mb is None else settings.file_size_mb * mib,
        "open_files": settings.open_files,
        "processes": settings.processes,
    }
