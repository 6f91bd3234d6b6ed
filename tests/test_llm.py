"""OpenAIChat through the real openai client: HTTP mocked at the transport, and a real socket.

respx sees openai 3.x traffic only through the ``httpx2_mock`` fixture (httpcore2 mocker).
Backoff waits are recorded through the injected ``sleep``; no test sleeps.
"""

from __future__ import annotations

import email.utils
import json
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpcore2
import httpx
import httpx2
import openai
import pytest
import respx

from overseer.backends.chat import ChatClient, ChatReply, ChatRequest
from overseer.backends.llm import OpenAIChat, RetryPolicy, classify_error
from overseer.backends.tokens import count_messages, count_tokens
from overseer.errors import BackendError, PermanentBackendError, TransientBackendError
from overseer.usage import Usage
from tests.fake_openai import FakeOpenAI, FakeReply
from tests.llmhelp import (
    API_KEY,
    BASE_URL,
    ENDPOINT,
    MESSAGES,
    MODEL,
    REQUEST,
    completion,
    ok,
    refuse_to_sleep,
)

SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
NO_JITTER = RetryPolicy(max_attempts=4, initial_wait=0.5, max_wait=20.0, jitter=0.0)

Fault = Callable[[], Any]


# --- helpers -------------------------------------------------------------------------------------


def error_response(status: int, message: str = "", **headers: str) -> httpx.Response:
    body = {"error": {"message": message or f"failure {status}", "type": "x", "code": None}}
    return httpx.Response(status, json=body, headers=headers)


def sse(*events: dict[str, Any] | str) -> httpx.Response:
    lines = [f"data: {e if isinstance(e, str) else json.dumps(e)}\n\n" for e in events]
    return httpx.Response(
        200, content="".join(lines).encode(), headers={"content-type": "text/event-stream"}
    )


def chunk(content: str | None = None, finish: str | None = None, **extra: Any) -> dict[str, Any]:
    delta = {} if content is None else {"content": content}
    choices = [{"index": 0, "delta": delta, "finish_reason": finish}]
    return {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": MODEL,
        "choices": choices,
        **extra,
    }


def usage_chunk(prompt: int, completion_tokens: int) -> dict[str, Any]:
    usage = {"prompt_tokens": prompt, "completion_tokens": completion_tokens}
    return {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": MODEL,
        "choices": [],
        "usage": usage,
    }


def make_chat(
    sleeps: list[float] | None = None,
    *,
    base_url: str | None = BASE_URL,
    api_key: str | None = API_KEY,
    retry: RetryPolicy = NO_JITTER,
    **kwargs: Any,
) -> OpenAIChat:
    kwargs.setdefault("structured_output", "json_schema")
    kwargs.setdefault("request_timeout", 5.0)
    record = sleeps.append if sleeps is not None else refuse_to_sleep
    return OpenAIChat(
        base_url=base_url, api_key=api_key, model=MODEL, retry=retry, sleep=record, **kwargs
    )


def sent_body(route: respx.Route, index: int = -1) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(route.calls[index].request.content)
    return body


def assert_one_clean_line(error: BaseException) -> None:
    text = str(error)
    assert text and "\n" not in text
    assert API_KEY not in text
    assert "Traceback" not in text


@pytest.fixture(autouse=True, scope="module")
def _private_tiktoken_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Counted usage seeds tiktoken's cache here, not in the user's cache directory."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path_factory.mktemp("tiktoken")))
        yield


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def route(httpx2_mock: respx.Router) -> respx.Route:
    return httpx2_mock.post(ENDPOINT)


# --- the fault matrix ----------------------------------------------------------------------------

TRANSIENT_FAULTS: dict[str, Fault] = {
    "429 rate limited": lambda: error_response(429, "Rate limit reached"),
    "408 request timeout": lambda: error_response(408),
    "409 conflict": lambda: error_response(409),
    "500 internal error": lambda: error_response(500),
    "502 bad gateway": lambda: httpx.Response(502, text="<html><h1>502 Bad Gateway</h1></html>"),
    "503 unavailable": lambda: error_response(503, "loading model"),
    "504 gateway timeout": lambda: error_response(504),
    "connect timeout": lambda: httpcore2.ConnectTimeout("timed out"),
    "read timeout": lambda: httpcore2.ReadTimeout("timed out"),
    "connection refused": lambda: httpcore2.ConnectError("[Errno 111] Connection refused"),
    "connection reset": lambda: httpcore2.ReadError("[Errno 104] Connection reset by peer"),
    "remote protocol error": lambda: httpcore2.RemoteProtocolError("peer closed connection"),
    "legacy httpx read error": lambda: httpx.ReadError("reset"),
    "HTML 200": lambda: httpx.Response(
        200,
        text="<!doctype html><html><body>Login</body></html>",
        headers={"content-type": "text/html"},
    ),
    "truncated JSON 200": lambda: httpx.Response(
        200, text=json.dumps(completion())[:45], headers={"content-type": "application/json"}
    ),
    "missing choices": lambda: httpx.Response(200, json={"id": "x", "object": "chat.completion"}),
    "empty choices": lambda: httpx.Response(200, json={"id": "x", "choices": []}),
    "choices not a list": lambda: httpx.Response(200, json={"choices": "nope"}),
    "choice without message": lambda: httpx.Response(200, json={"choices": [{"index": 0}]}),
    "choice not an object": lambda: httpx.Response(200, json={"choices": [1]}),
    "content not a string": lambda: httpx.Response(
        200, json={"choices": [{"message": {"content": 5}, "finish_reason": "stop"}]}
    ),
    "JSON array 200": lambda: httpx.Response(200, json=[1, 2, 3]),
    "JSON string 200": lambda: httpx.Response(200, json="hello"),
    "empty 200": lambda: httpx.Response(200, content=b""),
}

