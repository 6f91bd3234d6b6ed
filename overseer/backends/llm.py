"""The chat client over any OpenAI-compatible server: the one module that imports ``openai``.

``OpenAIChat`` implements ``ChatClient``. It holds the only transport retry layer of overseer (the
openai client is built with ``max_retries=0``): transient failures are retried with exponential
backoff and jitter, honouring ``Retry-After``; permanent ones fail at once with one clear line.

A request may carry a cancel token (``ChatRequest.cancel``). Once it is set the call stops: no
new attempt, no backoff wait, and with a ``CancelToken`` the HTTP exchange in flight is aborted
by shutting down the socket the calling thread is reading or writing (see ``_Aborter``); the call
raises ``Cancelled``. Requests without a token behave as before.

What a call costs: ``openai`` is imported on the first call, not with this module (its import
builds some 660 pydantic models, about half a second); the command line imports it while it
starts, with the collector paused (``import_sdk``, ``interfaces/startup.py``). A
plain call serialises its body here and sends it as the client's ``post`` would: the client
builds the chat completions request once (base URL, auth, default headers), and each body then
goes through the httpcore pool of the client's own transport (``prepared.py``), its
failures raised as the client's own exceptions; the reply is read with ``_parse_body``. That
skips the SDK's transform of the params, its rebuilding of the same request on every call and
its pydantic parse of the reply: about 0.4 ms of CPU a call instead of about 1 ms, held under the
GIL while 50 steps queue behind it. The request's head and body leave in one write. One
``OpenAIChat`` holds one openai client, so one connection pool, sized for the steps that run at
once (``max_connections``). Streamed calls still go through ``chat.completions.create``.
"""

from __future__ import annotations

import contextlib
import email.utils
import ipaddress
import json
import logging
import math
import os
import random
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property, partial
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit, urlunsplit

import httpcore2
import httpx2

from overseer.backends.chat import ChatReply, ChatRequest, Message, StructuredMode
from overseer.backends.prepared import PreparedPost
from overseer.backends.tokens import count_messages, count_tokens
from overseer.core.cancel import CancelToken
from overseer.errors import BackendError, Cancelled, PermanentBackendError, TransientBackendError
from overseer.usage import Usage

if TYPE_CHECKING:
    import openai
    import tenacity

__all__ = ["OpenAIChat", "RetryPolicy", "classify_error", "import_sdk"]

log = logging.getLogger(__name__)

_PLACEHOLDER_API_KEY = "not-needed"
_OPENAI_URL = "https://api.openai.com/v1"  # the SDK's own default, when nothing names a server
_SERVER_MESSAGE_LIMIT = 200
_BODY_PREVIEW = 80
_REDACTED = "[redacted]"
_RETRY_AFTER_STATUSES = frozenset({429, 503})
_TRANSIENT_4XX = frozenset({408, 409, 425, 429})


@dataclass(frozen=True)
class RetryPolicy:
    """How transient failures are retried: ``max_attempts`` in all, waits growing from
    ``initial_wait`` (doubling, plus up to ``jitter`` seconds at random) and never above
    ``max_wait``, which also caps a server's ``Retry-After``."""

    max_attempts: int = 4
    initial_wait: float = 0.5
    max_wait: float = 20.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, not {self.max_attempts!r}")
        if min(self.initial_wait, self.max_wait, self.jitter) < 0:
            raise ValueError("retry waits and jitter cannot be negative")

    def backoff(self, attempt: int) -> float:
        """The wait after failed attempt number ``attempt`` (1-based)."""
        exponent = min(attempt - 1, 64)
        wait = self.initial_wait * 2.0**exponent + random.uniform(0, self.jitter)
        return min(wait, self.max_wait)


_DEFAULT_RETRY = RetryPolicy()


class _MalformedReply(Exception):
    """A 200 whose body is not a chat completion (HTML, truncated JSON, no choices, cut stream)."""


def _caught() -> tuple[type[Exception], ...]:
    """What one attempt may raise that ``classify_error`` understands; anything else is a bug.
    (A function, so that naming openai's error class does not import openai.)"""
    import openai

    # RecursionError: a hostile server's deeply nested JSON, parsed inside the SDK when streamed.
    return (openai.OpenAIError, httpx2.HTTPError, ValueError, RecursionError, _MalformedReply)


