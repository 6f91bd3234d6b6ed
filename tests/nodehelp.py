"""Helpers for node tests: fake tools, run services, and running a node's code in the sandbox."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from overseer.config import load_settings
from overseer.config.nodes import SandboxSettings
from overseer.core.gate import Slot
from overseer.core.toolbase import Tool
from overseer.events import Event, EventBus
from overseer.nodes.broker import Broker
from overseer.nodes.isolation import capabilities, decide
from overseer.nodes.sandbox import NodeRun, run_node
from overseer.tools.registry import FunctionTool, ToolRegistry
from overseer.tools.services import RunServices

BACKENDS = ("bwrap", "unshare", "none")


def tool(name: str, function: Callable[..., Any], cap: int | None = None) -> FunctionTool:
    return FunctionTool(name, f"the {name} tool", function, max_concurrency=cap)


def upper(prompt: str) -> str:
    return prompt.upper()


def failing(prompt: str) -> str:
    raise RuntimeError(f"cannot do {prompt!r}")


class Reporter:
    """A tool that keeps what it is told and lets a test wait for it (e.g. a node's folder)."""

    name = "report"
    description = "tells the test something"
    max_concurrency: int | None = None

    def __init__(self) -> None:
        self.told: list[str] = []
        self.arrived = threading.Event()

    def run(self, prompt: str, options: dict[str, Any], ctx: Any) -> Any:
        from overseer.core.toolbase import ToolResult

        self.told.append(prompt)
        self.arrived.set()
        return ToolResult("noted")

    def first(self) -> str:
        assert self.arrived.wait(60), "the node never reported"
        return self.told[0]


REPORT_FOLDER = "import os\nfrom node_runtime import call_tool\ncall_tool('report', os.getcwd())\n"
"""Node code that tells the ``report`` tool its folder (which is in its command line)."""


class Recorder:
    """An event subscriber that keeps every event."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        with self._lock:
            self.events.append(event)

    def of(self, kind: type[Event]) -> list[Any]:
        with self._lock:
            return [e for e in self.events if isinstance(e, kind)]


def services(*tools: Tool, settings: Any = None, **overrides: Any) -> tuple[RunServices, Recorder]:
    """Run services over ``tools`` (settings from the defaults plus dotted ``overrides``)."""
    chosen = settings or load_settings(overrides=overrides)
    bus, recorder = EventBus(), Recorder()
    bus.subscribe(recorder)
    run = RunServices.for_run(chosen, ToolRegistry(tools), bus, t0=0.0)
    bus.subscribe(run.meter.observe)
    return run, recorder


def sandbox(backend: str = "auto", **changes: Any) -> SandboxSettings:
    return SandboxSettings(backend=backend, **changes)


def run_code(
    code: str,
    run: RunServices | None = None,
    *,
    payload: dict[str, Any] | None = None,
    settings: SandboxSettings | None = None,
    timeout: float = 60.0,
    slot: Slot | None = None,
    cancelled: threading.Event | None = None,
) -> tuple[NodeRun, Broker | None]:
    """Run ``code`` as a node; with ``run`` its tool calls are served by a Broker."""
    chosen = settings or sandbox()
    broker = None if run is None else Broker(run, step_id="s1", slot=slot, deadline=None)
    result = run_node(
        code,
        payload or {"task": "t", "inputs": {}},
        isolation=decide(chosen),
        settings=chosen,
        timeout=timeout,
        max_output=1_000_000,
        channel=broker,
        cancelled=cancelled,
    )
    return result, broker


def require_backend(backend: str) -> None:
    caps = capabilities()
    if backend == "bwrap" and caps.bwrap is None:
        pytest.skip("bubblewrap is not installed or cannot create namespaces here")
    if backend == "unshare" and caps.unshare is None:
        pytest.skip("unshare cannot create user namespaces here")


def processes_with(marker: str) -> list[int]:
    """Pids whose command line holds ``marker`` (zombies, which hold nothing, are skipped)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and entry.name != str(os.getpid()):
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def stderr_json(node: NodeRun, mark: str = "RESULT ") -> Any:
    import json

    line = next(line for line in node.stderr.splitlines() if line.startswith(mark))
    return json.loads(line[len(mark) :])
