"""The parent's end of a node's tool channel: runs the calls a node makes.

Each call runs on its own thread with the run's registry, under the same caps as plan steps
(``Gate``: the node's own slot first, then free ones), the step retries, the token budget, and
events on the run's bus (``NodeCallStarted``/``NodeCallFinished``). Results go back as they end,
in any order; the node puts them back in call order. A node that sends garbage loses its channel,
never the run.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Mapping
from typing import Any

from node_runtime import wire
from overseer.core.gate import Slot
from overseer.core.toolbase import CallContext, Tool, ToolResult
from overseer.errors import OverseerError, StepTimeout
from overseer.events import NodeCallFinished, NodeCallStarted
from overseer.tools.registry import ToolRegistry
from overseer.tools.services import RunServices
from overseer.usage import Usage

__all__ = ["MAX_PENDING_CALLS", "Broker", "node_tools"]

MAX_PENDING_CALLS = 1024
"""Calls of one node accepted at once; beyond, the channel stops reading (back-pressure)."""


def node_tools(registry: ToolRegistry) -> dict[str, Tool]:
    """The tools a node may call: all but those marked ``node_callable = False`` (``code``)."""
    tools = (registry.get(name) for name in registry.names())
    return {t.name: t for t in tools if getattr(t, "node_callable", True)}


class _Failure(Exception):
    """A call's failure as the node will see it: ``kind`` and a message."""

    def __init__(self, kind: str, message: str, known: list[str] | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.known = known or []

    def as_error(self) -> dict[str, Any]:
        return {"kind": self.kind, "message": str(self), "known": self.known}


class Broker:
    """Serves one node. ``serve(sock)`` once the node is started; ``close()`` once it is dead."""

    def __init__(
        self,
        services: RunServices,
        *,
        step_id: str | None,
        slot: Slot | None,
        deadline: float | None,
    ) -> None:
        self.services = services
        self.step_id = step_id
        self.slot = slot
        self.deadline = deadline
        self.tools = node_tools(services.registry)
        self.protocol_error = ""
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._calls: dict[int, CallContext] = {}
        self._usage = Usage()
        self._count = 0
        self._closed = False
        self._room = threading.BoundedSemaphore(MAX_PENDING_CALLS)
        self._sock: socket.socket | None = None
        self._reader: threading.Thread | None = None

    @property
    def usage(self) -> Usage:
        """Tokens spent by this node's calls that have finished."""
        with self._lock:
            return self._usage

    @property
    def calls(self) -> int:
        with self._lock:
            return self._count

    def serve(self, sock: socket.socket) -> None:
        self._sock = sock
        described = [{"name": n, "description": t.description} for n, t in self.tools.items()]
        self._send({"op": "hello", "v": wire.VERSION, "tools": described})
        self._reader = threading.Thread(
            target=self._read_loop, args=(sock,), name=f"broker-{self.step_id}", daemon=True
        )
        self._reader.start()

    def close(self) -> None:
        """The node is gone: cancel its calls still running and stop reading."""
        with self._lock:
            self._closed = True
            for ctx in self._calls.values():
                ctx.cancelled.set()
        self.services.gate.wake()
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
        if self._reader is not None:
            self._reader.join()

    # -- reading ------------------------------------------------------------------------------

    def _read_loop(self, sock: socket.socket) -> None:
        stream = sock.makefile("rb")
        try:
            while (message := wire.read_frame(stream)) is not None:
                self._dispatch(message)
        except wire.FrameError as exc:
            self.protocol_error = f"the node broke the tool channel: {exc}"
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        finally:
            stream.close()

    def _dispatch(self, message: dict[str, Any]) -> None:
        if message["op"] == "call":
            self._room.acquire()
            threading.Thread(
                target=self._serve_call, args=(message,), name="broker-call", daemon=True
            ).start()
        elif message["op"] == "cancel":
            with self._lock:
                ctx = self._calls.get(message.get("id", -1))
            if ctx is not None:
                ctx.cancelled.set()
                self.services.gate.wake()

    # -- one call -----------------------------------------------------------------------------

    def _serve_call(self, message: dict[str, Any]) -> None:
        try:
            call_id = message.get("id")
            if not isinstance(call_id, int):
                return  # no id: nowhere to answer
            try:
                tool, prompt, options = self._parse(message)
            except _Failure as failure:
                self._answer(call_id, None, failure)
                return
            self._run_call(call_id, tool, prompt, options)
        finally:
            self._room.release()

    def _parse(self, message: Mapping[str, Any]) -> tuple[Tool, str, dict[str, Any]]:
        name, prompt, options = message.get("tool"), message.get("prompt"), message.get("options")
        if not isinstance(name, str) or not isinstance(prompt, str):
            raise _Failure("bad_request", "a call needs a tool name and a prompt, both strings")
        if options is not None and not isinstance(options, dict):
            raise _Failure("bad_request", f"options must be an object, got {options!r}")
        tool = self.tools.get(name)
        if tool is None:
            known = sorted(self.tools)
            message_text = f"unknown tool {name!r}; the tools are: {', '.join(known)}"
            raise _Failure("unknown_tool", message_text, known)
        return tool, prompt, dict(options or {})

    def _run_call(self, call_id: int, tool: Tool, prompt: str, options: dict[str, Any]) -> None:
        ctx = CallContext(step_id=self.step_id, deadline=self.deadline)
        with self._lock:
            if self._closed:
                return
            self._calls[call_id] = ctx
            self._count += 1
        bus, started = self.services.bus, time.monotonic()
        bus.emit(NodeCallStarted(self.services.since(), self.step_id, call_id, tool.name))
        result, failure, attempts = self._attempts(tool, prompt, options, ctx)
        usage = result.usage if result is not None else Usage()
        error = str(failure) if failure is not None else None
        duration = time.monotonic() - started
        bus.emit(
            NodeCallFinished(
                self.services.since(),
                self.step_id,
                call_id,
                tool.name,
                duration,
                error,
                usage,
                attempts,
            )
        )
        with self._lock:
            self._calls.pop(call_id, None)
        self._answer(call_id, result, failure)

    def _attempts(
        self, tool: Tool, prompt: str, options: dict[str, Any], ctx: CallContext
    ) -> tuple[ToolResult | None, _Failure | None, int]:
        retries = self.services.settings.run.step_retries
        attempt = 0
        while True:
            attempt += 1
            ctx.attempt = attempt
            try:
                return self._attempt(tool, prompt, options, ctx), None, attempt
            except _Failure as failure:
                retry = failure.kind == "tool_error" and not ctx.cancelled.is_set()
                if not retry or attempt > retries:
                    return None, failure, attempt

    def _attempt(
        self, tool: Tool, prompt: str, options: dict[str, Any], ctx: CallContext
    ) -> ToolResult:
        budget = self.services.budget_problem()
        if budget is not None:
            raise _Failure("budget", budget)
        try:
            with self.services.gate.call(tool.name, self.slot, ctx):
                result = tool.run(prompt, options, ctx)
        except StepTimeout as exc:
            raise _Failure("timeout", str(exc)) from None
        except Exception as exc:
            raise _Failure(*_describe(tool.name, exc, ctx)) from None
        self._count_usage(result.usage)
        return result

    def _count_usage(self, usage: Usage) -> None:
        self.services.meter.add_live(self.step_id, usage)
        with self._lock:
            self._usage += usage

    # -- writing ------------------------------------------------------------------------------

    def _answer(self, call_id: int, result: ToolResult | None, failure: _Failure | None) -> None:
        if result is not None:
            self._send({"op": "result", "id": call_id, "ok": True, "output": result.output})
        else:
            error = (failure or _Failure("tool_error", "the call failed")).as_error()
            self._send({"op": "result", "id": call_id, "ok": False, "error": error})

    def _send(self, message: dict[str, Any]) -> None:
        if self._sock is None:
            return
        frame = wire.encode(message)
        with self._send_lock, contextlib.suppress(OSError):
            self._sock.sendall(frame)


def _describe(tool: str, exc: Exception, ctx: CallContext) -> tuple[str, str]:
    if ctx.cancelled.is_set():
        return "cancelled", f"tool {tool!r} was cancelled"
    if isinstance(exc, OverseerError):
        return "tool_error", str(exc) or type(exc).__name__
    return "tool_error", f"tool {tool!r} raised {type(exc).__name__}: {exc}"
