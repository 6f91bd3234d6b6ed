"""Cancelling an LLM call: the token, the abort of a reply in flight, and the executor's view.

Everything goes through the real openai client over a real socket to ``FakeOpenAI``. A reply the
server holds back (``FakeReply.wait``) is only released when the test ends, so a call can only
come back early if the cancel really aborted it. Waits on other threads are bounded (``WAIT``),
never measured: a broken abort fails a test instead of hanging the suite.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import pytest
from httpcore2._backends.sync import SyncStream

from overseer.backends.chat import ChatClient, ChatReply, ChatRequest
from overseer.backends.llm import OpenAIChat, RetryPolicy
from overseer.backends.prepared import PreparedPost
from overseer.core.cancel import CancelToken
from overseer.core.executor import Executor
from overseer.core.plan import Plan, Step
from overseer.core.results import RunOutcome
from overseer.core.toolbase import CallContext, ToolResult
from overseer.errors import Cancelled, ToolError
from overseer.events import EventBus
from tests.fake_openai import FakeOpenAI, FakeReply

pytestmark = pytest.mark.timeout(60)

WAIT = 10.0  # the bound of every wait on another thread; never a duration being measured
MODEL = "test-model"
MESSAGES = [{"role": "user", "content": "Say hi"}]
RETRY = RetryPolicy(max_attempts=4, initial_wait=0.5, max_wait=60.0, jitter=0.0)


# --- helpers -------------------------------------------------------------------------------------


@dataclass
class Server:
    """A ``FakeOpenAI`` answering from ``script`` (one reply per request), counting connections.

    ``arrived`` is released once per request the server has read, ``reading`` once per socket
    read the client starts (after its cancel check: only an abort can end that read early);
    ``release`` frees held replies.
    """

    fake: FakeOpenAI
    script: list[FakeReply | str] = field(default_factory=list)
    connections: list[tuple[str, int]] = field(default_factory=list)
    arrived: threading.Semaphore = field(default_factory=lambda: threading.Semaphore(0))
    reading: threading.Semaphore = field(default_factory=lambda: threading.Semaphore(0))
    release: threading.Event = field(default_factory=threading.Event)
    on_request: Callable[[], None] = lambda: None

    def respond(self, body: dict[str, Any]) -> FakeReply | str:
        self.on_request()
        self.arrived.release()
        return self.script.pop(0) if self.script else FakeReply("the script ran out", status=500)

    def held(self, content: str = "too late") -> FakeReply:
        return FakeReply(content=content, wait=self.release)

    def wait_blocked(self) -> None:
        """Until the server holds the request and the client has started reading the reply."""
        assert self.arrived.acquire(timeout=WAIT), "the request never reached the server"
        assert self.reading.acquire(timeout=WAIT), "the client never started to read"


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    fake = FakeOpenAI(lambda body: "unused")
    state = Server(fake)
    fake.responder = state.respond
    accept = fake._server.process_request

    def counting(request: Any, client_address: tuple[str, int]) -> None:
        state.connections.append(client_address)
        accept(request, client_address)

    monkeypatch.setattr(fake._server, "process_request", counting)
    monkeypatch.setattr(SyncStream, "read", _signalling_read(state.reading))
    with fake:
        try:
            yield state
        finally:
            state.release.set()


def _signalling_read(reading: threading.Semaphore) -> Callable[..., bytes]:
    """httpcore's socket read, announcing each read as it starts."""
    read = SyncStream.read

    def signalling(self: SyncStream, max_bytes: int, timeout: float | None = None) -> bytes:
        reading.release()
        return read(self, max_bytes, timeout)

    return signalling


def make_chat(server: Server, **kwargs: Any) -> OpenAIChat:
    """A client whose own timeout is far beyond any test: only a cancel ends a held reply."""
    return OpenAIChat(
        base_url=server.fake.url,
        api_key="sk-test",
        model=MODEL,
        request_timeout=300.0,
        retry=RETRY,
        sleep=_refuse_to_sleep,
        **kwargs,
    )


def _refuse_to_sleep(seconds: float) -> None:
    raise AssertionError(f"a call with a cancel token slept {seconds}s instead of waiting on it")


