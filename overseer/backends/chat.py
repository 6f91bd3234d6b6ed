"""The small interface between overseer and a chat model.

``llm.py`` implements it over the openai client; tests pass scripted fakes. Nothing here does I/O.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from overseer.usage import Usage

__all__ = ["ChatClient", "ChatReply", "ChatRequest", "Message", "StructuredMode"]

Message = dict[str, str]
StructuredMode = Literal["json_schema", "json_object", "text"]


@dataclass(frozen=True)
class ChatRequest:
    """One chat completion to make.

    ``schema`` asks for JSON matching that JSON Schema; how it is asked for depends on the
    backend's structured-output mode (``json_schema``, ``json_object`` with a schema, or plain text
    parsed leniently by the caller). ``timeout`` bounds this call in seconds. Once ``cancel`` is
    set, the call stops as soon as it can (a ``CancelToken`` also aborts a reply in flight) and
    raises ``Cancelled``; it is not part of the request's value (equality, repr).

    ``on_delta`` asks for the reply as it is written: a backend that can stream calls it with
    each piece of text as it arrives, on the calling thread, and with ``""`` when a streamed
    attempt starts (so a transport retry that starts the reply over is visible: the text before
    it is void). A backend that cannot stream never calls it and returns the reply whole; the
    reply returned is the whole text either way. Not part of the request's value either.
    """

    messages: list[Message]
    model: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    schema: dict[str, Any] | None = None
    schema_name: str = "response"
    timeout: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    cancel: threading.Event | None = field(default=None, compare=False, repr=False)
    on_delta: Callable[[str], None] | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class ChatReply:
    text: str
    usage: Usage
    model: str = ""
    finish_reason: str | None = None
    attempts: int = 1


class ChatClient(Protocol):
    """Anything that can answer a ``ChatRequest``. Raises ``BackendError`` subclasses."""

    def complete(self, request: ChatRequest) -> ChatReply: ...
