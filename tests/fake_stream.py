"""A fake OpenAI-compatible server on 127.0.0.1 that streams replies piece by piece, slowly.

A *script* maps each request body to a ``Streamed`` reply: a list of pieces, each a string of
content or a ``Hold`` (wait for an event before going on, so a test can make the stream wait
until something else happened, with no sleep). ``rate`` spaces the pieces out in time (the
benchmark's tokens per second). Every request is recorded with its arrival time, and the end of
each stream with its time, so a test can tell what overlapped what. Listen backlog 128, TCP_NODELAY.
"""

from __future__ import annotations

import json
import socket
import socketserver
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.fake_openai import LoopbackServer, QuietHandler, ServedInThread

__all__ = ["FakeStream", "Hold", "Script", "Streamed", "pieces_of"]

_HOLD_LIMIT = 20.0  # a hold never set is released after this long, so a broken test cannot hang


@dataclass(frozen=True)
class Hold:
    """Wait until ``event`` is set before the next piece (at most ``limit`` seconds)."""

    event: threading.Event
    limit: float = _HOLD_LIMIT


Piece = str | Hold


@dataclass
class Streamed:
    """One reply: ``pieces`` sent one SSE event each, ``rate`` pieces a second (None: at once).
    ``cut`` closes the socket after that many pieces, without a finish (a broken stream);
    ``stream=False`` requests get the pieces joined in one JSON body."""

    pieces: list[Piece]
    rate: float | None = None
    finish_reason: str = "stop"
    cut: int | None = None
    usage: dict[str, int] | None = None

    @property
    def text(self) -> str:
        return "".join(p for p in self.pieces if isinstance(p, str))


Script = Callable[[dict[str, Any]], "Streamed | str"]


def pieces_of(text: str, size: int = 4) -> list[Piece]:
    """``text`` in pieces of ``size`` characters (about a token each)."""
    return [text[i : i + size] for i in range(0, len(text), size)]


@dataclass(frozen=True)
class Arrival:
    at: float
    body: dict[str, Any]


@dataclass
class StreamEnd:
    at: float
    body: dict[str, Any]
    finished: bool


@dataclass
class _Log:
    arrivals: list[Arrival] = field(default_factory=list)
    ends: list[StreamEnd] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    changed: threading.Condition = field(init=False)

    def __post_init__(self) -> None:
        self.changed = threading.Condition(self.lock)


class FakeStream(ServedInThread):
    """The server; a context manager. ``url`` ends in ``/v1``."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.log = _Log()
        self.piece_times: list[tuple[float, str]] = []  # (when sent, piece) of every stream
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.fake = self

    @property
    def requests(self) -> list[dict[str, Any]]:
        with self.log.lock:
            return [a.body for a in self.log.arrivals]

    def arrivals(self) -> list[Arrival]:
        with self.log.lock:
            return list(self.log.arrivals)

    def ends(self) -> list[StreamEnd]:
        with self.log.lock:
            return list(self.log.ends)

    def wait_for(self, test: Callable[[dict[str, Any]], bool], timeout: float = 20.0) -> bool:
        """Block until a request for which ``test`` holds has arrived (False after timeout)."""
        with self.log.changed:
            return self.log.changed.wait_for(
                lambda: any(test(a.body) for a in self.log.arrivals), timeout
            )

    def _arrived(self, body: dict[str, Any]) -> None:
        with self.log.changed:
            self.log.arrivals.append(Arrival(time.monotonic(), body))
            self.log.changed.notify_all()

    def _ended(self, body: dict[str, Any], finished: bool) -> None:
        with self.log.changed:
            self.log.ends.append(StreamEnd(time.monotonic(), body, finished))
            self.log.changed.notify_all()

    def _sent(self, piece: str) -> None:
        with self.log.lock:
            self.piece_times.append((time.monotonic(), piece))


class _Server(LoopbackServer):
    fake: FakeStream

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        socketserver.TCPServer.server_bind(self)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up (a cancelled call) is expected."""


class _Handler(QuietHandler):
    server: _Server

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body: dict[str, Any] = json.loads(raw or b"{}")
        fake = self.server.fake
        fake._arrived(body)
        try:
            reply = fake.script(body)
        except Exception as exc:  # a broken script shows as a 500 naming the problem
            return self._send(500, {"error": {"message": f"script failed: {exc!r}"}})
        streamed = Streamed([reply]) if isinstance(reply, str) else reply
        if body.get("stream"):
            self._stream(body, streamed)
        else:
            self._whole(body, streamed)

    def _whole(self, body: dict[str, Any], reply: Streamed) -> None:
        """The reply in one body, sent when a stream of it would have ended (same pace)."""
        gap = 1.0 / reply.rate if reply.rate else 0.0
        due = time.monotonic()
        for piece in reply.pieces:
            if isinstance(piece, Hold):
                piece.event.wait(piece.limit)
                due = time.monotonic()
            else:
                due += gap
        _pause_until(due)
        message = {"role": "assistant", "content": reply.text}
        choice = {"index": 0, "message": message, "finish_reason": reply.finish_reason}
        payload = _envelope(body, "chat.completion", [choice])
        payload["usage"] = _usage(body, reply)
        self._send(200, payload)
        self.server.fake._ended(body, True)

    def _send(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _stream(self, body: dict[str, Any], reply: Streamed) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            finished = self._pieces(body, reply)
        except OSError:  # the client hung up (a cancelled call)
            finished = False
        self.server.fake._ended(body, finished)

    def _pieces(self, body: dict[str, Any], reply: Streamed) -> bool:
        gap = 1.0 / reply.rate if reply.rate else 0.0
        due = time.monotonic()
        sent = 0
        for piece in reply.pieces:
            if isinstance(piece, Hold):
                piece.event.wait(piece.limit)
                due = time.monotonic()
                continue
            if reply.cut is not None and sent >= reply.cut:
                self.close_connection = True
                self._chunk(b"")
                return False
            due += gap
            _pause_until(due)
            self._chunk(_sse(_envelope(body, "chat.completion.chunk", [_delta(piece, None)])))
            self.server.fake._sent(piece)
            sent += 1
        self._chunk(
            _sse(_envelope(body, "chat.completion.chunk", [_delta("", reply.finish_reason)]))
        )
        usage = _envelope(body, "chat.completion.chunk", [])
        self._chunk(_sse({**usage, "usage": _usage(body, reply)}))
        self._chunk(b"data: [DONE]\n\n")
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()
        return True

    def _chunk(self, data: bytes) -> None:
        if data:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()


def _pause_until(due: float) -> None:
    """The pacing of a slow stream (this is the fake server's speed, not a test waiting)."""
    delay = due - time.monotonic()
    if delay > 0:
        threading.Event().wait(delay)


def _delta(content: str, finish_reason: str | None) -> dict[str, Any]:
    return {
        "index": 0,
        "delta": {"role": "assistant", "content": content},
        "finish_reason": finish_reason,
    }


def _envelope(body: dict[str, Any], kind: str, choices: list[Any]) -> dict[str, Any]:
    model = body.get("model") or "fake-model"
    return {"id": "fake-s", "object": kind, "created": 0, "model": model, "choices": choices}


def _sse(data: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(data).encode() + b"\n\n"


def _usage(body: dict[str, Any], reply: Streamed) -> dict[str, int]:
    if reply.usage is not None:
        return dict(reply.usage)
    prompt = sum(len(str(m.get("content", "")).split()) for m in body.get("messages") or [])
    completion = len(reply.text.split())
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
