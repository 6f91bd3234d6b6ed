"""Killing process trees: pids cgroups, process groups, and waiting until they are gone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from overseer.nodes.cgroup import PidsCgroup, candidates_from, pids_cgroup_base
from overseer.nodes.proctree import group_members, kill_and_wait
from tests.nodehelp import processes_with

V1 = "12:pids:/docker/abc\n11:memory:/docker/abc\n0::/\n"
V2 = "0::/user.slice/me.service\n"


def test_v1_pids_hierarchy_is_found_under_its_own_path() -> None:
    assert candidates_from(V1, lambda folder: False) == [Path("/sys/fs/cgroup/pids/docker/abc")]


def test_v2_is_used_only_where_pids_is_delegated() -> None:
    delegated = candidates_from(V2, lambda folder: True)
    assert delegated == [Path("/sys/fs/cgroup/user.slice/me.service")]
    assert candidates_from(V2, lambda folder: False) == []


def test_garbage_lines_are_skipped() -> None:
    assert candidates_from("nonsense\n\n3:cpu:/\n", lambda folder: True) == []


def _sleepers(count: int, marker: str, new_session: bool = False) -> list[subprocess.Popen[bytes]]:
    code = "import signal; signal.pause()"
    return [
        subprocess.Popen([sys.executable, "-c", code, marker], start_new_session=new_session)
        for _ in range(count)
    ]


def test_kill_and_wait_returns_once_they_are_gone() -> None:
    marker = "overseer-proctree-" + uuid.uuid4().hex
    procs = _sleepers(3, marker)
    kill_and_wait([p.pid for p in procs])
    assert all(p.wait(30) == -signal.SIGKILL for p in procs)
    assert processes_with(marker) == []


def test_kill_and_wait_ignores_pids_that_are_already_gone() -> None:
    [proc] = _sleepers(1, "overseer-gone-" + uuid.uuid4().hex)
    proc.kill()
    proc.wait()
    kill_and_wait([proc.pid])  # nothing to do, and no error


def test_group_members_lists_the_process_group() -> None:
    marker = "overseer-group-" + uuid.uuid4().hex
    leader = subprocess.Popen(
        [sys.executable, "-c", "import signal; signal.pause()", marker], start_new_session=True
    )
    try:
        assert group_members(leader.pid) == [leader.pid]
        assert os.getpid() not in group_members(leader.pid)
    finally:
        leader.kill()
        leader.wait()


@pytest.fixture
def cgroup_base() -> Path:
    base = pids_cgroup_base()
    if base is None:
        pytest.skip("no writable pids cgroup here (needs root and a writable cgroup file system)")
    return base


def test_a_pids_cgroup_caps_processes_and_kills_all_it_holds(cgroup_base: Path) -> None:
    group = PidsCgroup.create(cgroup_base, 3)
    marker = "overseer-cgroup-" + uuid.uuid4().hex
    code = (
        "import os, signal, sys\n"
        "born = 0\n"
        "try:\n"
        "    while True:\n"
        "        if os.fork() == 0:\n            signal.pause()\n"
        "        born += 1\n"
        "except OSError:\n    print(born, flush=True)\n"
        "signal.pause()\n"
    )
    join = 'echo $$ > "$0" && exec "$@"'
    proc = subprocess.Popen(
        ["/bin/sh", "-c", join, str(group.procs_file), sys.executable, "-c", code, marker],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "2"  # the parent and two children: three in all
    peak = group.peak()
    assert peak is None or peak == 3
    assert group.remove()
    proc.wait(30)
    assert processes_with(marker) == [] and not group.path.exists()


def test_removing_an_empty_or_missing_cgroup_is_fine(cgroup_base: Path) -> None:
    group = PidsCgroup.create(cgroup_base, 5)
    assert group.remove() and group.remove()