def import_sdk() -> None:
    """Import the openai SDK on this thread now (what every call needs), rather than on the
    first call; raises ``ImportError`` when it is missing."""
    import openai  # noqa: F401


_CHUNK_LOCK = threading.Lock()
_CHUNKS_BUILT: list[bool] = []
_SAMPLE_CHUNK: dict[str, Any] = {
    "id": "chatcmpl-warm",
    "object": "chat.completion.chunk",
    "created": 0,
    "model": "m",
    "choices": [
        {"index": 0, "delta": {"role": "assistant", "content": "x"}, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
}


def _build_chunk_models() -> None:
    """Build the SDK's stream chunk models once, in one thread, before any stream is read.

    pydantic builds a deferred model on its first use, and that build is not thread-safe
    (pydantic issues 11849 and 13419): a batch whose plans stream at once on one client once
    failed with a ``PydanticUserError`` from inside the SDK. Every stream calls this before it
    starts, so the first builds them here, under a lock, and leaves nothing for the streams to
    build concurrently; plain calls never read a chunk and never pay for it (some 12 ms)."""
    with _CHUNK_LOCK:
        if _CHUNKS_BUILT:
            return
        _CHUNKS_BUILT.append(True)
        with contextlib.suppress(Exception):  # a stream would then say what is wrong
            from openai._models import construct_type
            from openai.types.chat import ChatCompletionChunk

            construct_type(type_=ChatCompletionChunk, value=_SAMPLE_CHUNK)  # as a stream does


@dataclass
class _StreamState:
    """What a streamed reply has delivered so far."""

    parts: list[str] = field(default_factory=list)
    finish_reason: str | None = None
    usage: Any = None
    model: str | None = None

    def add(self, chunk: Mapping[str, Any]) -> None:
        self.model = chunk.get("model") or self.model
        self.usage = chunk.get("usage") or self.usage
        for choice in _choices(chunk, allow_empty=True):
            delta = choice.get("delta") or {}
            if isinstance(delta, Mapping) and isinstance(delta.get("content"), str):
                self.parts.append(delta["content"])
            self.finish_reason = _str_or_none(choice.get("finish_reason")) or self.finish_reason


class OpenAIChat:
    """``ChatClient`` over an OpenAI-compatible ``/v1/chat/completions`` endpoint."""

    streams = True
    """It honours ``ChatRequest.on_delta`` (streaming that request) whatever ``stream`` says."""

    def __init__(
        self,
        *,
        base_url: str | None,
        api_key: str | None,
        model: str,
        structured_output: StructuredMode = "json_schema",
        request_timeout: float = 120.0,
        retry: RetryPolicy = _DEFAULT_RETRY,
        stream: bool = False,
        sleep: Callable[[float], None] = time.sleep,
        max_connections: int | None = None,
    ) -> None:
        self._api_key = api_key
        self._model = model
        self._structured_output = structured_output
        self._retry = retry
        self._stream = stream
        self._sleep = sleep
        self._aborter = _Aborter()
        self._base_url = base_url or os.environ.get("OPENAI_BASE_URL") or _OPENAI_URL
        self._timeout = request_timeout
        self._max_connections = max_connections
        self._sdk_client: openai.OpenAI | None = None
        self._client_lock = threading.Lock()
        self._where = _display_url(self._base_url.rstrip("/"))

    @property
    def _client(self) -> openai.OpenAI:
        """The openai client, made (and openai imported) on the first call, then shared by
        every call of this chat client: one connection pool, as many connections as steps."""
        client = self._sdk_client
        if client is None:
            with self._client_lock:
                client = self._sdk_client = self._sdk_client or self._make_client()
        return client

    def _make_client(self) -> openai.OpenAI:
        import openai

        http_client = _AbortableClient(
            self._aborter,
            timeout=self._timeout,
            trust_env=not _is_loopback(self._base_url),
            limits=_limits(self._max_connections),
        )
        return openai.OpenAI(
            base_url=self._base_url,
            api_key=self._api_key or _PLACEHOLDER_API_KEY,
            timeout=self._timeout,
            max_retries=0,
            http_client=http_client,
        )

    def __repr__(self) -> str:
        return f"OpenAIChat(base_url={self._where!r}, model={self._model!r})"

    @property
    def base_url(self) -> str:
        """The server's base URL, with any credentials in it removed."""
        return self._where

    @property
    def model(self) -> str:
        """The model asked for when a request names none."""
        return self._model

    def complete(self, request: ChatRequest) -> ChatReply:
        """Answer ``request``, retrying transient failures; raises ``BackendError``, or
        ``Cancelled`` once ``request.cancel`` is set."""
        if request.cancel is None:
            return self._complete(request)
        with self._aborter.watching(request.cancel):
            return self._complete(request)

    def _complete(self, request: ChatRequest) -> ChatReply:
        """The first attempt, then (on a transient failure) the retry loop. Most calls succeed
        at once: building tenacity's loop for them costs some 45 us of CPU a call, so the loop
        is built only when there is something to retry, and starts from that first failure."""
        try:
            return self._attempt(request)  # a reply says attempts=1 unless told otherwise
        except BackendError as err:
            if isinstance(err, TransientBackendError) and self._retry.max_attempts > 1:
                return self._retried(request, err)
            err.attempts = 1
            raise

    def _retried(self, request: ChatRequest, first: TransientBackendError) -> ChatReply:
        """Attempts 2 and on, as tenacity's loop runs them after ``first`` failed attempt 1."""
        attempt_number = 0
        try:
            for attempt in self._retrying(request.cancel):
                attempt_number = attempt.retry_state.attempt_number
                with attempt:
                    if attempt_number == 1:
                        raise first  # already made: its wait, its log line, then attempt 2
                    reply = self._attempt(request)
        except BackendError as err:
            err.attempts = attempt_number
            raise
        return replace(reply, attempts=attempt_number)

    def _retrying(self, cancel: threading.Event | None) -> tenacity.Retrying:
        import tenacity  # only once an attempt failed: importing it costs some 40 ms at start-up

        return tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self._retry.max_attempts),
            wait=self._wait,
            retry=tenacity.retry_if_exception_type(TransientBackendError),
            sleep=partial(self._pause, cancel),
            before_sleep=_log_retry,
            reraise=True,
        )

    def _pause(self, cancel: threading.Event | None, seconds: float) -> None:
        """The backoff wait: on the cancel token when there is one, so a cancel cuts it short."""
        if cancel is None:
            self._sleep(seconds)
        elif cancel.wait(seconds):
            raise self._cancelled()

    def _cancelled(self) -> Cancelled:
        return Cancelled(f"the call to the server at {self._where!r} was cancelled")

    def _stop_if_cancelled(self, request: ChatRequest, cause: BaseException | None = None) -> None:
        if request.cancel is not None and request.cancel.is_set():
            raise self._cancelled() from cause

    def _wait(self, state: tenacity.RetryCallState) -> float:
        """Seconds before the next attempt: the server's ``Retry-After`` or our backoff."""
        error = state.outcome.exception() if state.outcome else None
        hinted = _retry_after(error.__cause__) if error is not None else None
        if hinted is not None:
            return min(hinted, self._retry.max_wait)
        return self._retry.backoff(state.attempt_number)

    def _attempt(self, request: ChatRequest) -> ChatReply:
        self._stop_if_cancelled(request)
        try:
            if self._stream or request.on_delta is not None:
                return self._complete_streamed(self._params(request), request)
            return self._complete_plain(request)
        except _caught() as exc:
            self._stop_if_cancelled(request, exc)  # the abort, not the server, ended it
            raise self._classify(exc, request.model or self._model) from exc

    def _classify(self, exc: BaseException, model: str) -> BackendError:
        return classify_error(exc, base_url=self._where, model=model, api_key=self._api_key)

    def _params(self, request: ChatRequest) -> dict[str, Any]:
        """Keyword arguments for ``chat.completions.create``."""
        params: dict[str, Any] = {
            "model": request.model or self._model,
            "messages": request.messages,
        }
        optional = {
            "temperature": request.temperature,
            "max_tokens": request.max_tokens,
            "timeout": request.timeout,
            "response_format": self._response_format(request),
            "extra_body": dict(request.extra) or None,
        }
        params.update((key, value) for key, value in optional.items() if value is not None)
        if self._stream:
            params.update(stream=True, stream_options={"include_usage": True})
        return params

    def _response_format(self, request: ChatRequest) -> dict[str, Any] | None:
        """How the request's schema is asked for in this server's dialect."""
        if request.schema is None or self._structured_output == "text":
            return None
        if self._structured_output == "json_object":
            return {"type": "json_object", "schema": request.schema}
        spec = {"name": request.schema_name, "schema": request.schema, "strict": False}
        return {"type": "json_schema", "json_schema": spec}

    def _body(self, request: ChatRequest) -> dict[str, Any]:
        """The JSON body of a plain (not streamed) request, as the server will read it."""
        body: dict[str, Any] = {"model": request.model or self._model, "messages": request.messages}
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if request.max_tokens is not None:
            body["max_tokens"] = request.max_tokens
        response_format = self._response_format(request)
        if response_format is not None:
            body["response_format"] = response_format
        body.update(request.extra)  # as ``extra_body`` would: on top of the rest
        return body

    def _complete_plain(self, request: ChatRequest) -> ChatReply:
        """One plain request, sent as the client's own ``post`` would send it (see ``_prepare``)
        but without ``chat.completions.create``'s transform of the params or its pydantic
        parse of the reply. The body is serialised once, here; ``_parse_body`` reads it."""
        body = self._body(request)
        content = json.dumps(body, separators=(",", ":")).encode()
        post = self._prepared
        text = self._send(post, content, request) if post else self._post(content, request)
        return self._reply(_parse_body(text), body["model"], request)

    def _post(self, content: bytes, request: ChatRequest) -> str:
        """The body through the client's ``post``: its whole request path, redirects and all."""
        options: dict[str, Any] = {} if request.timeout is None else {"timeout": request.timeout}
        raw = self._client.post(
            "/chat/completions",
            cast_to=httpx2.Response,
            content=content,
            options=cast("openai.RequestOptions", options),
        )
        return raw.text

    def _send(self, post: PreparedPost, content: bytes, request: ChatRequest) -> str:
        """The body through the prepared POST, failing with the client's own exceptions: the
        same ``openai`` error for each status (``_make_status_error_from_response``), and
        ``APITimeoutError`` / ``APIConnectionError`` from the errors its ``request`` turns into
        them (its own lists). A redirect is left to the client, which follows it."""
        import openai
        from openai._httpx2 import request_exceptions, timeout_exceptions

        timeout = request.timeout
        try:
            reply = post.send(content, timeout)
        except timeout_exceptions() as err:
            raise openai.APITimeoutError(request=post.request(content, timeout)) from err
        except request_exceptions() as err:
            raise openai.APIConnectionError(request=post.request(content, timeout)) from err
        if reply.ok:
            return reply.text
        if reply.redirect:
            return self._post(content, request)
        response = reply.response(post.request(content, timeout))
        raise self._client._make_status_error_from_response(response) from None

    @cached_property
    def _prepared(self) -> PreparedPost | None:
        """The chat completions POST, prepared on the first plain call (see ``_prepare``)."""
        return _prepare(self._client)

    def _reply(self, body: dict[str, Any], asked: str, request: ChatRequest) -> ChatReply:
        choice = _choices(body)[0]
        message = choice.get("message")
        if not isinstance(message, Mapping):
            raise _MalformedReply("a choice without a message")
        text = message.get("content") or ""
        if not isinstance(text, str):
            raise _MalformedReply(f"message content of type {type(text).__name__}")
        model = body.get("model") or asked
        usage = _usage(body.get("usage"), request.messages, text, model)
        return ChatReply(text, usage, str(model), _str_or_none(choice.get("finish_reason")))

    def _complete_streamed(self, params: dict[str, Any], request: ChatRequest) -> ChatReply:
        """One streamed attempt; each piece of text also goes to ``request.on_delta``."""
        params = {**params, "stream": True, "stream_options": {"include_usage": True}}
        state = _StreamState()
        deliver = request.on_delta or _ignore
        deliver("")  # a new attempt: whatever an earlier one delivered is void
        client = self._client
        _build_chunk_models()  # before the first stream reads a chunk, never for plain calls
        with client.chat.completions.create(**params) as stream:
            for chunk in stream:
                seen = len(state.parts)
                state.add(_chunk_dict(chunk))
                for piece in state.parts[seen:]:
                    if piece:
                        deliver(piece)
        if state.finish_reason is None:
            raise _MalformedReply("a stream that ended before the reply was finished")
        text = "".join(state.parts)
        model = state.model or params["model"]
        usage = _usage(state.usage, request.messages, text, model)
        return ChatReply(text, usage, str(model), state.finish_reason)


