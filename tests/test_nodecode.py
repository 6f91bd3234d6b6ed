"""A node's code taken from the model's reply, checked before it runs, and its output read."""

from __future__ import annotations

import pytest

from overseer.nodes.nodecode import NodeOutputError, check_code, extract_code, parse_output

ALLOWED = ("json", "sys", "math", "urllib.parse", "collections")


@pytest.mark.parametrize(
    ("reply", "code"),
    [
        ("```python\nprint(1)\n```", "print(1)\n"),
        ("Sure!\n```python\nprint(1)\n```\nand\n```python\nprint(2)\n```", "print(1)\n"),
        ("```py\nx = 1\n```", "x = 1\n"),
        ("```Python3\nx = 3\n```", "x = 3\n"),
        ("```bash\nls\n```\n```python\nx = 2\n```", "x = 2\n"),
        ("```\nx = 4\n```", "x = 4\n"),
        ("print('no fences')\n", "print('no fences')\n"),
        ("  \nimport json\nprint(json.dumps(1))  \n\n", "import json\nprint(json.dumps(1))\n"),
        ("```python\nprint('```')\n```", "print('```')\n"),
    ],
)
def test_the_code_is_the_first_python_block_or_the_whole_reply(reply: str, code: str) -> None:
    assert extract_code(reply) == code


def test_a_python_block_wins_over_an_earlier_untagged_one() -> None:
    reply = "```\nsome output\n```\n```python\nprint(5)\n```"
    assert extract_code(reply) == "print(5)\n"


def test_allowed_imports_pass() -> None:
    code = (
        "import json, sys\nimport math as m\nfrom collections import Counter\n"
        "from collections.abc import Mapping\nimport urllib.parse\nfrom urllib.parse import quote\n"
        "from urllib import parse\nfrom node_runtime import call_tool\nimport node_runtime\n"
    )
    assert check_code(code, ALLOWED) == []


@pytest.mark.parametrize(
    ("code", "problem"),
    [
        ("import os", "line 1: import of 'os' is not allowed"),
        ("import json\nimport subprocess as s", "line 2: import of 'subprocess'"),
        ("from os import path", "import of 'os' is not allowed"),
        ("import urllib.request", "import of 'urllib.request' is not allowed"),
        ("from urllib import request", "import of 'urllib' is not allowed"),
        ("from . import x", "relative imports are not allowed"),
        ("m = __import__('os')", "__import__ is not allowed"),
        ("def f():\n    import socket\n", "line 2: import of 'socket'"),
        ("import mathx", "import of 'mathx'"),
    ],
)
def test_disallowed_imports_are_named_with_their_line(code: str, problem: str) -> None:
    problems = check_code(code, ALLOWED)
    assert len(problems) == 1 and problem in problems[0]
    if "import of" in problem:
        assert "allowed: collections, json, math, node_runtime, sys" in problems[0]


def test_a_syntax_error_is_reported_with_its_line() -> None:
    assert check_code("x = 1\nprint(", ALLOWED) == ["line 2: syntax error: '(' was never closed"]


def test_every_problem_is_listed() -> None:
    assert len(check_code("import os\nimport socket\nimport sys", ALLOWED)) == 2


@pytest.mark.parametrize(
    ("stdout", "value"),
    [
        (b'"text"\n', "text"),
        (b"42", 42),
        (b'{"a": [1, 2]}\n', {"a": [1, 2]}),
        (b"  null  ", None),
        ('"caf\u00e9"'.encode(), "caf\u00e9"),
    ],
)
def test_the_output_is_one_json_value(stdout: bytes, value: object) -> None:
    assert parse_output(stdout) == value


@pytest.mark.parametrize(
    ("stdout", "problem"),
    [
        (b"", "printed nothing on stdout"),
        (b"  \n", "printed nothing on stdout"),
        (b"hello", "is not one JSON value"),
        (b'"a"\n"b"\n', "is not one JSON value (Extra data at line 2)"),
        (b"\xff\xfe", "is not UTF-8 text"),
        pytest.param(b"[" * 200_000, "is JSON nested too deeply to read", id="too-deep"),
    ],
)
def test_anything_else_is_a_clear_output_error(stdout: bytes, problem: str) -> None:
    with pytest.raises(NodeOutputError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        parse_output(stdout)


def test_the_output_error_quotes_the_start_and_says_where_notes_go() -> None:
    with pytest.raises(NodeOutputError) as info:
        parse_output(b"debug: starting\n" + b"x" * 500)
    message = str(info.value)
    assert "it began with 'debug: starting\\nxxx" in message and "use stderr" in message
    assert len(message) < 400
