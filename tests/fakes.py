"""Scripted stand-ins for the chat model (habit 2: they fail loudly when the script runs out)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

from overseer.backends.chat import ChatReply, ChatRequest
from overseer.usage import Usage

Answer = str | ChatReply | Exception


def reply(text: str, prompt_tokens: int = 10, completion_tokens: int = 5, **kw: Any) -> ChatReply:
    return ChatReply(text=text, usage=Usage(prompt_tokens, completion_tokens), model="fake", **kw)


def plan_json(*steps: tuple[str, str, str, list[str]]) -> str:
    """``plan_json(("s1", "Write a joke", "content_generator", []), ...)``."""
    return json.dumps(
        {
            "steps": [
                {
                    "step_id": i,
                    "description": d,
                    "tool": t,
                    "depends_on": deps,
                    "parallel_group": None,
                }
                for i, d, t, deps in steps
            ]
        }
    )


JOIN_ANSWER = json.dumps({"decision": "answer", "reason": "the outputs cover it", "steps": []})


def is_join_request(request: ChatRequest) -> bool:
    return request.schema_name == "joiner_decision"


def join_reply() -> ChatReply:
    """The joiner's "answer", free of tokens, so that scripts written before it still add up."""
    return reply(JOIN_ANSWER, 0, 0)


class ScriptedChat:
    """Answers requests in order from a script; an unexpected extra request fails the test.

    The joiner's requests (after each round) are answered "answer" off the script and recorded
    in ``join_requests``, not ``requests``, unless ``script_joins`` puts them in the script."""

    def __init__(self, *answers: Answer, script_joins: bool = False) -> None:
        self.answers = list(answers)
        self.requests: list[ChatRequest] = []
        self.join_requests: list[ChatRequest] = []
        self.script_joins = script_joins
        self._lock = threading.Lock()

    def complete(self, request: ChatRequest) -> ChatReply:
        with self._lock:
            if is_join_request(request) and not self.script_joins:
                self.join_requests.append(request)
                return join_reply()
            self.requests.append(request)
            if not self.answers:
                raise AssertionError(f"script ran out at request {len(self.requests)}: {request}")
            answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer if isinstance(answer, ChatReply) else reply(answer)


def is_plan_request(request: ChatRequest) -> bool:
    return request.schema_name == "plan"


def is_answer_request(request: ChatRequest) -> bool:
    return "final answer" in request.messages[0]["content"]


class RuleChat:
    """Answers by role: the plan (scripted list), steps (``step`` function), the final answer."""

    def __init__(
        self,
        plans: list[Answer],
        step: Callable[[ChatRequest], Answer] | None = None,
        answer: str = "FINAL ANSWER",
    ) -> None:
        self.plans = list(plans)
        self.step = step or (lambda r: "out:" + r.messages[-1]["content"].splitlines()[0])
        self.answer = answer
        self.requests: list[ChatRequest] = []
        self.join_requests: list[ChatRequest] = []  # answered "answer", as ScriptedChat does
        self._lock = threading.Lock()

    def complete(self, request: ChatRequest) -> ChatReply:
        with self._lock:
            if is_join_request(request):
                self.join_requests.append(request)
                return join_reply()
            self.requests.append(request)
            if is_plan_request(request):
                if not self.plans:
                    raise AssertionError("no more scripted plans")
                result: Answer | None = self.plans.pop(0)
            else:
                result = self.answer if is_answer_request(request) else None
        if result is None:
            result = self.step(request)  # outside the lock: steps must be free to overlap
        if isinstance(result, Exception):
            raise result
        return result if isinstance(result, ChatReply) else reply(result)

    def step_requests(self) -> list[ChatRequest]:
        return [r for r in self.requests if not is_plan_request(r) and not is_answer_request(r)]
