"""Shared fixtures: every test runs with a clean environment and no network."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

_SECRET_VARS = ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OVERSEER_CONFIG", "NO_COLOR")


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
