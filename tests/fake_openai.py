"""A fake OpenAI-compatible server on 127.0.0.1, for tests that need a real socket.

A *responder* maps each parsed request body to a ``FakeReply`` (or a plain string of content).
The server answers ``POST /v1/chat/completions`` (plain JSON, or SSE when ``stream`` is true) and
``GET /v1/models``. Replies can fail on purpose: any status, a raw body (HTML, garbage), a body cut
short by closing the socket, or a reply held back until an event is set.

Run it by hand with an echo responder: ``python tests/fake_openai.py --port 8765``.
"""

from __future__ import annotations

import argparse
import functools
import json
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self

__all__ = ["FakeOpenAI", "FakeReply", "Responder", "echo_responder"]

FAKE_MODEL = "fake-model"
_POLL_INTERVAL = 0.02  # how soon serve_forever notices stop()
_WAIT_LIMIT = 60.0  # a held reply is released after this long, so a broken test cannot hang


@dataclass
class FakeReply:
    """What the fake server sends back for one request."""

    content: str = ""
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    raw_body: bytes | None = None  # sent as is, overriding everything else
    usage: dict[str, int] | None = None  # None: counted from the words of prompt and reply
    include_usage: bool = True
    finish_reason: str | None = "stop"  # None: the stream never says it finished
    cut_after_bytes: int | None = None  # close the socket after this many body bytes
    wait: threading.Event | None = None  # hold the reply until this is set


Responder = Callable[[dict[str, Any]], "FakeReply | str"]


def echo_responder(body: dict[str, Any]) -> FakeReply:
    """Answer with the content of the last message."""
    messages = body.get("messages") or [{}]
    return FakeReply(content=f"echo: {messages[-1].get('content', '')}")


class ServedInThread:
    """Serves ``self._server`` on a daemon thread: ``start``/``stop``, or use it as a context
    manager. ``url`` is the base URL a client takes, ending in ``/v1``."""

    _server: ThreadingHTTPServer
    _thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def start(self) -> Self:
        serve = functools.partial(self._server.serve_forever, poll_interval=_POLL_INTERVAL)
        self._thread = threading.Thread(target=serve, daemon=True, name=type(self).__name__)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class FakeOpenAI(ServedInThread):
    """The server; a context manager that starts and stops it."""

    def __init__(self, responder: Responder, *, port: int = 0) -> None:
        self.responder = responder
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", port), _Handler)
        self._server.fake = self

    def _record(self, body: dict[str, Any], headers: dict[str, str]) -> None:
        with self._lock:
            self.requests.append(body)
            self.headers.append(headers)

    def _reply_for(self, body: dict[str, Any]) -> FakeReply:
        try:
            reply = self.responder(body)
        except Exception as exc:  # a broken responder shows up as a 500 naming the problem
            return FakeReply(content=f"responder failed: {exc!r}", status=500)
        return FakeReply(content=reply) if isinstance(reply, str) else reply


