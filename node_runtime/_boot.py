"""The first code a sandboxed node runs: set limits, lock the file system, then run the node.

overseer starts ``python -I -S -X utf8 _boot.py SPEC`` (inside bubblewrap or ``unshare`` when
available). SPEC is JSON: the node's path, the import path, the resource limits and the Landlock
request. Setting limits here, in the node's own process, keeps ``preexec_fn`` out of overseer's
threaded parent. Any failure to apply the sandbox ends the process before the node runs.
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
        _watch_lifeline(spec.get("lifeline"))
        _set_limits(spec.get("limits") or {})
        _lock_down(spec)
    except (OSError, ValueError) as exc:
        sys.stderr.write(f"overseer sandbox: could not be applied: {exc}\n")
        sys.exit(SETUP_FAILED)
    _run(str(spec["node"]))


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
