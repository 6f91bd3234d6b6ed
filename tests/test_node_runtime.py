"""node_runtime's API in this process, over a scripted backend (the channel has its own tests)."""

from __future__ import annotations

import queue
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import node_runtime
from node_runtime import (
    ToolCallError,
    ToolCallsFailed,
    ToolCallTimeout,
    UnknownToolError,
    call_tool,
    call_tools_parallel,
)
from node_runtime._calls import Call, normalize_calls

Behaviour = Callable[[Call], "str | ToolCallError | None"]


class FakeBackend:
    """Runs each call on a thread; ``behave`` returns the output, an error, or None to hang."""

    def __init__(self, behave: Behaviour, names: tuple[str, ...] = ("echo", "slow")) -> None:
        self.behave = behave
        self.names = names
        self.started: list[Call] = []
        self.cancelled: list[int] = []
        self.lock = threading.Lock()

    def tool_names(self) -> list[str]:
        return list(self.names)

    def start(
        self, index: int, call: Call, done: queue.SimpleQueue[tuple[int, object]]
    ) -> Callable[[], None]:
        with self.lock:
            self.started.append(call)

        def work() -> None:
            outcome = self.behave(call)
            if outcome is not None:
                done.put((index, outcome))

        threading.Thread(target=work, daemon=True).start()
        return lambda: self.cancelled.append(index)


@pytest.fixture
def use() -> Iterator[Callable[[FakeBackend], FakeBackend]]:
    def install(backend: FakeBackend) -> FakeBackend:
        node_runtime._backend = backend
        return backend

    yield install
    node_runtime._backend = None


def echo(call: Call) -> str | ToolCallError | None:
    if call.prompt.startswith("fail"):
        return ToolCallError(f"{call.prompt} failed", tool=call.tool)
    return f"{call.tool}:{call.prompt}:{sorted(call.options.items())}"


def test_call_tool_returns_the_output(use: Callable[[FakeBackend], FakeBackend]) -> None:
    use(FakeBackend(echo))
    assert call_tool("echo", "hi", temperature=0) == "echo:hi:[('temperature', 0)]"


def test_call_tool_raises_the_calls_own_error(use: Callable[[FakeBackend], FakeBackend]) -> None:
    use(FakeBackend(echo))
    with pytest.raises(ToolCallError, match="fail now failed") as info:
        call_tool("echo", "fail now")
    assert not isinstance(info.value, ToolCallsFailed) and info.value.tool == "echo"


def test_results_come_back_in_the_order_of_the_calls(
    use: Callable[[FakeBackend], FakeBackend],
) -> None:
    gates = [threading.Event() for _ in range(4)]

    def reverse(call: Call) -> str:
        index = int(call.prompt)
        if index < 3:
            gates[index + 1].wait(10)  # call 0 ends last, call 3 first
        gates[index].set()
        return f"r{index}"

    use(FakeBackend(reverse))
    calls = [("echo", str(i)) for i in range(4)]
    assert call_tools_parallel(calls) == ["r0", "r1", "r2", "r3"]


def test_an_empty_batch_gives_an_empty_list_without_connecting() -> None:
    node_runtime._backend = None
    assert call_tools_parallel([]) == []
    assert node_runtime._backend is None


def test_options_ride_with_their_call(use: Callable[[FakeBackend], FakeBackend]) -> None:
    use(FakeBackend(echo))
    out = call_tools_parallel([("echo", "a", {"temperature": 0}), ("echo", "b")])
    assert out == ["echo:a:[('temperature', 0)]", "echo:b:[]"]


def test_a_failed_call_does_not_stop_the_others_and_carries_partial_results(
    use: Callable[[FakeBackend], FakeBackend],
) -> None:
    use(FakeBackend(echo))
    with pytest.raises(ToolCallsFailed) as info:
        call_tools_parallel([("echo", "a"), ("echo", "fail b"), ("echo", "c")])
    error = info.value
    assert error.results[0] == "echo:a:[]" and error.results[2] == "echo:c:[]"
    assert isinstance(error.results[1], ToolCallError) and set(error.failures) == {1}
    assert "1 of 3 tool calls failed" in str(error) and "call 1 (echo)" in str(error)
    assert isinstance(error, ToolCallError)


def test_return_exceptions_puts_the_error_in_its_slot(
    use: Callable[[FakeBackend], FakeBackend],
) -> None:
    use(FakeBackend(echo))
    out = call_tools_parallel([("echo", "fail a"), ("echo", "b")], return_exceptions=True)
    assert isinstance(out[0], ToolCallError) and str(out[0]) == "fail a failed"
    assert out[1] == "echo:b:[]"


def test_an_unknown_tool_names_the_tools_and_starts_nothing(
    use: Callable[[FakeBackend], FakeBackend],
) -> None:
    backend = use(FakeBackend(echo))
    with pytest.raises(UnknownToolError) as info:
        call_tools_parallel([("echo", "a"), ("painter", "b")])
    assert "'painter'" in str(info.value) and "echo, slow" in str(info.value)
    assert info.value.known == ["echo", "slow"] and backend.started == []
    with pytest.raises(UnknownToolError):
        call_tool("painter", "x")


