"""What this machine can isolate a node with, and the isolation a node gets under the settings.

Backends, best first: bubblewrap (new user, network, pid and mount namespaces, the file system
read-only except the node's folder), ``unshare`` (user, network and, where the kernel lets it
mount a fresh /proc, pid namespaces; else plain ``unshare -rn``), none.
Landlock, where the kernel has it, adds "write only in the node's folder" (and no TCP when the
network is off) on top of any backend. A pids cgroup caps processes where RLIMIT_NPROC is not
enforced (root). The result is a plain record, kept with the run and shown by ``overseer doctor``.

``OVERSEER_SANDBOX_HIDE=bwrap`` (a comma-separated list of bwrap, unshare, landlock) makes this
process probe as if those were missing: to see, and test, how nodes fare on a machine without
them, e.g. ``OVERSEER_SANDBOX_HIDE=bwrap python -m pytest tests/test_sandbox.py``.
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

__all__ = [
    "HIDE_ENV",
    "Capabilities",
    "Isolation",
    "SandboxUnavailable",
    "capabilities",
    "decide",
    "missing",
]

_TRUE = shutil.which("true") or "/bin/true"
_PROBE_TIMEOUT = 10.0
BWRAP_ARGS = ("--unshare-all", "--die-with-parent")
UNSHARE_WITH_PIDS = ("--user", "--map-root-user", "--pid", "--fork", "--kill-child", "--mount-proc")
UNSHARE_PLAIN = ("--user", "--map-root-user")
HIDE_ENV = "OVERSEER_SANDBOX_HIDE"
_HIDEABLE = ("bwrap", "unshare", "landlock")
_INSTALL_BWRAP = (
    "install it with `sudo apt-get install bubblewrap` (Debian, Ubuntu), "
    "`sudo dnf install bubblewrap` (Fedora) or `sudo pacman -S bubblewrap` (Arch)"
)
_USERNS = (
    "user namespaces are off here (sysctl user.max_user_namespaces, or "
    "kernel.unprivileged_userns_clone / kernel.apparmor_restrict_unprivileged_userns)"
)


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
    bwrap_installed: bool = False  # on PATH, whether or not it works here
    unshare_installed: bool = False
    hidden: tuple[str, ...] = ()  # named in OVERSEER_SANDBOX_HIDE


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


def capabilities() -> Capabilities:
    """What this machine offers, less what ``OVERSEER_SANDBOX_HIDE`` hides (probed once)."""
    return _probe(_hidden(os.environ.get(HIDE_ENV, "")))


def _hidden(text: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    for name in names:
        if name not in _HIDEABLE:
            raise SandboxUnavailable(
                f"{HIDE_ENV} names {name!r}, which is not one of {', '.join(_HIDEABLE)}"
            )
    return names


@cache
def _probe(hidden: tuple[str, ...]) -> Capabilities:
    bwrap = None if "bwrap" in hidden else shutil.which("bwrap")
    unshare, unshare_args = (None, UNSHARE_WITH_PIDS) if "unshare" in hidden else _unshare()
    return Capabilities(
        bwrap=bwrap if bwrap and _works([bwrap, *BWRAP_ARGS, *bwrap_mounts(), _TRUE]) else None,
        unshare=unshare,
        landlock_abi=0 if "landlock" in hidden else _landlock_abi(),
        cgroup_base=pids_cgroup_base() if os.geteuid() == 0 else None,
        root=os.geteuid() == 0,
        unshare_args=unshare_args,
        bwrap_installed=bwrap is not None,
        unshare_installed="unshare" not in hidden and shutil.which("unshare") is not None,
        hidden=hidden,
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
        hint = "; bubblewrap not found: " + _INSTALL_BWRAP if _bwrap_absent(settings, caps) else ""
        raise SandboxUnavailable(
            f"sandbox backend {settings.backend!r} does not work here "
            f"(available: {', '.join(n for n, ok in available.items() if ok)}){hint}"
        )
    return settings.backend


def _bwrap_absent(settings: SandboxSettings, caps: Capabilities) -> bool:
    return settings.backend == "bwrap" and not caps.bwrap_installed and "bwrap" not in caps.hidden


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


def missing(caps: Capabilities, isolation: Isolation) -> list[str]:
    """What isolation is missing here, what that costs a node, and what brings it back."""
    found: list[str] = []
    if caps.bwrap is None and isolation.backend != "bwrap":
        found.append(_without_bwrap(caps, isolation))
    if caps.unshare is None and isolation.backend == "none":
        found.append(_without_unshare(caps))
    return found


def _without_bwrap(caps: Capabilities, isolation: Isolation) -> str:
    runs = {"unshare": "under `unshare`", "none": "with no namespaces"}[isolation.backend]
    cost = (
        "only landlock keeps their writes inside their folder"
        if isolation.use_landlock
        else "the file system outside the node's folder is writable"
    )
    if "bwrap" in caps.hidden:
        return f"bubblewrap is hidden by {HIDE_ENV}: nodes run {runs}, so {cost}"
    if caps.bwrap_installed:
        return f"bubblewrap is installed but cannot run here: {_USERNS}; nodes run {runs}"
    return f"bubblewrap not found: nodes run {runs}, so {cost}; {_INSTALL_BWRAP}"


def _without_unshare(caps: Capabilities) -> str:
    if "unshare" in caps.hidden:
        return f"unshare is hidden by {HIDE_ENV}: nodes share the network and pids of overseer"
    if caps.unshare_installed:
        return f"unshare cannot create namespaces: {_USERNS}; nodes share the network and pids"
    return (
        "unshare not found: nodes share the network and pids of overseer; it comes with "
        "util-linux (`sudo apt-get install util-linux`)"
    )
