"""The errors a node sees when a tool call goes wrong. Standard library only."""

from __future__ import annotations

TYPE_CHECKING = False  # typing is slow to import; a node must start fast
if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["ToolCallError", "ToolCallTimeout", "ToolCallsFailed", "UnknownToolError"]


class ToolCallError(RuntimeError):
    """One tool call failed. ``tool`` names the tool; ``kind`` says why.

    Kinds: ``tool_error`` (the tool raised), ``unknown_tool``, ``budget`` (the run's token budget
    is spent), ``timeout``, ``cancelled``, ``bad_request``, ``channel`` (the link to overseer
    broke), ``config`` (standalone mode could not build the tools).
    """

    def __init__(self, message: str, *, tool: str | None = None, kind: str = "tool_error") -> None:
        super().__init__(message)
        self.tool = tool
        self.kind = kind


class UnknownToolError(ToolCallError, LookupError):
    """A tool name that does not exist; ``known`` lists the tools that do. Never substituted."""

    def __init__(self, name: str, known: Sequence[str]) -> None:
        self.known = sorted(known)
        listing = ", ".join(self.known) if self.known else "(none)"
        super().__init__(
            f"unknown tool {name!r}; the tools are: {listing}", tool=name, kind="unknown_tool"
        )


class ToolCallTimeout(ToolCallError, TimeoutError):
    """A call did not finish within the ``timeout`` given to ``call_tools_parallel``."""

    def __init__(self, message: str, *, tool: str | None = None) -> None:
        super().__init__(message, tool=tool, kind="timeout")


class ToolCallsFailed(ToolCallError):
    """Some calls of ``call_tools_parallel`` failed; the others finished.

    ``results`` holds every call's outcome in the order of the calls: the output text, or the
    exception of a failed call. ``failures`` maps the index of each failed call to its exception.
    """

    def __init__(self, results: Sequence[object], failures: dict[int, ToolCallError]) -> None:
        self.results = list(results)
        self.failures = dict(failures)
        first = min(self.failures)
        detail = f"call {first} ({self.failures[first].tool}): {self.failures[first]}"
        more = f" and {len(self.failures) - 1} more" if len(self.failures) > 1 else ""
        super().__init__(
            f"{len(self.failures)} of {len(self.results)} tool calls failed: {detail}{more}",
            tool=self.failures[first].tool,
            kind="partial",
        )
