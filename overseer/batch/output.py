"""The output file of a batch: one JSON line per request, what a rerun skips, and the batch id.

A rerun with the same ``--output`` continues the batch: the ids that already succeeded there are
skipped, and everything else runs again. Each id appears once: when the rerun starts, the file is
rewritten (to a temporary file, then renamed over it) keeping only the lines of requests that
succeeded, so the failed ones, which run again, and a line cut short by a kill are dropped; from
then on every finished request is appended as one line and flushed. A kill loses only the
requests in flight. The batch id is written on every line, and a rerun reads it back, so the
journal sees one batch however often it is continued; a new (or empty) output file starts a new
batch.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from overseer.errors import UsageError

__all__ = ["OutputFile", "PriorLines", "new_batch_id", "read_prior"]


@dataclass
class PriorLines:
    """What an earlier attempt left in the output file."""

    succeeded: dict[str, str] = field(default_factory=dict)  # key -> its line, as written
    batch_id: str | None = None
    dropped: int = 0  # failed lines and unreadable ones, removed when the rerun starts
    clean: bool = True  # False: the file must be rewritten before appending


def read_prior(path: Path) -> PriorLines:
    """The succeeded lines of an earlier attempt (none when the file does not exist)."""
    prior = PriorLines()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return prior
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "it is not UTF-8 text"
        raise UsageError(f"cannot read the output file {str(path)!r}: {why}") from None
    for line in text.splitlines():
        _take(prior, line)
    prior.clean = prior.dropped == 0 and (not text or text.endswith("\n"))
    return prior


def _take(prior: PriorLines, line: str) -> None:
    data = _parse(line)
    if data is None:
        prior.dropped += bool(line.strip())
        return
    prior.batch_id = prior.batch_id or _str_or_none(data.get("batch_id"))
    key = str(data["id"])
    if data.get("status") == "succeeded":
        prior.succeeded[key] = line
    else:
        prior.succeeded.pop(key, None)
        prior.dropped += 1


def _parse(line: str) -> dict[str, Any] | None:
    try:
        data = json.loads(line)
    except (ValueError, RecursionError):  # a damaged or foreign line: not one of ours
        return None
    return data if isinstance(data, dict) and "id" in data else None


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def new_batch_id(seed: str = "") -> str:
    """A fresh batch id: when it began, and a short hash of ``seed`` (the output path)."""
    digest = hashlib.sha256(f"{seed}\0{uuid.uuid4().hex}".encode()).hexdigest()[:6]
    return "batch-" + time.strftime("%Y%m%d-%H%M%S-") + digest


class OutputFile:
    """Where finished requests go, one line each, flushed: a file, or stdout (``path`` None)."""

    def __init__(self, path: str | os.PathLike[str] | None) -> None:
        self.path = Path(path) if path is not None else None
        self.prior = read_prior(self.path) if self.path is not None else PriorLines()
        self.batch_id = self.prior.batch_id or new_batch_id(str(self._resolved()))
        self._stream: IO[str] | None = None
        self._lock = threading.Lock()

    def _resolved(self) -> Path | str:
        return self.path.resolve() if self.path is not None else "-"

    def open(self) -> OutputFile:
        """Rewrite an unclean file keeping the succeeded lines, then open it to append."""
        if self.path is None:
            self._stream = sys.stdout
            return self
        try:
            if not self.prior.clean:
                _rewrite(self.path, list(self.prior.succeeded.values()))
            self._stream = self.path.open("a", encoding="utf-8")
        except OSError as exc:
            why = exc.strerror
            raise UsageError(f"cannot write the output file {str(self.path)!r}: {why}") from None
        return self

    def write(self, data: dict[str, Any]) -> None:
        """One line, written whole and flushed, so a kill cuts at most this line short."""
        line = json.dumps(data, ensure_ascii=False) + "\n"
        with self._lock:
            assert self._stream is not None, "open() the output first"
            self._stream.write(line)
            self._stream.flush()

    def close(self) -> None:
        with self._lock:
            stream, self._stream = self._stream, None
        if stream is not None and stream is not sys.stdout:
            stream.close()

    def __enter__(self) -> OutputFile:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()


def _rewrite(path: Path, lines: list[str]) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with temporary.open("w", encoding="utf-8") as out:
        out.writelines(line + "\n" for line in lines)
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, path)
