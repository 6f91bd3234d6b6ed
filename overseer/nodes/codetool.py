"""The ``code`` tool: the step model writes a Python node for the step, and it runs in a sandbox.

The node is checked before it runs (it parses, it imports only allowed modules), gets the step's
task and its dependencies' outputs as JSON on stdin, may call the run's other tools through
``node_runtime`` (served by ``Broker``), and prints the step's output as one JSON value. A node
that fails (rejected, an exception, bad output, a timeout) goes back to the model with its error
and stderr, ``nodes.max_fixes`` times while the step has time left for another try; then the step
fails with the node's error in one line (its exception and the line of the node that raised it).
The whole stderr (its last 64 KiB) goes into ``NodeFinished`` and the run report's ``nodes``.
"""

from __future__ import annotations

import re
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
_BEFORE_STEP_DEADLINE = 0.1  # seconds
_MIN_NODE_SECONDS = 0.05  # with less left of the step, a node is not started at all
_MIN_FIX_SECONDS = 1.0  # a fix is a model reply and a node run: never asked for with less left
_LAST_LINE_CHARS = 300
_NODE_FRAME = re.compile(r'File "[^"]*/node\.py", line (\d+)')


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
        attempt = 1
        while True:
            began = time.monotonic()
            reply = self._ask(messages)
            result = self._try(extract_code(reply.text), attempt, isolation)
            if result.error is None:
                return ToolResult(output=result.output, usage=self.usage, model=self.model)
            if not self._may_fix(attempt):
                raise ToolError(_failure_message(result, attempt))
            if not self._time_for_fix(time.monotonic() - began):
                raise ToolError(_failure_message(result, attempt) + self._no_time_note())
            messages += [{"role": "assistant", "content": reply.text}, _fix_message(result)]
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
        return attempt <= self.tool.nodes.max_fixes and not self.ctx.cancelled.is_set()

    def _time_for_fix(self, last_took: float) -> bool:
        """Another try needs about what the last one took (a reply, a run), and never under
        a second: a node that used up the step's time is not re-asked with none left."""
        remaining = self.ctx.remaining()
        return remaining is None or remaining >= max(_MIN_FIX_SECONDS, last_took)

    def _no_time_note(self) -> str:
        left = self.ctx.remaining() or 0.0
        return (
            f" (no fix was asked for: {left:.1f}s of the step's {self.tool.timeout:g}s were left)"
        )

    def _try(self, code: str, attempt: int, isolation: Isolation) -> _Attempt:
        problems = check_code(code, self.tool.nodes.allowed_modules)
        if problems:
            return _Attempt(f"the node was rejected before running: {'; '.join(problems)}")
        timeout = self._timeout()
        if timeout < _MIN_NODE_SECONDS:
            return _Attempt(
                f"the step's timeout of {self.tool.timeout:g}s ran out before the node ran"
            )
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
        result = _judge(run, broker, self.tool.timeout)
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
        return max(0.0, min(self.tool.timeout, remaining - _BEFORE_STEP_DEADLINE))

    def _started(self, attempt: int, isolation: Isolation) -> None:
        services, step_id = self.services, self.ctx.step_id
        services.bus.emit(NodeStarted(services.since(), step_id, attempt, isolation.as_dict()))
        services.node_log.record(step_id, isolation=isolation.as_dict(), attempts=attempt)

    def _finished(self, attempt: int, run: NodeRun, result: _Attempt) -> None:
        services, step_id = self.services, self.ctx.step_id
        event = NodeFinished(
            services.since(), step_id, attempt, run.duration, result.error, self.calls, run.stderr
        )
        services.bus.emit(event)
        services.node_log.record(
            step_id,
            calls=self.calls,
            error=result.error,
            stderr=run.stderr,
            duration_s=round(run.duration, 4),
            peak_processes=run.peak_processes,
        )


def _judge(run: NodeRun, broker: Broker, step_timeout: float) -> _Attempt:
    failure = _timeout_words(run, step_timeout) or run.failure()
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


def _timeout_words(run: NodeRun, step_timeout: float) -> str | None:
    """A node cut short by the step's deadline is blamed on the step's timeout, not on the
    sliver of it the node was left with."""
    if run.stopped != "timeout" or run.timeout >= step_timeout:
        return None
    return (
        f"the node timed out and was killed: the step's timeout of {step_timeout:g}s ran out "
        f"after the node had run {run.duration:.1f}s"
    )


def _failure_message(result: _Attempt, attempts: int) -> str:
    """One line: the failure, and the node's last stderr line with the node's line number."""
    tries = "1 attempt" if attempts == 1 else f"{attempts} attempts"
    message = f"the node failed ({tries}): {result.error}"
    summary = _stderr_summary(result.stderr)
    if not summary or summary in message:
        return message
    return f"{message}: {summary}"


def _stderr_summary(stderr: str) -> str:
    """``ValueError: bad (node.py line 3)``: the last line, and the last line of node.py a
    traceback names (the whole stderr is in the run report)."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    if not lines:
        return ""
    last = lines[-1]
    if len(last) > _LAST_LINE_CHARS:
        last = last[: _LAST_LINE_CHARS - 3] + "..."
    frames = _NODE_FRAME.findall(stderr)
    return f"{last} (node.py line {frames[-1]})" if frames else last


def _last_lines(text: str, count: int) -> str:
    return "\n".join(text.rstrip().splitlines()[-count:])
