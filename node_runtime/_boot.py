"""The first code a sandboxed node runs: set limits, lock the file system, then run the node.

overseer starts ``python -I -S -X utf8 _boot.py SPEC`` (inside bubblewrap or ``unshare`` when
available). SPEC is JSON: the node's path, the import path, the resource limits and the Landlock
request. Setting limits here, in the node's own process, keeps ``preexec_fn`` out of overseer's
threaded parent. Any failure to apply the sandbox ends the process before the node runs.

Started as pid 1 of a fresh pid namespace (``unshare --pid --fork``), the boot process stays
behind as the namespace's init and runs the node as its child: see ``_become_init``.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import sys

TYPE_CHECKING = False  # typing is slow to import; a node must start fast
if TYPE_CHECKING:
    from typing import Any

__all__ = ["main"]

SETUP_FAILED = 70
"""Exit status when the sandbox could not be applied (the node never ran)."""

_LIMITS = {
    "cpu_seconds": resource.RLIMIT_CPU,
    "memory_bytes": resource.RLIMIT_AS,
    "file_size_bytes": resource.RLIMIT_FSIZE,
    "open_files": resource.RLIMIT_NOFILE,
    "processes": resource.RLIMIT_NPROC,
}


def main(argv: list[str]) -> None:
    spec: dict[str, Any] = json.loads(argv[1])
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [*(spec.get("path") or []), *(p for p in sys.path if p != here)]
    sys.dont_write_bytecode = True
    try:
        _set_limits(spec.get("limits") or {})
        _lock_down(spec)
        if os.getpid() == 1:
            _become_init(spec.get("lifeline"))  # returns in the child only
        else:
            _watch_lifeline(spec.get("lifeline"))
    except (OSError, ValueError) as exc:
        sys.stderr.write(f"overseer sandbox: could not be applied: {exc}\n")
        sys.exit(SETUP_FAILED)
    _run(str(spec["node"]))


def _become_init(lifeline: int | None) -> None:
    """Fork: the child goes on to run the node; this process stays pid 1 and ends as it ends.

    The kernel drops every signal sent to a namespace's pid 1 that it has no handler for, the
    SIGXCPU of the CPU limit included, so a node running as pid 1 would spin on to the hard limit's
    SIGKILL, which ``unshare`` 2.38 then fails to pass on (it exits 1 with "sigprocmask unblock
    failed: Invalid argument"). As pid 2 the node gets its signals; this init exits with the node's
    status, or 128 + the signal that killed it (as bubblewrap reports it), which every version of
    ``unshare`` hands back as its own status. Its exit ends the namespace, so nothing outlives
    the node. It holds the same limits and Landlock domain as the node, which cannot trace it.
    """
    child = os.fork()
    if child == 0:
        return
    _watch_lifeline(lifeline)
    os._exit(_reap_until(child))


def _reap_until(child: int) -> int:
    """Reap every orphan handed to this init until ``child`` ends; its status as an exit code."""
    while True:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            return SETUP_FAILED
        except InterruptedError:
            continue
        if pid == child:
            code = os.waitstatus_to_exitcode(status)
            return 128 - code if code < 0 else code


def _watch_lifeline(fd: int | None) -> None:
    """overseer holds the other end of this pipe: end of file means it is gone, and so must we
    be (the node and everything it started), whatever the sandbox backend."""
    if fd is None:
        return
    import threading

    def watch() -> None:
        try:
            while os.read(fd, 512):
                pass
        except OSError:
            return  # the node closed it: nothing left to watch
        os.killpg(0, signal.SIGKILL)
        os._exit(128 + signal.SIGKILL)  # pid 1 is immune to its own SIGKILL; its exit ends all

    threading.Thread(target=watch, name="overseer-lifeline", daemon=True).start()


def _set_limits(limits: dict[str, int | None]) -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    for name, value in limits.items():
        if value is None:
            continue
        which = _LIMITS[name]
        hard = resource.getrlimit(which)[1]
        extra = 1 if which == resource.RLIMIT_CPU else 0  # SIGXCPU first, SIGKILL a second later
        cap = value + extra if hard == resource.RLIM_INFINITY else min(value + extra, hard)
        resource.setrlimit(which, (min(value, cap), cap))


def _lock_down(spec: dict[str, Any]) -> None:
    landlock = spec.get("landlock")
    if not landlock:
        return
    from node_runtime import _landlock

    _landlock.restrict(
        str(spec["workdir"]), deny_tcp=bool(landlock["deny_tcp"]), version=int(landlock["abi"])
    )


def _run(node: str) -> None:
    """Run the node as ``__main__`` (what runpy does, without its slow imports)."""
    with open(node, encoding="utf-8") as source:
        code = compile(source.read(), node, "exec")
    main = type(sys)("__main__")
    main.__file__ = node
    sys.modules["__main__"] = main
    sys.argv[:] = [node]
    try:
        exec(code, main.__dict__)
    except Exception as exc:
        _report(exc, node)
        sys.exit(1)


def _report(exc: Exception, node: str) -> None:
    """The traceback from the node's own frames on (the boot and runpy frames are noise)."""
    import traceback

    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename != node:
        tb = tb.tb_next
    traceback.print_exception(type(exc), exc, tb or exc.__traceback__)
    sys.stderr.flush()


if __name__ == "__main__":
    os.umask(0o077)
    main(sys.argv)
