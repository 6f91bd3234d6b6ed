"""Drive ``overseer chat`` through a pseudo-terminal (pexpect) or piped stdin, against the fake
OpenAI-compatible server; read the terminal until a marker appears, never for a fixed time."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import pexpect

__all__ = [
    "PROMPT_MARK",
    "Terminal",
    "chat_env",
    "child_processes",
    "run_piped",
    "strip_ansi",
]

PROMPT_MARK = "overseer>"
_ANSI = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[()][0-9A-Za-z]|\x1b[=>78]|\r"
)


def strip_ansi(text: str) -> str:
    """The text a terminal shows, without escape sequences and carriage returns."""
    return _ANSI.sub("", text)


def chat_env(home: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a chat subprocess: no keys, its own state dir, a plain terminal."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "OVERSEER_"))}
    env.update(OVERSEER_HOME=str(home), TERM="xterm", PROMPT_TOOLKIT_NO_CPR="1", NO_COLOR="")
    env.pop("NO_COLOR")
    env.update(extra or {})
    return env


class Terminal:
    """``overseer chat ARGS`` on a pseudo-terminal; ``expect`` reads until a marker shows."""

    def __init__(self, args: Sequence[str], env: Mapping[str, str], timeout: float = 30) -> None:
        self.child = pexpect.spawn(
            sys.executable,
            ["-m", "overseer", "chat", *args],
            env=dict(env),
            encoding="utf-8",
            codec_errors="replace",
            dimensions=(50, 200),
        )
        self.timeout = timeout
        self.raw = ""
        self.seen = 0

    @property
    def pid(self) -> int:
        assert self.child.pid is not None
        return self.child.pid

    def text(self) -> str:
        return strip_ansi(self.raw)

    def expect(self, marker: str) -> str:
        """Read until ``marker`` appears after what was read before; return the text before it."""
        deadline = time.monotonic() + self.timeout
        while True:
            text = self.text()
            at = text.find(marker, self.seen)
            if at >= 0:
                before, self.seen = text[self.seen : at], at + len(marker)
                return before
            self._read(deadline, marker)

    def _read(self, deadline: float, marker: str) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"{marker!r} never showed; after it: {self.text()[self.seen :]!r}")
        try:
            self.raw += self.child.read_nonblocking(65536, timeout=remaining)
        except pexpect.TIMEOUT:
            return
        except pexpect.EOF as exc:
            raise AssertionError(
                f"the chat ended before {marker!r}: {self.text()[self.seen :]!r}"
            ) from exc

    def send_line(self, text: str) -> None:
        self.child.send(text + "\r")

    def interrupt(self) -> None:
        """Ctrl-C as the terminal sends it: SIGINT while a request runs, a key at the prompt."""
        self.child.sendintr()

    def end(self) -> int:
        """Ctrl-D at an empty prompt; wait for the exit and return its status."""
        self.child.sendeof()
        return self.wait()

    def wait(self) -> int:
        self.child.expect(pexpect.EOF, timeout=self.timeout)
        self.raw += self.child.before or ""
        self.child.close()
        status = self.child.exitstatus
        assert status is not None, f"the chat was killed by signal {self.child.signalstatus}"
        return int(status)

    def close(self) -> None:
        if self.child.isalive():
            self.child.terminate(force=True)


def run_piped(
    args: Sequence[str], lines: str, env: Mapping[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """``overseer chat ARGS`` with ``lines`` on stdin (not a terminal)."""
    return subprocess.run(
        [sys.executable, "-m", "overseer", "chat", *args],
        input=lines,
        capture_output=True,
        text=True,
        env=dict(env),
        timeout=timeout,
    )


def child_processes(pid: int) -> list[int]:
    """The live processes whose parent is ``pid`` (Linux ``/proc``)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry.name))
    return found
