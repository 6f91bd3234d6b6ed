"""What the tests of the openai-client backend share: the fake endpoint, the key that must never
leak, one request, and completion bodies as an OpenAI-compatible server sends them."""

from __future__ import annotations

from typing import Any

import httpx

from overseer.backends.chat import ChatRequest

BASE_URL = "http://llm.test/v1"
ENDPOINT = f"{BASE_URL}/chat/completions"
API_KEY = "sk-test-SECRET-0123456789"
MODEL = "test-model"
MESSAGES = [{"role": "user", "content": "Say hi"}]
REQUEST = ChatRequest(messages=MESSAGES)


def completion(
    content: str = "hi",
    *,
    finish_reason: str | None = "stop",
    usage: dict[str, int] | None = None,
    model: str = MODEL,
) -> dict[str, Any]:
    message = {"role": "assistant", "content": content}
    body: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
    }
    if usage is not None:
        body["usage"] = usage
    return body


def ok(content: str = "hi", **kwargs: Any) -> httpx.Response:
    kwargs.setdefault("usage", {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9})
    return httpx.Response(200, json=completion(content, **kwargs))


def refuse_to_sleep(seconds: float) -> None:
    """A retry policy's sleep where no retry wait is expected."""
    raise AssertionError(f"unexpected retry wait of {seconds}s")
