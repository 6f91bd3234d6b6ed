"""Where the packaged data lives: ``prompts/`` and the default ``config.yaml``.

A wheel carries them under ``overseer/_data``; an editable install reads them from the repository.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

__all__ = ["data_path", "default_config_path", "prompt_path", "read_prompt"]

_PACKAGE = Path(__file__).resolve().parent.parent  # the overseer package


def data_path(name: str) -> Path:
    """The packaged file or folder ``name`` (``prompts`` or ``config.yaml``)."""
    for base in (_PACKAGE / "_data", _PACKAGE.parent):
        candidate = base / name
        if candidate.exists():
            return candidate
    raise FileNotFoundError(f"overseer's packaged {name!r} is missing; reinstall overseer")


def default_config_path() -> Path:
    return data_path("config.yaml")


def prompt_path(name: str) -> Path:
    return data_path("prompts") / name


@cache
def read_prompt(name: str) -> str:
    """The text of ``prompts/<name>``; cached, prompts do not change while running."""
    return prompt_path(name).read_text(encoding="utf-8")
