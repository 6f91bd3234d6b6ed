"""The caps shared by plan steps and the tool calls of code nodes within one run.

The executor's scheduler already keeps plan steps under ``max_workers`` and each tool's
``max_concurrency``; the gate extends the same numbers to the calls nodes make, so that a node
calling five tools at once competes for the same slots as steps do.

A step holds one slot while it runs. A node's step lends its own slot to the node's calls: the
first of them runs in it, further ones need free slots. So a node blocked in
``call_tools_parallel`` can always make progress, whatever else holds the slots, and never waits
for the slot it holds itself. Every acquisition takes all it needs at once (its tool's cap and a
slot) or nothing, so there is no hold-and-wait between waiters. A holder whose call was
cancelled (a step timed out and abandoned by the executor, a node's call after the node died)
stops counting at once, as the executor stops counting an abandoned step.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager

from overseer.core.toolbase import CallContext
from overseer.errors import StepTimeout, ToolError

__all__ = ["Gate", "Slot"]


class Slot:
    """One slot held by a running step; its node's calls may borrow it one at a time."""

    __slots__ = ("_holds",)

    def __init__(self) -> None:
        self._holds: list[_Hold] = []  # the calls borrowing it (one live at most)

    @property
    def lent(self) -> bool:
        return any(hold.live for hold in self._holds)


class _Hold:
    __slots__ = ("borrowed", "ctx", "tool")

    def __init__(self, tool: str, ctx: CallContext, borrowed: Slot | None) -> None:
        self.tool = tool
        self.ctx = ctx
        self.borrowed = borrowed

    @property
    def live(self) -> bool:
        return not self.ctx.cancelled.is_set()


class _StepLease:
    """``Gate.step``'s context manager: a plain object, not a generator, as every step takes one."""

    __slots__ = ("_ctx", "_gate", "_hold", "_tool")

    def __init__(self, gate: Gate, tool: str, ctx: CallContext) -> None:
        self._gate = gate
        self._tool = tool
        self._ctx = ctx
        self._hold: _Hold | None = None

    def __enter__(self) -> Slot:
        self._hold = self._gate._acquire(self._tool, None, self._ctx)
        return Slot()

    def __exit__(self, *exc_info: object) -> None:
        if self._hold is not None:
            self._gate._release(self._hold)
            self._hold = None


class Gate:
    """``slots`` slots in all and a cap per capped tool; waits honour deadlines and cancels."""

    def __init__(self, slots: int, caps: Mapping[str, int] | None = None) -> None:
        if slots < 1:
            raise ValueError(f"a gate needs at least 1 slot, got {slots!r}")
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._slots = slots
        self._caps = dict(caps or {})
        self._holds: list[_Hold] = []
        self._own = 0  # holds that borrow no slot, live or cancelled: at least the slots in use
        self._waiting = 0  # threads in ``_wait``: a release with none wakes nobody

    @property
    def free(self) -> int:
        with self._cond:
            return self._free()

    def busy(self, tool: str) -> int:
        with self._cond:
            return self._busy(tool)

    def step(self, tool: str, ctx: CallContext) -> AbstractContextManager[Slot]:
        """Hold a slot (and ``tool``'s cap) while a plan step runs."""
        return _StepLease(self, tool, ctx)

    @contextmanager
    def call(self, tool: str, owner: Slot | None, ctx: CallContext) -> Iterator[None]:
        """Hold ``tool``'s cap and a slot (``owner``'s own when it is free) for one node call."""
        hold = self._acquire(tool, owner, ctx)
        try:
            yield
        finally:
            self._release(hold)

    def wake(self) -> None:
        """Let waiters re-check (cancel flags, holders that were cancelled)."""
        with self._cond:
            self._cond.notify_all()

    def _acquire(self, tool: str, owner: Slot | None, ctx: CallContext) -> _Hold:
        with self._lock:  # the lock of ``_cond``, taken directly: every step passes here
            while not self._available(tool, owner):
                self._wait(tool, ctx)
            if ctx.cancelled.is_set():
                raise ToolError(f"tool {tool!r} was cancelled before it started")
            borrowed = owner if owner is not None and not owner.lent else None
            hold = _Hold(tool, ctx, borrowed)
            self._holds.append(hold)
            if borrowed is not None:
                borrowed._holds.append(hold)
            else:
                self._own += 1
            return hold

    def _available(self, tool: str, owner: Slot | None) -> bool:
        cap = self._caps.get(tool)
        if cap is not None and self._busy(tool) >= cap:
            return False
        if owner is not None and not owner.lent:
            return True
        return self._own < self._slots or self._free() > 0  # counting the live ones only if full

    def _free(self) -> int:
        return self._slots - sum(1 for h in self._holds if h.live and h.borrowed is None)

    def _busy(self, tool: str) -> int:
        return sum(1 for h in self._holds if h.live and h.tool == tool)

    def _wait(self, tool: str, ctx: CallContext) -> None:
        if ctx.cancelled.is_set():
            raise ToolError(f"tool {tool!r} was cancelled while waiting for a free slot")
        remaining = ctx.remaining()
        if remaining is not None and remaining <= 0:
            raise StepTimeout(f"tool {tool!r} timed out waiting for a free slot")
        self._waiting += 1
        try:
            self._cond.wait(remaining)
        finally:
            self._waiting -= 1

    def _release(self, hold: _Hold) -> None:
        with self._lock:
            self._holds.remove(hold)
            if hold.borrowed is not None:
                hold.borrowed._holds.remove(hold)
            else:
                self._own -= 1
            if self._waiting:
                self._cond.notify_all()
