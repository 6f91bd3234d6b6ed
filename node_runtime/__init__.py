"""What generated code imports to call overseer's tools, one at a time or many at once.

    from node_runtime import call_tool, call_tools_parallel
    joke = call_tool("content_generator", "Write a joke about cats")
    fr, es = call_tools_parallel([("translator", f"To French: {joke}"),
                                  ("translator", f"To Spanish: {joke}", {"temperature": 0})])

Inside a run the calls go to the overseer process over the channel it handed the node (it owns the
keys, the caps, the budget and the journal). Run alone (``python node.py < input.json``), the tools
are built from the configuration: ``$OVERSEER_CONFIG``, else ``./config.yaml``, else the packaged
default, with keys from the environment. Importing this package loads neither openai nor rich.
"""

from __future__ import annotations

import os
import threading

from node_runtime import _calls, wire
from node_runtime.errors import ToolCallError, ToolCallsFailed, ToolCallTimeout, UnknownToolError

TYPE_CHECKING = False  # typing is slow to import; a node must start fast
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any

__all__ = [
    "ToolCallError",
    "ToolCallTimeout",
    "ToolCallsFailed",
    "UnknownToolError",
    "call_tool",
    "call_tools_parallel",
]

_lock = threading.Lock()
_backend: _calls.Backend | None = None  # set on the first call


def call_tool(name: str, prompt: str, **options: Any) -> str:
    """Call one tool and return its output text; raises ``ToolCallError`` when it fails."""
    call = _calls.normalize_call(name, prompt, options)
    backend = _connected()
    _calls.check_names(backend.tool_names(), [call])
    [outcome] = _calls.run(backend, [call], None, None)
    if isinstance(outcome, ToolCallError):
        raise outcome
    return str(outcome)


def call_tools_parallel(
    calls: Iterable[tuple[Any, ...]],
    max_workers: int | None = None,
    timeout: float | None = None,
    return_exceptions: bool = False,
) -> list[Any]:
    """Run every call at once; the outputs come back in the order of the calls.

    A call is ``(name, prompt)`` or ``(name, prompt, options)``. An unknown tool fails the batch
    before anything starts. A failed call does not stop the others: once all have ended,
    ``ToolCallsFailed`` is raised carrying every result (``.results``), or, with
    ``return_exceptions=True``, the exception stands in the failed call's slot. ``max_workers``
    caps how many of these calls run at once; ``timeout`` (seconds) bounds the whole batch.
    """
    batch = _calls.normalize_calls(calls)
    _check_limits(max_workers, timeout)
    if not batch:
        return []
    backend = _connected()
    _calls.check_names(backend.tool_names(), batch)
    outcomes = _calls.run(backend, batch, max_workers, timeout)
    failures = {i: o for i, o in enumerate(outcomes) if isinstance(o, ToolCallError)}
    if failures and not return_exceptions:
        raise ToolCallsFailed(outcomes, failures)
    return outcomes


def _check_limits(max_workers: object, timeout: object) -> None:
    if max_workers is not None and (
        isinstance(max_workers, bool) or not isinstance(max_workers, int) or max_workers < 1
    ):
        raise ValueError(
            f"max_workers must be None or a whole number of at least 1, got {max_workers!r}"
        )
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0
    ):
        raise ValueError(f"timeout must be None or a number of seconds above 0, got {timeout!r}")


def _connected() -> _calls.Backend:
    global _backend
    with _lock:
        if _backend is None:
            _backend = _connect()
        return _backend


def _connect() -> _calls.Backend:
    fd = os.environ.get(wire.FD_ENV)
    if fd:
        from node_runtime._channel import ChannelBackend

        if not fd.isdigit():
            raise ToolCallError(f"{wire.FD_ENV}={fd!r} is not a file descriptor", kind="channel")
        return ChannelBackend.from_fd(int(fd))
    from node_runtime._local import LocalBackend

    return LocalBackend.from_config()
