"""A non-editable install carries the prompts and the default config (built offline)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytest.importorskip("hatchling", reason="hatchling (in the dev extra) builds the wheel offline")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = Path(__file__).resolve().parent.parent
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
            str(root),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    [built] = out.glob("overseer-*.whl")
    return built


def test_the_wheel_carries_every_prompt_and_the_default_config(wheel: Path) -> None:
    root = Path(__file__).resolve().parent.parent
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "overseer/_data/config.yaml" in names
    for prompt in (root / "prompts").rglob("*"):
        if prompt.is_file():
            rel = prompt.relative_to(root / "prompts").as_posix()
            assert f"overseer/_data/prompts/{rel}" in names, rel
    assert "node_runtime/__init__.py" in names


def test_an_installed_wheel_finds_its_prompts_outside_the_repository(
    wheel: Path, tmp_path: Path
) -> None:
    target = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(target)
    code = (
        "import overseer.config.resources as r, overseer.config as c;"
        "print(r.prompt_path('planner_system.md'));"
        "print(len(c.load_settings().tools))"
    )
    # the wheel's copy goes first on sys.path, ahead of any editable install of this repository
    result = subprocess.run(
        [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(target)!r}); {code}"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    prompt_line, tools_line = result.stdout.splitlines()
    assert prompt_line.startswith(str(target)) and "_data/prompts" in prompt_line
    assert int(tools_line) >= 4