def _prepare(client: openai.OpenAI) -> PreparedPost | None:
    """The request ``client.post("/chat/completions", ...)`` builds, built once by the client
    itself (its ``_build_request``: base URL, auth and default headers, the SDK's headers, its
    timeout) and sent from then on through the pool of its transport for that URL. A call's own
    timeout replaces the client's in the request's extensions and in the one header where the
    SDK states it (``_TIMEOUT_HEADER``), as the SDK would put it there.

    None, so that every call goes through ``post``, when the client computes something per
    request (an API key provider, workload identity, a provider's hooks, an idempotency key) or its
    transport is not a plain pool, or when this SDK builds its requests differently."""
    from openai._models import FinalRequestOptions

    if any(getattr(client, hook, None) is not None for hook in _PER_REQUEST):
        return None
    try:
        options = FinalRequestOptions.construct(method="post", url="/chat/completions", content=b"")
        template = client._build_request(client._prepare_options(options))
        client._prepare_request(template)
        return PreparedPost.through(client._client, template, timeout_header=_TIMEOUT_HEADER)
    except Exception:  # a different SDK: the slower path still works
        log.debug("the chat completions request cannot be prepared; using post", exc_info=True)
        return None


_TIMEOUT_HEADER = b"x-stainless-read-timeout"  # str() of the read timeout (_build_headers)
_PER_REQUEST = (
    "_api_key_provider",
    "_provider_runtime",
    "_workload_identity_auth",
    "_idempotency_header",  # a key of its own on each request
)


