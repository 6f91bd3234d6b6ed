"""Helpers for the streamed-plan tests: step objects, plans cut into pieces, a role script."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from overseer import Overseer
from overseer.config import load_settings
from overseer.events import Event
from tests.clihelp import role_of, user_text
from tests.fake_stream import Hold, Piece, Streamed, pieces_of

__all__ = [
    "Roles",
    "engine_for",
    "first_line",
    "plan_pieces",
    "step_obj",
]


def step_obj(
    number: int, description: str, tool: str = "general", deps: Sequence[int] = ()
) -> dict[str, Any]:
    return {
        "step_id": f"step{number}",
        "description": description,
        "tool": tool,
        "depends_on": [f"step{d}" for d in deps],
        "parallel_group": None,
    }


def plan_pieces(
    steps: Sequence[dict[str, Any]],
    holds: dict[int, threading.Event] | None = None,
    *,
    head: str = '{"steps": [',
    tail: str = "]}",
    size: int = 4,
) -> list[Piece]:
    """The plan as pieces of ``size`` characters, with a ``Hold`` after step object ``i`` (from 0)
    for each ``holds[i]``: the stream waits there until that event is set."""
    pieces: list[Piece] = []
    for index, step in enumerate(steps):
        text = (head if index == 0 else ", ") + json.dumps(step)
        pieces += pieces_of(text, size)
        if holds and index in holds:
            pieces.append(Hold(holds[index]))
    return pieces + pieces_of(tail if steps else head + tail, size)


def first_line(body: dict[str, Any]) -> str:
    return user_text(body).splitlines()[0]


@dataclass
class Roles:
    """A script by role: plans and joins in order (a list each), steps by their first line."""

    plans: list[Streamed | str]
    joins: list[Streamed | str] = field(default_factory=list)
    step: Callable[[dict[str, Any]], Streamed | str] | None = None
    seen: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, body: dict[str, Any]) -> Streamed | str:
        role = role_of(body)
        with self.lock:
            self.seen.append((role, body))
            if role == "plan":
                return self.plans.pop(0)
            if role == "join":
                if not self.joins:
                    return json.dumps({"decision": "answer", "reason": "done", "steps": []})
                return self.joins.pop(0)
        if role == "answer":
            return "THE ANSWER"
        return self.step(body) if self.step else "did: " + first_line(body)

    def bodies(self, role: str) -> list[dict[str, Any]]:
        with self.lock:
            return [b for r, b in self.seen if r == role]

    def step_lines(self) -> list[str]:
        return [first_line(b) for b in self.bodies("step")]


def engine_for(url: str, **overrides: Any) -> tuple[Overseer, list[Event]]:
    """An engine on the fake server (real openai client, real HTTP), with its events."""
    values: dict[str, Any] = {"backend.base_url": url, "backend.model": "fake-model"}
    values.update(overrides)
    engine = Overseer(load_settings(overrides=values), journal=False)
    events: list[Event] = []
    engine.subscribe(events.append)
    return engine, events