TRANSIENT_STATUS = {
    "429 rate limited": 429,
    "408 request timeout": 408,
    "409 conflict": 409,
    "500 internal error": 500,
    "502 bad gateway": 502,
    "503 unavailable": 503,
    "504 gateway timeout": 504,
}


@pytest.mark.parametrize("fault", TRANSIENT_FAULTS.values(), ids=TRANSIENT_FAULTS.keys())
def test_transient_fault_is_retried_until_success(
    route: respx.Route, sleeps: list[float], fault: Fault
) -> None:
    route.side_effect = [fault(), fault(), ok("recovered")]

    reply = make_chat(sleeps).complete(REQUEST)

    assert reply.text == "recovered"
    assert reply.attempts == 3
    assert route.call_count == 3
    assert len(sleeps) == 2


@pytest.mark.parametrize("fault", TRANSIENT_FAULTS.values(), ids=TRANSIENT_FAULTS.keys())
def test_transient_fault_exhausts_attempts(
    route: respx.Route, sleeps: list[float], fault: Fault
) -> None:
    route.side_effect = [fault() for _ in range(4)]

    with pytest.raises(TransientBackendError) as caught:
        make_chat(sleeps).complete(REQUEST)

    assert caught.value.attempts == 4
    assert route.call_count == 4
    assert len(sleeps) == 3
    assert_one_clean_line(caught.value)
    assert "'http://llm.test/v1'" in str(caught.value)


@pytest.mark.parametrize(("name", "status"), TRANSIENT_STATUS.items())
def test_transient_status_is_recorded(route: respx.Route, name: str, status: int) -> None:
    route.side_effect = [TRANSIENT_FAULTS[name]()]

    with pytest.raises(TransientBackendError) as caught:
        make_chat(retry=RetryPolicy(max_attempts=1)).complete(REQUEST)

    assert caught.value.status == status
    assert f"(HTTP {status})" in str(caught.value)


def test_a_fault_then_success_on_the_second_attempt(
    route: respx.Route, sleeps: list[float]
) -> None:
    route.side_effect = [error_response(500), ok()]

    reply = make_chat(sleeps).complete(REQUEST)

    assert (reply.attempts, route.call_count, sleeps) == (2, 2, [0.5])


def test_single_attempt_policy_means_one_request(route: respx.Route) -> None:
    """The openai client must not retry on its own: exactly one retry layer."""
    route.side_effect = [error_response(500), ok()]

    with pytest.raises(TransientBackendError) as caught:
        make_chat(retry=RetryPolicy(max_attempts=1)).complete(REQUEST)

    assert route.call_count == 1
    assert caught.value.attempts == 1


PERMANENT = {
    400: "rejected the request as invalid",
    401: "rejected the API key",
    403: "refused access with this API key",
    404: "model 'test-model' was not found at 'http://llm.test/v1'",
    405: "refused the request",
    413: "refused the request",
    422: "could not process the request",
}


@pytest.mark.parametrize(("status", "meaning"), PERMANENT.items())
def test_permanent_status_fails_at_once_with_one_clear_line(
    route: respx.Route, status: int, meaning: str
) -> None:
    route.side_effect = [error_response(status, "the server's own words"), ok()]

    with pytest.raises(PermanentBackendError) as caught:
        make_chat().complete(REQUEST)

    error = caught.value
    assert route.call_count == 1
    assert (error.status, error.attempts) == (status, 1)
    assert meaning in str(error)
    assert f"(HTTP {status})" in str(error)
    assert str(error).endswith(": the server's own words")
    assert_one_clean_line(error)


def test_401_message_names_the_server_and_not_the_key(route: respx.Route) -> None:
    route.side_effect = [error_response(401, "Incorrect API key provided")]

    with pytest.raises(PermanentBackendError) as caught:
        make_chat().complete(REQUEST)

    assert str(caught.value) == (
        "the server at 'http://llm.test/v1' rejected the API key (HTTP 401): "
        "Incorrect API key provided"
    )
    assert caught.value.is_configuration


def test_404_names_the_requested_model(route: respx.Route) -> None:
    route.side_effect = [error_response(404, "model not found")]

    with pytest.raises(PermanentBackendError) as caught:
        make_chat().complete(ChatRequest(messages=MESSAGES, model="llama-9000"))

    assert str(caught.value).startswith("model 'llama-9000' was not found at 'http://llm.test/v1'")
    assert caught.value.is_configuration


def test_server_echoing_the_key_is_redacted(route: respx.Route) -> None:
    route.side_effect = [error_response(401, f"Incorrect API key provided: {API_KEY}.")]

    with pytest.raises(PermanentBackendError) as caught:
        make_chat().complete(REQUEST)

    assert API_KEY not in str(caught.value)
    assert "[redacted]" in str(caught.value)


def test_long_server_message_is_shortened_to_one_line(route: respx.Route) -> None:
    route.side_effect = [error_response(400, "bad\nrequest " + "x" * 1000)]

    with pytest.raises(PermanentBackendError) as caught:
        make_chat().complete(REQUEST)

    said = str(caught.value).split("(HTTP 400): ", 1)[1]
    assert said.startswith("bad request xxx")
    assert said.endswith("…")
    assert len(said) <= 201
    assert_one_clean_line(caught.value)


def test_html_error_page_is_reduced_to_its_text(route: respx.Route) -> None:
    page = "<html><head><title>502</title></head><body><h1>Bad Gateway</h1></body></html>"
    route.side_effect = [httpx.Response(502, text=page)]

    with pytest.raises(TransientBackendError) as caught:
        make_chat(retry=RetryPolicy(max_attempts=1)).complete(REQUEST)

    assert (
        str(caught.value) == "the server at 'http://llm.test/v1' failed (HTTP 502): 502 Bad Gateway"
    )