def _ignore(piece: str) -> None:
    """The ``on_delta`` of a request that did not ask for one."""


# -- aborting the HTTP exchange of a cancelled call ------------------------------------------------


class _Aborter:
    """Knows which socket each thread is reading or writing for which call, and aborts it.

    ``watching(cancel)`` ties the calling thread's socket I/O to ``cancel`` for one call. Every
    read and write of a ``_TrackedStream`` first records (thread -> stream, token), then checks the
    token; a cancel sets the token, then shuts down the stream the thread has recorded for that
    token. Under one lock the two orders cover each other: either the cancel finds the stream
    and its shutdown wakes the blocked ``recv``, or the I/O sees the token set and never starts.
    Only the cancelled call's socket is touched: idle pooled connections and other threads'
    calls keep going. (HTTP/1.1 only, the openai client's default: one exchange per socket.)
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active: dict[int, tuple[_TrackedStream, threading.Event]] = {}
        self._local = threading.local()

    @contextlib.contextmanager
    def watching(self, cancel: threading.Event) -> Iterator[None]:
        """Within the block, this thread's socket I/O belongs to the call ``cancel`` stops."""
        previous: threading.Event | None = getattr(self._local, "cancel", None)
        self._local.cancel = cancel
        remove = _on_cancel(cancel, partial(self._abort, threading.get_ident(), cancel))
        try:
            yield
        finally:
            remove()
            self._local.cancel = previous

    @contextlib.contextmanager
    def io(self, stream: _TrackedStream, error: type[Exception]) -> Iterator[None]:
        """Around one read or write: record it, and refuse it once the call is cancelled."""
        cancel: threading.Event | None = getattr(self._local, "cancel", None)
        if cancel is None:
            yield
            return
        thread = threading.get_ident()
        with self._lock:
            self._active[thread] = (stream, cancel)
        try:
            if cancel.is_set():
                raise error("the call was cancelled")
            yield
        finally:
            with self._lock:
                del self._active[thread]

    def _abort(self, thread: int, cancel: threading.Event) -> None:
        with self._lock:
            stream, owner = self._active.get(thread, (None, None))
            if stream is not None and owner is cancel:
                stream.abort()


