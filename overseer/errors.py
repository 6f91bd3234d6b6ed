"""The exception tree. Each error says who is at fault and maps to an exit code.

- the user (bad flag, bad config): ``UsageError`` / ``ConfigError`` -> exit 2
- the model (no valid plan): ``PlanError`` -> exit 3
- the outside world (network, server): ``BackendError`` (transient or permanent)
- a run that did not succeed: ``RunFailed`` -> exit 1
- the process was told to stop: ``KeyboardInterrupt`` (Ctrl-C) -> 130, ``Terminated`` (SIGTERM,
  SIGHUP) -> 143, 129; each is handled as Ctrl-C is, so the run is recorded as interrupted
"""

from __future__ import annotations

import signal

__all__ = [
    "EXIT_CONFIG",
    "EXIT_HANGUP",
    "EXIT_INTERRUPTED",
    "EXIT_NO_PLAN",
    "EXIT_OK",
    "EXIT_RUN_FAILED",
    "EXIT_TERMINATED",
    "BackendError",
    "BudgetExceeded",
    "Cancelled",
    "ConfigError",
    "OverseerError",
    "PermanentBackendError",
    "PlanError",
    "PlanValidationError",
    "StepTimeout",
    "Terminated",
    "ToolError",
    "TransientBackendError",
    "UnknownToolError",
    "UsageError",
]

EXIT_OK = 0
EXIT_RUN_FAILED = 1
EXIT_CONFIG = 2
EXIT_NO_PLAN = 3
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 128 + signal.SIGTERM  # 143, as a shell reports a process SIGTERM ended
EXIT_HANGUP = 128 + signal.SIGHUP  # 129


class OverseerError(Exception):
    """Base of every error overseer raises on purpose. ``str()`` is one clear sentence."""

    exit_code: int = EXIT_RUN_FAILED


class UsageError(OverseerError):
    """The user gave a bad flag or argument."""

    exit_code = EXIT_CONFIG


class ConfigError(OverseerError):
    """The configuration (file, environment, overrides) is broken."""

    exit_code = EXIT_CONFIG


class PlanValidationError(OverseerError):
    """A plan broke one or more rules; ``problems`` lists each one as a sentence."""

    exit_code = EXIT_NO_PLAN

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


class PlanError(OverseerError):
    """No valid plan could be obtained from the model."""

    exit_code = EXIT_NO_PLAN

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        self.problems = list(problems or [])
        super().__init__(message)


class BackendError(OverseerError):
    """The LLM server failed us. ``status`` is the HTTP status when there was one."""

    exit_code = EXIT_RUN_FAILED

    def __init__(self, message: str, status: int | None = None, attempts: int = 1) -> None:
        self.status = status
        self.attempts = attempts
        super().__init__(message)


class TransientBackendError(BackendError):
    """A failure worth retrying (429, 5xx, timeouts, resets, garbage bodies)."""


class PermanentBackendError(BackendError):
    """A failure retrying cannot fix (400, 401, 403, 404)."""

    @property
    def is_configuration(self) -> bool:
        """401/403/404 mean a wrong key, URL or model name: the user's to fix."""
        return self.status in (401, 403, 404)


class ToolError(OverseerError):
    """A tool failed while running a step or a node's call."""


class UnknownToolError(ToolError):
    """A tool name that is not in the registry. Never swapped for another tool."""

    exit_code = EXIT_CONFIG

    def __init__(self, name: str, known: list[str]) -> None:
        self.name = name
        self.known = sorted(known)
        super().__init__(f"unknown tool {name!r}; the tools are: {', '.join(self.known)}")


class StepTimeout(ToolError):
    """A step ran longer than its timeout."""


class Cancelled(ToolError):
    """A call was stopped because the run no longer wants its result (its cancel token was set)."""


class BudgetExceeded(OverseerError):
    """The run used its token budget (``--max-tokens``)."""


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP arrived: a ``KeyboardInterrupt``, so that every place that stops a run
    cleanly on Ctrl-C does so for these too; ``str()`` is the reason the run records."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.exit_code = 128 + signum
        super().__init__(f"{_SIGNAL_WORDS.get(signum, 'stopped')} ({signal.Signals(signum).name})")


_SIGNAL_WORDS: dict[int, str] = {signal.SIGTERM: "terminated", signal.SIGHUP: "hung up"}
