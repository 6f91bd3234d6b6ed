"""The tool channel's framing: length-prefixed JSON objects."""

from __future__ import annotations

import io

import pytest

from node_runtime import wire


def frames(*messages: dict[str, object]) -> io.BytesIO:
    return io.BytesIO(b"".join(wire.encode(m) for m in messages))


def test_frames_round_trip_in_order() -> None:
    stream = frames({"op": "call", "id": 1, "prompt": "héllo"}, {"op": "cancel", "id": 1})
    assert wire.read_frame(stream) == {"op": "call", "id": 1, "prompt": "héllo"}
    assert wire.read_frame(stream) == {"op": "cancel", "id": 1}
    assert wire.read_frame(stream) is None


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (b"\x00\x00", "inside a frame header"),
        (b"\x00\x00\x00\x05ab", "inside a frame"),
        (b"\xff\xff\xff\xff", "over the"),
        (b"\x00\x00\x00\x03abc", "UTF-8 JSON"),
        (b"\x00\x00\x00\x02[]", "an object with an 'op'"),
        (b'\x00\x00\x00\x08{"op":1}', "an object with an 'op'"),
        pytest.param(
            (200_000).to_bytes(4, "big") + b"[" * 200_000, "nested too deeply", id="too-deep"
        ),
    ],
)
def test_garbage_is_a_frame_error(raw: bytes, problem: str) -> None:
    with pytest.raises(wire.FrameError, match=problem):
        wire.read_frame(io.BytesIO(raw))


def test_a_message_that_is_not_json_cannot_be_encoded() -> None:
    with pytest.raises(TypeError):
        wire.encode({"op": "call", "options": {"x": object()}})


def test_an_oversized_message_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wire, "MAX_FRAME", 10)
    with pytest.raises(ValueError, match="over the 10-byte limit"):
        wire.encode({"op": "call", "prompt": "x" * 20})


def test_a_frame_split_across_sends_is_read_whole() -> None:
    import socket
    import threading

    left, right = socket.socketpair()
    frame = wire.encode({"op": "result", "id": 1, "ok": True, "output": "x" * 100_000})

    def send_in_pieces() -> None:
        for i in range(0, len(frame), 7):
            left.sendall(frame[i : i + 7])

    sender = threading.Thread(target=send_in_pieces)
    sender.start()
    stream = right.makefile("rb")
    message = wire.read_frame(stream)
    sender.join()
    left.close()
    assert message is not None and len(message["output"]) == 100_000
    assert wire.read_frame(stream) is None
    stream.close()
    right.close()