def _on_cancel(cancel: threading.Event, callback: Callable[[], None]) -> Callable[[], None]:
    """Register ``callback`` on a ``CancelToken``; a plain ``Event`` is only checked between
    reads and writes (it cannot say when it is set)."""
    if isinstance(cancel, CancelToken):
        return cancel.on_cancel(callback)
    return lambda: None


class _TrackedStream(httpcore2.NetworkStream):
    """A network stream whose reads and writes a cancel can abort."""

    def __init__(self, inner: httpcore2.NetworkStream, aborter: _Aborter) -> None:
        self._inner = inner
        self._aborter = aborter
        self._aborted = False
        self._head_next = True  # the next write starts a request
        self._held = b""  # a request head waiting for its body
        self._last_read = 0.0  # time.monotonic() of the last read that returned

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        self._head_next = True
        with self._aborter.io(self, httpcore2.ReadError):
            data = self._inner.read(max_bytes, timeout)
        self._last_read = time.monotonic()
        return data

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        """Send ``buffer``; a request head announcing a body is held and sent with the body's
        first bytes, in one segment. httpcore writes the two apart: two system calls, and two
        wake-ups of the server, which on a busy machine can cost a time slice each."""
        head, self._head_next = self._head_next, False
        if self._held:
            buffer, self._held = self._held + buffer, b""
        elif head and _announces_body(buffer):
            self._held = buffer
            return
        with self._aborter.io(self, httpcore2.WriteError):
            self._inner.write(buffer, timeout)

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore2.NetworkStream:
        with self._aborter.io(self, httpcore2.ConnectError):
            upgraded = self._inner.start_tls(ssl_context, server_hostname, timeout)
        return _TrackedStream(upgraded, self._aborter)

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":
            if self._aborted:
                return True  # how httpcore learns that a pooled connection is dead
            if time.monotonic() - self._last_read < _FRESH_S:
                return False  # it answered just now: no probe (see _FRESH_S)
        return self._inner.get_extra_info(info)

    def abort(self) -> None:
        """Wake the thread blocked on this socket: shutdown, not close (close wakes no ``recv``)."""
        self._aborted = True
        sock = self._inner.get_extra_info("socket")
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):
                # socket.socket's own shutdown: SSLSocket's would drop its SSL object under the
                # reading thread's feet
                socket.socket.shutdown(sock, socket.SHUT_RDWR)


