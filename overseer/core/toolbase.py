"""What a tool is, what it gets when called, and what it gives back. Types only."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from overseer.core.cancel import CancelToken
from overseer.usage import Usage

__all__ = ["CallContext", "Tool", "ToolResult"]


@dataclass(frozen=True)
class ToolResult:
    output: str
    usage: Usage = Usage()
    model: str = ""


@dataclass
class CallContext:
    """Handed to a tool for one call.

    ``task`` is the step's description and ``inputs`` its dependencies' outputs (empty for a call
    from a node). ``cancelled`` is set when the run no longer wants the result (timeout,
    fail-fast, Ctrl-C); long-running tools check it, and a ``CancelToken`` (the default) also runs
    the callbacks registered with ``on_cancel``, to unblock a tool stuck in I/O. ``deadline`` is
    a ``time.monotonic()`` instant, or None.
    """

    step_id: str | None = None
    task: str | None = None
    inputs: Mapping[str, str] = field(default_factory=dict)
    cancelled: threading.Event = field(default_factory=CancelToken)
    deadline: float | None = None
    attempt: int = 1
    extra: dict[str, Any] = field(default_factory=dict)

    def remaining(self) -> float | None:
        """Seconds left before the deadline (never negative), or None for no deadline."""
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - time.monotonic())


class Tool(Protocol):
    """A named capability the planner may choose and a node may call."""

    @property
    def name(self) -> str: ...

    @property
    def description(self) -> str: ...

    @property
    def max_concurrency(self) -> int | None: ...

    def run(self, prompt: str, options: dict[str, Any], ctx: CallContext) -> ToolResult: ...
