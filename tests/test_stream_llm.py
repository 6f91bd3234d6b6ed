"""``ChatRequest.on_delta`` over real HTTP: the pieces as they arrive, and a mark per attempt."""

from __future__ import annotations

import pytest

from overseer.backends.chat import ChatRequest
from overseer.backends.llm import OpenAIChat, RetryPolicy
from tests.fake_stream import FakeStream, Streamed


def chat(url: str, attempts: int = 1) -> OpenAIChat:
    retry = RetryPolicy(max_attempts=attempts, initial_wait=0, jitter=0)
    return OpenAIChat(base_url=url, api_key=None, model="m", retry=retry)


def test_on_delta_streams_a_request_even_when_the_backend_does_not() -> None:
    pieces: list[str] = []
    with FakeStream(lambda body: Streamed(["Hel", "lo ", "there"])) as fake:
        reply = chat(fake.url).complete(
            ChatRequest(messages=[{"role": "user", "content": "hi"}], on_delta=pieces.append)
        )
        plain = chat(fake.url).complete(ChatRequest(messages=[{"role": "user", "content": "x"}]))
        bodies = fake.requests
    assert reply.text == "Hello there" and pieces == ["", "Hel", "lo ", "there"]
    assert bodies[0]["stream"] is True and not bodies[1].get("stream")
    assert plain.text == "Hello there"


def test_a_retried_stream_marks_its_new_start() -> None:
    replies = [Streamed(["ab", "cd", "ef"], cut=1), Streamed(["ab", "cd", "ef"])]
    pieces: list[str] = []
    with FakeStream(lambda body: replies.pop(0)) as fake:
        reply = chat(fake.url, attempts=2).complete(
            ChatRequest(messages=[{"role": "user", "content": "hi"}], on_delta=pieces.append)
        )
    assert reply.text == "abcdef" and reply.attempts == 2
    assert pieces == ["", "ab", "", "ab", "cd", "ef"]


def test_the_client_says_it_can_stream() -> None:
    assert OpenAIChat.streams is True


def test_the_chunk_models_are_built_before_any_stream_reads_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """pydantic's deferred build of a model is not thread-safe: every stream builds the chunk
    models first, once, under a lock, before two streams could race to; a plain call, which
    reads no chunk, leaves them unbuilt (they cost start-up some 12 ms)."""
    from overseer.backends import llm
    from tests.fake_openai import FakeOpenAI

    monkeypatch.setattr(llm, "_CHUNKS_BUILT", [])
    built: list[bool] = []
    real = llm._build_chunk_models

    def build() -> None:
        built.append(True)
        real()

    monkeypatch.setattr(llm, "_build_chunk_models", build)
    with FakeOpenAI(lambda body: "hi") as fake:
        chat(fake.url).complete(ChatRequest(messages=[{"role": "user", "content": "x"}]))
    assert llm._CHUNKS_BUILT == [] and built == []
    with FakeStream(lambda body: Streamed(["a", "b"])) as streamed:
        pieces: list[str] = []
        request = ChatRequest(messages=[{"role": "user", "content": "x"}], on_delta=pieces.append)
        assert chat(streamed.url).complete(request).text == "ab"
    assert llm._CHUNKS_BUILT == [True] and built == [True]