_FRESH_S = 0.5
"""How long after its last reply an idle pooled connection is taken to be alive unprobed.

httpcore asks every idle connection whether the server closed it (a ``poll`` system call, which
lets go of the GIL) each time a request starts or ends: with 50 steps that is some 2,500 probes
per fan-out, each a chance for 49 other threads to take the GIL while the pool's lock is held.
A server that closes a kept-alive connection within half a second of answering on it is rare
(keep-alive timeouts are seconds); if one does, the call fails as a transient error and is
retried. A ``Connection: close`` answer is never reused, probe or not."""


def _announces_body(head: bytes) -> bool:
    """Whether this request head is complete and promises a body of some bytes."""
    if not head.endswith(b"\r\n\r\n"):
        return False
    match = _CONTENT_LENGTH.search(head)
    return match is not None and int(match.group(1)) > 0


_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)[ \t]*\r\n", re.IGNORECASE)


class _TrackingBackend(httpcore2.NetworkBackend):
    """Wraps httpcore's network backend so every stream it opens is a ``_TrackedStream``."""

    def __init__(self, inner: httpcore2.NetworkBackend, aborter: _Aborter) -> None:
        self._inner = inner
        self._aborter = aborter

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore2.NetworkStream:
        stream = self._inner.connect_tcp(host, port, timeout, local_address, socket_options)
        return _TrackedStream(stream, self._aborter)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore2.NetworkStream:
        stream = self._inner.connect_unix_socket(path, timeout, socket_options)
        return _TrackedStream(stream, self._aborter)

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def _is_loopback(base_url: str | None) -> bool:
    """A server on this machine (localhost, 127.0.0.0/8, ::1) is never reached through a proxy
    from the environment: HTTP_PROXY without NO_PROXY would otherwise swallow local servers."""
    if not base_url:
        return False
    host = (urlsplit(base_url).hostname or "").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _limits(max_connections: int | None) -> httpx2.Limits:
    """The SDK's connection limits, with at least ``max_connections`` kept alive: every step
    running at once keeps its connection for the next call instead of opening a new one."""
    import openai

    default = openai.DEFAULT_CONNECTION_LIMITS
    keep = default.max_keepalive_connections or 0
    if max_connections is None or max_connections <= keep:
        return default
    top = default.max_connections
    return httpx2.Limits(
        max_connections=None if top is None else max(top, max_connections),
        max_keepalive_connections=max_connections,
        keepalive_expiry=default.keepalive_expiry,
    )


