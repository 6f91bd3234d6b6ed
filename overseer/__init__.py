"""overseer: split a request into steps with an LLM and run the independent steps at once.

from overseer import Overseer
report = Overseer().run("write a joke and translate it to French and Spanish")
print(report.answer)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from overseer.backends.chat import ChatClient, ChatReply, ChatRequest
    from overseer.config import Settings, ToolSpec, load_settings
    from overseer.core.plan import Plan, Step, parse_plan
    from overseer.core.report import RunReport
    from overseer.core.toolbase import CallContext, Tool, ToolResult
    from overseer.engine import Overseer
    from overseer.errors import (
        BackendError,
        ConfigError,
        OverseerError,
        PlanError,
        PlanValidationError,
        ToolError,
        UnknownToolError,
    )
    from overseer.events import (
        Event,
        EventBus,
        PlanReady,
        RunFinished,
        StepFailed,
        StepFinished,
        StepStarted,
        UsageRecorded,
    )
    from overseer.tools.registry import FunctionTool, LlmTool, ToolRegistry
    from overseer.usage import Usage

# Imported on first use (PEP 562), so that importing one submodule stays cheap.
_WHERE = {
    "BackendError": "overseer.errors",
    "CallContext": "overseer.core.toolbase",
    "ChatClient": "overseer.backends.chat",
    "ChatReply": "overseer.backends.chat",
    "ChatRequest": "overseer.backends.chat",
    "ConfigError": "overseer.errors",
    "Event": "overseer.events",
    "EventBus": "overseer.events",
    "FunctionTool": "overseer.tools.registry",
    "LlmTool": "overseer.tools.registry",
    "Overseer": "overseer.engine",
    "OverseerError": "overseer.errors",
    "Plan": "overseer.core.plan",
    "PlanError": "overseer.errors",
    "PlanReady": "overseer.events",
    "PlanValidationError": "overseer.errors",
    "RunFinished": "overseer.events",
    "RunReport": "overseer.core.report",
    "Settings": "overseer.config",
    "Step": "overseer.core.plan",
    "StepFailed": "overseer.events",
    "StepFinished": "overseer.events",
    "StepStarted": "overseer.events",
    "Tool": "overseer.core.toolbase",
    "ToolError": "overseer.errors",
    "ToolRegistry": "overseer.tools.registry",
    "ToolResult": "overseer.core.toolbase",
    "ToolSpec": "overseer.config",
    "UnknownToolError": "overseer.errors",
    "Usage": "overseer.usage",
    "UsageRecorded": "overseer.events",
    "load_settings": "overseer.config",
    "parse_plan": "overseer.core.plan",
}

__all__ = [
    "BackendError",
    "CallContext",
    "ChatClient",
    "ChatReply",
    "ChatRequest",
    "ConfigError",
    "Event",
    "EventBus",
    "FunctionTool",
    "LlmTool",
    "Overseer",
    "OverseerError",
    "Plan",
    "PlanError",
    "PlanReady",
    "PlanValidationError",
    "RunFinished",
    "RunReport",
    "Settings",
    "Step",
    "StepFailed",
    "StepFinished",
    "StepStarted",
    "Tool",
    "ToolError",
    "ToolRegistry",
    "ToolResult",
    "ToolSpec",
    "UnknownToolError",
    "Usage",
    "UsageRecorded",
    "load_settings",
    "parse_plan",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'overseer' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