@pytest.mark.parametrize(
    ("calls", "expected"),
    [
        ("echo", "expects a list of calls"),
        (("echo", "hi"), "call 0 must be a tuple"),
        ([["echo", "hi"]], "call 0 must be a tuple (name, prompt)"),
        ([("echo",)], "tuple of 1 item"),
        ([("echo", "a", {}, "extra")], "tuple of 4 item"),
        ([("echo", 3)], "the prompt must be a str"),
        ([(3, "a")], "the tool name must be a str"),
        ([("echo", "a", "opts")], "options must be a dict"),
        ([("echo", "a", {"x": object()})], "options must be JSON values"),
        ({"echo": "a"}, "expects a list of calls"),
        (None, "expects a list of calls"),
    ],
)
def test_malformed_calls_raise_type_error_showing_the_shape(calls: object, expected: str) -> None:
    with pytest.raises(TypeError) as info:
        call_tools_parallel(calls)  # type: ignore[arg-type]
    assert expected in str(info.value)
    assert "(name, prompt) or (name, prompt, options)" in str(info.value) or "must be" in str(
        info.value
    )


def test_call_tool_checks_its_argument_types() -> None:
    with pytest.raises(TypeError, match="call_tool"):
        call_tool(3, "x")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="prompt must be a str"):
        call_tool("echo", ["x"])  # type: ignore[arg-type]


def test_a_generator_of_calls_is_accepted(use: Callable[[FakeBackend], FakeBackend]) -> None:
    use(FakeBackend(echo))
    assert call_tools_parallel(("echo", p) for p in "ab") == ["echo:a:[]", "echo:b:[]"]


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_max_workers_must_be_a_positive_whole_number(bad: object) -> None:
    with pytest.raises(ValueError, match="max_workers"):
        call_tools_parallel([("echo", "a")], max_workers=bad)  # type: ignore[arg-type]


def test_max_workers_keeps_a_window_of_calls_in_flight(
    use: Callable[[FakeBackend], FakeBackend],
) -> None:
    running, peak, lock = [0], [0], threading.Lock()
    release = threading.Semaphore(0)

    def counted(call: Call) -> str:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        release.release()  # let the next one in only once this one has counted itself
        with lock:
            running[0] -= 1
        return call.prompt

    use(FakeBackend(counted))
    out = call_tools_parallel([("echo", str(i)) for i in range(6)], max_workers=2)
    assert out == [str(i) for i in range(6)] and peak[0] <= 2


def test_a_batch_timeout_fails_the_unfinished_calls_and_cancels_them(
    use: Callable[[FakeBackend], FakeBackend],
) -> None:
    backend = use(FakeBackend(lambda c: None if c.prompt == "hang" else "ok"))
    out = call_tools_parallel(
        [("echo", "a"), ("slow", "hang")], timeout=0.2, return_exceptions=True
    )
    assert out[0] == "ok" and isinstance(out[1], ToolCallTimeout)
    assert isinstance(out[1], TimeoutError) and backend.cancelled == [1]
    with pytest.raises(ToolCallsFailed) as info:
        call_tools_parallel([("slow", "hang")], timeout=0.05)
    assert isinstance(info.value.results[0], ToolCallTimeout)


def test_a_timeout_also_fails_calls_not_yet_started(
    use: Callable[[FakeBackend], FakeBackend],
) -> None:
    use(FakeBackend(lambda c: None))
    out = call_tools_parallel(
        [("slow", "1"), ("slow", "2")], max_workers=1, timeout=0.05, return_exceptions=True
    )
    assert "was not started" in str(out[1]) and "did not finish" in str(out[0])


def test_normalize_keeps_calls_as_given() -> None:
    [call] = normalize_calls([("t", "p", {"a": 1})])
    assert (call.tool, call.prompt, call.options) == ("t", "p", {"a": 1})
    assert repr(call) == "Call('t', 'p', {'a': 1})"


def test_importing_node_runtime_loads_neither_openai_rich_pydantic_nor_typing(
    repo_root: Path,
) -> None:
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import node_runtime; "
        "print(sorted(m for m in ('openai', 'rich', 'pydantic', 'overseer', 'typing') "
        "if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-I", "-S", "-c", code, str(repo_root)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == "[]"


def test_a_bad_channel_descriptor_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    node_runtime._backend = None
    monkeypatch.setenv("OVERSEER_NODE_FD", "not-a-number")
    with pytest.raises(ToolCallError, match="is not a file descriptor"):
        call_tool("echo", "x")
    monkeypatch.setenv("OVERSEER_NODE_FD", "987")
    with pytest.raises(ToolCallError, match="not an open tool channel"):
        call_tool("echo", "x")
    assert node_runtime._backend is None


def test_the_partial_failure_message_counts_every_failure() -> None:
    first = ToolCallError("no", tool="a")
    error = ToolCallsFailed(["ok", first, ToolCallError("no", tool="b")], {1: first, 2: first})
    assert str(error) == "2 of 3 tool calls failed: call 1 (a): no and 1 more"
    assert error.kind == "partial" and error.tool == "a"


def test_an_unknown_tool_with_no_tools_at_all_says_none() -> None:
    assert str(UnknownToolError("x", [])) == "unknown tool 'x'; the tools are: (none)"
    assert isinstance(UnknownToolError("x", []), LookupError)


def test_batches_from_several_threads_of_a_node_do_not_mix(
    use: Callable[[FakeBackend], FakeBackend],
) -> None:
    use(FakeBackend(lambda call: call.prompt))
    results: dict[int, list[object]] = {}

    def batch(n: int) -> None:
        results[n] = call_tools_parallel([("echo", f"{n}-{i}") for i in range(20)])

    threads = [threading.Thread(target=batch, args=(n,)) for n in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert results == {n: [f"{n}-{i}" for i in range(20)] for n in range(5)}