def test_html_200_is_quoted_in_the_message(route: respx.Route) -> None:
    route.side_effect = [httpx.Response(200, text="<html>captive portal</html>")]

    with pytest.raises(TransientBackendError) as caught:
        make_chat(retry=RetryPolicy(max_attempts=1)).complete(REQUEST)

    assert "a body that is not JSON: '<html>captive portal</html>'" in str(caught.value)
    assert caught.value.status == 200


def test_no_key_in_logs_even_at_debug(
    route: respx.Route, caplog: pytest.LogCaptureFixture, sleeps: list[float]
) -> None:
    route.side_effect = [error_response(500), error_response(401)]
    caplog.set_level(logging.DEBUG)

    with pytest.raises(PermanentBackendError):
        make_chat(sleeps).complete(REQUEST)

    assert caplog.records
    assert API_KEY not in caplog.text


def test_retries_are_logged(
    route: respx.Route, caplog: pytest.LogCaptureFixture, sleeps: list[float]
) -> None:
    route.side_effect = [error_response(503), ok()]
    caplog.set_level(logging.INFO, logger="overseer.backends.llm")

    make_chat(sleeps).complete(REQUEST)

    assert "attempt 1 failed" in caplog.text
    assert "retrying in 0.50s" in caplog.text


def test_credentials_in_the_base_url_never_reach_a_message(httpx2_mock: respx.Router) -> None:
    route = httpx2_mock.post(url__regex=r".*/v1/chat/completions")
    route.side_effect = [error_response(403)]
    chat = make_chat(base_url="http://user:hunter2@llm.test/v1")

    with pytest.raises(PermanentBackendError) as caught:
        chat.complete(REQUEST)

    assert "hunter2" not in str(caught.value)
    assert "'http://llm.test/v1'" in str(caught.value)
    assert "hunter2" not in repr(chat)
    assert chat.base_url == "http://llm.test/v1"


def test_repr_does_not_show_the_key() -> None:
    assert API_KEY not in repr(make_chat())
    assert "test-model" in repr(make_chat())


# --- Retry-After and backoff ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "3"}, 3.0),
        ({"retry-after": "1.25"}, 1.25),
        ({"retry-after": "0"}, 0.0),
        ({"retry-after-ms": "1500"}, 1.5),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),
        ({"retry-after": "3600"}, 20.0),  # capped at max_wait
        ({"retry-after": "Wed, 21 Oct 2099 07:28:00 GMT"}, 20.0),  # a date far off: capped
        ({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0.0),  # a date gone by: no wait
        ({"retry-after": "soon"}, 0.5),  # unreadable: our own backoff
        ({"retry-after": "nan"}, 0.5),
        ({"retry-after": "-5"}, 0.0),
    ],
)
@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_is_honoured_and_capped(
    route: respx.Route,
    sleeps: list[float],
    status: int,
    headers: dict[str, str],
    expected: float,
) -> None:
    route.side_effect = [error_response(status, **headers), ok()]

    reply = make_chat(sleeps).complete(REQUEST)

    assert reply.attempts == 2
    assert sleeps == [pytest.approx(expected)]


def test_retry_after_as_a_near_http_date(route: respx.Route, sleeps: list[float]) -> None:
    when = email.utils.formatdate(time.time() + 10, usegmt=True)
    route.side_effect = [error_response(429, **{"retry-after": when}), ok()]

    make_chat(sleeps).complete(REQUEST)

    assert 7.0 <= sleeps[0] <= 10.0


@pytest.mark.parametrize("status", [500, 502, 408])
def test_retry_after_is_only_read_on_429_and_503(
    route: respx.Route, sleeps: list[float], status: int
) -> None:
    route.side_effect = [error_response(status, **{"retry-after": "7"}), ok()]

    make_chat(sleeps).complete(REQUEST)

    assert sleeps == [0.5]


def test_retry_after_then_backoff_resumes(route: respx.Route, sleeps: list[float]) -> None:
    route.side_effect = [error_response(429, **{"retry-after": "4"}), error_response(500), ok()]

    make_chat(sleeps).complete(REQUEST)

    assert sleeps == [4.0, 1.0]


def test_backoff_grows_exponentially_and_is_bounded(
    route: respx.Route, sleeps: list[float]
) -> None:
    policy = RetryPolicy(max_attempts=7, initial_wait=0.5, max_wait=5.0, jitter=0.0)
    route.side_effect = [error_response(500) for _ in range(7)]

    with pytest.raises(TransientBackendError) as caught:
        make_chat(sleeps, retry=policy).complete(REQUEST)

    assert sleeps == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]
    assert caught.value.attempts == 7
    assert route.call_count == 7


def test_backoff_jitter_stays_within_bounds(route: respx.Route, sleeps: list[float]) -> None:
    policy = RetryPolicy(max_attempts=6, initial_wait=1.0, max_wait=6.0, jitter=0.5)
    route.side_effect = [error_response(502) for _ in range(6)]

    with pytest.raises(TransientBackendError):
        make_chat(sleeps, retry=policy).complete(REQUEST)

    for wait, base in zip(sleeps, [1.0, 2.0, 4.0, 8.0, 16.0], strict=True):
        assert min(base, 6.0) <= wait <= min(base + 0.5, 6.0)


def test_retry_policy_backoff_values() -> None:
    policy = RetryPolicy(initial_wait=0.25, max_wait=3.0, jitter=0.0)

    assert [policy.backoff(n) for n in range(1, 7)] == [0.25, 0.5, 1.0, 2.0, 3.0, 3.0]
    assert policy.backoff(10_000) == 3.0


