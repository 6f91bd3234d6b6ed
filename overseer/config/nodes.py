"""Settings of code nodes: what a node may import, how often it is fixed, and its sandbox.

Part of the one frozen ``Settings`` object (``settings.nodes``); the defaults live in config.yaml.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["DEFAULT_ALLOWED_MODULES", "NodeSettings", "SandboxBackend", "SandboxSettings"]

SandboxBackend = Literal["auto", "bwrap", "unshare", "none"]

DEFAULT_ALLOWED_MODULES: tuple[str, ...] = (
    "base64",
    "bisect",
    "collections",
    "copy",
    "csv",
    "dataclasses",
    "datetime",
    "decimal",
    "difflib",
    "enum",
    "fractions",
    "functools",
    "hashlib",
    "heapq",
    "html",
    "io",
    "itertools",
    "json",
    "math",
    "operator",
    "pprint",
    "random",
    "re",
    "statistics",
    "string",
    "sys",
    "textwrap",
    "time",
    "typing",
    "unicodedata",
    "urllib.parse",
    "uuid",
)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SandboxSettings(_Frozen):
    """Limits and isolation of one node process; ``None`` lifts a limit."""

    backend: SandboxBackend = "auto"
    network: bool = False
    landlock: bool = True
    cpu_seconds: int | None = Field(60, ge=1)
    memory_mb: int | None = Field(1024, ge=32)
    file_size_mb: int | None = Field(64, ge=1)
    open_files: int | None = Field(256, ge=16)
    processes: int | None = Field(64, ge=4)


class NodeSettings(_Frozen):
    max_fixes: int = Field(1, ge=0, le=5)
    allowed_modules: tuple[str, ...] = DEFAULT_ALLOWED_MODULES
    max_output_bytes: int = Field(10_000_000, ge=1024)
    default_timeout: float = Field(300.0, gt=0)
    sandbox: SandboxSettings = SandboxSettings()
