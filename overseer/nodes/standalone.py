"""The tools of a node run on its own (``python node.py < input.json``), outside any run.

``node_runtime`` imports this only in that mode, on the first call. The tools come from the
configuration (``$OVERSEER_CONFIG``, else ``./config.yaml``, else the packaged default) and the
keys from the environment; the chat client is built on the first LLM call, so a node calling only
Python tools needs no backend at all.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from node_runtime.errors import ToolCallError, UnknownToolError
from overseer.backends.chat import ChatClient, ChatReply, ChatRequest
from overseer.config import Settings, load_settings
from overseer.core.toolbase import CallContext, Tool
from overseer.errors import OverseerError
from overseer.nodes.broker import node_tools
from overseer.nodes.kinds import build_registry

__all__ = ["NodeTools"]


class _LazyChat:
    """Builds the real chat client when the first request comes."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._lock = threading.Lock()
        self._chat: ChatClient | None = None

    def complete(self, request: ChatRequest) -> ChatReply:
        with self._lock:
            if self._chat is None:
                from overseer.backends.factory import make_chat

                self._chat = make_chat(self._settings)
        return self._chat.complete(request)


class NodeTools:
    """The tools a standalone node may call, by name."""

    def __init__(self, tools: Mapping[str, Tool]) -> None:
        self._tools = dict(tools)

    @classmethod
    def from_config(cls) -> NodeTools:
        try:
            settings = load_settings()
            registry = build_registry(settings, _LazyChat(settings))
        except OverseerError as exc:
            raise ToolCallError(f"the tools could not be built: {exc}", kind="config") from None
        return cls(node_tools(registry))

    def names(self) -> list[str]:
        return list(self._tools)

    def call(
        self, name: str, prompt: str, options: dict[str, Any], cancelled: threading.Event
    ) -> str | ToolCallError:
        """The tool's output text, or the error the node should see."""
        tool = self._tools.get(name)
        if tool is None:
            return UnknownToolError(name, self.names())
        try:
            return tool.run(prompt, options, CallContext(cancelled=cancelled)).output
        except OverseerError as exc:
            return ToolCallError(str(exc) or type(exc).__name__, tool=name)
        except Exception as exc:
            return ToolCallError(f"tool {name!r} raised {type(exc).__name__}: {exc}", tool=name)