def test_retry_policy_defaults() -> None:
    assert RetryPolicy() == RetryPolicy(max_attempts=4, initial_wait=0.5, max_wait=20.0, jitter=0.5)


@pytest.mark.parametrize(
    "kwargs", [{"max_attempts": 0}, {"initial_wait": -1.0}, {"max_wait": -1.0}, {"jitter": -0.1}]
)
def test_retry_policy_rejects_nonsense(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)


def test_default_sleep_is_real_time_sleep() -> None:
    chat = OpenAIChat(
        base_url=BASE_URL, api_key=None, model=MODEL, structured_output="text", request_timeout=1.0
    )
    assert chat._sleep is time.sleep


# --- the request sent ----------------------------------------------------------------------------


def test_json_schema_mode_sends_the_schema(route: respx.Route) -> None:
    route.side_effect = [ok('{"a": 1}')]
    request = ChatRequest(messages=MESSAGES, schema=SCHEMA, schema_name="plan")

    make_chat(structured_output="json_schema").complete(request)

    assert sent_body(route)["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "plan", "schema": SCHEMA, "strict": False},
    }


def test_json_object_mode_sends_llama_cpp_dialect(route: respx.Route) -> None:
    route.side_effect = [ok('{"a": 1}')]

    make_chat(structured_output="json_object").complete(ChatRequest(MESSAGES, schema=SCHEMA))

    assert sent_body(route)["response_format"] == {"type": "json_object", "schema": SCHEMA}


def test_text_mode_sends_no_response_format(route: respx.Route) -> None:
    route.side_effect = [ok('{"a": 1}')]

    make_chat(structured_output="text").complete(ChatRequest(MESSAGES, schema=SCHEMA))

    assert "response_format" not in sent_body(route)


@pytest.mark.parametrize("mode", ["json_schema", "json_object", "text"])
def test_no_schema_means_no_response_format(route: respx.Route, mode: str) -> None:
    route.side_effect = [ok()]

    make_chat(structured_output=mode).complete(REQUEST)

    assert "response_format" not in sent_body(route)


def test_minimal_request_body(route: respx.Route) -> None:
    route.side_effect = [ok()]

    make_chat().complete(REQUEST)

    assert sent_body(route) == {"model": MODEL, "messages": MESSAGES}


def test_request_fields_are_passed_through(route: respx.Route) -> None:
    route.side_effect = [ok()]
    request = ChatRequest(
        messages=[{"role": "system", "content": "Be brief."}, *MESSAGES],
        model="other-model",
        temperature=0.0,
        max_tokens=64,
        extra={"top_k": 40, "seed": 7},
    )

    make_chat().complete(request)

    body = sent_body(route)
    assert body["model"] == "other-model"
    assert body["messages"] == request.messages
    assert (body["temperature"], body["max_tokens"]) == (0.0, 64)
    assert (body["top_k"], body["seed"]) == (40, 7)


def test_zero_values_are_sent_not_dropped(route: respx.Route) -> None:
    route.side_effect = [ok()]

    make_chat().complete(ChatRequest(MESSAGES, temperature=0.0))

    assert sent_body(route)["temperature"] == 0.0


def test_per_call_timeout_reaches_the_transport(route: respx.Route) -> None:
    route.side_effect = [ok(), ok()]
    chat = make_chat(request_timeout=33.0)

    chat.complete(ChatRequest(MESSAGES, timeout=2.5))
    chat.complete(REQUEST)

    per_call = route.calls[0].request.extensions["timeout"]
    default = route.calls[1].request.extensions["timeout"]
    assert set(per_call.values()) == {2.5}
    assert set(default.values()) == {33.0}


def test_api_key_is_sent_as_bearer(route: respx.Route) -> None:
    route.side_effect = [ok()]

    make_chat().complete(REQUEST)

    assert route.calls.last.request.headers["authorization"] == f"Bearer {API_KEY}"


