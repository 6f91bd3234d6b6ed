"""Checking the shape of calls, and running a batch of them on a backend in order.

A backend (the channel to overseer inside a run, or local tools when standalone) starts one call
at a time and reports each outcome on a queue; this module keeps a window of at most
``max_workers`` calls in flight, honours the batch timeout, and returns outcomes in call order.
"""

from __future__ import annotations

import json
import queue
import time
from collections.abc import Iterable, Mapping

from node_runtime.errors import ToolCallError, ToolCallTimeout, UnknownToolError

TYPE_CHECKING = False  # typing is slow to import; a node must start fast
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any, Protocol

    class Backend(Protocol):
        def tool_names(self) -> Sequence[str]: ...

        def start(
            self, index: int, call: Call, done: queue.SimpleQueue[tuple[int, object]]
        ) -> Callable[[], None]:
            """Start ``call``; put ``(index, outcome)`` on ``done`` when it ends; return a
            function that cancels it."""
            ...


__all__ = ["Call", "check_names", "normalize_call", "normalize_calls", "run"]

SHAPE = "(name, prompt) or (name, prompt, options)"


class Call:
    """One checked call: the tool's name, the prompt and the options."""

    __slots__ = ("options", "prompt", "tool")

    def __init__(self, tool: str, prompt: str, options: dict[str, Any]) -> None:
        self.tool = tool
        self.prompt = prompt
        self.options = options

    def __repr__(self) -> str:
        return f"Call({self.tool!r}, {self.prompt!r}, {self.options!r})"


def normalize_calls(calls: object) -> list[Call]:
    """The calls as ``Call`` tuples, or a TypeError that shows the expected shape."""
    if isinstance(calls, (str, bytes, Mapping)) or not isinstance(calls, Iterable):
        raise TypeError(
            f"call_tools_parallel expects a list of calls, each a tuple {SHAPE}; got {_show(calls)}"
        )
    return [_normalize(f"call {i}", call) for i, call in enumerate(calls)]


def normalize_call(tool: object, prompt: object, options: Mapping[str, Any]) -> Call:
    """The arguments of ``call_tool`` as a ``Call`` (TypeError when they are the wrong types)."""
    return _checked("call_tool(name, prompt, **options)", tool, prompt, dict(options))


def _normalize(where: str, call: object) -> Call:
    if not isinstance(call, tuple):
        raise TypeError(f"{where} must be a tuple {SHAPE}; got {_show(call)}")
    if len(call) not in (2, 3):
        raise TypeError(
            f"{where} must be a tuple {SHAPE}; got a tuple of {len(call)} item(s): {_show(call)}"
        )
    options = call[2] if len(call) == 3 else {}
    if not isinstance(options, Mapping):
        raise TypeError(f"{where}: options must be a dict, got {_show(options)}")
    return _checked(where, call[0], call[1], dict(options))


def _checked(where: str, tool: object, prompt: object, options: dict[str, Any]) -> Call:
    if not isinstance(tool, str):
        raise TypeError(f"{where}: the tool name must be a str, got {_show(tool)}")
    if not isinstance(prompt, str):
        raise TypeError(f"{where}: the prompt must be a str, got {_show(prompt)}")
    if not all(isinstance(key, str) for key in options):
        raise TypeError(f"{where}: option names must be str, got {_show(list(options))}")
    try:
        json.dumps(options)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{where}: options must be JSON values ({exc})") from None
    return Call(tool, prompt, options)


def _show(value: object) -> str:
    text = repr(value)
    text = text if len(text) <= 80 else text[:77] + "..."
    return f"{type(value).__name__} {text}"


def check_names(known: Sequence[str], calls: Sequence[Call]) -> None:
    """Raise UnknownToolError for the first call naming a tool that does not exist."""
    names = set(known)
    for call in calls:
        if call.tool not in names:
            raise UnknownToolError(call.tool, known)


def run(
    backend: Backend, calls: Sequence[Call], max_workers: int | None, timeout: float | None
) -> list[object]:
    """Every call's outcome (output text or ToolCallError), in the order of the calls."""
    return _Batch(backend, calls, max_workers, timeout).run()


class _Batch:
    def __init__(
        self,
        backend: Backend,
        calls: Sequence[Call],
        max_workers: int | None,
        timeout: float | None,
    ) -> None:
        self.backend = backend
        self.calls = calls
        self.window = len(calls) if max_workers is None else max_workers
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.timeout = timeout
        self.done: queue.SimpleQueue[tuple[int, object]] = queue.SimpleQueue()
        self.outcomes: list[object] = [None] * len(calls)
        self.running: dict[int, Callable[[], None]] = {}
        self.next = 0

    def run(self) -> list[object]:
        self._fill()
        while self.running:
            item = self._next_outcome()
            if item is None:
                self._time_out()
                break
            index, outcome = item
            if self.running.pop(index, None) is not None:
                self.outcomes[index] = outcome
                self._fill()
        return self.outcomes

    def _fill(self) -> None:
        while self.next < len(self.calls) and len(self.running) < self.window:
            index = self.next
            self.next += 1
            self.running[index] = self.backend.start(index, self.calls[index], self.done)

    def _next_outcome(self) -> tuple[int, object] | None:
        if self.deadline is None:
            return self.done.get()
        try:
            return self.done.get(timeout=max(0.0, self.deadline - time.monotonic()))
        except queue.Empty:
            return None

    def _time_out(self) -> None:
        for index, cancel in self.running.items():
            cancel()
            self.outcomes[index] = self._timeout_error(index, "did not finish")
        for index in range(self.next, len(self.calls)):
            self.outcomes[index] = self._timeout_error(index, "was not started")
        self.running.clear()

    def _timeout_error(self, index: int, what: str) -> ToolCallError:
        tool = self.calls[index].tool
        return ToolCallTimeout(f"call {index} ({tool}) {what} within {self.timeout}s", tool=tool)