class _AbortableClient(httpx2.Client):
    """The openai SDK's default HTTP client (its timeout, limits and redirects; proxies from the
    environment), whose connection pools open ``_TrackedStream`` connections."""

    def __init__(self, aborter: _Aborter, **kwargs: Any) -> None:
        import openai

        self._aborter = aborter  # before super().__init__, which builds the transports
        kwargs.setdefault("timeout", openai.DEFAULT_TIMEOUT)
        kwargs.setdefault("limits", openai.DEFAULT_CONNECTION_LIMITS)
        kwargs.setdefault("follow_redirects", True)
        super().__init__(**kwargs)

    def _init_transport(self, *args: Any, **kwargs: Any) -> httpx2.BaseTransport:
        return self._track(super()._init_transport(*args, **kwargs))

    def _init_proxy_transport(self, *args: Any, **kwargs: Any) -> httpx2.BaseTransport:
        return self._track(super()._init_proxy_transport(*args, **kwargs))

    def _track(self, transport: httpx2.BaseTransport) -> httpx2.BaseTransport:
        pool = getattr(transport, "_pool", None)
        if isinstance(pool, httpcore2.ConnectionPool):
            pool._network_backend = _TrackingBackend(pool._network_backend, self._aborter)
        else:
            log.warning("cannot abort calls through %r: a cancel waits for the reply", transport)
        return transport

    def __del__(self) -> None:
        """Close the pooled connections of a client nobody closed (as the SDK's own does)."""
        with contextlib.suppress(Exception):
            if not self.is_closed:
                self.close()


def classify_error(
    exc: BaseException,
    *,
    base_url: str | None = None,
    model: str | None = None,
    api_key: str | None = None,
) -> BackendError:
    """Turn a failure of one attempt into a transient or permanent ``BackendError``.

    The message is one line naming the server and, for HTTP errors, the status and the server's
    own words (shortened); ``api_key`` is scrubbed from it.
    """
    if isinstance(exc, BackendError):
        return exc
    where = _display_url(base_url or _request_url(exc))
    error = _classify(exc, where, model)
    if api_key and api_key in str(error):
        error = type(error)(str(error).replace(api_key, _REDACTED), status=error.status)
    return error


def _classify(exc: BaseException, where: str, model: str | None) -> BackendError:
    import openai

    if isinstance(exc, openai.APIStatusError):
        return _status_error(exc, where, model)
    if isinstance(exc, openai.APITimeoutError):
        return TransientBackendError(f"the request to the server at {where!r} timed out")
    if isinstance(exc, openai.APIConnectionError | httpx2.TransportError):
        cause = _describe(exc.__cause__ or exc)
        return TransientBackendError(f"the connection to the server at {where!r} failed: {cause}")
    if isinstance(exc, _MalformedReply | ValueError):
        detail = f"{exc}" if isinstance(exc, _MalformedReply) else f"invalid JSON ({exc})"
        return TransientBackendError(f"the server at {where!r} answered with {detail}", status=200)
    message = _one_line(getattr(exc, "message", None) or str(exc) or type(exc).__name__)
    return TransientBackendError(f"the server at {where!r} reported an error: {message}")


def _status_error(exc: openai.APIStatusError, where: str, model: str | None) -> BackendError:
    status = exc.status_code
    message = f"{_status_meaning(status, where, model)} (HTTP {status})"
    said = _server_message(exc.body)
    if said:
        message += f": {said}"
    transient = status >= 500 or status in _TRANSIENT_4XX
    kind = TransientBackendError if transient else PermanentBackendError
    return kind(message, status=status)


def _status_meaning(status: int, where: str, model: str | None) -> str:
    """What ``status`` means for the user, in words."""
    if status == 404:
        named = f"model {model!r}" if model else "the chat completions endpoint"
        return f"{named} was not found at {where!r} (check the model name and the base URL)"
    meanings = {
        400: "rejected the request as invalid",
        401: "rejected the API key",
        403: "refused access with this API key",
        408: "timed out waiting for the request",
        409: "reported a conflict",
        422: "could not process the request",
        429: "is rate limiting requests",
    }
    default = "failed" if status >= 500 else "refused the request"
    return f"the server at {where!r} {meanings.get(status, default)}"