class LoopbackServer(ThreadingHTTPServer):
    """A fake server that is not the bottleneck it measures: a listen backlog of 128 (many
    clients connecting at once, as batches do, are all accepted) and no thread joined on close."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = 128

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up (a timeout test, say) is expected; report anything else."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class QuietHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 keep-alive, TCP_NODELAY (no 40 ms Nagle stalls), no log lines: tests read what
    the fake recorded instead."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _Server(LoopbackServer):
    fake: FakeOpenAI


class _Handler(QuietHandler):
    server: _Server

    def do_GET(self) -> None:
        if self.path.rstrip("/") != "/v1/models":
            return self._send_error(404, f"no route for GET {self.path}")
        models = {"object": "list", "data": [{"id": FAKE_MODEL, "object": "model"}]}
        self._send_body(200, json.dumps(models).encode(), {}, None)

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path.rstrip("/") != "/v1/chat/completions":
            return self._send_error(404, f"no route for POST {self.path}")
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            return self._send_error(400, "the request body is not JSON")
        fake = self.server.fake
        fake._record(body, {key.lower(): value for key, value in self.headers.items()})
        reply = fake._reply_for(body)
        if reply.wait is not None:
            reply.wait.wait(_WAIT_LIMIT)
        self._answer(body, reply)

    def _answer(self, body: dict[str, Any], reply: FakeReply) -> None:
        if reply.raw_body is not None:
            headers = {"Content-Type": "text/html", **reply.headers}
            return self._send_body(reply.status, reply.raw_body, headers, reply.cut_after_bytes)
        if reply.status >= 400:
            return self._send_error(reply.status, reply.content, reply.headers)
        if body.get("stream"):
            return self._send_stream(body, reply)
        payload = json.dumps(_completion(body, reply)).encode()
        self._send_body(reply.status, payload, reply.headers, reply.cut_after_bytes)

    def _send_error(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        text = message or HTTPStatus(status).phrase
        error = {"error": {"message": text, "type": "fake_error", "code": status}}
        self._send_body(status, json.dumps(error).encode(), headers or {}, None)

    def _send_body(
        self, status: int, payload: bytes, headers: dict[str, str], cut: int | None
    ) -> None:
        self.send_response(status)
        merged = {"Content-Type": "application/json", **headers}
        for key, value in merged.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload if cut is None else payload[:cut])
        if cut is not None:
            self.close_connection = True

    def _send_stream(self, body: dict[str, Any], reply: FakeReply) -> None:
        self.send_response(reply.status)
        merged = {"Content-Type": "text/event-stream", **reply.headers}
        for key, value in merged.items():
            self.send_header(key, value)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        budget = reply.cut_after_bytes
        for event in _stream_events(body, reply):
            if budget is not None and len(event) > budget:
                self._write_chunk(event[:budget])
                self.close_connection = True
                return
            self._write_chunk(event)
            budget = None if budget is None else budget - len(event)
        self.wfile.write(b"0\r\n\r\n")

    def _write_chunk(self, data: bytes) -> None:
        if data:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()


def _completion(body: dict[str, Any], reply: FakeReply) -> dict[str, Any]:
    message = {"role": "assistant", "content": reply.content}
    choice = {"index": 0, "message": message, "finish_reason": reply.finish_reason}
    result = _envelope(body, "chat.completion", [choice])
    if reply.include_usage:
        result["usage"] = _usage(body, reply)
    return result


def _stream_events(body: dict[str, Any], reply: FakeReply) -> Iterator[bytes]:
    """The SSE events of a streamed reply: content pieces, the finish, usage, ``[DONE]``."""
    for piece in _pieces(reply.content):
        yield _sse(_envelope(body, "chat.completion.chunk", [_delta(piece, None)]))
    if reply.finish_reason is None:
        return
    yield _sse(_envelope(body, "chat.completion.chunk", [_delta("", reply.finish_reason)]))
    wants_usage = (body.get("stream_options") or {}).get("include_usage")
    if wants_usage and reply.include_usage:
        chunk = _envelope(body, "chat.completion.chunk", [])
        yield _sse({**chunk, "usage": _usage(body, reply)})
    yield b"data: [DONE]\n\n"


def _pieces(content: str, size: int = 8) -> list[str]:
    return [content[i : i + size] for i in range(0, len(content), size)] or [""]


def _delta(content: str, finish_reason: str | None) -> dict[str, Any]:
    delta = {"role": "assistant", "content": content}
    return {"index": 0, "delta": delta, "finish_reason": finish_reason}


def _envelope(body: dict[str, Any], kind: str, choices: list[Any]) -> dict[str, Any]:
    model = body.get("model") or FAKE_MODEL
    created = int(time.time())
    return {"id": "fake-1", "object": kind, "created": created, "model": model, "choices": choices}


def _sse(data: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(data).encode() + b"\n\n"


def _usage(body: dict[str, Any], reply: FakeReply) -> dict[str, int]:
    if reply.usage is not None:
        return dict(reply.usage)
    prompt = sum(len(str(m.get("content", "")).split()) for m in body.get("messages") or [])
    completion = len(reply.content.split())
    total = prompt + completion
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": total}


def main(argv: list[str] | None = None) -> None:
    """Serve the echo responder until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args(argv)
    fake = FakeOpenAI(echo_responder, port=args.port)
    print(f"fake OpenAI server at {fake.url} (Ctrl-C to stop)", flush=True)
    try:
        fake._server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        fake._server.server_close()


if __name__ == "__main__":
    main()
