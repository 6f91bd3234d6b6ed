"""Node folders: named after their overseer, and swept once that overseer is gone."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from overseer.nodes import folders
from overseer.nodes.folders import PREFIX, make_folder, remove_folder, sweep_stale


def _me() -> str:
    return f"{os.getpid()}-{folders._start_time(os.getpid())}"


def test_a_folder_is_named_after_this_process_and_its_start() -> None:
    folder = make_folder()
    try:
        assert folder.name.startswith(f"{PREFIX}{_me()}-")
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    finally:
        remove_folder(folder)
    assert not folder.exists()


def test_only_folders_of_processes_that_are_gone_are_swept(tmp_path: Path) -> None:
    live = tmp_path / f"{PREFIX}{_me()}-abc"
    dead = tmp_path / f"{PREFIX}999999999-5-abc"
    reused = tmp_path / f"{PREFIX}{os.getpid()}-1-abc"  # this pid, another process's start
    old_style = tmp_path / f"{PREFIX}abcdefgh"
    for folder in (live, dead, reused, old_style):
        (folder / "work").mkdir(parents=True)
        (folder / "input.json").write_text('{"task": "secret task"}')
    not_a_folder = tmp_path / f"{PREFIX}999999998-5-file"
    not_a_folder.write_text("x")
    link = tmp_path / f"{PREFIX}999999997-5-link"
    link.symlink_to(live)
    assert sorted(sweep_stale(tmp_path)) == sorted([dead, reused])
    assert live.exists() and old_style.exists() and not_a_folder.exists() and link.is_symlink()
    assert not dead.exists() and not reused.exists()


def test_a_missing_temp_folder_sweeps_nothing(tmp_path: Path) -> None:
    assert sweep_stale(tmp_path / "missing") == []


def test_a_folder_the_node_locked_is_removed_all_the_same(tmp_path: Path) -> None:
    root = tmp_path / "node"
    locked = root / "work" / "locked"
    locked.mkdir(parents=True)
    (locked / "f").write_text("x")
    locked.chmod(0o500)
    (root / "work").chmod(0o500)
    remove_folder(root)
    assert not root.exists()


def test_no_such_process_has_no_start_time() -> None:
    assert folders._start_time(999999999) == -1
    assert folders._start_time(os.getpid()) > 0
