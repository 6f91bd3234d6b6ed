"""The prepared plain call: the request the openai client built once, sent through its own pool.

Each test that could tell the two apart sends the same thing both ways, through the prepared
POST (``OpenAIChat._send``) and through the client's ``post`` (``OpenAIChat._post``, the path of
every call before), and checks that the server saw, and the caller got, the same. HTTP is mocked
at the httpcore2 transport (respx) or served by ``FakeOpenAI`` on a real socket.
"""

from __future__ import annotations

import gzip
import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpcore2
import httpx
import httpx2
import openai
import pytest
import respx

from overseer.backends import llm
from overseer.backends.chat import ChatRequest
from overseer.backends.llm import OpenAIChat, RetryPolicy, classify_error
from overseer.backends.prepared import PreparedPost, Reply
from overseer.errors import BackendError, PermanentBackendError, TransientBackendError
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

pytestmark = pytest.mark.timeout(60)

ONE_ATTEMPT = RetryPolicy(max_attempts=1)
BODY = json.dumps({"model": MODEL, "messages": MESSAGES}).encode()


def make_chat(base_url: str = BASE_URL, **kwargs: Any) -> OpenAIChat:
    kwargs.setdefault("retry", ONE_ATTEMPT)
    kwargs.setdefault("request_timeout", 5.0)
    return OpenAIChat(base_url=base_url, api_key=API_KEY, model=MODEL, **kwargs)


def prepared(chat: OpenAIChat) -> PreparedPost:
    post = chat._prepared
    assert isinstance(post, PreparedPost), "the plain call fell back to the client's post"
    return post


def both_ways(chat: OpenAIChat, request: ChatRequest = REQUEST) -> list[Callable[[], str]]:
    """Sending ``BODY`` through the prepared POST, then through the client's ``post``."""
    return [lambda: chat._send(prepared(chat), BODY, request), lambda: chat._post(BODY, request)]


def raised(send: Callable[[], object]) -> BaseException:
    with pytest.raises(Exception) as caught:
        send()
    return caught.value


@pytest.fixture
def route(httpx2_mock: respx.Router) -> respx.Route:
    return httpx2_mock.post(ENDPOINT)


@pytest.fixture
def no_post(monkeypatch: pytest.MonkeyPatch) -> None:
    """A plain call that reaches the client's ``post`` fails the test."""

    def refuse(self: OpenAIChat, content: bytes, request: ChatRequest) -> str:
        raise AssertionError("the plain call went through the client's post")

    monkeypatch.setattr(OpenAIChat, "_post", refuse)


# --- what is sent --------------------------------------------------------------------------------


@pytest.mark.usefixtures("no_post")
def test_a_plain_call_goes_through_the_prepared_post(route: respx.Route) -> None:
    route.side_effect = [ok("one"), ok("two")]
    chat = make_chat()

    texts = [chat.complete(REQUEST).text, chat.complete(REQUEST).text]

    assert texts == ["one", "two"]
    assert chat._prepared is chat._prepared  # prepared once, then reused


def test_the_prepared_request_carries_exactly_the_headers_post_sends(route: respx.Route) -> None:
    route.side_effect = [ok(), ok()]
    for send in both_ways(make_chat()):
        send()

    fast, sdk = (call.request for call in route.calls)
    assert sorted(fast.headers.multi_items()) == sorted(sdk.headers.multi_items())
    assert (fast.method, fast.url, fast.content) == (sdk.method, sdk.url, sdk.content)


def test_the_headers_name_the_key_the_sdk_and_the_body(route: respx.Route) -> None:
    route.side_effect = [ok()]

    make_chat().complete(REQUEST)

    request = route.calls.last.request
    headers = request.headers
    assert headers["authorization"] == f"Bearer {API_KEY}"
    assert headers["user-agent"] == f"OpenAI/Python {openai.__version__}"
    assert headers["content-type"] == "application/json"
    assert headers["accept"] == "application/json"
    assert headers["x-stainless-lang"] == "python"
    assert int(headers["content-length"]) == len(request.content)
    assert headers["host"] == "llm.test"


