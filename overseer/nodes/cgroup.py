"""A throw-away pids cgroup per node: caps its processes where RLIMIT_NPROC cannot (root) and
kills every process in it, however it was started, when the node ends.

Used only when this process may create cgroups (typically root with a writable cgroup file
system): cgroup v1's ``pids`` hierarchy, or v2 where ``pids`` is already enabled for children.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable
from functools import cache
from pathlib import Path

from overseer.nodes.proctree import kill_and_wait

__all__ = ["PidsCgroup", "candidates_from", "pids_cgroup_base"]

_ROOT = Path("/sys/fs/cgroup")
_KILL_ROUNDS = 100


@cache
def pids_cgroup_base() -> Path | None:
    """The folder where this process may create pids cgroups, or None."""
    for base in _candidates():
        if _can_create_under(base):
            return base
    return None


def _candidates() -> list[Path]:
    try:
        text = Path("/proc/self/cgroup").read_text()
    except OSError:
        return []
    return candidates_from(text, _v2_delegates_pids)


def candidates_from(text: str, delegates: Callable[[Path], bool]) -> list[Path]:
    """Folders for pids cgroups, from ``/proc/self/cgroup``: the v1 ``pids`` hierarchy, or a v2
    folder whose children get the pids controller (``delegates``)."""
    found = []
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if "pids" in controllers.split(","):
            found.append(_ROOT / "pids" / path.lstrip("/"))
        elif controllers == "" and delegates(_ROOT / path.lstrip("/")):
            found.append(_ROOT / path.lstrip("/"))
    return found


def _v2_delegates_pids(folder: Path) -> bool:
    try:
        return "pids" in (folder / "cgroup.subtree_control").read_text().split()
    except OSError:
        return False


def _can_create_under(base: Path) -> bool:
    probe = base / f"overseer-probe-{uuid.uuid4().hex[:8]}"
    try:
        probe.mkdir()
    except OSError:
        return False
    with contextlib.suppress(OSError):
        probe.rmdir()
    return (base / "cgroup.procs").exists()


class PidsCgroup:
    """One cgroup with ``pids.max = limit``; ``procs_file`` is where a process joins it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def create(cls, base: Path, limit: int) -> PidsCgroup:
        path = base / f"overseer-node-{uuid.uuid4().hex[:12]}"
        path.mkdir()
        try:
            (path / "pids.max").write_text(f"{limit}\n")
        except OSError:
            path.rmdir()
            raise
        return cls(path)

    @property
    def procs_file(self) -> Path:
        return self.path / "cgroup.procs"

    def peak(self) -> int | None:
        """Most processes seen at once (kernels with ``pids.peak``), else None."""
        try:
            return int((self.path / "pids.peak").read_text())
        except (OSError, ValueError):
            return None

    def kill_all(self) -> None:
        """SIGKILL every process in the cgroup and wait until it is empty."""
        kill_file = self.path / "cgroup.kill"
        if kill_file.exists():
            with contextlib.suppress(OSError):
                kill_file.write_text("1\n")
        for _ in range(_KILL_ROUNDS):  # a process may fork between reading the list and its kill
            pids = self._pids()
            if not pids:
                return
            kill_and_wait(pids)

    def remove(self) -> bool:
        """Kill what is left and delete the cgroup; False if the kernel kept it busy."""
        self.kill_all()
        try:
            self.path.rmdir()
        except FileNotFoundError:
            return True
        except OSError:
            return False
        return True

    def _pids(self) -> list[int]:
        try:
            return [int(pid) for pid in self.procs_file.read_text().split()]
        except (OSError, ValueError):
            return []