def test_missing_api_key_uses_a_placeholder(
    route: respx.Route, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    route.side_effect = [ok()]

    make_chat(api_key=None).complete(REQUEST)

    assert route.calls.last.request.headers["authorization"] == "Bearer not-needed"


def test_the_same_request_is_resent_on_retry(route: respx.Route, sleeps: list[float]) -> None:
    route.side_effect = [error_response(500), ok()]
    request = ChatRequest(MESSAGES, schema=SCHEMA, temperature=0.3)

    make_chat(sleeps).complete(request)

    assert sent_body(route, 0) == sent_body(route, 1)


def test_is_a_chat_client() -> None:
    chat: ChatClient = make_chat()
    assert callable(chat.complete)


# --- the reply -----------------------------------------------------------------------------------


def test_usage_comes_from_the_response(route: respx.Route) -> None:
    route.side_effect = [ok(usage={"prompt_tokens": 11, "completion_tokens": 5})]

    reply = make_chat().complete(REQUEST)

    assert reply == ChatReply("hi", Usage(11, 5), MODEL, "stop", 1)


def test_usage_is_counted_when_the_server_sends_none(route: respx.Route) -> None:
    text = "Le renard brun rapide saute par-dessus le chien paresseux."
    route.side_effect = [httpx.Response(200, json=completion(text))]

    reply = make_chat().complete(REQUEST)

    assert reply.usage == Usage(count_messages(MESSAGES, MODEL), count_tokens(text, MODEL))
    assert reply.usage.completion_tokens == 18  # cl100k_base, counted offline


def test_counted_usage_follows_the_model_encoding(route: respx.Route) -> None:
    text = "Le renard brun rapide saute par-dessus le chien paresseux."
    route.side_effect = [httpx.Response(200, json=completion(text, model="gpt-4o-mini"))]

    reply = make_chat().complete(ChatRequest(MESSAGES, model="gpt-4o-mini"))

    assert reply.usage.completion_tokens == 14  # o200k_base


@pytest.mark.parametrize(
    "usage", [{"prompt_tokens": 3}, {"prompt_tokens": "3", "completion_tokens": "1"}, {}]
)
def test_incomplete_usage_is_counted_instead(route: respx.Route, usage: dict[str, Any]) -> None:
    route.side_effect = [httpx.Response(200, json=completion("hello world", usage=usage))]

    reply = make_chat().complete(REQUEST)

    assert reply.usage == Usage(count_messages(MESSAGES, MODEL), 2)


@pytest.mark.parametrize("reason", ["length", "content_filter", "tool_calls", None])
def test_finish_reason_is_passed_to_the_caller(route: respx.Route, reason: str | None) -> None:
    route.side_effect = [ok("partial", finish_reason=reason)]

    reply = make_chat().complete(REQUEST)

    assert (reply.text, reply.finish_reason) == ("partial", reason)


def test_model_comes_from_the_response(route: respx.Route) -> None:
    route.side_effect = [ok(model="served-model-v2")]

    assert make_chat().complete(REQUEST).model == "served-model-v2"


def test_null_content_is_empty_text(route: respx.Route) -> None:
    body = completion()
    body["choices"][0]["message"]["content"] = None
    route.side_effect = [httpx.Response(200, json=body)]

    assert make_chat().complete(REQUEST).text == ""


def test_concurrent_calls_share_one_client(route: respx.Route) -> None:
    route.side_effect = lambda request: ok(json.loads(request.content)["messages"][0]["content"])
    chat = make_chat()
    requests = [ChatRequest([{"role": "user", "content": f"n{i}"}]) for i in range(12)]

    with ThreadPoolExecutor(max_workers=6) as pool:
        replies = list(pool.map(chat.complete, requests))

    assert [r.text for r in replies] == [f"n{i}" for i in range(12)]


# --- streaming -----------------------------------------------------------------------------------


def test_stream_assembles_text_and_usage(route: respx.Route) -> None:
    route.side_effect = [
        sse(
            chunk("Hel"),
            chunk("lo"),
            chunk(", world"),
            chunk(None, "stop"),
            usage_chunk(9, 4),
            "[DONE]",
        )
    ]

    reply = make_chat(stream=True).complete(REQUEST)

    assert reply == ChatReply("Hello, world", Usage(9, 4), MODEL, "stop", 1)
    body = sent_body(route)
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}


def test_stream_usage_in_the_finishing_chunk(route: respx.Route) -> None:
    last = chunk("!", "length", usage={"prompt_tokens": 2, "completion_tokens": 1})
    route.side_effect = [sse(chunk("Hi"), last, "[DONE]")]

    reply = make_chat(stream=True).complete(REQUEST)

    assert (reply.text, reply.usage, reply.finish_reason) == ("Hi!", Usage(2, 1), "length")


def test_stream_without_usage_is_counted(route: respx.Route) -> None:
    route.side_effect = [sse(chunk("hello"), chunk(" world", "stop"), "[DONE]")]

    reply = make_chat(stream=True).complete(REQUEST)

    assert reply.usage == Usage(count_messages(MESSAGES, MODEL), 2)


def test_stream_sends_the_schema_too(route: respx.Route) -> None:
    route.side_effect = [sse(chunk("{}", "stop"), "[DONE]")]

    make_chat(stream=True, structured_output="json_object").complete(
        ChatRequest(MESSAGES, schema=SCHEMA)
    )

    assert sent_body(route)["response_format"] == {"type": "json_object", "schema": SCHEMA}


STREAM_FAULTS: dict[str, Fault] = {
    "ends without finish_reason": lambda: sse(chunk("Hel"), chunk("lo")),
    "ends without finish even with DONE": lambda: sse(chunk("Hel"), "[DONE]"),
    "no events at all": lambda: sse(),
    "garbage data line": lambda: sse(chunk("a"), "{not json"),
    "error event": lambda: sse(chunk("a"), {"error": {"message": "model crashed"}}),
    "event not an object": lambda: sse('"just a string"', chunk(None, "stop")),
    "HTML instead of SSE": lambda: httpx.Response(200, text="<html>oops</html>"),
    "503 before streaming": lambda: error_response(503),
    "reset before streaming": lambda: httpcore2.ReadError("[Errno 104] Connection reset by peer"),
}


@pytest.mark.parametrize("fault", STREAM_FAULTS.values(), ids=STREAM_FAULTS.keys())
def test_stream_fault_is_retried(route: respx.Route, sleeps: list[float], fault: Fault) -> None:
    route.side_effect = [fault(), sse(chunk("ok", "stop"), "[DONE]")]

    reply = make_chat(sleeps, stream=True).complete(REQUEST)

    assert (reply.text, reply.attempts, route.call_count) == ("ok", 2, 2)


@pytest.mark.parametrize("fault", STREAM_FAULTS.values(), ids=STREAM_FAULTS.keys())
def test_stream_fault_exhausts(route: respx.Route, sleeps: list[float], fault: Fault) -> None:
    route.side_effect = [fault() for _ in range(4)]

    with pytest.raises(TransientBackendError) as caught:
        make_chat(sleeps, stream=True).complete(REQUEST)

    assert (caught.value.attempts, route.call_count, len(sleeps)) == (4, 4, 3)
    assert_one_clean_line(caught.value)


def test_cut_stream_message_says_so(route: respx.Route) -> None:
    route.side_effect = [sse(chunk("Hel"))]

    with pytest.raises(TransientBackendError) as caught:
        make_chat(stream=True, retry=RetryPolicy(max_attempts=1)).complete(REQUEST)

    assert "a stream that ended before the reply was finished" in str(caught.value)


