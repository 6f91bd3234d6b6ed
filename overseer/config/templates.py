"""Fill the prompt templates of ``prompts/`` (``$name`` placeholders, ``string.Template``)."""

from __future__ import annotations

from functools import cache
from string import Template

from overseer.config.resources import read_prompt

__all__ = ["render"]


def render(name: str, **values: object) -> str:
    """``prompts/<name>`` with every placeholder filled; a missing value is a KeyError."""
    text = _template(name).substitute({k: str(v) for k, v in values.items()})
    return text.strip() + "\n"


@cache
def _template(name: str) -> Template:
    """The parsed template (every step of a run renders one: parse each file once)."""
    return Template(read_prompt(name))
