"""A node's code in and its output out: take the code from the model's reply, check it before it
runs (it parses, it imports only allowed modules), and read its one JSON value from stdout."""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterable
from typing import Any

__all__ = ["RUNTIME_MODULE", "NodeOutputError", "check_code", "extract_code", "parse_output"]

RUNTIME_MODULE = "node_runtime"

_FENCE = re.compile(r"^```[ \t]*([\w+-]*)[^\n]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
_PYTHON_TAGS = ("python", "py", "python3")


class NodeOutputError(ValueError):
    """The node's stdout is not one JSON value."""


def extract_code(reply: str) -> str:
    """The first ```python fenced block of ``reply``, else its first untagged block, else all."""
    blocks = [(m.group(1).lower(), m.group(2)) for m in _FENCE.finditer(reply)]
    for wanted in (_PYTHON_TAGS, ("",)):
        for tag, body in blocks:
            if tag in wanted:
                return body.strip("\n") + "\n"
    return reply.strip() + "\n"


def check_code(code: str, allowed: Iterable[str]) -> list[str]:
    """Why ``code`` may not run (empty when it may): a syntax error, or disallowed imports."""
    try:
        tree = ast.parse(code, filename="node.py")
    except SyntaxError as exc:
        return [f"line {exc.lineno}: syntax error: {exc.msg}"]
    modules = {RUNTIME_MODULE, *allowed}
    return [problem for node in ast.walk(tree) for problem in _problems(node, modules)]


def _problems(node: ast.AST, modules: set[str]) -> list[str]:
    if isinstance(node, ast.Import):
        return [_refuse(node, a.name, modules) for a in node.names if not _allowed(a.name, modules)]
    if isinstance(node, ast.ImportFrom):
        return _from_problems(node, modules)
    if isinstance(node, ast.Name) and node.id == "__import__":
        return [f"line {node.lineno}: __import__ is not allowed; use import statements"]
    return []


def _from_problems(node: ast.ImportFrom, modules: set[str]) -> list[str]:
    if node.level:
        return [f"line {node.lineno}: relative imports are not allowed"]
    base = node.module or ""
    if _allowed(base, modules):
        return []
    names = [f"{base}.{alias.name}" for alias in node.names]
    if all(_allowed(name, modules) for name in names):
        return []
    return [_refuse(node, base, modules)]


def _allowed(name: str, modules: set[str]) -> bool:
    return any(name == m or name.startswith(m + ".") for m in modules)


def _refuse(node: ast.stmt, name: str, modules: set[str]) -> str:
    return (
        f"line {node.lineno}: import of {name!r} is not allowed "
        f"(allowed: {', '.join(sorted(modules))})"
    )


def parse_output(stdout: bytes) -> Any:
    """The one JSON value the node printed (NodeOutputError says what is wrong)."""
    try:
        text = stdout.decode("utf-8")
    except UnicodeDecodeError:
        raise NodeOutputError("the node's stdout is not UTF-8 text") from None
    if not text.strip():
        raise NodeOutputError("the node printed nothing on stdout; it must print one JSON value")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise NodeOutputError(
            f"the node's stdout is not one JSON value ({exc.msg} at line {exc.lineno}); "
            f"it began with {text[:120]!r}. Print only the result on stdout; use stderr for "
            "anything else"
        ) from None
    except RecursionError:
        raise NodeOutputError(
            f"the node's stdout is JSON nested too deeply to read; it began with {text[:120]!r}"
        ) from None
