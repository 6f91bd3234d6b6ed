"""Inside a run: tool calls travel to overseer over the socket it handed this process.

overseer greets first with the tools a node may call. Each call is one frame; results come back
in any order and a reader thread hands each to the batch waiting for it. If the channel breaks,
every call still waiting fails with a ``channel`` error rather than hanging.
"""

from __future__ import annotations

import itertools
import queue
import socket
import threading

from node_runtime import wire
from node_runtime.errors import ToolCallError, ToolCallTimeout, UnknownToolError

TYPE_CHECKING = False  # typing is slow to import; a node must start fast
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any, BinaryIO

    from node_runtime._calls import Call

    _Pending = tuple[int, queue.SimpleQueue[tuple[int, object]], str]

__all__ = ["ChannelBackend"]


class ChannelBackend:
    """A connected tool channel (one per node process)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._stream = sock.makefile("rb")
        self._tools = _greeting(self._stream)
        self._lock = threading.Lock()
        self._pending: dict[int, _Pending] = {}
        self._ids = itertools.count(1)
        self._broken: str = ""
        reader = threading.Thread(target=self._read_loop, name="node-runtime-reader", daemon=True)
        reader.start()

    @classmethod
    def from_fd(cls, fd: int) -> ChannelBackend:
        try:
            sock = socket.socket(fileno=fd)
        except OSError as exc:
            raise ToolCallError(
                f"{wire.FD_ENV}={fd} is not an open tool channel ({exc.strerror})", kind="channel"
            ) from None
        return cls(sock)

    def tool_names(self) -> Sequence[str]:
        return list(self._tools)

    def start(
        self, index: int, call: Call, done: queue.SimpleQueue[tuple[int, object]]
    ) -> Callable[[], None]:
        message = {"op": "call", "tool": call.tool, "prompt": call.prompt, "options": call.options}
        with self._lock:
            if self._broken:
                done.put((index, _channel_error(self._broken, call.tool)))
                return _nothing
            call_id = next(self._ids)
            self._pending[call_id] = (index, done, call.tool)
            self._send({**message, "id": call_id})
        return lambda: self._cancel(call_id)

    def _cancel(self, call_id: int) -> None:
        with self._lock:
            if self._pending.pop(call_id, None) is not None and not self._broken:
                self._send({"op": "cancel", "id": call_id})

    def _send(self, message: dict[str, Any]) -> None:
        """Send under ``self._lock``; a failure breaks the channel for every waiting call."""
        try:
            self._sock.sendall(wire.encode(message))
        except OSError as exc:
            self._break_locked(f"sending to overseer failed ({exc.strerror or exc})")

    def _read_loop(self) -> None:
        reason = "overseer closed the tool channel"
        try:
            while (message := wire.read_frame(self._stream)) is not None:
                if message["op"] == "result":
                    self._deliver(message)
        except (OSError, wire.FrameError) as exc:
            reason = f"the tool channel broke ({exc})"
        with self._lock:
            self._break_locked(reason)

    def _deliver(self, message: dict[str, Any]) -> None:
        with self._lock:
            pending = self._pending.pop(message.get("id", -1), None)
        if pending is None:
            return  # cancelled, or not ours
        index, done, tool = pending
        if message.get("ok"):
            done.put((index, str(message.get("output", ""))))
        else:
            done.put((index, _error(message.get("error") or {}, tool)))

    def _break_locked(self, reason: str) -> None:
        self._broken = self._broken or reason
        for index, done, tool in self._pending.values():
            done.put((index, _channel_error(self._broken, tool)))
        self._pending.clear()


def _greeting(stream: BinaryIO) -> list[str]:
    try:
        hello = wire.read_frame(stream)
    except (OSError, wire.FrameError) as exc:
        raise ToolCallError(
            f"the tool channel broke before it opened ({exc})", kind="channel"
        ) from None
    if hello is None or hello.get("op") != "hello":
        raise ToolCallError("overseer did not open the tool channel", kind="channel")
    return [str(tool.get("name")) for tool in hello.get("tools") or []]


def _error(error: dict[str, Any], tool: str) -> ToolCallError:
    kind = str(error.get("kind") or "tool_error")
    message = str(error.get("message") or "the tool call failed")
    if kind == "unknown_tool":
        return UnknownToolError(tool, [str(name) for name in error.get("known") or []])
    if kind == "timeout":
        return ToolCallTimeout(message, tool=tool)
    return ToolCallError(message, tool=tool, kind=kind)


def _channel_error(reason: str, tool: str) -> ToolCallError:
    return ToolCallError(f"tool {tool!r} could not be called: {reason}", tool=tool, kind="channel")


def _nothing() -> None:
    return None
