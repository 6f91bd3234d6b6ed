"""Shared fixtures: every test runs with a clean environment and no network."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# Property tests check what holds, not how fast: a per-example deadline only measures how loaded
# this 2-core machine is (a 200 ms deadline failed at a load average of 9). Time bounds that matter
# (parsing untrusted text) are asserted by the tests themselves, per kilobyte.
settings.register_profile("overseer", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("overseer")

_SECRET_VARS = ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OVERSEER_CONFIG", "NO_COLOR")


def pytest_configure(config: pytest.Config) -> None:
    """Ctrl-C must work in the tests that send it, however the suite was started.

    A non-interactive shell starts a background job (``cmd &``, as some CI runners do) with SIGINT
    ignored; Python then installs no KeyboardInterrupt handler, and every process the tests start
    inherits the ignore. Restoring the default here fixes both: exec resets a handled signal to
    its default in children, so each overseer the tests start handles Ctrl-C as at a terminal.
    """
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    # Likewise a suite started under ``nohup`` has SIGHUP ignored, and overseer keeps an ignored
    # SIGHUP ignored (as ``nohup overseer`` asks): the tests that hang it up would wait forever.
    if signal.getsignal(signal.SIGHUP) == signal.SIG_IGN:
        signal.signal(signal.SIGHUP, signal.SIG_DFL)


@pytest.fixture(autouse=True)
def _clean_env(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    for name in _SECRET_VARS:
        monkeypatch.delenv(name, raising=False)
    home = tmp_path_factory.mktemp("overseer-home")
    monkeypatch.setenv("OVERSEER_HOME", str(home))
    monkeypatch.setenv("XDG_STATE_HOME", str(home / "state"))
    yield


@pytest.fixture
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent
