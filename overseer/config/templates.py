"""Fill the prompt templates of ``prompts/`` (``$name`` placeholders, ``string.Template``).

Every step of a run renders a template, so each file is parsed once, with ``string.Template``'s
own pattern, into its literal text and the names between: filling it is then one join, where
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
    """A template as alternating literal text and placeholder names (``literals`` has one more
    item than ``names``); ``$$`` is already a literal ``$``. Filled by ``str.format_map`` over
    the same text with ``{name}`` fields (its own braces doubled): one call into C."""

    __slots__ = ("_format", "literals", "names")

    def __init__(self, text: str) -> None:
        literals: list[str] = []
        names: list[str] = []
        literal, start = [], 0
        for match in Template.pattern.finditer(text):
            literal.append(text[start : match.start()])
            start = match.end()
            if match.group("escaped") is not None:
                literal.append("$")
                continue
            found = match.group("named") or match.group("braced")
            if found is None:
                line = text.count("\n", 0, match.start()) + 1
                raise ValueError(f"invalid placeholder in the template, line {line}")
            literals.append("".join(literal))
            names.append(found)
            literal = []
        literal.append(text[start:])
        literals.append("".join(literal))
        self.literals = tuple(literals)
        self.names = tuple(names)
        escaped = [t.replace("{", "{{").replace("}", "}}") for t in self.literals]
        fields = [f"{{{name}}}" for name in self.names]
        self._format = escaped[0] + "".join(f + t for f, t in zip(fields, escaped[1:], strict=True))

    def fill(self, values: Mapping[str, object]) -> str:
        """The text with each placeholder's value as ``str`` gives it."""
        for value in values.values():
            if type(value) is not str:  # ``format`` need not agree with ``str`` (an enum)
                values = {k: str(v) for k, v in values.items()}
                break
        return self._format.format_map(values)


@cache
def _template(name: str) -> _Parsed:
    """The parsed template (every step of a run renders one: parse each file once)."""
    return _Parsed(read_prompt(name))
