"""A fake server for batch tests: a three-step plan per request, failures on purpose, and a
count of each tool's calls in flight.

Every request of a test batch names itself ``req-N``; the plan's step descriptions carry that
name, so the server can tell which request each call belongs to. A request containing ``fail``
gets a plan whose one step the server rejects (400); one containing ``noplan`` gets no valid plan.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.clihelp import role_of, user_text
from tests.fake_openai import FakeOpenAI, FakeReply
from tests.fakes import JOIN_ANSWER, plan_json

_NAME = re.compile(r"req-\d+")


def name_in(body: dict[str, Any]) -> str:
    """The ``req-N`` a chat request belongs to ('' if none)."""
    found = _NAME.findall(" ".join(str(m.get("content", "")) for m in body["messages"]))
    return str(found[-1]) if found else ""


def request_in(body: dict[str, Any]) -> str:
    """The request a planner call is about: the last ``Request:`` line (examples come first,
    repairs after it)."""
    for message in reversed(body["messages"]):
        for line in str(message.get("content", "")).splitlines():
            if line.startswith("Request: "):
                return line.removeprefix("Request: ")
    return ""


def plan_for(name: str, request: str) -> str:
    if "noplan" in request:
        return "this is not a plan"
    if "fail" in request:
        return plan_json(("step1", f"Doomed step of {name}", "general", []))
    return plan_json(
        ("step1", f"Write a joke for {name}", "content_generator", []),
        ("step2", f"Translate to French for {name}", "translator", ["step1"]),
        ("step3", f"Translate to Spanish for {name}", "translator", ["step1"]),
    )


class BatchServer:
    """The fake server's responder and what it saw; thread-safe."""

    def __init__(self, step_latency: float = 0.0) -> None:
        self.step_latency = step_latency
        self.lock = threading.Lock()
        self.planned: Counter[str] = Counter()  # req-N -> plan calls
        self.in_flight: Counter[str] = Counter()  # tool (or "steps": all) -> calls now
        self.most: Counter[str] = Counter()  # tool -> most calls at once
        self.hold_from: int | None = None  # plan calls of req-N, N >= this, wait for release
        self.release = threading.Event()
        self.held: set[str] = set()  # requests whose plan call is being held
        self.holding = threading.Condition(self.lock)
        self.overlap = threading.Event()  # two translator calls were in flight at once

    def respond(self, body: dict[str, Any]) -> FakeReply | str:
        kind, name = role_of(body), name_in(body)
        if kind == "plan":
            return self._plan(body, name)
        if kind == "answer":
            return f"THE ANSWER for {name}"
        if kind == "join":  # the joiner after each round: no step, no tool cap; it answers
            return JOIN_ANSWER
        return self._step(body, name)

    def _plan(self, body: dict[str, Any], name: str) -> FakeReply | str:
        held = self.hold_from is not None and int(name.split("-")[1]) >= self.hold_from
        with self.lock:
            self.planned[name] += 1
            if held:
                self.held.add(name)
                self.holding.notify_all()
        reply = plan_for(name, request_in(body))
        return FakeReply(content=reply, wait=self.release) if held else reply

    def _step(self, body: dict[str, Any], name: str) -> FakeReply | str:
        text = user_text(body)
        if "Doomed" in text:
            return FakeReply(status=400, content="this step is doomed")
        tool = "translator" if "Translate" in text else "other"
        with self.lock:
            for counted in (tool, "steps"):
                self.in_flight[counted] += 1
                self.most[counted] = max(self.most[counted], self.in_flight[counted])
            if self.in_flight["translator"] >= 2:
                self.overlap.set()
        try:
            if tool == "translator":
                self.overlap.wait(2.0)  # the first translator call waits for a second one
            if self.step_latency:
                time.sleep(self.step_latency)  # the server's own latency, not a test's wait
            return f"did: {text.splitlines()[0]}"
        finally:
            with self.lock:
                self.in_flight[tool] -= 1
                self.in_flight["steps"] -= 1

    def wait_held(self, count: int, timeout: float = 60.0) -> None:
        """Block until ``count`` requests have their plan call held."""
        with self.holding:
            ok = self.holding.wait_for(lambda: len(self.held) >= count, timeout)
        assert ok, f"only {len(self.held)} plan calls were held"


@contextmanager
def batch_server(step_latency: float = 0.0) -> Iterator[tuple[FakeOpenAI, BatchServer]]:
    state = BatchServer(step_latency)
    with FakeOpenAI(state.respond) as fake:
        yield fake, state


def request_text(number: int) -> str:
    """The request of line ``number``: every 10th fails, the others succeed."""
    return f"req-{number} fail" if number % 10 == 0 else f"req-{number} write a joke"


def write_requests(path: Path, count: int, *, with_ids: bool = True) -> list[str]:
    """A JSON Lines file of ``count`` requests; returns their ids."""
    lines, ids = [], []
    for number in range(1, count + 1):
        ident = f"id-{number}"
        entry: Any = {"id": ident, "request": request_text(number)}
        lines.append(json.dumps(entry if with_ids else request_text(number)))
        ids.append(ident if with_ids else str(number))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return ids


def read_output(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def expected_status(ident: str) -> str:
    number = int(ident.rsplit("-", 1)[-1])
    return "failed" if number % 10 == 0 else "succeeded"
