"""Which backend a run talks to, and the chat client for it.

A configured backend (a base URL or an API key) is used as it is; with none, the embedded model's
server is started and owned by the caller's ``ExitStack`` (or stopped when the process exits).
"""

from __future__ import annotations

import atexit
import os
import sys
from contextlib import ExitStack

from overseer.backends.chat import ChatClient
from overseer.config import Settings

__all__ = ["make_chat", "open_backend"]


def open_backend(settings: Settings, resources: ExitStack) -> Settings:
    """``settings`` unchanged when they name a backend (a base URL or an API key); otherwise the
    embedded model's server is started, owned by ``resources``, and the settings point at it.

    Raises ``ConfigError`` naming every way to get a backend when the embedded one is not installed.
    """
    backend = settings.backend
    if backend.base_url is not None or os.environ.get(backend.api_key_env):
        return settings
    from overseer.backends import local_model

    server = local_model.local_server(
        settings.local, backend.api_key_env, workers=settings.run.max_workers
    )
    return local_model.point_settings_at(settings, resources.enter_context(server))


def make_chat(settings: Settings, resources: ExitStack | None = None) -> ChatClient:
    """The openai-backed client the settings describe; the key comes from the environment.

    With no backend configured this is the embedded model (see ``open_backend``); ``resources``
    owns its server, else it is stopped when the process exits. A client of the embedded server
    reports the server's death (a crash) rather than a broken connection.
    """
    from overseer.backends.llm import OpenAIChat, RetryPolicy

    settings = open_backend(settings, resources if resources is not None else _at_exit())
    backend = settings.backend
    retry = backend.retry
    api_key = os.environ.get(backend.api_key_env) or None
    chat = OpenAIChat(
        base_url=backend.base_url,
        api_key=api_key,
        model=backend.model,
        structured_output=backend.structured_output,
        request_timeout=backend.request_timeout,
        retry=RetryPolicy(retry.max_attempts, retry.initial_wait, retry.max_wait, retry.jitter),
        stream=backend.stream,
        max_connections=settings.run.max_workers,  # one pooled connection per running step
    )
    return _watched(chat, backend.base_url)


def _watched(chat: ChatClient, base_url: str | None) -> ChatClient:
    """``chat``, watched by the embedded server this process started at ``base_url`` if any.
    Only ``local_model`` starts one, so until it is imported none runs: its import (some 30 ms)
    is spared when a server is named."""
    if "overseer.backends.local_model" not in sys.modules:
        return chat
    from overseer.backends import local_model

    server = local_model.running_at(base_url)
    return chat if server is None else local_model.WatchedChat(chat, server)


def _at_exit() -> ExitStack:
    stack = ExitStack()
    atexit.register(stack.close)
    return stack
