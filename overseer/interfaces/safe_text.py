"""Text from a model made safe to print: control characters shown, never obeyed.

A model's reply is data. Written raw, ``\\x1b]0;TITLE\\x07`` would retitle the user's terminal and
``\\x1b[2J`` would clear it; a carriage return or a right-to-left override would hide what came
before it. ``visible`` replaces every such character with an escape the user can read
(``\\x1b``, ``\\r``, ``\\u202e``), and keeps newlines and tabs, which only lay text out.
``json_safe`` does the same for JSON text: ``json.dumps`` already escapes the C0 range, and the
C1 range it leaves raw becomes ``\\u009b``-style escapes, so the JSON still decodes to the same
strings. Every interface that prints model text goes through one of the two.
"""

from __future__ import annotations

__all__ = ["json_safe", "visible"]

_KEPT = {"\n", "\t"}
_BIDI = [*range(0x202A, 0x202F), *range(0x2066, 0x206A)]  # embeddings, overrides, isolates


def _escape(code: int) -> str:
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


_C0_C1 = [code for code in (*range(0x20), *range(0x7F, 0xA0)) if chr(code) not in _KEPT]
_VISIBLE = str.maketrans({code: _escape(code) for code in (*_C0_C1, *_BIDI)})
_JSON_C1 = str.maketrans({code: f"\\u{code:04x}" for code in range(0x80, 0xA0)})


def visible(text: str) -> str:
    """``text`` with every control character other than newline and tab written as an escape
    (a Windows line end ``\\r\\n`` is read as a newline first)."""
    return text.replace("\r\n", "\n").translate(_VISIBLE)


def json_safe(text: str) -> str:
    """JSON text (from ``json.dumps``) with the C1 controls it left raw escaped as ``\\u00XX``."""
    return text.translate(_JSON_C1)