class Call:
    """``chat.complete(request)`` on its own thread."""

    def __init__(self, chat: ChatClient, request: ChatRequest) -> None:
        self.reply: ChatReply | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(chat, request), daemon=True)
        self.thread.start()

    def _run(self, chat: ChatClient, request: ChatRequest) -> None:
        try:
            self.reply = chat.complete(request)
        except BaseException as exc:
            self.error = exc

    def ended(self) -> BaseException | None:
        """Join the thread (bounded: a hang fails the test) and return what it raised."""
        self.thread.join(WAIT)
        assert not self.thread.is_alive(), "the call is still blocked after the cancel"
        return self.error


def request(cancel: threading.Event | None = None, content: str = "Say hi") -> ChatRequest:
    return ChatRequest([{"role": "user", "content": content}], cancel=cancel)


def assert_cancelled(error: BaseException | None, server: Server) -> None:
    assert isinstance(error, Cancelled), repr(error)
    assert str(error) == f"the call to the server at {server.fake.url!r} was cancelled"


# --- CancelToken ---------------------------------------------------------------------------------


def test_a_token_is_an_event_that_runs_its_callbacks_once_on_set() -> None:
    token = CancelToken()
    calls: list[str] = []
    token.on_cancel(lambda: calls.append("first"))
    token.on_cancel(lambda: calls.append("second"))

    assert not token.is_set() and calls == []
    token.set()
    token.set()

    assert token.is_set() and token.wait(0)
    assert calls == ["first", "second"]


def test_a_callback_registered_after_set_runs_at_once() -> None:
    token = CancelToken()
    token.set()
    calls: list[str] = []

    remove = token.on_cancel(lambda: calls.append("late"))

    assert calls == ["late"]
    remove()  # harmless


def test_a_removed_callback_never_runs() -> None:
    token = CancelToken()
    calls: list[str] = []
    remove = token.on_cancel(lambda: calls.append("removed"))
    token.on_cancel(lambda: calls.append("kept"))

    remove()
    remove()
    token.set()

    assert calls == ["kept"]


def test_a_failing_callback_is_logged_and_the_others_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    token = CancelToken()
    calls: list[str] = []

    def broken() -> None:
        raise RuntimeError("boom")

    token.on_cancel(broken)
    token.on_cancel(lambda: calls.append("after"))
    token.set()

    assert calls == ["after"]
    assert "a cancel callback failed" in caplog.text


def test_every_callback_runs_exactly_once_when_registering_races_the_set() -> None:
    token = CancelToken()
    counts = [0] * 400
    lock = threading.Lock()
    start = threading.Barrier(5)

    def bump(index: int) -> None:
        with lock:
            counts[index] += 1

    def register(first: int) -> None:
        start.wait(WAIT)
        for index in range(first, first + 100):
            token.on_cancel(partial(bump, index))

    threads = [threading.Thread(target=register, args=(n * 100,)) for n in range(4)]
    for thread in threads:
        thread.start()
    start.wait(WAIT)
    token.set()
    for thread in threads:
        thread.join(WAIT)

    assert counts == [1] * 400


def test_a_call_context_carries_a_token() -> None:
    assert isinstance(CallContext().cancelled, CancelToken)
    assert CallContext().cancelled is not CallContext().cancelled


def test_the_token_is_not_part_of_a_requests_value() -> None:
    token = CancelToken()
    assert request(token) == request() and "cancel" not in repr(request(token))


# --- aborting a call -----------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_a_cancel_aborts_a_held_reply(server: Server, stream: bool) -> None:
    server.script.append(server.held())
    token = CancelToken()
    call = Call(make_chat(server, stream=stream), request(token))

    server.wait_blocked()
    token.set()

    assert_cancelled(call.ended(), server)
    assert len(server.fake.requests) == 1  # no retry
    assert not server.release.is_set()  # the server never answered


