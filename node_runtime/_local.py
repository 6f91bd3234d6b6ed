"""Standalone (``python node.py < input.json``): the tools are built here from the configuration.

Only this mode imports overseer, and only when the first call is made, so a node that calls no
tool never pays for it.
"""

from __future__ import annotations

import queue
import threading

from node_runtime.errors import ToolCallError

TYPE_CHECKING = False  # typing is slow to import; a node must start fast
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any

    from node_runtime._calls import Call

__all__ = ["LocalBackend"]


class LocalBackend:
    """Runs each call on its own thread against tools built from the configuration."""

    def __init__(self, tools: Any) -> None:
        self._tools = tools  # overseer.nodes.standalone.NodeTools

    @classmethod
    def from_config(cls) -> LocalBackend:
        try:
            from overseer.nodes.standalone import NodeTools
        except ImportError as exc:
            raise ToolCallError(
                f"run outside overseer, node_runtime needs overseer installed ({exc})",
                kind="config",
            ) from None
        return cls(NodeTools.from_config())

    def tool_names(self) -> Sequence[str]:
        return list(self._tools.names())

    def start(
        self, index: int, call: Call, done: queue.SimpleQueue[tuple[int, object]]
    ) -> Callable[[], None]:
        cancelled = threading.Event()

        def work() -> None:
            done.put((index, self._tools.call(call.tool, call.prompt, call.options, cancelled)))

        threading.Thread(target=work, name=f"node-call-{index}", daemon=True).start()
        return cancelled.set
