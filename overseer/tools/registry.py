"""The tool registry and the built-in kinds: ``llm`` prompts, ``python`` functions, ``code`` nodes.

The registry is what the planner sees and what steps and nodes call. A tool's failure is raised as
``ToolError``; the executor records it as the step's result.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from overseer.backends.chat import ChatClient, ChatRequest
from overseer.config import Settings, ToolSpec
from overseer.config.resources import read_prompt
from overseer.core.toolbase import CallContext, Tool, ToolResult
from overseer.errors import ConfigError, ToolError, UnknownToolError

__all__ = [
    "FunctionTool",
    "LlmTool",
    "ToolFactory",
    "ToolRegistry",
    "build_registry",
    "output_text",
]

ToolFactory = Callable[[ToolSpec, Settings, ChatClient], Tool]


class ToolRegistry:
    """Tools by name, in the order they were registered."""

    def __init__(self, tools: Iterable[Tool] = ()) -> None:
        self._tools: dict[str, Tool] = {}
        self._timeouts: dict[str, float] = {}
        for tool in tools:
            self.register(tool)

    def register(self, tool: Tool, timeout: float | None = None) -> None:
        """Add ``tool``; ``timeout`` (seconds) overrides the run's step timeout for its steps."""
        self._tools[tool.name] = tool
        if timeout is not None:
            self._timeouts[tool.name] = timeout

    def get(self, name: str) -> Tool:
        try:
            return self._tools[name]
        except KeyError:
            raise UnknownToolError(name, self.names()) from None

    def names(self) -> list[str]:
        return list(self._tools)

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __len__(self) -> int:
        return len(self._tools)

    def caps(self) -> dict[str, int]:
        """Per-tool concurrency caps, for the scheduler."""
        return {n: t.max_concurrency for n, t in self._tools.items() if t.max_concurrency}

    def timeouts(self) -> dict[str, float]:
        """Per-tool step timeouts, for the executor."""
        return dict(self._timeouts)

    def describe(self) -> str:
        """One line per tool, as the planner is shown them."""
        return "\n".join(f"- {t.name}: {t.description}" for t in self._tools.values())


@dataclass(frozen=True)
class LlmTool:
    """A system prompt sent to the chat model with the step's prompt as the user message."""

    name: str
    description: str
    system_prompt: str
    chat: ChatClient
    model: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    max_concurrency: int | None = None

    def run(self, prompt: str, options: dict[str, Any], ctx: CallContext) -> ToolResult:
        request = ChatRequest(
            messages=[
                {"role": "system", "content": self.system_prompt},
                {"role": "user", "content": prompt},
            ],
            model=options.get("model", self.model),
            temperature=options.get("temperature", self.temperature),
            max_tokens=options.get("max_tokens", self.max_tokens),
            timeout=ctx.remaining(),
            cancel=ctx.cancelled,
        )
        reply = self.chat.complete(request)
        return ToolResult(output=reply.text, usage=reply.usage, model=reply.model)


@dataclass(frozen=True)
class FunctionTool:
    """A callable ``fn(prompt, **options)``; ``task``/``inputs`` passed when it takes them."""

    name: str
    description: str
    function: Callable[..., Any]
    max_concurrency: int | None = None
    # which of ``inputs`` and ``task`` the function takes, worked out once, not on every call
    _context: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_context", _parameters(self.function) & _CONTEXT)

    def run(self, prompt: str, options: dict[str, Any], ctx: CallContext) -> ToolResult:
        wanted = self._context
        kwargs = dict(options) if options or wanted else None
        if kwargs is not None:
            if "inputs" in wanted:
                kwargs["inputs"] = dict(ctx.inputs)
            if "task" in wanted:
                kwargs["task"] = ctx.task
        try:
            value = self.function(prompt) if kwargs is None else self.function(prompt, **kwargs)
        except Exception as exc:
            raise ToolError(f"tool {self.name!r} raised {type(exc).__name__}: {exc}") from exc
        return ToolResult(output=output_text(value))


_CONTEXT = frozenset({"inputs", "task"})
"""The parameters through which a function tool asks for its step's context."""


def _parameters(function: Callable[..., Any]) -> frozenset[str]:
    """The parameter names of ``function``, worked out once per function (``inspect.signature``
    costs more than a whole zero-time step)."""
    try:
        return _cached_parameters(function)
    except TypeError:  # an unhashable callable
        return _signature_parameters(function)


@functools.lru_cache(maxsize=256)
def _cached_parameters(function: Callable[..., Any]) -> frozenset[str]:
    return _signature_parameters(function)


def _signature_parameters(function: Callable[..., Any]) -> frozenset[str]:
    try:
        return frozenset(inspect.signature(function).parameters)
    except (TypeError, ValueError):
        return frozenset()


def output_text(value: Any) -> str:
    """A tool's value as step output: a string as it is, anything else as JSON text."""
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return str(value)


def _llm_tool(spec: ToolSpec, settings: Settings, chat: ChatClient) -> Tool:
    return LlmTool(
        name=spec.name,
        description=spec.description,
        system_prompt=_system_prompt(spec),
        chat=chat,
        model=spec.model,
        temperature=spec.temperature,
        max_tokens=spec.max_tokens or settings.run.step_max_tokens,
        max_concurrency=spec.max_concurrency,
    )


def _system_prompt(spec: ToolSpec) -> str:
    if spec.system_prompt:
        return spec.system_prompt
    if spec.system_prompt_file:
        try:
            return read_prompt(spec.system_prompt_file).strip()
        except OSError:
            raise ConfigError(
                f"tool {spec.name!r}: prompt file {spec.system_prompt_file!r} was not found"
            ) from None
    return read_prompt("tools/general.md").strip()


def _python_tool(spec: ToolSpec, settings: Settings, chat: ChatClient) -> Tool:
    return FunctionTool(
        name=spec.name,
        description=spec.description,
        function=import_function(spec.function or "", spec.name),
        max_concurrency=spec.max_concurrency,
    )


def import_function(target: str, tool_name: str) -> Callable[..., Any]:
    """``'package.module:function'`` -> the function, or a ConfigError naming what is wrong."""
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise ConfigError(
            f"tool {tool_name!r}: cannot import module {module_name!r} "
            f"({type(exc).__name__}: {exc})"
        ) from None
    function = getattr(module, attr, None)
    if not callable(function):
        raise ConfigError(f"tool {tool_name!r}: {target!r} is not a function")
    return function  # type: ignore[no-any-return]


# The kinds this part builds. ``code`` belongs to the nodes part, which builds on this one: the
# engine passes it in ``extra`` (see ``overseer.nodes.codetool.CODE_KINDS``).
FACTORIES: dict[str, ToolFactory] = {"llm": _llm_tool, "python": _python_tool}


def build_registry(
    settings: Settings, chat: ChatClient, extra: Mapping[str, ToolFactory] | None = None
) -> ToolRegistry:
    """The registry of every enabled tool in ``settings``."""
    factories = {**FACTORIES, **(extra or {})}
    registry = ToolRegistry()
    for spec in settings.enabled_tools:
        factory = factories.get(spec.kind)
        if factory is None:
            raise ConfigError(f"tool {spec.name!r}: kind {spec.kind!r} is not available here")
        registry.register(factory(spec, settings, chat), timeout=spec.timeout)
    return registry