def test_a_cancel_aborts_a_plain_call_sent_through_the_prepared_post(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The prepared POST goes through the client's pool, so through its aborting sockets."""

    def refuse(self: OpenAIChat, content: bytes, request: ChatRequest) -> str:
        raise AssertionError("the plain call went through the client's post")

    monkeypatch.setattr(OpenAIChat, "_post", refuse)
    server.script += ["first", server.held()]
    chat = make_chat(server)
    assert chat.complete(request()).text == "first"  # the connection the held reply reuses
    token = CancelToken()
    call = Call(chat, request(token))

    assert server.arrived.acquire(timeout=WAIT)  # the first call's
    server.wait_blocked()
    token.set()

    assert_cancelled(call.ended(), server)
    assert isinstance(chat._prepared, PreparedPost)
    assert len(server.fake.requests) == 2
    assert not server.release.is_set()


def test_a_cancel_while_the_server_is_answering_is_not_retried(server: Server) -> None:
    token = CancelToken()
    server.on_request = token.set
    server.script += [FakeReply(status=503, content="busy"), "second attempt"]

    error = Call(make_chat(server), request(token)).ended()

    assert_cancelled(error, server)
    assert len(server.fake.requests) == 1


@pytest.mark.parametrize("kind", [CancelToken, threading.Event], ids=["token", "plain-event"])
def test_a_cancel_during_the_backoff_wait_stops_before_the_next_attempt(
    server: Server, caplog: pytest.LogCaptureFixture, kind: type[threading.Event]
) -> None:
    cancel = kind()
    server.script += [FakeReply(status=503, content="busy", headers={"Retry-After": "50"})]
    server.script.append("second attempt")
    caplog.set_level(logging.INFO, logger="overseer.backends.llm")
    hook = _SetOnRetry(cancel)
    logging.getLogger("overseer.backends.llm").addHandler(hook)
    try:
        error = Call(make_chat(server), request(cancel)).ended()
    finally:
        logging.getLogger("overseer.backends.llm").removeHandler(hook)

    assert hook.fired  # the wait had begun (50 s asked for) when the cancel came
    assert_cancelled(error, server)
    assert len(server.fake.requests) == 1


class _SetOnRetry(logging.Handler):
    """Sets the cancel when the retry layer announces its wait, just before it waits."""

    def __init__(self, cancel: threading.Event) -> None:
        super().__init__(logging.INFO)
        self.cancel = cancel
        self.fired = False

    def emit(self, record: logging.LogRecord) -> None:
        if "retrying in" in record.getMessage():
            self.fired = True
            self.cancel.set()


@pytest.mark.parametrize("kind", [CancelToken, threading.Event], ids=["token", "plain-event"])
def test_a_token_set_before_the_call_sends_nothing(
    server: Server, kind: type[threading.Event]
) -> None:
    cancel = kind()
    cancel.set()

    with pytest.raises(Cancelled):
        make_chat(server).complete(request(cancel))

    assert server.fake.requests == []


def test_cancelled_is_a_tool_error() -> None:
    assert issubclass(Cancelled, ToolError)


def test_only_the_cancelled_call_is_aborted(server: Server) -> None:
    server.script += [server.held("one"), server.held("two")]
    chat = make_chat(server)
    first, second = CancelToken(), CancelToken()
    cancelled = Call(chat, request(first, "one"))
    server.wait_blocked()
    kept = Call(chat, request(second, "two"))
    server.wait_blocked()

    first.set()
    assert_cancelled(cancelled.ended(), server)
    assert kept.thread.is_alive()  # still waiting for its reply
    server.release.set()

    assert kept.ended() is None and kept.reply is not None
    assert kept.reply.text == "two"


def test_a_cancel_after_the_call_returned_touches_nothing(server: Server) -> None:
    server.script += ["first", "second"]
    chat = make_chat(server)
    token = CancelToken()

    assert chat.complete(request(token)).text == "first"
    token.set()  # late: the step was already done
    assert chat.complete(request(CancelToken())).text == "second"

    assert len(server.connections) == 1  # the pooled connection survived


# --- connection reuse ----------------------------------------------------------------------------


@pytest.mark.parametrize("cancel", [None, CancelToken], ids=["no-token", "token"])
def test_sequential_calls_reuse_one_pooled_connection(
    server: Server, cancel: Callable[[], threading.Event] | None
) -> None:
    server.script += ["one", "two", "three"]
    chat = make_chat(server)

    texts = [chat.complete(request(cancel() if cancel else None)).text for _ in range(3)]

    assert texts == ["one", "two", "three"]
    assert len(server.connections) == 1


def test_after_an_abort_the_next_call_gets_a_fresh_connection(server: Server) -> None:
    server.script += [server.held(), "fresh"]
    chat = make_chat(server)
    token = CancelToken()
    call = Call(chat, request(token))
    server.wait_blocked()
    token.set()
    assert_cancelled(call.ended(), server)

    assert chat.complete(request(CancelToken())).text == "fresh"
    assert len(server.connections) == 2


# --- through the executor ------------------------------------------------------------------------


def _llm_runner(chat: ChatClient) -> Callable[[Step, Mapping[str, str], CallContext], ToolResult]:
    """A step's LLM call with the step's cancel token on the request. No per-call timeout: the
    HTTP read could only end by itself when the server answers, so what ends it is the cancel."""

    def run(step: Step, inputs: Mapping[str, str], ctx: CallContext) -> ToolResult:
        messages = [{"role": "user", "content": step.description}]
        reply = chat.complete(ChatRequest(messages, cancel=ctx.cancelled))
        return ToolResult(reply.text, reply.usage, reply.model)

    return run


def _one_step() -> Plan:
    return Plan(steps=(Step(step_id="a", description="Write", tool="writer"),))


def _new_workers(before: set[threading.Thread]) -> list[threading.Thread]:
    return [
        t for t in threading.enumerate() if t not in before and t.name.startswith("overseer-worker")
    ]


def _assert_workers_end(before: set[threading.Thread]) -> None:
    for thread in _new_workers(before):
        thread.join(WAIT)
    assert _new_workers(before) == [], "a worker thread is still blocked in the HTTP read"


def test_a_step_timeout_ends_the_worker_blocked_on_a_held_reply(server: Server) -> None:
    server.script.append(server.held())
    before = set(threading.enumerate())
    executor = Executor(_llm_runner(make_chat(server)), bus=EventBus(), step_timeout=0.2)

    outcome = executor.run(_one_step())

    assert outcome.steps["a"].status == "failed"
    assert "timed out" in (outcome.steps["a"].error or "")
    _assert_workers_end(before)
    assert len(server.fake.requests) == 1  # no retry after the timeout
    assert not server.release.is_set()


def test_cancelling_the_run_ends_the_worker_blocked_on_a_held_reply(server: Server) -> None:
    server.script.append(server.held())
    before = set(threading.enumerate())
    executor = Executor(_llm_runner(make_chat(server)), bus=EventBus(), cancel_grace=3 * WAIT)
    box: list[RunOutcome] = []
    runner = threading.Thread(target=lambda: box.append(executor.run(_one_step())), daemon=True)
    runner.start()

    server.wait_blocked()
    executor.cancel("interrupted by the user")
    runner.join(WAIT)

    assert not runner.is_alive() and box[0].status == "cancelled"
    _assert_workers_end(before)
    assert len(server.fake.requests) == 1


def test_a_loopback_server_is_reached_directly_despite_a_proxy_in_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """HTTP_PROXY without NO_PROXY must not swallow local servers (llama.cpp, vLLM, Ollama)."""
    from overseer.backends.chat import ChatRequest
    from overseer.backends.llm import OpenAIChat
    from tests.fake_openai import FakeOpenAI

    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "all_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    with FakeOpenAI(lambda body: "direct") as fake:
        url = fake.url.replace("127.0.0.1", "localhost")
        for base in (fake.url, url):
            chat = OpenAIChat(base_url=base, api_key=None, model="m")
            reply = chat.complete(ChatRequest(messages=[{"role": "user", "content": "hi"}]))
            assert reply.text == "direct"


@pytest.mark.parametrize(
    ("url", "loopback"),
    [
        ("http://127.0.0.1:8080/v1", True),
        ("http://127.1.2.3/v1", True),
        ("http://[::1]:8000/v1", True),
        ("http://LOCALHOST:11434/v1", True),
        ("https://api.openai.com/v1", False),
        ("http://10.0.0.5:8000/v1", False),
        (None, False),
    ],
)
def test_which_servers_count_as_loopback(url: str | None, loopback: bool) -> None:
    from overseer.backends.llm import _is_loopback

    assert _is_loopback(url) is loopback
