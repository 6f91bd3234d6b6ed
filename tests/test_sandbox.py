"""Real node processes in the sandbox: tool calls over the channel, limits, isolation, cleanup.

Tests that need a particular isolation skip, saying why, where this machine cannot provide it;
everything else runs under every backend that works here (bwrap, unshare, none).
"""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

import node_runtime
from node_runtime import wire
from overseer.events import NodeCallFinished, NodeCallStarted
from overseer.nodes.folders import sweep_stale
from overseer.nodes.isolation import HIDE_ENV, capabilities, decide
from overseer.nodes.sandbox import SETUP_FAILED, NodeRun
from tests.nodehelp import (
    BACKENDS,
    REPORT_FOLDER,
    Reporter,
    processes_with,
    require_backend,
    run_code,
    sandbox,
    services,
    stderr_json,
    tool,
    upper,
)

PARALLEL_NODE = """
import json, sys
from node_runtime import call_tools_parallel
data = json.load(sys.stdin)
out = call_tools_parallel([("slow", f"call {i}") for i in range(5)])
print(json.dumps({"task": data["task"], "out": out}))
"""


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    require_backend(request.param)
    return str(request.param)


def test_five_parallel_calls_overlap_and_come_back_in_order(backend: str) -> None:
    barrier = threading.Barrier(5, timeout=30)  # breaks unless all five run at once

    def slow(prompt: str) -> str:
        barrier.wait()
        return prompt.upper()

    run, recorder = services(tool("slow", slow), **{"run.max_workers": 8})
    node, _ = run_code(PARALLEL_NODE, run, settings=sandbox(backend))
    assert node.ok, node.stderr
    assert json.loads(node.stdout) == {"task": "t", "out": [f"CALL {i}" for i in range(5)]}
    started, finished = recorder.of(NodeCallStarted), recorder.of(NodeCallFinished)
    assert max(e.t for e in started) <= min(e.t for e in finished)  # all began before any ended


def test_the_node_reads_its_task_and_inputs_and_prints_any_json(backend: str) -> None:
    code = "import json, sys\nd = json.load(sys.stdin)\nprint(json.dumps([d['task'], d['inputs']]))"
    payload = {"task": "count", "inputs": {"step1": "a b c"}}
    node, _ = run_code(code, payload=payload, settings=sandbox(backend))
    assert node.ok and json.loads(node.stdout) == ["count", {"step1": "a b c"}]


