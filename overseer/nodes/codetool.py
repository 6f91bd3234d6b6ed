"""The ``code`` tool: the step model writes a Python node for the step, and it runs in a sandbox.

The node is checked before it runs (it parses, it imports only allowed modules), gets the step's
task and its dependencies' outputs as JSON on stdin, may call the run's other tools through
``node_runtime`` (served by ``Broker``), and prints the step's output as one JSON value. A node
that fails (rejected, an exception, bad output, a timeout) goes back to the model with its error
and stderr, ``nodes.max_fixes`` times; then the step fails with the node's error.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, ClassVar

from overseer.backends.chat import ChatClient, ChatReply, ChatRequest, Message
from overseer.config import Settings, ToolSpec
from overseer.config.nodes import NodeSettings
from overseer.config.resources import read_prompt
from overseer.config.templates import render
from overseer.core.toolbase import CallContext, Tool, ToolResult
from overseer.errors import ConfigError, ToolError
from overseer.events import NodeFinished, NodeStarted
from overseer.nodes.broker import Broker, node_tools
from overseer.nodes.isolation import Isolation, SandboxUnavailable, decide
from overseer.nodes.nodecode import NodeOutputError, check_code, extract_code, parse_output
from overseer.nodes.sandbox import NodeRun, run_node
from overseer.tools.registry import output_text
from overseer.tools.services import RunServices, services_of, slot_of
from overseer.usage import Usage

__all__ = ["CodeTool", "code_tool"]

_SYSTEM_PROMPT = "node_system.md"
_ERROR_LINES = 12
_BEFORE_STEP_DEADLINE = 0.1  # seconds


@dataclass(frozen=True)
class CodeTool:
    """A step done by a generated program. Nodes cannot call it (no nodes within nodes)."""

    name: str
    description: str
    chat: ChatClient
    nodes: NodeSettings
    timeout: float
    system_prompt: str = ""
    system_prompt_file: str = _SYSTEM_PROMPT
    model: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    max_concurrency: int | None = None
    node_callable: ClassVar[bool] = False

    def run(self, prompt: str, options: dict[str, Any], ctx: CallContext) -> ToolResult:
        services = services_of(ctx)
        if services is None:
            raise ToolError(
                f"tool {self.name!r} runs inside a run (Overseer.run), which lends it the tools"
            )
        return _Session(self, services, ctx, prompt).run()


def code_tool(spec: ToolSpec, settings: Settings, chat: ChatClient) -> Tool:
    """The registry's factory for ``kind: code``."""
    prompt_file = spec.system_prompt_file or _SYSTEM_PROMPT
    try:
        read_prompt(prompt_file)
    except OSError:
        raise ConfigError(
            f"tool {spec.name!r}: prompt file {prompt_file!r} was not found"
        ) from None
    return CodeTool(
        name=spec.name,
        description=spec.description,
        chat=chat,
        nodes=settings.nodes,
        timeout=spec.timeout or settings.run.step_timeout or settings.nodes.default_timeout,
        system_prompt=spec.system_prompt or "",
        system_prompt_file=prompt_file,
        model=spec.model,
        temperature=spec.temperature,
        max_tokens=spec.max_tokens or settings.run.step_max_tokens,
        max_concurrency=spec.max_concurrency,
    )


@dataclass
class _Attempt:
    error: str | None
    stderr: str = ""
    output: str = ""


