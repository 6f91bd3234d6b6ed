"""Killing processes and waiting until they are really gone (pidfds, not sleeps)."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import time
from collections.abc import Iterable
from pathlib import Path

__all__ = ["group_members", "kill_and_wait"]

_GONE_WAIT = 5.0  # seconds to wait for SIGKILLed processes to exit (they normally take ~ms)


def kill_and_wait(pids: Iterable[int], timeout: float = _GONE_WAIT) -> None:
    """SIGKILL ``pids`` and return once each has exited (or ``timeout`` passed)."""
    fds = []
    for pid in pids:
        fd = _pidfd(pid)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
        if fd is not None:
            fds.append(fd)
    try:
        _wait_readable(fds, time.monotonic() + timeout)
    finally:
        for fd in fds:
            os.close(fd)


def group_members(pgid: int) -> list[int]:
    """The pids whose process group is ``pgid`` (from /proc)."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                stat = (entry / "stat").read_text()
                if int(stat[stat.rindex(")") + 2 :].split()[2]) == pgid:
                    members.append(int(entry.name))
    return members


def _pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except (OSError, AttributeError):
        return None


def _wait_readable(fds: list[int], deadline: float) -> None:
    """A pidfd turns readable when its process exits."""
    waiting = list(fds)
    while waiting:
        left = deadline - time.monotonic()
        if left <= 0:
            return
        ready, _, _ = select.select(waiting, [], [], left)
        waiting = [fd for fd in waiting if fd not in ready]
