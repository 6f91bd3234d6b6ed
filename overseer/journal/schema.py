"""The journal's tables, opening the file, and bringing an older journal up to date in place.

The schema is a list of columns per table, so a migration is mechanical: every column this build
knows and the file lacks is added with ``ALTER TABLE ... ADD COLUMN`` (each new column has a
default, so old rows read as they did: one round, no settings, no batch). That also repairs a
journal written by an earlier development build that had the tables but not every column, which
used to fail every write and warn on every run. A file from a newer build is left alone.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from overseer.errors import OverseerError

__all__ = ["SCHEMA_VERSION", "JournalError", "open_journal"]

SCHEMA_VERSION = 3
"""1: runs and steps. 2: run settings, batch id, process identity, rounds (runs and steps),
and the plans in a table of their own. 3: whether a streamed plan is still being written."""


class JournalError(OverseerError):
    """The journal could not be read (damaged, locked, or not a journal at all)."""


_RUNS: tuple[tuple[str, str], ...] = (
    ("run_id", "TEXT PRIMARY KEY"),
    ("request", "TEXT NOT NULL"),
    ("status", "TEXT NOT NULL"),
    ("reason", "TEXT"),
    ("plan", "TEXT"),
    ("answer", "TEXT"),
    ("timing", "TEXT"),
    ("warnings", "TEXT"),
    ("report", "TEXT"),
    ("prompt_tokens", "INTEGER NOT NULL DEFAULT 0"),
    ("completion_tokens", "INTEGER NOT NULL DEFAULT 0"),
    ("base_prompt_tokens", "INTEGER NOT NULL DEFAULT 0"),
    ("base_completion_tokens", "INTEGER NOT NULL DEFAULT 0"),
    ("attempts", "INTEGER NOT NULL DEFAULT 1"),
    ("created_at", "REAL NOT NULL DEFAULT 0"),
    ("updated_at", "REAL NOT NULL DEFAULT 0"),
    ("finished_at", "REAL"),
    ("pid", "INTEGER"),
    ("host", "TEXT"),
    # version 2
    ("proc_start", "TEXT"),
    ("settings", "TEXT"),
    ("batch_id", "TEXT"),
    ("rounds", "INTEGER NOT NULL DEFAULT 1"),
    # version 3: 1 from a round's first streamed step until its PlanReady
    ("plan_open", "INTEGER NOT NULL DEFAULT 0"),
)
_STEPS: tuple[tuple[str, str], ...] = (
    ("run_id", "TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE"),
    ("step_id", "TEXT NOT NULL"),
    ("position", "INTEGER NOT NULL DEFAULT 0"),
    ("status", "TEXT NOT NULL DEFAULT 'pending'"),
    ("output", "TEXT"),
    ("error", "TEXT"),
    ("attempts", "INTEGER NOT NULL DEFAULT 0"),
    ("started_at", "REAL"),
    ("finished_at", "REAL"),
    ("prompt_tokens", "INTEGER NOT NULL DEFAULT 0"),
    ("completion_tokens", "INTEGER NOT NULL DEFAULT 0"),
    # version 2
    ("round", "INTEGER NOT NULL DEFAULT 1"),
)
_PLANS: tuple[tuple[str, str], ...] = (
    ("run_id", "TEXT PRIMARY KEY REFERENCES runs (run_id) ON DELETE CASCADE"),
    ("plan", "TEXT NOT NULL"),
)
"""Version 2 keeps a run's plan (every round's steps) out of its ``runs`` row, which is updated
as tokens are spent: SQLite rewrites a whole row on update, and a large plan made each of those
updates cost milliseconds. ``runs.plan`` still holds the plan of rows written by version 1."""
_TABLES = {
    "runs": (_RUNS, ""),
    "steps": (_STEPS, ", PRIMARY KEY (run_id, step_id)"),
    "plans": (_PLANS, ""),
}
_INDEXES = (
    "CREATE INDEX IF NOT EXISTS runs_newest ON runs (created_at DESC)",
    "CREATE INDEX IF NOT EXISTS runs_batch ON runs (batch_id, created_at DESC)",
)


def open_journal(path: Path, busy_timeout: float) -> sqlite3.Connection:
    """A connection to the journal at ``path`` (created, or migrated, as needed)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    conn = sqlite3.connect(
        path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
    )
    try:
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {max(0, int(busy_timeout * 1000))}")
        _use_wal(conn, busy_timeout)
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        migrate(conn, path)
    except BaseException:
        conn.close()
        raise
    return conn


_pause = time.sleep  # the retry's pause (a test watches it)


def _use_wal(conn: sqlite3.Connection, busy_timeout: float) -> None:
    """Switch the file to WAL. On a file not yet in WAL (new, or from version 1) that others
    are opening too, SQLite answers "locked" at once, without its busy handler: so the switch
    is retried here for up to the busy timeout, as the handler would."""
    deadline = time.monotonic() + busy_timeout
    pause = 0.005
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() + pause > deadline:
                raise
        _pause(pause)
        pause = min(pause * 2, 0.1)


def migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Create the tables, or add what an older journal lacks; refuse a newer one."""
    version = _version(conn)
    _refuse_newer(version, path)
    if version == SCHEMA_VERSION:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        _refuse_newer(_version(conn), path)  # another process may have migrated meanwhile
        for table, (columns, extra) in _TABLES.items():
            _create_or_extend(conn, table, columns, extra)
        for index in _INDEXES:
            conn.execute(index)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def _refuse_newer(version: int, path: Path) -> None:
    if version > SCHEMA_VERSION:
        raise JournalError(
            f"the run journal {str(path)!r} was written by a newer overseer "
            f"(schema {version}, this one knows {SCHEMA_VERSION})"
        )


def _create_or_extend(
    conn: sqlite3.Connection, table: str, columns: tuple[tuple[str, str], ...], extra: str
) -> None:
    have = {str(row[1]) for row in conn.execute(f"PRAGMA table_info({table})")}
    if not have:
        body = ", ".join(f"{name} {decl}" for name, decl in columns)
        conn.execute(f"CREATE TABLE {table} ({body}{extra})")
        return
    for name, decl in columns:
        if name not in have:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {name} {_addable(decl)}")


def _addable(decl: str) -> str:
    """A column declaration SQLite accepts in ADD COLUMN (no key, a default for NOT NULL)."""
    decl = decl.replace("PRIMARY KEY", "").strip()
    if "NOT NULL" in decl and "DEFAULT" not in decl:
        decl += " DEFAULT ''"
    return decl