class _Session:
    """One code step: ask for a node, run it, ask for a fix while allowed."""

    def __init__(
        self, tool: CodeTool, services: RunServices, ctx: CallContext, prompt: str
    ) -> None:
        self.tool = tool
        self.services = services
        self.ctx = ctx
        self.prompt = prompt
        self.usage = Usage()
        self.model = ""
        self.calls = 0

    def run(self) -> ToolResult:
        isolation = self._isolation()
        messages = self._opening()
        reply = self._ask(messages)
        attempt = 1
        while True:
            result = self._try(extract_code(reply.text), attempt, isolation)
            if result.error is None:
                return ToolResult(output=result.output, usage=self.usage, model=self.model)
            if not self._may_fix(attempt):
                raise ToolError(_failure_message(result, attempt))
            messages += [{"role": "assistant", "content": reply.text}, _fix_message(result)]
            reply = self._ask(messages)
            attempt += 1

    def _isolation(self) -> Isolation:
        try:
            return decide(self.tool.nodes.sandbox)
        except SandboxUnavailable as exc:
            raise ToolError(f"tool {self.tool.name!r}: {exc}") from None

    def _opening(self) -> list[Message]:
        tools = node_tools(self.services.registry)
        lines = "\n".join(f"- {n}: {t.description}" for n, t in tools.items()) or "(none)"
        modules = ", ".join(sorted({"node_runtime", *self.tool.nodes.allowed_modules}))
        prompt_file = self.tool.system_prompt_file
        system = self.tool.system_prompt or render(prompt_file, tools=lines, modules=modules)
        user = render("node_user.md", prompt=self.prompt)
        return [{"role": "system", "content": system}, {"role": "user", "content": user}]

    def _ask(self, messages: list[Message]) -> ChatReply:
        tool = self.tool
        reply = tool.chat.complete(
            ChatRequest(
                messages=list(messages),
                model=tool.model,
                temperature=tool.temperature,
                max_tokens=tool.max_tokens,
                timeout=self.ctx.remaining(),
            )
        )
        self.usage += reply.usage
        self.services.meter.add_live(self.ctx.step_id, reply.usage)  # for the budget, right away
        self.model = reply.model or self.model
        return reply

    def _may_fix(self, attempt: int) -> bool:
        if attempt > self.tool.nodes.max_fixes or self.ctx.cancelled.is_set():
            return False
        remaining = self.ctx.remaining()
        return remaining is None or remaining > 0

    def _try(self, code: str, attempt: int, isolation: Isolation) -> _Attempt:
        problems = check_code(code, self.tool.nodes.allowed_modules)
        if problems:
            return _Attempt(f"the node was rejected before running: {'; '.join(problems)}")
        timeout = self._timeout()
        broker = Broker(
            self.services,
            step_id=self.ctx.step_id,
            slot=slot_of(self.ctx),
            deadline=time.monotonic() + timeout,
        )
        self._started(attempt, isolation)
        run = self._run(code, isolation, timeout, broker)
        self.usage += broker.usage
        self.calls += broker.calls
        result = _judge(run, broker)
        self._finished(attempt, run, result)
        return result

    def _run(self, code: str, isolation: Isolation, timeout: float, broker: Broker) -> NodeRun:
        payload = {"task": self.ctx.task or self.prompt, "inputs": dict(self.ctx.inputs)}
        nodes = self.tool.nodes
        return run_node(
            code,
            payload,
            isolation=isolation,
            settings=nodes.sandbox,
            timeout=timeout,
            max_output=nodes.max_output_bytes,
            channel=broker,
            cancelled=self.ctx.cancelled,
        )

    def _timeout(self) -> float:
        """The tool's timeout, ending a little before the step's so the node is stopped (and
        cleaned up) by the sandbox rather than abandoned by the executor."""
        remaining = self.ctx.remaining()
        if remaining is None:
            return self.tool.timeout
        return max(0.001, min(self.tool.timeout, remaining - _BEFORE_STEP_DEADLINE))

    def _started(self, attempt: int, isolation: Isolation) -> None:
        services, step_id = self.services, self.ctx.step_id
        services.bus.emit(NodeStarted(services.since(), step_id, attempt, isolation.as_dict()))
        services.node_log.record(step_id, isolation=isolation.as_dict(), attempts=attempt)

    def _finished(self, attempt: int, run: NodeRun, result: _Attempt) -> None:
        services, step_id = self.services, self.ctx.step_id
        event = NodeFinished(
            services.since(), step_id, attempt, run.duration, result.error, self.calls
        )
        services.bus.emit(event)
        services.node_log.record(
            step_id,
            calls=self.calls,
            error=result.error,
            duration_s=round(run.duration, 4),
            peak_processes=run.peak_processes,
        )


def _judge(run: NodeRun, broker: Broker) -> _Attempt:
    failure = run.failure()
    output = ""
    if failure is None:
        try:
            output = output_text(parse_output(run.stdout))
        except NodeOutputError as exc:
            failure = str(exc)
    if failure is not None and broker.protocol_error:
        failure = f"{failure} ({broker.protocol_error})"
    return _Attempt(failure, run.stderr, output)


def _fix_message(result: _Attempt) -> Message:
    stderr = _last_lines(result.stderr, 40) or "(nothing)"
    return {"role": "user", "content": render("node_fix.md", error=result.error, stderr=stderr)}


def _failure_message(result: _Attempt, attempts: int) -> str:
    tries = "1 attempt" if attempts == 1 else f"{attempts} attempts"
    message = f"the node failed ({tries}): {result.error}"
    tail = _last_lines(result.stderr, _ERROR_LINES)
    return f"{message}\nstderr:\n{tail}" if tail else message


def _last_lines(text: str, count: int) -> str:
    return "\n".join(text.rstrip().splitlines()[-count:])
