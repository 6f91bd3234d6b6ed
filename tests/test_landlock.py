"""Landlock through ctypes: asked in this process, applied only in children (it is for good)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from node_runtime import _landlock

ABI = _landlock.abi()
needs_landlock = pytest.mark.skipif(ABI == 0, reason="the kernel offers no landlock here")


def test_the_abi_is_a_small_whole_number() -> None:
    assert isinstance(ABI, int) and 0 <= ABI < 100


def _confined(tmp_path: Path, body: str, deny_tcp: bool = True) -> object:
    """Run ``body`` in a child after restricting writes to tmp_path/inside."""
    inside = tmp_path / "inside"
    inside.mkdir(exist_ok=True)
    code = (
        "import json, os, socket, sys\n"
        f"sys.path.insert(0, {str(Path(_landlock.__file__).parent.parent)!r})\n"
        "from node_runtime import _landlock\n"
        f"_landlock.restrict({str(inside)!r}, deny_tcp={deny_tcp}, version={ABI})\n"
        "def attempt(f):\n"
        "    try:\n        f()\n        return 'ok'\n"
        "    except OSError as exc:\n        return exc.strerror\n"
        f"{body}\n"
    )
    done = subprocess.run(
        [sys.executable, "-I", "-c", code], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@needs_landlock
def test_writes_are_confined_to_the_folder(tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    result = _confined(
        tmp_path,
        "print(json.dumps([\n"
        f"    attempt(lambda: open({str(tmp_path / 'inside' / 'a.txt')!r}, 'w').write('x')),\n"
        f"    attempt(lambda: open({str(outside)!r}, 'w').write('x')),\n"
        "    attempt(lambda: open('/dev/null', 'w').write('x')),\n"
        "]))",
    )
    assert isinstance(result, list) and result[0] == "ok" and result[2] == "ok"
    assert result[1] == "Permission denied" and not outside.exists()


@needs_landlock
def test_reading_stays_allowed(tmp_path: Path) -> None:
    (tmp_path / "data.txt").write_text("hello")
    result = _confined(tmp_path, f"print(json.dumps(open({str(tmp_path / 'data.txt')!r}).read()))")
    assert result == "hello"


@pytest.mark.skipif(ABI < 4, reason="landlock network rules need ABI 4")
def test_tcp_is_denied_only_when_asked(tmp_path: Path) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    connect = f"print(json.dumps(attempt(lambda: socket.create_connection(('127.0.0.1', {port})))))"
    try:
        assert _confined(tmp_path, connect, deny_tcp=True) == "Permission denied"
        assert _confined(tmp_path, connect, deny_tcp=False) == "ok"
    finally:
        listener.close()
