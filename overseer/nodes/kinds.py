"""The ``code`` tool kind, as the registry takes it, and the registry of every kind.

The sandbox is imported only when a configuration declares a code tool, so starting overseer
stays cheap."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from overseer.tools.registry import ToolRegistry
from overseer.tools.registry import build_registry as _build_registry

if TYPE_CHECKING:
    from overseer.backends.chat import ChatClient
    from overseer.config import Settings, ToolSpec
    from overseer.core.toolbase import Tool
    from overseer.tools.registry import ToolFactory

__all__ = ["KINDS", "build_registry", "code_kind"]


def code_kind(spec: ToolSpec, settings: Settings, chat: ChatClient) -> Tool:
    """The registry's factory for ``kind: code``."""
    from overseer.nodes.codetool import code_tool

    return code_tool(spec, settings, chat)


KINDS: dict[str, ToolFactory] = {"code": code_kind}


def build_registry(
    settings: Settings, chat: ChatClient, extra: Mapping[str, ToolFactory] | None = None
) -> ToolRegistry:
    """The registry of every enabled tool in ``settings``, code tools included."""
    return _build_registry(settings, chat, {**KINDS, **(extra or {})})
