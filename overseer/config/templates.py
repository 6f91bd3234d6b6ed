"""Fill the prompt templates of ``prompts/`` (``$name`` placeholders, ``string.Template``).

Every step of a run renders a template, so each file is parsed once, with ``string.Template``'s
own pattern, into a ``str.format_map`` text: filling it is then one call into C, where
``Template.substitute`` runs a regular expression and a Python callback per placeholder (about
three quarters of a zero-time step's prompt).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from string import Template

from overseer.config.resources import read_prompt

__all__ = ["render"]


def render(name: str, **values: object) -> str:
    """``prompts/<name>`` with every placeholder filled; a missing value is a KeyError."""
    return _template(name).fill(values).strip() + "\n"


class _Parsed:
    """A template as the text ``str.format_map`` fills: each placeholder a ``{name}`` field,
    ``$$`` a plain ``$``, the template's own braces doubled."""

    __slots__ = ("_format",)

    def __init__(self, text: str) -> None:
        parts: list[str] = []
        start = 0
        for match in Template.pattern.finditer(text):
            parts.append(_braces(text[start : match.start()]))
            start = match.end()
            if match.group("escaped") is not None:
                parts.append("$")
                continue
            found = match.group("named") or match.group("braced")
            if found is None:
                line = text.count("\n", 0, match.start()) + 1
                raise ValueError(f"invalid placeholder in the template, line {line}")
            parts.append(f"{{{found}}}")
        parts.append(_braces(text[start:]))
        self._format = "".join(parts)

    def fill(self, values: Mapping[str, object]) -> str:
        """The text with each placeholder's value as ``str`` gives it."""
        for value in values.values():
            if type(value) is not str:  # ``format`` need not agree with ``str`` (an enum)
                values = {k: str(v) for k, v in values.items()}
                break
        return self._format.format_map(values)


def _braces(literal: str) -> str:
    return literal.replace("{", "{{").replace("}", "}}")


@cache
def _template(name: str) -> _Parsed:
    """The parsed template (every step of a run renders one: parse each file once)."""
    return _Parsed(read_prompt(name))
