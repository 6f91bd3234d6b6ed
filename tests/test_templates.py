"""The prompt templates: parsed once, filled as ``string.Template.substitute`` would fill them."""

from __future__ import annotations

from string import Template

import pytest
from hypothesis import given
from hypothesis import strategies as st

from overseer.config.resources import prompt_path, read_prompt
from overseer.config.templates import _Parsed, render

PROMPTS = sorted(p.name for p in prompt_path("step_user.md").parent.glob("*.md"))


def _names(text: str) -> list[str]:
    return sorted(
        {m.group("named") or m.group("braced") for m in Template.pattern.finditer(text)} - {None}
    )


@pytest.mark.parametrize("name", PROMPTS)
@given(value=st.text(max_size=40))
def test_every_prompt_fills_as_string_template_does(name: str, value: str) -> None:
    text = read_prompt(name)
    values = {n: f"{n}:{value}" for n in _names(text)}
    expected = Template(text).substitute(values).strip() + "\n"
    assert render(name, **values) == expected


@given(
    text=st.text(alphabet=st.sampled_from(list("ab $${}_\n")), max_size=60),
    value=st.text(max_size=10),
)
def test_any_valid_template_fills_as_string_template_does(text: str, value: str) -> None:
    try:
        expected = Template(text).substitute({"a": value, "b": value, "_": value, "ab": value})
    except (ValueError, KeyError):  # which one first may differ: both say the template is wrong
        with pytest.raises((ValueError, KeyError)):
            _Parsed(text).fill({"a": value, "b": value, "_": value, "ab": value})
        return
    assert _Parsed(text).fill({"a": value, "b": value, "_": value, "ab": value}) == expected


def test_escapes_braces_and_values_are_kept_as_they_are() -> None:
    parsed = _Parsed("cost: $$5 for ${item}s, $who said $$$who")
    assert parsed.fill({"item": "apple", "who": "$x ${y}"}) == (
        "cost: $5 for apples, $x ${y} said $$x ${y}"
    )


def test_a_missing_value_is_a_key_error_naming_it() -> None:
    with pytest.raises(KeyError, match="description"):
        render("step_user.md", inputs="")


def test_an_invalid_placeholder_says_where() -> None:
    with pytest.raises(ValueError, match="line 2"):
        _Parsed("fine\ncosts $5")


def test_values_that_are_not_text_are_shown_as_str() -> None:
    assert _Parsed("$n steps, ok: $ok").fill({"n": 3, "ok": True}) == "3 steps, ok: True"


def test_a_value_is_shown_as_str_shows_it_even_where_format_differs() -> None:
    class Shown:
        def __str__(self) -> str:
            return "as str"

        def __format__(self, spec: str) -> str:
            return "as format"

    assert _Parsed("{$a} and {{$b}}").fill({"a": Shown(), "b": "x"}) == "{as str} and {{x}}"