@pytest.mark.parametrize("status", [400, 401, 403, 404])
def test_stream_permanent_failure_is_not_retried(route: respx.Route, status: int) -> None:
    route.side_effect = [error_response(status), sse(chunk("ok", "stop"))]

    with pytest.raises(PermanentBackendError) as caught:
        make_chat(stream=True).complete(REQUEST)

    assert (caught.value.status, caught.value.attempts, route.call_count) == (status, 1, 1)


# --- classify_error on its own -------------------------------------------------------------------


def _status_error(status: int, body: object = None, **headers: str) -> openai.APIStatusError:
    request = httpx2.Request("POST", ENDPOINT)
    response = httpx2.Response(status, headers=headers, request=request)
    return openai.APIStatusError(f"Error code: {status}", response=response, body=body)


def test_classify_keeps_backend_errors() -> None:
    error = PermanentBackendError("x", status=401)
    assert classify_error(error) is error


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, PermanentBackendError),
        (401, PermanentBackendError),
        (404, PermanentBackendError),
        (410, PermanentBackendError),
        (408, TransientBackendError),
        (425, TransientBackendError),
        (429, TransientBackendError),
        (500, TransientBackendError),
        (599, TransientBackendError),
    ],
)
def test_classify_status(status: int, kind: type[BackendError]) -> None:
    error = classify_error(_status_error(status), base_url="http://h/v1", model="m")
    assert type(error) is kind
    assert error.status == status


def test_classify_uses_the_request_url_without_a_base_url() -> None:
    error = classify_error(_status_error(500, {"message": "boom"}))
    assert str(error) == (
        "the server at 'http://llm.test/v1/chat/completions' failed (HTTP 500): boom"
    )


@pytest.mark.parametrize(
    ("body", "said"),
    [
        ({"message": "plain"}, "plain"),
        ({"error": "as a string"}, "as a string"),
        ({"error": {"message": "nested"}}, "nested"),
        ({"detail": "fastapi style"}, "fastapi style"),
        ("<p>text</p>", "text"),
        (None, ""),
        ({"code": 3}, ""),
    ],
)
def test_classify_server_message_shapes(body: object, said: str) -> None:
    error = classify_error(_status_error(400, body), base_url="http://h/v1")
    expected = "the server at 'http://h/v1' rejected the request as invalid (HTTP 400)"
    assert str(error) == (f"{expected}: {said}" if said else expected)


def test_classify_404_without_a_model() -> None:
    error = classify_error(_status_error(404), base_url="http://h")
    assert str(error).startswith("the chat completions endpoint was not found at 'http://h'")


def test_classify_connection_error_names_the_cause() -> None:
    request = httpx2.Request("POST", ENDPOINT)
    try:
        try:
            raise ConnectionRefusedError("[Errno 111] Connection refused")
        except ConnectionRefusedError as inner:
            raise openai.APIConnectionError(request=request) from inner
    except openai.APIConnectionError as outer:
        error = classify_error(outer, base_url="http://h/v1")
    assert isinstance(error, TransientBackendError)
    assert str(error) == (
        "the connection to the server at 'http://h/v1' failed: "
        "ConnectionRefusedError: [Errno 111] Connection refused"
    )


def test_classify_unknown_openai_error_is_transient() -> None:
    error = classify_error(openai.OpenAIError("odd\nthing"), base_url="http://h/v1")
    assert isinstance(error, TransientBackendError)
    assert str(error) == "the server at 'http://h/v1' reported an error: odd thing"


def test_classify_scrubs_the_key() -> None:
    error = classify_error(
        _status_error(401, {"message": f"bad key {API_KEY}"}), base_url="http://h", api_key=API_KEY
    )
    assert API_KEY not in str(error)
    assert error.status == 401
    assert isinstance(error, PermanentBackendError)


# --- over a real socket --------------------------------------------------------------------------


@pytest.fixture
def scripted() -> Iterator[tuple[FakeOpenAI, list[FakeReply | str]]]:
    """A fake server answering from a script, one reply per request."""
    script: list[FakeReply | str] = []

    def responder(body: dict[str, Any]) -> FakeReply | str:
        if not script:
            return FakeReply(content="the script ran out", status=500)
        return script.pop(0)

    with FakeOpenAI(responder) as fake:
        yield fake, script


def socket_chat(fake: FakeOpenAI, sleeps: list[float], **kwargs: Any) -> OpenAIChat:
    return make_chat(sleeps, base_url=fake.url, **kwargs)


def test_real_socket_round_trip(scripted: tuple[FakeOpenAI, list[FakeReply | str]]) -> None:
    fake, script = scripted
    script.append(FakeReply(content="Bonjour", usage={"prompt_tokens": 4, "completion_tokens": 1}))

    reply = socket_chat(fake, []).complete(REQUEST)

    assert reply == ChatReply("Bonjour", Usage(4, 1), MODEL, "stop", 1)
    assert fake.requests == [{"model": MODEL, "messages": MESSAGES}]
    assert fake.headers[0]["authorization"] == f"Bearer {API_KEY}"


def test_real_socket_body_cut_short_is_retried(
    scripted: tuple[FakeOpenAI, list[FakeReply | str]], sleeps: list[float]
) -> None:
    fake, script = scripted
    script += [FakeReply(content="lost", cut_after_bytes=30), "second try"]

    reply = socket_chat(fake, sleeps).complete(REQUEST)

    assert (reply.text, reply.attempts, len(fake.requests), sleeps) == ("second try", 2, 2, [0.5])


