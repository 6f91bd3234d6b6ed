"""Node folders: named after the overseer process that made them, so a dead one's can be found.

A node's folder holds the step's task (``input.json``) and is removed when the node ends, on a
cancel too. Only a parent killed outright (SIGKILL, a crash) leaves one behind: its name,
``overseer-node-<pid>-<start>-XXXX`` (``<start>`` is the process's start time, from
``/proc/<pid>/stat``, so a reused pid does not pass for its owner), lets the next overseer that
runs a node remove the folders of processes that are gone. Only this user's folders are touched.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
import tempfile
from functools import cache
from pathlib import Path

__all__ = ["PREFIX", "make_folder", "remove_folder", "sweep_stale"]

PREFIX = "overseer-node-"
_NAME = re.compile(re.escape(PREFIX) + r"(\d+)-(\d+)-")


def make_folder() -> Path:
    """A fresh private folder for one node (removing dead processes' folders the first time)."""
    _sweep_once()
    me = os.getpid()
    return Path(tempfile.mkdtemp(prefix=f"{PREFIX}{me}-{_start_time(me)}-"))


def remove_folder(path: Path) -> None:
    """Remove ``path``, even where the node took away its own write permission inside it."""
    shutil.rmtree(path, ignore_errors=True)
    if os.path.lexists(path):
        _open_up(path)
        shutil.rmtree(path, ignore_errors=True)


def sweep_stale(where: Path | None = None) -> list[Path]:
    """Remove the node folders in ``where`` (the temp folder) whose overseer is gone."""
    base = Path(where or tempfile.gettempdir())
    removed = []
    with contextlib.suppress(OSError):
        for entry in os.scandir(base):
            if _is_stale(entry):
                with contextlib.suppress(OSError):
                    remove_folder(Path(entry.path))
                    removed.append(Path(entry.path))
    return removed


@cache
def _sweep_once() -> None:
    sweep_stale()


def _is_stale(entry: os.DirEntry[str]) -> bool:
    found = _NAME.match(entry.name)
    if found is None or not entry.is_dir(follow_symlinks=False):
        return False
    if entry.stat(follow_symlinks=False).st_uid != os.geteuid():
        return False
    pid, start = int(found[1]), int(found[2])
    return _start_time(pid) != start


def _start_time(pid: int) -> int:
    """When ``pid`` started (clock ticks since boot), or -1 if there is no such process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
        return int(text[text.rindex(")") + 2 :].split()[19])
    except (OSError, ValueError, IndexError):
        return -1


def _open_up(path: Path) -> None:
    """Give every folder under ``path`` back to its owner (top-down: before it is listed)."""
    for root, dirs, _ in os.walk(path):
        for name in dirs:
            folder = os.path.join(root, name)
            if not os.path.islink(folder):
                with contextlib.suppress(OSError):
                    os.chmod(folder, stat.S_IRWXU)
