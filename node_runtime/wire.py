"""The framing of the tool channel between a node and overseer: length-prefixed JSON objects.

Each frame is a 4-byte big-endian length followed by that many bytes of UTF-8 JSON holding one
object with an ``op`` key. overseer sends ``hello`` (the tools a node may call) as soon as the node
starts, then one ``result`` per ``call``; the node sends ``call`` and ``cancel``:

    {"op": "hello", "v": 1, "tools": [{"name": "...", "description": "..."}]}
    {"op": "call", "id": 1, "tool": "translator", "prompt": "...", "options": {}}
    {"op": "cancel", "id": 1}
    {"op": "result", "id": 1, "ok": true, "output": "..."}
    {"op": "result", "id": 1, "ok": false, "error": {"kind": "...", "message": "...", "known": []}}
"""

from __future__ import annotations

import json

TYPE_CHECKING = False  # typing is slow to import; a node must start fast
if TYPE_CHECKING:
    from typing import Any, BinaryIO

__all__ = ["FD_ENV", "MAX_FRAME", "VERSION", "FrameError", "encode", "read_frame"]

FD_ENV = "OVERSEER_NODE_FD"
"""The environment variable that holds the channel's file descriptor inside a run."""

VERSION = 1
MAX_FRAME = 64 * 1024 * 1024
_HEADER = 4


class FrameError(ValueError):
    """The other side sent something that is not a frame of this protocol."""


def encode(message: dict[str, Any]) -> bytes:
    """One frame holding ``message`` (a TypeError if it is not JSON-serializable)."""
    body = json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    if len(body) > MAX_FRAME:
        raise ValueError(f"a message of {len(body)} bytes is over the {MAX_FRAME}-byte limit")
    return len(body).to_bytes(_HEADER, "big") + body


def read_frame(stream: BinaryIO) -> dict[str, Any] | None:
    """The next message, or None at a clean end of stream. Raises FrameError on garbage."""
    header = stream.read(_HEADER)
    if not header:
        return None
    if len(header) < _HEADER:
        raise FrameError("the stream ended inside a frame header")
    size = int.from_bytes(header, "big")
    if size > MAX_FRAME:
        raise FrameError(f"a frame announced {size} bytes, over the {MAX_FRAME}-byte limit")
    body = stream.read(size)
    if len(body) < size:
        raise FrameError("the stream ended inside a frame")
    return _decode(body)


def _decode(body: bytes) -> dict[str, Any]:
    try:
        message = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise FrameError("a frame did not hold UTF-8 JSON") from None
    except RecursionError:
        raise FrameError("a frame held JSON nested too deeply to read") from None
    if not isinstance(message, dict) or not isinstance(message.get("op"), str):
        raise FrameError("a frame did not hold an object with an 'op'")
    return message