def test_real_socket_stream_cut_short_is_retried(
    scripted: tuple[FakeOpenAI, list[FakeReply | str]], sleeps: list[float]
) -> None:
    fake, script = scripted
    script += [FakeReply(content="a long streamed answer", cut_after_bytes=300), "streamed"]

    reply = socket_chat(fake, sleeps, stream=True).complete(REQUEST)

    assert (reply.text, reply.attempts, len(fake.requests)) == ("streamed", 2, 2)
    assert fake.requests[0]["stream"] is True
    assert reply.usage.completion_tokens == 1  # from the fake's usage chunk


def test_real_socket_stream_without_finish_is_retried(
    scripted: tuple[FakeOpenAI, list[FakeReply | str]], sleeps: list[float]
) -> None:
    fake, script = scripted
    script += [FakeReply(content="half", finish_reason=None), "whole"]

    reply = socket_chat(fake, sleeps, stream=True).complete(REQUEST)

    assert (reply.text, reply.attempts) == ("whole", 2)


def test_real_socket_stream_without_usage_is_counted(
    scripted: tuple[FakeOpenAI, list[FakeReply | str]],
) -> None:
    fake, script = scripted
    script.append(FakeReply(content="hello world", include_usage=False))

    reply = socket_chat(fake, [], stream=True).complete(REQUEST)

    assert reply.usage == Usage(count_messages(MESSAGES, MODEL), 2)


def test_real_socket_html_then_rate_limit_then_success(
    scripted: tuple[FakeOpenAI, list[FakeReply | str]], sleeps: list[float]
) -> None:
    fake, script = scripted
    script += [
        FakeReply(raw_body=b"<html>proxy error</html>"),
        FakeReply(status=429, content="slow down", headers={"Retry-After": "2"}),
        "finally",
    ]

    reply = socket_chat(fake, sleeps).complete(REQUEST)

    assert (reply.text, reply.attempts, sleeps) == ("finally", 3, [0.5, 2.0])


def test_real_socket_permanent_error(scripted: tuple[FakeOpenAI, list[FakeReply | str]]) -> None:
    fake, script = scripted
    script.append(FakeReply(status=401, content="invalid api key"))

    with pytest.raises(PermanentBackendError) as caught:
        socket_chat(fake, []).complete(REQUEST)

    assert str(caught.value) == (
        f"the server at {fake.url!r} rejected the API key (HTTP 401): invalid api key"
    )
    assert len(fake.requests) == 1


def test_real_socket_read_timeout_is_transient(
    scripted: tuple[FakeOpenAI, list[FakeReply | str]], sleeps: list[float]
) -> None:
    fake, script = scripted
    release = threading.Event()
    script += [FakeReply(content="late", wait=release), "on time"]

    try:
        reply = socket_chat(fake, sleeps).complete(ChatRequest(MESSAGES, timeout=0.2))
    finally:
        release.set()

    assert (reply.text, reply.attempts) == ("on time", 2)


def test_real_socket_connection_refused(sleeps: list[float]) -> None:
    fake = FakeOpenAI(lambda body: "never")
    url = fake.url
    fake.stop()  # the port is closed now

    with pytest.raises(TransientBackendError) as caught:
        make_chat(sleeps, base_url=url, retry=RetryPolicy(max_attempts=2, jitter=0)).complete(
            REQUEST
        )

    assert caught.value.attempts == 2
    assert "the connection to the server at" in str(caught.value)


def test_real_socket_calls_overlap(scripted: tuple[FakeOpenAI, list[FakeReply | str]]) -> None:
    """Two calls are in the server at once: the client does not serialize them."""
    fake, _ = scripted
    arrived = threading.Semaphore(0)
    release = threading.Event()

    def responder(body: dict[str, Any]) -> FakeReply:
        arrived.release()
        return FakeReply(content=body["messages"][0]["content"], wait=release)

    fake.responder = responder
    chat = socket_chat(fake, [])
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = [
            pool.submit(chat.complete, ChatRequest([{"role": "user", "content": c}]))
            for c in ("one", "two")
        ]
        assert arrived.acquire(timeout=10) and arrived.acquire(timeout=10)
        release.set()
        texts = sorted(f.result(timeout=10).text for f in futures)

    assert texts == ["one", "two"]


def test_default_model_is_exposed() -> None:
    assert make_chat().model == MODEL


# --- the fake server itself ----------------------------------------------------------------------


def _http(url: str, body: dict[str, Any] | None = None) -> tuple[int, bytes]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="GET" if data is None else "POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_fake_lists_models() -> None:
    with FakeOpenAI(lambda body: "x") as fake:
        status, payload = _http(f"{fake.url}/models")
    assert status == 200
    assert json.loads(payload)["data"][0]["id"] == "fake-model"


def test_fake_unknown_route_is_404() -> None:
    with FakeOpenAI(lambda body: "x") as fake:
        status, payload = _http(f"{fake.url}/embeddings", {"input": "x"})
    assert status == 404
    assert "no route" in json.loads(payload)["error"]["message"]


def test_fake_broken_responder_is_a_500_naming_it() -> None:
    def broken(body: dict[str, Any]) -> str:
        raise KeyError("oops")

    with FakeOpenAI(broken) as fake:
        status, payload = _http(f"{fake.url}/chat/completions", {"messages": []})
    assert status == 500
    assert "KeyError" in json.loads(payload)["error"]["message"]


def test_fake_computes_usage_and_echoes_the_model() -> None:
    with FakeOpenAI(lambda body: "three word reply") as fake:
        _, payload = _http(
            f"{fake.url}/chat/completions",
            {"model": "m1", "messages": [{"role": "user", "content": "two words"}]},
        )
    body = json.loads(payload)
    assert body["model"] == "m1"
    assert body["usage"] == {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5}
    assert body["choices"][0]["message"]["content"] == "three word reply"


