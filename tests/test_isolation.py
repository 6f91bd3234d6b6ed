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


def test_hiding_bubblewrap_probes_as_a_machine_without_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("overseer.nodes.isolation.shutil.which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(isolation, "_works", lambda command: True)
    isolation._probe.cache_clear()
    monkeypatch.setenv(isolation.HIDE_ENV, "bwrap, landlock")
    try:
        caps = isolation.capabilities()
    finally:
        isolation._probe.cache_clear()
    assert caps.bwrap is None and not caps.bwrap_installed and caps.hidden == ("bwrap", "landlock")
    assert caps.unshare == "/usr/bin/unshare" and caps.landlock_abi == 0
    assert decide(SandboxSettings(), caps).backend == "unshare"


def test_hiding_an_unknown_layer_is_one_clear_sentence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(isolation.HIDE_ENV, "bwrap,firejail")
    with pytest.raises(SandboxUnavailable, match=r"names 'firejail', which is not one of bwrap"):
        isolation.capabilities()


def _missing(caps: Capabilities, **settings: object) -> list[str]:
    return isolation.missing(caps, decide(SandboxSettings(**settings), caps))


def test_a_missing_bubblewrap_is_named_with_its_cost_and_its_package() -> None:
    no_bwrap = Capabilities(None, "/usr/bin/unshare", 0, None, root=False, unshare_installed=True)
    [line] = _missing(no_bwrap)
    assert line.startswith("bubblewrap not found: nodes run under `unshare`, so the file system")
    assert "sudo apt-get install bubblewrap" in line and "dnf install bubblewrap" in line
    assert "pacman -S bubblewrap" in line
    with_landlock = Capabilities(None, "/usr/bin/unshare", 4, None, root=False)
    assert "only landlock keeps their writes inside" in _missing(with_landlock)[0]


def test_bubblewrap_that_cannot_run_is_told_apart_from_a_missing_one() -> None:
    broken = Capabilities(None, "/usr/bin/unshare", 0, None, root=False, bwrap_installed=True)
    [line] = _missing(broken)
    assert line.startswith("bubblewrap is installed but cannot run here: user namespaces are off")


def test_nothing_is_missing_where_bubblewrap_works() -> None:
    assert _missing(EVERYTHING) == []
    assert _missing(EVERYTHING, backend="none") == []  # a chosen backend is not a gap


def test_without_unshare_the_shared_network_is_named() -> None:
    lines = _missing(NOTHING)
    assert len(lines) == 2 and lines[0].startswith("bubblewrap not found: nodes run with no")
    assert (
        lines[1].startswith("unshare not found: nodes share the network")
        and "util-linux" in (lines[1])
    )
    no_userns = Capabilities(None, None, 0, None, root=False, unshare_installed=True)
    assert _missing(no_userns)[1].startswith("unshare cannot create namespaces: user namespaces")
    hidden = Capabilities(None, None, 0, None, root=False, hidden=("bwrap", "unshare"))
    assert [line.split(":")[0] for line in _missing(hidden)] == [
        "bubblewrap is hidden by OVERSEER_SANDBOX_HIDE",
        "unshare is hidden by OVERSEER_SANDBOX_HIDE",
    ]


def test_asking_for_a_missing_bubblewrap_says_how_to_install_it() -> None:
    with pytest.raises(SandboxUnavailable, match=r"bubblewrap not found: install it with"):
        decide(SandboxSettings(backend="bwrap"), NOTHING)
