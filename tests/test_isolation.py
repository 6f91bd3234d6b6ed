"""Which isolation a node gets, from what this machine can do (capabilities faked here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from overseer.config.nodes import SandboxSettings
from overseer.nodes import isolation
from overseer.nodes.isolation import (
    UNSHARE_PLAIN,
    UNSHARE_WITH_PIDS,
    Capabilities,
    SandboxUnavailable,
    decide,
)

EVERYTHING = Capabilities("/usr/bin/bwrap", "/usr/bin/unshare", 7, Path("/cg"), root=True)
NOTHING = Capabilities(None, None, 0, None, root=False)


def test_auto_prefers_bubblewrap() -> None:
    iso = decide(SandboxSettings(), EVERYTHING)
    assert iso.backend == "bwrap" and iso.network_isolated and iso.pid_namespace
    assert iso.filesystem.startswith("read-only except the node's folder")
    assert iso.processes == "at most 64 (pids cgroup)" and iso.use_cgroup
    assert iso.use_landlock and iso.landlock_abi == 7


def test_auto_falls_back_to_unshare_then_to_none() -> None:
    no_bwrap = Capabilities(None, "/usr/bin/unshare", 0, None, root=False)
    iso = decide(SandboxSettings(), no_bwrap)
    assert iso.backend == "unshare" and iso.network.startswith("none (empty network namespace")
    assert iso.filesystem.startswith("NOT restricted") and iso.pid_namespace
    bare = decide(SandboxSettings(), NOTHING)
    assert bare.backend == "none" and not bare.network_isolated and not bare.pid_namespace
    assert bare.network.startswith("NOT isolated") and bare.processes == "at most 64 (RLIMIT_NPROC)"


def test_plain_unshare_has_no_pid_namespace() -> None:
    plain = Capabilities(None, "/usr/bin/unshare", 0, None, False, unshare_args=UNSHARE_PLAIN)
    iso = decide(SandboxSettings(), plain)
    assert iso.backend == "unshare" and iso.network_isolated and not iso.pid_namespace


def test_landlock_alone_confines_writes_and_tcp() -> None:
    landlock_only = Capabilities(None, None, 4, None, root=False)
    iso = decide(SandboxSettings(), landlock_only)
    assert iso.filesystem == "writes only in the node's folder (landlock)"
    assert iso.network.startswith("no TCP (landlock)") and not iso.network_isolated
    old = decide(SandboxSettings(), Capabilities(None, None, 3, None, root=False))
    assert old.network.startswith("NOT isolated")


def test_landlock_can_be_turned_off() -> None:
    iso = decide(SandboxSettings(landlock=False), EVERYTHING)
    assert not iso.use_landlock and iso.landlock_abi == 0


def test_root_without_a_cgroup_cannot_limit_processes() -> None:
    iso = decide(SandboxSettings(), Capabilities("/b", None, 0, None, root=True))
    assert iso.processes.startswith("NOT limited (running as root")
    assert decide(SandboxSettings(processes=None), EVERYTHING).processes.startswith("not limited")
    assert not decide(SandboxSettings(processes=None), EVERYTHING).use_cgroup


def test_network_can_be_allowed() -> None:
    iso = decide(SandboxSettings(network=True), EVERYTHING)
    assert iso.network.startswith("allowed") and not iso.network_isolated


def test_a_named_backend_that_does_not_work_is_an_error() -> None:
    with pytest.raises(SandboxUnavailable, match=r"'bwrap' does not work here \(available: none\)"):
        decide(SandboxSettings(backend="bwrap"), NOTHING)
    assert decide(SandboxSettings(backend="none"), EVERYTHING).backend == "none"


def test_limits_are_recorded_in_bytes_and_lines_describe_everything() -> None:
    iso = decide(SandboxSettings(memory_mb=64, file_size_mb=None), EVERYTHING)
    assert iso.limits["memory_bytes"] == 64 * 1024 * 1024 and iso.limits["file_size_bytes"] is None
    lines = iso.lines()
    assert lines[0] == "backend: bwrap" and "pid namespace: yes" in lines
    assert "landlock: ABI 7" in lines and lines[-1].startswith("limits: cpu_seconds 60")
    assert iso.as_dict()["backend"] == "bwrap"


def test_probing_prefers_unshare_with_a_pid_namespace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("overseer.nodes.isolation.shutil.which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(isolation, "_works", lambda command: "--pid" not in command)
    assert isolation._unshare() == ("/usr/bin/unshare", UNSHARE_PLAIN)
    monkeypatch.setattr(isolation, "_works", lambda command: True)
    assert isolation._unshare() == ("/usr/bin/unshare", UNSHARE_WITH_PIDS)
    monkeypatch.setattr(isolation, "_works", lambda command: False)
    assert isolation._unshare()[0] is None


def test_a_missing_program_does_not_work() -> None:
    assert not isolation._works(["/nonexistent/program"])
    assert isolation._works(["true"])