def test_fake_sends_raw_bodies_and_headers() -> None:
    reply = FakeReply(raw_body=b"<h1>hi</h1>", status=502, headers={"X-Test": "1"})
    with FakeOpenAI(lambda body: reply) as fake:
        status, payload = _http(f"{fake.url}/chat/completions", {"messages": []})
    assert (status, payload) == (502, b"<h1>hi</h1>")


def test_fake_records_requests_in_order() -> None:
    with FakeOpenAI(lambda body: "ok") as fake:
        for n in range(3):
            _http(f"{fake.url}/chat/completions", {"n": n})
    assert [r["n"] for r in fake.requests] == [0, 1, 2]
    assert all("content-length" in h for h in fake.headers)


def test_fake_can_be_started_and_stopped_by_hand() -> None:
    fake = FakeOpenAI(lambda body: "ok").start()
    try:
        assert _http(f"{fake.url}/models")[0] == 200
    finally:
        fake.stop()
    assert fake.url.startswith("http://127.0.0.1:")


# --- the plain request path: one client, one write per request -----------------------------------


class _RecordingStream(httpcore2.NetworkStream):
    """A network stream that records what is written to it and answers reads with b""."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.probes: list[str] = []

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return b""

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self.writes.append(buffer)

    def close(self) -> None:
        pass

    def get_extra_info(self, info: str) -> Any:
        self.probes.append(info)
        return True  # as if the server had closed it


HEAD = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 7\r\n\r\n"


def tracked() -> tuple[Any, _RecordingStream]:
    from overseer.backends.llm import _Aborter, _TrackedStream

    inner = _RecordingStream()
    return _TrackedStream(inner, _Aborter()), inner


def test_a_request_head_leaves_with_the_first_bytes_of_its_body() -> None:
    stream, inner = tracked()
    stream.write(HEAD)
    assert inner.writes == []
    stream.write(b'{"a":1}')
    stream.write(b"")
    assert inner.writes == [HEAD + b'{"a":1}', b""]


def test_the_next_request_on_a_kept_connection_is_coalesced_too() -> None:
    stream, inner = tracked()
    stream.write(HEAD)
    stream.write(b"body-1!")
    stream.read(100)
    stream.write(HEAD)
    stream.write(b"body-2!")
    assert inner.writes == [HEAD + b"body-1!", HEAD + b"body-2!"]


@pytest.mark.parametrize(
    "head",
    [
        b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /v1/x HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
        b"POST /v1/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST /v1/x HTTP/1.1\r\nHost: x\r\nContent-Length: 12",  # not a whole head
    ],
)
def test_a_head_without_a_known_body_is_sent_at_once(head: bytes) -> None:
    stream, inner = tracked()
    stream.write(head)
    assert inner.writes == [head]


def test_body_bytes_that_look_like_a_head_are_never_held() -> None:
    stream, inner = tracked()
    stream.write(HEAD)
    stream.write(b"x")
    stream.write(HEAD)  # more body, not a new request: no read came in between
    assert inner.writes == [HEAD + b"x", HEAD]


def test_the_connection_pool_keeps_a_connection_per_running_step() -> None:
    from overseer.backends.llm import _limits

    default = openai.DEFAULT_CONNECTION_LIMITS
    assert _limits(None) == default
    assert _limits(8) == default
    wide = _limits(500)
    assert wide.max_keepalive_connections == 500
    assert wide.max_connections is not None and wide.max_connections >= 500


def test_the_plain_path_sends_the_params_as_create_would(route: respx.Route) -> None:
    route.mock(return_value=ok())
    request = ChatRequest(
        messages=MESSAGES,
        model="other-model",
        temperature=0.0,
        max_tokens=12,
        schema=SCHEMA,
        schema_name="answer",
        extra={"top_p": 0.5, "temperature": 0.3},
    )
    make_chat([], structured_output="json_object").complete(request)
    sent = json.loads(route.calls.last.request.content)
    assert sent == {
        "model": "other-model",
        "messages": MESSAGES,
        "temperature": 0.3,  # extra goes on top, as extra_body did
        "max_tokens": 12,
        "response_format": {"type": "json_object", "schema": SCHEMA},
        "top_p": 0.5,
    }
    headers = route.calls.last.request.headers
    assert headers["content-type"] == "application/json"
    assert headers["authorization"] == f"Bearer {API_KEY}"


def test_one_chat_client_shares_one_connection_pool_across_threads(
    scripted: tuple[FakeOpenAI, list[FakeReply | str]],
) -> None:
    fake, script = scripted
    script.extend(["r"] * 16)
    chat = socket_chat(fake, [], max_connections=4)
    with ThreadPoolExecutor(4) as pool:
        replies = list(pool.map(lambda _: chat.complete(REQUEST).text, range(16)))
    assert replies == ["r"] * 16
    assert chat._client is chat._client  # made once, on the first call


def test_a_connection_that_just_answered_is_not_probed() -> None:
    stream, inner = tracked()
    stream.read(100)
    assert stream.get_extra_info("is_readable") is False
    assert inner.probes == []


def test_an_idle_connection_is_probed_once_its_answer_is_old(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from overseer.backends import llm

    monkeypatch.setattr(llm, "_FRESH_S", 0.0)
    stream, inner = tracked()
    stream.read(100)
    assert stream.get_extra_info("is_readable") is True
    assert inner.probes == ["is_readable"]


def test_an_aborted_connection_is_readable_so_the_pool_drops_it() -> None:
    stream, _inner = tracked()
    stream.read(100)
    stream.abort()
    assert stream.get_extra_info("is_readable") is True