def test_default_headers_from_the_environment_are_sent(
    route: respx.Route, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_ORG_ID", "org-42")
    monkeypatch.setenv("OPENAI_PROJECT_ID", "proj-7")
    route.side_effect = [ok()]

    make_chat().complete(REQUEST)

    headers = route.calls.last.request.headers
    assert (headers["openai-organization"], headers["openai-project"]) == ("org-42", "proj-7")


def test_each_body_has_its_own_length(route: respx.Route) -> None:
    route.side_effect = [ok(), ok()]
    chat = make_chat()

    chat.complete(ChatRequest([{"role": "user", "content": "short"}]))
    chat.complete(ChatRequest([{"role": "user", "content": "a much longer question " * 20}]))

    for call in route.calls:
        assert int(call.request.headers["content-length"]) == len(call.request.content)
        assert json.loads(call.request.content)["model"] == MODEL


@pytest.mark.parametrize(
    ("base_url", "path"),
    [
        ("http://llm.test/v1", "/v1/chat/completions"),
        ("http://llm.test/v1/", "/v1/chat/completions"),
        ("http://llm.test", "/chat/completions"),
        ("http://llm.test/proxy/openai/v1", "/proxy/openai/v1/chat/completions"),
        ("http://llm.test:8080/a/b/", "/a/b/chat/completions"),
    ],
)
def test_the_base_url_and_its_path_prefix_are_joined_as_the_client_joins_them(
    httpx2_mock: respx.Router, base_url: str, path: str
) -> None:
    route = httpx2_mock.post(url__regex=r".*").mock(return_value=ok())
    chat = make_chat(base_url)

    for send in both_ways(chat):
        send()

    fast, sdk = (call.request.url for call in route.calls)
    assert fast == sdk
    assert fast.path == path


@pytest.mark.parametrize("timeout", [2.5, 0.0, 1e-06, 7.123456789])
def test_a_per_call_timeout_is_sent_as_post_sends_it(route: respx.Route, timeout: float) -> None:
    route.side_effect = [ok(), ok()]
    for send in both_ways(make_chat(request_timeout=33.0), ChatRequest(MESSAGES, timeout=timeout)):
        send()

    fast, sdk = (call.request for call in route.calls)
    assert sorted(fast.headers.multi_items()) == sorted(sdk.headers.multi_items())
    assert fast.extensions["timeout"] == sdk.extensions["timeout"]
    assert set(fast.extensions["timeout"].values()) == {timeout}


@pytest.mark.usefixtures("no_post")
def test_every_timeout_goes_through_the_one_prepared_request(route: respx.Route) -> None:
    """A step's timeout is what is left of its deadline: a new number on every call."""
    route.side_effect = [ok(), ok(), ok()]
    chat = make_chat(request_timeout=33.0)
    post = prepared(chat)

    chat.complete(ChatRequest(MESSAGES, timeout=2.5))
    chat.complete(REQUEST)
    chat.complete(ChatRequest(MESSAGES, timeout=1.25))

    timeouts = [call.request.extensions["timeout"] for call in route.calls]
    assert [set(t.values()) for t in timeouts] == [{2.5}, {33.0}, {1.25}]
    read_timeouts = [call.request.headers["x-stainless-read-timeout"] for call in route.calls]
    assert read_timeouts == ["2.5", "33.0", "1.25"]
    assert chat._prepared is post


# --- what comes back -----------------------------------------------------------------------------

STATUSES = [400, 401, 403, 404, 409, 418, 422, 429, 500, 502, 503]


@pytest.mark.parametrize("status", STATUSES)
def test_a_status_error_is_the_clients_own_exception(route: respx.Route, status: int) -> None:
    body = {"error": {"message": f"failure {status} {API_KEY}", "type": "x", "code": None}}
    route.side_effect = [httpx.Response(status, json=body, headers={"retry-after": "3"})] * 2

    fast, sdk = (raised(send) for send in both_ways(make_chat()))

    assert isinstance(fast, openai.APIStatusError) and isinstance(sdk, openai.APIStatusError)
    assert type(fast) is type(sdk)
    assert (str(fast), fast.body, fast.status_code) == (str(sdk), sdk.body, status)
    assert fast.response.headers["retry-after"] == "3"
    assert fast.request.url == sdk.request.url
    mine, theirs = (
        classify_error(e, base_url=BASE_URL, model=MODEL, api_key=API_KEY) for e in (fast, sdk)
    )
    assert (type(mine), str(mine), mine.status) == (type(theirs), str(theirs), status)
    assert API_KEY not in str(mine)


def test_a_429_with_retry_after_is_retried_after_that_wait(route: respx.Route) -> None:
    sleeps: list[float] = []
    limited = httpx.Response(
        429, json={"error": {"message": "slow down"}}, headers={"retry-after": "7"}
    )
    route.side_effect = [limited, ok("at last")]
    chat = make_chat(retry=RetryPolicy(max_attempts=3, jitter=0.0), sleep=sleeps.append)

    reply = chat.complete(REQUEST)

    assert (reply.text, reply.attempts, sleeps) == ("at last", 2, [7.0])


def test_a_503_every_time_exhausts_the_attempts(route: respx.Route) -> None:
    sleeps: list[float] = []
    route.side_effect = [httpx.Response(503, json={"error": {"message": "loading"}})] * 3
    chat = make_chat(
        retry=RetryPolicy(max_attempts=3, initial_wait=0.5, jitter=0.0), sleep=sleeps.append
    )

    with pytest.raises(TransientBackendError) as caught:
        chat.complete(REQUEST)

    assert (caught.value.attempts, caught.value.status, sleeps) == (3, 503, [0.5, 1.0])
    assert str(caught.value) == (f"the server at {BASE_URL!r} failed (HTTP 503): loading")


def test_a_permanent_error_is_one_attempt(route: respx.Route) -> None:
    route.side_effect = [httpx.Response(401, json={"error": {"message": "bad key"}})]
    chat = make_chat(retry=RetryPolicy(max_attempts=4), sleep=refuse_to_sleep)

    with pytest.raises(PermanentBackendError) as caught:
        chat.complete(REQUEST)

    assert (caught.value.attempts, caught.value.status) == (1, 401)


TRANSPORT_FAULTS: dict[str, Callable[[], Exception]] = {
    "connect error": lambda: httpcore2.ConnectError("[Errno 111] Connection refused"),
    "connect timeout": lambda: httpcore2.ConnectTimeout("timed out"),
    "read timeout": lambda: httpcore2.ReadTimeout("timed out"),
    "pool timeout": lambda: httpcore2.PoolTimeout("no connection"),
    "read error": lambda: httpcore2.ReadError("[Errno 104] Connection reset by peer"),
    "write error": lambda: httpcore2.WriteError("[Errno 32] Broken pipe"),
    "remote protocol error": lambda: httpcore2.RemoteProtocolError("peer closed connection"),
    "local protocol error": lambda: httpcore2.LocalProtocolError("bad header"),
    "proxy error": lambda: httpcore2.ProxyError("407 Proxy Authentication Required"),
    "unsupported protocol": lambda: httpcore2.UnsupportedProtocol("no scheme"),
    "legacy httpx read error": lambda: httpx.ReadError("reset"),
}


@pytest.mark.parametrize("fault", TRANSPORT_FAULTS.values(), ids=TRANSPORT_FAULTS.keys())
def test_a_transport_failure_is_the_clients_own_exception(
    route: respx.Route, fault: Callable[[], Exception]
) -> None:
    route.side_effect = [fault(), fault()]

    fast, sdk = (raised(send) for send in both_ways(make_chat()))

    assert type(fast) is type(sdk)
    assert isinstance(fast, openai.APIConnectionError)  # APITimeoutError is one too
    assert isinstance(sdk, openai.APIConnectionError)
    assert (type(fast.__cause__), str(fast.__cause__)) == (type(sdk.__cause__), str(sdk.__cause__))
    assert fast.request.url == sdk.request.url
    fast_error, sdk_error = (
        classify_error(e, base_url=BASE_URL, model=MODEL, api_key=API_KEY) for e in (fast, sdk)
    )
    assert (type(fast_error), str(fast_error)) == (type(sdk_error), str(sdk_error))
    assert isinstance(fast_error, TransientBackendError)


def test_a_redirect_is_followed_as_the_client_follows_it(httpx2_mock: respx.Router) -> None:
    moved = f"{BASE_URL}/moved/chat/completions"
    httpx2_mock.post(ENDPOINT).mock(return_value=httpx.Response(307, headers={"location": moved}))
    target = httpx2_mock.post(moved).mock(return_value=ok("from the new place"))

    reply = make_chat().complete(REQUEST)

    assert reply.text == "from the new place"
    assert json.loads(target.calls.last.request.content) == {"model": MODEL, "messages": MESSAGES}


def test_a_redirect_without_a_location_is_a_status_error(route: respx.Route) -> None:
    route.side_effect = [httpx.Response(302, text="nowhere")] * 2

    fast, sdk = (raised(send) for send in both_ways(make_chat()))

    assert (type(fast), str(fast)) == (type(sdk), str(sdk))
    assert isinstance(fast, openai.APIStatusError)


def test_a_compressed_reply_is_read(route: respx.Route) -> None:
    packed = gzip.compress(json.dumps(completion("squeezed")).encode())
    headers = {"content-encoding": "gzip", "content-type": "application/json"}
    route.side_effect = [httpx.Response(200, content=packed, headers=headers)]

    assert make_chat().complete(REQUEST).text == "squeezed"


def test_a_reply_in_another_charset_is_decoded_by_it(route: respx.Route) -> None:
    raw = json.dumps(completion("déjà vu"), ensure_ascii=False).encode("latin-1")
    headers = {"content-type": "application/json; charset=latin-1"}
    route.side_effect = [httpx.Response(200, content=raw, headers=headers)]

    assert make_chat().complete(REQUEST).text == "déjà vu"


@pytest.mark.parametrize(
    ("headers", "content"),
    [
        ([], "é".encode()),
        ([(b"Content-Type", b"application/json")], "é".encode()),
        ([(b"content-type", b"application/json; charset=utf-16")], "é".encode("utf-16")),
        ([(b"content-type", b"application/json; charset=utf-8")], "é".encode()),
        ([(b"Content-Type", b'application/json; charset="UTF-8"; x=y')], "é".encode()),
        ([(b"content-type", b"text/plain; charset=latin-1")], "é".encode("latin-1")),
        ([(b"content-type", b"text/plain; charset=utf8")], b"\xc3\xa9\xff"),
        ([(b"Content-Encoding", b"gzip")], gzip.compress("é".encode())),
        ([(b"content-encoding", b"identity")], "é".encode()),
        ([], b"\xff"),
    ],
)
def test_reply_text_is_what_httpx2_reads(
    headers: list[tuple[bytes, bytes]], content: bytes
) -> None:
    reply = Reply(200, headers, content)
    assert reply.text == httpx2.Response(200, headers=headers, content=content).text


# --- the path itself -----------------------------------------------------------------------------


def test_a_proxy_from_the_environment_is_the_pool_the_prepared_request_goes_through(
    route: respx.Route, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.test:3128")
    for name in ("NO_PROXY", "no_proxy", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    route.side_effect = [ok("via the proxy")]
    chat = make_chat()  # llm.test is not this machine: the environment's proxy applies

    assert chat.complete(REQUEST).text == "via the proxy"
    pool = prepared(chat)._pool
    assert isinstance(pool, httpcore2.HTTPProxy)
    assert isinstance(pool._network_backend, llm._TrackingBackend)  # a cancel still aborts


def test_a_client_that_computes_its_key_per_request_is_reached_through_post() -> None:
    client = openai.OpenAI(base_url=BASE_URL, api_key=lambda: "fresh-key", max_retries=0)
    assert llm._prepare(client) is None


def test_a_client_with_a_mounted_transport_is_reached_through_its_send() -> None:
    client = httpx2.Client(transport=httpx2.MockTransport(lambda request: httpx2.Response(200)))
    template = client.build_request("POST", ENDPOINT, content=b"")
    assert PreparedPost.through(client, template) is None


def test_an_sdk_that_builds_requests_otherwise_is_not_prepared(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def changed(self: Any, options: Any, *, retries_taken: int = 0) -> Any:
        raise TypeError("a newer SDK")

    client = openai.OpenAI(base_url=BASE_URL, api_key=API_KEY, max_retries=0)
    monkeypatch.setattr(openai.OpenAI, "_build_request", changed)
    assert llm._prepare(client) is None


def test_without_a_prepared_request_a_plain_call_goes_through_post(route: respx.Route) -> None:
    route.side_effect = [ok("through post")]
    chat = make_chat()
    chat.__dict__["_prepared"] = None  # as _prepare leaves it for a client it cannot prepare

    assert chat.complete(ChatRequest(MESSAGES, timeout=2.5)).text == "through post"
    sent = route.calls.last.request
    assert json.loads(sent.content) == {"model": MODEL, "messages": MESSAGES}
    assert set(sent.extensions["timeout"].values()) == {2.5}


# --- over a real socket --------------------------------------------------------------------------


Scripted = tuple[FakeOpenAI, list[FakeReply | str]]


@pytest.fixture
def scripted() -> Iterator[Scripted]:
    """A fake server answering from a script, one reply per request."""
    script: list[FakeReply | str] = []

    def responder(body: dict[str, Any]) -> FakeReply | str:
        return script.pop(0) if script else FakeReply(content="the script ran out", status=500)

    with FakeOpenAI(responder) as server:
        yield server, script


@pytest.mark.usefixtures("no_post")
def test_the_client_timeout_ends_a_held_reply(scripted: Scripted) -> None:
    fake, script = scripted
    release = threading.Event()
    script.append(FakeReply(content="late", wait=release))
    chat = make_chat(fake.url, request_timeout=0.3)

    started = time.monotonic()
    try:
        with pytest.raises(TransientBackendError) as caught:
            chat.complete(REQUEST)
    finally:
        release.set()

    assert time.monotonic() - started < 10  # the bound of a broken timeout, not a measurement
    assert str(caught.value) == f"the request to the server at {fake.url!r} timed out"
    assert caught.value.attempts == 1


@pytest.mark.usefixtures("no_post")
def test_the_connection_is_kept_across_calls(scripted: Scripted) -> None:
    fake, script = scripted
    script += ["a", "b", "c"]
    chat = make_chat(fake.url)

    texts = [chat.complete(REQUEST).text for _ in range(3)]

    assert texts == ["a", "b", "c"]
    assert [h["authorization"] for h in fake.headers] == [f"Bearer {API_KEY}"] * 3
    pool = prepared(chat)._pool
    assert len(pool.connections) == 1


@pytest.mark.usefixtures("no_post")
def test_a_server_that_is_gone_is_a_connection_failure_without_the_key() -> None:
    server = FakeOpenAI(lambda body: "never")
    url = server.url  # never started: nothing accepts on that port once it is closed
    server._server.server_close()

    with pytest.raises(BackendError) as caught:
        make_chat(url).complete(REQUEST)

    assert str(caught.value).startswith(f"the connection to the server at {url!r} failed: ")
    assert "ConnectError" in str(caught.value)
    assert API_KEY not in str(caught.value)
