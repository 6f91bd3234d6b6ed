"""The caps shared by plan steps and the tool calls of code nodes within one run.

The executor's scheduler already keeps plan steps under ``max_workers`` and each tool's
``max_concurrency``; the gate extends the same numbers to the calls nodes make, so that a node
calling five tools at once competes for the same slots as steps do.

A step holds one slot while it runs. A node's step lends its own slot to the node's calls: the
first of them runs in it, further ones need free slots. So a node blocked in
``call_tools_parallel`` can always make progress, whatever else holds the slots, and never waits
for the slot it holds itself. Every acquisition takes all it needs at once (its tool's cap and a
slot) or nothing, so there is no hold-and-wait between waiters.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from overseer.errors import StepTimeout, ToolError
from overseer.toolbase import CallContext

__all__ = ["Gate", "Slot"]


class Slot:
    """One slot held by a running step; its node's calls may borrow it one at a time."""

    __slots__ = ("lent",)

    def __init__(self) -> None:
        self.lent = False


class Gate:
    """``slots`` slots in all and a cap per capped tool; waits honour deadlines and cancels."""

    def __init__(self, slots: int, caps: Mapping[str, int] | None = None) -> None:
        if slots < 1:
            raise ValueError(f"a gate needs at least 1 slot, got {slots!r}")
        self._cond = threading.Condition()
        self._free = slots
        self._caps = dict(caps or {})
        self._busy: dict[str, int] = dict.fromkeys(self._caps, 0)

    @property
    def free(self) -> int:
        with self._cond:
            return self._free

    def busy(self, tool: str) -> int:
        with self._cond:
            return self._busy.get(tool, 0)

    @contextmanager
    def step(self, tool: str, ctx: CallContext) -> Iterator[Slot]:
        """Hold a slot (and ``tool``'s cap) while a plan step runs."""
        self._acquire(tool, None, ctx)
        slot = Slot()
        try:
            yield slot
        finally:
            self._release(tool, None)

    @contextmanager
    def call(self, tool: str, owner: Slot | None, ctx: CallContext) -> Iterator[None]:
        """Hold ``tool``'s cap and a slot (``owner``'s own when it is free) for one node call."""
        borrowed = self._acquire(tool, owner, ctx)
        try:
            yield
        finally:
            self._release(tool, owner if borrowed else None)

    def wake(self) -> None:
        """Let waiters re-check their cancel flags."""
        with self._cond:
            self._cond.notify_all()

    def _acquire(self, tool: str, owner: Slot | None, ctx: CallContext) -> bool:
        """Take the cap and a slot at once; True if ``owner``'s slot was borrowed."""
        with self._cond:
            while not self._available(tool, owner):
                self._wait(tool, ctx)
            if ctx.cancelled.is_set():
                raise ToolError(f"tool {tool!r} was cancelled before it started")
            if tool in self._busy:
                self._busy[tool] += 1
            if owner is not None and not owner.lent:
                owner.lent = True
                return True
            self._free -= 1
            return False

    def _available(self, tool: str, owner: Slot | None) -> bool:
        cap = self._caps.get(tool)
        if cap is not None and self._busy[tool] >= cap:
            return False
        return (owner is not None and not owner.lent) or self._free > 0

    def _wait(self, tool: str, ctx: CallContext) -> None:
        if ctx.cancelled.is_set():
            raise ToolError(f"tool {tool!r} was cancelled while waiting for a free slot")
        remaining = ctx.remaining()
        if remaining is not None and remaining <= 0:
            raise StepTimeout(f"tool {tool!r} timed out waiting for a free slot")
        self._cond.wait(remaining)

    def _release(self, tool: str, borrowed_from: Slot | None) -> None:
        with self._cond:
            if tool in self._busy:
                self._busy[tool] -= 1
            if borrowed_from is not None:
                borrowed_from.lent = False
            else:
                self._free += 1
            self._cond.notify_all()