def test_the_environment_holds_no_secret(backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "sk-node-must-not-see-" + uuid.uuid4().hex
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    code = (
        "import json, os\n"
        "print(json.dumps({'env': dict(os.environ), 'argv': open('/proc/self/cmdline').read()}))"
    )
    node, _ = run_code(code, settings=sandbox(backend))
    seen = json.loads(node.stdout)
    assert set(seen["env"]) <= {"PATH", "HOME", "TMPDIR", "LANG", "LC_ALL", "PWD", wire.FD_ENV}
    assert secret not in node.stdout.decode()


def test_no_process_the_node_can_read_holds_the_key(
    backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not even overseer's own environment, through /proc."""
    if backend == "none" and not capabilities().landlock_abi:
        pytest.skip("without namespaces or landlock a node can read its parent's /proc entry")
    secret = "sk-proc-" + uuid.uuid4().hex
    monkeypatch.setenv("OPENAI_API_KEY", secret)  # in this process's environ from now on
    os.environ["OPENAI_API_KEY"] = secret
    code = (
        "import os, json\nfound = []\n"
        "for pid in os.listdir('/proc'):\n"
        "    try:\n"
        f"        if b'{secret}' in open(f'/proc/{{pid}}/environ', 'rb').read():\n"
        "            found.append(pid)\n"
        "    except (OSError, ValueError):\n"
        "        pass\n"
        "print(json.dumps(found))"
    )
    node, _ = run_code(code, settings=sandbox(backend))
    assert node.ok, node.stderr
    assert json.loads(node.stdout) == []


def test_a_node_looping_forever_is_killed_with_its_children(backend: str) -> None:
    marker = "overseer-test-" + uuid.uuid4().hex
    code = (
        "import subprocess, sys\n"
        f"child = [sys.executable, '-c', 'while True: pass', '{marker}']\n"
        "subprocess.Popen(child)\n"
        "subprocess.Popen([sys.executable, '-c', 'import subprocess, sys; "
        f'subprocess.Popen([sys.executable, "-c", "while True: pass", "{marker}"]); '
        "sys.stdin.read()', 'grandparent'])\n"
        "while True:\n    pass\n"
    )
    node, _ = run_code(code, settings=sandbox(backend), timeout=2.0)
    assert node.stopped == "timeout" and not node.ok
    assert "timed out after 2s" in (node.failure() or "")
    assert processes_with(marker) == []


def test_a_grandchild_that_leaves_the_process_group_is_killed_too(backend: str) -> None:
    iso = decide(sandbox(backend))
    if not iso.pid_namespace and not iso.use_cgroup:
        pytest.skip("without a pid namespace or a pids cgroup a setsid() grandchild can escape")
    marker = "overseer-test-" + uuid.uuid4().hex
    code = (
        "import subprocess, sys\n"
        f"subprocess.Popen([sys.executable, '-c', 'while True: pass', '{marker}'],"
        " start_new_session=True)\n"
        "print(1)\n"
    )
    node, _ = run_code(code, settings=sandbox(backend))
    assert node.ok
    assert processes_with(marker) == []


def test_a_memory_bomb_fails_the_node_not_the_run(backend: str) -> None:
    code = "chunks = []\nwhile True:\n    chunks.append(bytearray(32 * 1024 * 1024))\n"
    node, _ = run_code(code, settings=sandbox(backend, memory_mb=256))
    assert not node.ok and node.stopped is None
    assert "MemoryError" in node.stderr
    assert node.failure() == "the node exited with status 1 (out of memory: the limit is 256 MiB)"


def all_exit(pidfds: list[int], within: float) -> bool:
    """Wait on pidfds (readable once their process has exited) until all are, or time is up."""
    waiting, deadline = list(pidfds), time.monotonic() + within
    while waiting and time.monotonic() < deadline:
        ready, _, _ = select.select(waiting, [], [], deadline - time.monotonic())
        waiting = [fd for fd in waiting if fd not in ready]
    return not waiting


def _require_process_limit(backend: str) -> None:
    if decide(sandbox(backend)).processes.startswith("NOT"):
        pytest.skip("processes cannot be limited here (root without a writable pids cgroup)")


def test_a_fork_bomb_hits_the_process_limit(backend: str) -> None:
    _require_process_limit(backend)
    code = (
        "import os, json, signal\nborn = 0\n"
        "while True:\n"
        "    try:\n        pid = os.fork()\n"
        "    except OSError as exc:\n"
        "        print(json.dumps({'born': born, 'error': exc.errno})); break\n"
        "    if pid == 0:\n        signal.pause()\n"
        "    born += 1\n"
    )
    node, _ = run_code(code, settings=sandbox(backend, processes=16))
    assert node.ok, node.stderr
    result = json.loads(node.stdout)
    assert 1 <= result["born"] < 16 and result["error"] == 11  # EAGAIN; the node counts too


def test_a_fork_bomb_of_forking_children_ends_at_the_timeout_with_nothing_left(
    backend: str,
) -> None:
    _require_process_limit(backend)
    reporter = Reporter()
    run, _ = services(reporter)
    code = (
        REPORT_FOLDER
        + "while True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    )
    node, _ = run_code(code, run, settings=sandbox(backend, processes=16), timeout=2.0)
    assert node.stopped == "timeout"
    if node.peak_processes is not None:
        assert node.peak_processes <= 16 + 2  # + bubblewrap's own two
    folder = reporter.first()
    assert processes_with(folder) == []


def test_a_node_dies_when_overseer_dies(backend: str, repo_root: Path) -> None:
    """The lifeline: kill the parent outright (no cleanup runs) and the node still goes."""
    script = (
        "import sys\n"
        "from tests.nodehelp import REPORT_FOLDER, Reporter, run_code, sandbox, services\n"
        "reporter = Reporter()\n"
        "run, _ = services(reporter)\n"
        "import threading\n"
        "say = lambda: print(reporter.first(), flush=True)\n"
        "threading.Thread(target=say, daemon=True).start()\n"
        f"run_code(REPORT_FOLDER + 'while True:\\n    pass\\n', run, settings=sandbox({backend!r}),"
        " timeout=120)\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script], cwd=repo_root, stdout=subprocess.PIPE, text=True
    )
    try:
        assert parent.stdout is not None
        folder = parent.stdout.readline().strip()
        assert folder.endswith("/work"), folder
        pidfds = [os.pidfd_open(pid) for pid in processes_with(folder)]
        assert pidfds, "the node is not running"
        parent.kill()
        parent.wait()
        assert all_exit(pidfds, within=30)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
    for fd in pidfds:
        os.close(fd)
    left = Path(folder).parent  # nothing could remove it: the next overseer does
    assert left.exists() and left in sweep_stale() and not left.exists()


def test_a_node_cancelled_while_running_leaves_no_folder_and_no_process(backend: str) -> None:
    """The cancel path a SIGTERM or SIGHUP of overseer takes: the step's task goes too."""
    reporter = Reporter()
    run, _ = services(reporter)
    cancelled = threading.Event()
    marker = "overseer-cancel-" + uuid.uuid4().hex
    code = (
        REPORT_FOLDER
        + f"import subprocess, sys\nsubprocess.Popen([sys.executable, '-c', 'while True: pass',"
        f" '{marker}'])\nwhile True:\n    pass\n"
    )

    def cancel_once_running() -> None:
        reporter.first()
        cancelled.set()

    threading.Thread(target=cancel_once_running, daemon=True).start()
    node, _ = run_code(code, run, settings=sandbox(backend), cancelled=cancelled)
    folder = Path(reporter.first())
    assert node.stopped == "cancelled"
    assert not folder.parent.exists()  # input.json, with the step's task, included
    assert processes_with(str(folder)) == [] and processes_with(marker) == []


def test_a_network_connection_fails(backend: str) -> None:
    iso = decide(sandbox(backend))
    if iso.network.startswith("NOT"):
        pytest.skip("no network isolation here: no user namespaces and no landlock network rules")
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    port = listener.getsockname()[1]
    code = (
        "import socket, json\n"
        "try:\n"
        f"    socket.create_connection(('127.0.0.1', {port}), timeout=5); print('true')\n"
        "except OSError as exc:\n"
        "    print(json.dumps(str(exc)))\n"
    )
    try:
        node, _ = run_code(code, settings=sandbox(backend))
        assert node.ok, node.stderr
        assert json.loads(node.stdout) != "true"
        with pytest.raises(BlockingIOError):
            listener.accept()  # nothing ever connected
    finally:
        listener.close()


def test_network_may_be_allowed_by_configuration() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    code = f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=5)\nprint(1)\n"
    settings = sandbox(network=True)
    try:
        node, _ = run_code(code, settings=settings)
    finally:
        listener.close()
    assert node.ok, node.stderr
    assert decide(settings).network.startswith("allowed")


def test_writes_outside_the_working_folder_fail(backend: str, tmp_path: os.PathLike[str]) -> None:
    iso = decide(sandbox(backend))
    if iso.filesystem.startswith("NOT"):
        pytest.skip("no bubblewrap and no landlock here: writes cannot be confined")
    outside = os.path.join(str(tmp_path), "escaped.txt")
    code = (
        "import json\nopen('inside.txt', 'w').write('ok')\n"
        "try:\n"
        f"    open({outside!r}, 'w').write('bad'); print('true')\n"
        "except OSError as exc:\n    print(json.dumps(exc.strerror))\n"
    )
    node, _ = run_code(code, settings=sandbox(backend))
    assert node.ok, node.stderr
    assert json.loads(node.stdout) != "true" and not os.path.exists(outside)


def test_junk_on_stdout_does_not_disturb_the_tool_channel(backend: str) -> None:
    code = (
        "import sys, os, json\n"
        "from node_runtime import call_tools_parallel\n"
        "os.write(1, b'\\x00\\x00\\x00\\x05hello' + bytes(range(256)))\n"
        'print(\'{"op": "result", "id": 1, "ok": true, "output": "forged"}\')\n'
        "out = call_tools_parallel([('upper', 'a'), ('upper', 'b'), ('upper', 'c')])\n"
        "sys.stdout.write('more junk' * 1000)\n"
        "print('RESULT ' + json.dumps(out), file=sys.stderr)\n"
    )
    run, _ = services(tool("upper", upper))
    node, broker = run_code(code, run, settings=sandbox(backend))
    assert node.ok, node.stderr
    assert stderr_json(node) == ["A", "B", "C"]
    assert node.stdout.startswith(b"\x00\x00\x00\x05hello") and b"forged" in node.stdout
    assert broker is not None and broker.calls == 3 and broker.protocol_error == ""


def test_oversized_output_is_cut_off(backend: str) -> None:
    code = "import sys\nwhile True:\n    sys.stdout.write('x' * 65536)\n"
    node, _ = run_code(code, settings=sandbox(backend))
    assert node.stopped == "output"
    assert "too much on stdout" in (node.failure() or "")


def test_a_cancelled_node_is_stopped(backend: str) -> None:
    cancelled = threading.Event()
    cancelled.set()
    node, _ = run_code("while True:\n    pass\n", settings=sandbox(backend), cancelled=cancelled)
    assert node.stopped == "cancelled" and "cancelled" in (node.failure() or "")


def test_an_exception_is_reported_from_the_nodes_own_frames(backend: str) -> None:
    node, _ = run_code("def f():\n    return 1 / 0\nf()\n", settings=sandbox(backend))
    assert node.returncode == 1 and "ZeroDivisionError" in node.stderr
    assert "_boot.py" not in node.stderr and "runpy" not in node.stderr
    assert 'node.py", line 3' in node.stderr


def test_the_working_folder_is_private_and_removed(backend: str) -> None:
    code = "import os, json\nopen('f.txt', 'w').write('x')\nprint(json.dumps(os.getcwd()))"
    node, _ = run_code(code, settings=sandbox(backend))
    folder = json.loads(node.stdout)
    assert folder.endswith("/work") and not os.path.exists(os.path.dirname(folder))


def test_cpu_time_is_limited(backend: str) -> None:
    """Under ``unshare`` the node once ran as pid 1, which the kernel spares SIGXCPU, and
    unshare 2.38 turned the hard limit's SIGKILL into "exited with status 1"."""
    settings = sandbox(backend, cpu_seconds=1)
    node, _ = run_code("while True:\n    pass\n", settings=settings, timeout=60)
    assert node.stopped is None and not node.ok
    assert "was killed by SIGXCPU (CPU limit of 1s)" in (node.failure() or ""), node.stderr


def test_a_node_ignoring_sigxcpu_is_killed_at_the_hard_limit(backend: str) -> None:
    code = "import signal\nsignal.signal(signal.SIGXCPU, signal.SIG_IGN)\nwhile True:\n    pass\n"
    node, _ = run_code(code, settings=sandbox(backend, cpu_seconds=1), timeout=60)
    assert node.stopped is None and "was killed by SIGKILL" in (node.failure() or ""), node.stderr


def test_a_node_killed_by_a_signal_is_reported_by_its_name(backend: str) -> None:
    code = "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n"
    node, _ = run_code(code, settings=sandbox(backend))
    assert node.failure() == "the node was killed by SIGKILL (a limit was hit, or it was killed)"
    assert "sigprocmask" not in node.stderr


def test_a_nodes_own_exit_status_comes_through(backend: str) -> None:
    node, _ = run_code("import sys\nsys.exit(3)\n", settings=sandbox(backend))
    assert node.returncode == 3 and node.failure() == "the node exited with status 3"


def test_in_a_pid_namespace_the_node_is_not_its_init(backend: str) -> None:
    """pid 1 would ignore the signals it has no handler for: the boot process stays init."""
    if not decide(sandbox(backend)).pid_namespace:
        pytest.skip("no pid namespace with this backend")
    code = "import json, os\nprint(json.dumps([os.getpid(), os.getppid()]))\n"
    node, _ = run_code(code, settings=sandbox(backend))
    assert node.ok and json.loads(node.stdout) == [2, 1]


def test_without_bubblewrap_auto_falls_back_to_unshare_and_still_limits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As on a machine without bubblewrap (issue 8): OVERSEER_SANDBOX_HIDE hides it."""
    monkeypatch.setenv(HIDE_ENV, "bwrap")
    require_backend("unshare")
    assert decide(sandbox()).backend == "unshare"
    node, _ = run_code("while True:\n    pass\n", settings=sandbox(cpu_seconds=1), timeout=60)
    assert "SIGXCPU" in (node.failure() or ""), node.stderr


def test_a_sandbox_that_cannot_be_applied_stops_before_the_node_runs(tmp_path: Path) -> None:
    """The boot script fails closed: here Landlock is asked to guard a folder that is missing."""
    abi = capabilities().landlock_abi
    if not abi:
        pytest.skip("the kernel has no landlock")
    node = tmp_path / "node.py"
    node.write_text("print('ran')\n")
    spec = {
        "node": str(node),
        "workdir": str(tmp_path / "missing"),
        "path": [str(Path(node_runtime.__file__).parent.parent)],
        "limits": {"open_files": 64},
        "landlock": {"abi": abi, "deny_tcp": True},
    }
    boot = str(Path(node_runtime.__file__).parent / "_boot.py")
    done = subprocess.run(
        [sys.executable, "-I", "-S", boot, json.dumps(spec)], capture_output=True, text=True
    )
    assert done.returncode == SETUP_FAILED and done.stdout == ""
    assert done.stderr.startswith("overseer sandbox: could not be applied")


def test_a_failed_setup_is_described_in_one_line() -> None:
    run = NodeRun(
        b"",
        "overseer sandbox: could not be applied: x\n",
        SETUP_FAILED,
        None,
        0.1,
        5.0,
        decide(sandbox()),
    )
    assert run.failure() == "overseer sandbox: could not be applied: x"


@pytest.mark.parametrize(
    ("code", "words"),
    [
        (-9, "was killed by SIGKILL"),
        (137, "was killed by SIGKILL"),
        (-24, "SIGXCPU (CPU limit"),
        (152, "SIGXCPU (CPU limit"),
        (3, "exited with status 3"),
        (200, "exited with status 200"),
    ],
)
def test_exit_statuses_are_put_into_words(code: int, words: str) -> None:
    run = NodeRun(b"", "", code, None, 0.1, 5.0, decide(sandbox()))
    assert words in (run.failure() or "")


@pytest.fixture
def plain_unshare(monkeypatch: pytest.MonkeyPatch) -> None:
    """As on kernels that refuse a fresh /proc in a user namespace: plain ``unshare -rn``."""
    from dataclasses import replace

    from overseer.nodes import isolation
    from overseer.nodes import sandbox as sandbox_module

    caps = capabilities()
    if caps.unshare is None:
        pytest.skip("unshare cannot create user namespaces here")
    plain = replace(caps, bwrap=None, unshare_args=isolation.UNSHARE_PLAIN)
    monkeypatch.setattr(isolation, "capabilities", lambda: plain)
    monkeypatch.setattr(sandbox_module, "capabilities", lambda: plain)


@pytest.mark.usefixtures("plain_unshare")
def test_plain_unshare_still_isolates_the_network_and_kills_the_group() -> None:
    iso = decide(sandbox("unshare"))
    assert iso.network_isolated and not iso.pid_namespace
    marker = "overseer-plain-" + uuid.uuid4().hex
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    port = listener.getsockname()[1]
    code = (
        "import socket, subprocess, sys\n"
        f"subprocess.Popen([sys.executable, '-c', 'while True: pass', '{marker}'])\n"
        f"try:\n    socket.create_connection(('127.0.0.1', {port}), timeout=5)\n"
        "except OSError as exc:\n    print('refused', file=sys.stderr, flush=True)\n"
        "while True:\n    pass\n"
    )
    try:
        node, _ = run_code(code, settings=sandbox("unshare"), timeout=2.0)
        with pytest.raises(BlockingIOError):
            listener.accept()
    finally:
        listener.close()
    assert node.stopped == "timeout" and "refused" in node.stderr
    assert processes_with(marker) == []


@pytest.mark.usefixtures("plain_unshare")
def test_plain_unshare_reports_the_cpu_limit() -> None:
    node, _ = run_code("while True:\n    pass\n", settings=sandbox("unshare", cpu_seconds=1))
    assert "was killed by SIGXCPU" in (node.failure() or ""), node.stderr


def test_the_limits_are_in_force_inside_the_node(backend: str) -> None:
    code = (
        "import json, resource\n"
        "names = ['RLIMIT_CPU', 'RLIMIT_AS', 'RLIMIT_FSIZE', 'RLIMIT_NOFILE', 'RLIMIT_CORE']\n"
        "print(json.dumps({n: resource.getrlimit(getattr(resource, n)) for n in names}))\n"
    )
    settings = sandbox(backend, cpu_seconds=7, memory_mb=300, file_size_mb=5, open_files=40)
    node, _ = run_code(code, settings=settings)
    assert node.ok, node.stderr
    limits = json.loads(node.stdout)
    assert limits["RLIMIT_CPU"] == [7, 8]  # SIGXCPU at 7 s, SIGKILL a second later
    assert limits["RLIMIT_AS"] == [300 * 1024 * 1024] * 2
    assert limits["RLIMIT_FSIZE"] == [5 * 1024 * 1024] * 2
    assert limits["RLIMIT_NOFILE"] == [40, 40] and limits["RLIMIT_CORE"] == [0, 0]


def test_a_file_over_the_size_limit_cannot_be_written(backend: str) -> None:
    code = (
        "import json\n"
        "try:\n    open('big', 'wb').write(b'x' * (2 * 1024 * 1024))\n    print('true')\n"
        "except OSError as exc:\n    print(json.dumps(exc.errno))\n"
    )
    node, _ = run_code(code, settings=sandbox(backend, file_size_mb=1))
    assert node.ok, node.stderr
    assert json.loads(node.stdout) == 27  # EFBIG


def test_lifted_limits_are_left_alone(backend: str) -> None:
    lifted = {"cpu_seconds": None, "memory_mb": None, "file_size_mb": None, "open_files": None}
    settings = sandbox(backend, **lifted)
    code = "import json, resource\nprint(json.dumps(resource.getrlimit(resource.RLIMIT_AS)))"
    node, _ = run_code(code, settings=settings)
    assert node.ok and json.loads(node.stdout)[0] == -1  # RLIM_INFINITY


def test_the_node_cannot_signal_processes_outside_its_sandbox(backend: str) -> None:
    iso = decide(sandbox(backend))
    if not iso.pid_namespace and iso.landlock_abi < 6:
        pytest.skip("neither a pid namespace nor landlock signal scoping (ABI 6) here")
    victim = subprocess.Popen([sys.executable, "-c", "import signal; signal.pause()"])
    try:
        code = (
            "import os, json\n"
            f"try:\n    os.kill({victim.pid}, 9)\n    print('true')\n"
            "except OSError as exc:\n    print(json.dumps(exc.strerror))\n"
        )
        node, _ = run_code(code, settings=sandbox(backend))
        assert node.ok, node.stderr
        assert json.loads(node.stdout) != "true" and victim.poll() is None
    finally:
        victim.kill()
        victim.wait()


def test_the_user_task_count_covers_this_process() -> None:
    from overseer.nodes import sandbox as sandbox_module

    assert sandbox_module._user_tasks(os.getuid()) >= threading.active_count()
    assert sandbox_module._nproc(10, "bwrap") == 10