def _server_message(body: object) -> str:
    """The server's own error message, on one line and shortened."""
    if isinstance(body, Mapping):
        body = body.get("message") or body.get("error") or body.get("detail") or ""
        if isinstance(body, Mapping):
            body = body.get("message") or ""
    if body is None:
        return ""
    text = _one_line(re.sub(r"<[^>]*>", " ", str(body)))
    if len(text) > _SERVER_MESSAGE_LIMIT:
        text = text[:_SERVER_MESSAGE_LIMIT].rstrip() + "…"
    return text


def _retry_after(exc: BaseException | None) -> float | None:
    """The server's requested wait in seconds, from a 429/503 answer."""
    import openai

    if not isinstance(exc, openai.APIStatusError) or exc.status_code not in _RETRY_AFTER_STATUSES:
        return None
    return _parse_retry_after(exc.response.headers)


def _parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date)."""
    millis = _finite(headers.get("retry-after-ms"))
    if millis is not None:
        return max(millis / 1000.0, 0.0)
    value = headers.get("retry-after")
    if value is None:
        return None
    seconds = _finite(value)
    if seconds is not None:
        return max(seconds, 0.0)
    return _seconds_until(value, time.time() if now is None else now)


def _seconds_until(http_date: str, now: float) -> float | None:
    try:
        when = email.utils.parsedate_to_datetime(http_date)
    except (TypeError, ValueError, IndexError):
        return None
    return max(when.timestamp() - now, 0.0)


def _finite(value: str | None) -> float | None:
    try:
        number = float(value) if value is not None else math.nan
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _parse_body(text: str) -> dict[str, Any]:
    """The completion object of a 200 body, or ``_MalformedReply`` saying what came instead."""
    try:
        body = json.loads(text)
    except ValueError:
        raise _MalformedReply(f"a body that is not JSON: {_preview(text)!r}") from None
    except RecursionError:  # a hostile server: 200,000 nested brackets ended in a traceback
        raise _MalformedReply(f"a body nested too deeply to read: {_preview(text)!r}") from None
    if not isinstance(body, dict):
        raise _MalformedReply(f"JSON that is not a completion object: {_preview(text)!r}")
    return body


def _choices(body: Mapping[str, Any], *, allow_empty: bool = False) -> list[Mapping[str, Any]]:
    choices = body.get("choices")
    if choices is None and allow_empty:
        return []
    if not isinstance(choices, list) or not (choices or allow_empty):
        raise _MalformedReply(f"a completion without choices: {_preview(json.dumps(body))!r}")
    if not all(isinstance(choice, Mapping) for choice in choices):
        raise _MalformedReply("choices that are not objects")
    return choices


def _chunk_dict(chunk: object) -> Mapping[str, Any]:
    import openai

    if isinstance(chunk, openai.BaseModel):
        return chunk.to_dict()
    raise _MalformedReply(f"a stream event that is not an object: {_preview(repr(chunk))!r}")


def _usage(reported: object, messages: list[Message], text: str, model: str) -> Usage:
    """The server's token counts, or our own when it sent none."""
    if isinstance(reported, Mapping):
        prompt = reported.get("prompt_tokens")
        completion = reported.get("completion_tokens")
        if isinstance(prompt, int) and isinstance(completion, int):
            return Usage(prompt, completion)
    return Usage(count_messages(messages, model), count_tokens(text, model))


def _request_url(exc: BaseException) -> str:
    request = getattr(exc, "request", None)
    return str(request.url) if isinstance(request, httpx2.Request) else "(unknown server)"


def _display_url(url: str) -> str:
    """``url`` without any ``user:password@`` part."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit(parts._replace(netloc=netloc))


def _describe(exc: BaseException) -> str:
    detail = _one_line(str(exc))
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _preview(text: str) -> str:
    return text if len(text) <= _BODY_PREVIEW else text[:_BODY_PREVIEW] + "…"


def _log_retry(state: tenacity.RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome else None
    wait = state.next_action.sleep if state.next_action else 0.0
    log.info("attempt %d failed (%s); retrying in %.2fs", state.attempt_number, error, wait)
