"""The turns of one chat, and the bounded digest of them that the planner sees as context.

The digest keeps the newest turns first and stops at a token budget counted with tiktoken (through
``overseer.backends.tokens``). Its wording lives in ``prompts/chat_*.md``; nothing here is
prompt text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

from overseer.backends.tokens import count_tokens
from overseer.config.templates import render
from overseer.core.report import RunReport

__all__ = ["Conversation", "Turn", "TurnStatus", "build_digest"]

TurnStatus = Literal["succeeded", "failed", "cancelled", "no plan", "error"]


@dataclass(frozen=True)
class Turn:
    """One request of the chat and what became of it (``report`` is None if nothing ran)."""

    request: str
    status: TurnStatus
    answer: str = ""
    report: RunReport | None = None
    error: str = ""
    code: int = 0
    retry_of: int | None = None
    number: int = 0
    superseded: bool = False

    @property
    def run_id(self) -> str | None:
        return self.report.run_id if self.report is not None else None

    @property
    def is_context(self) -> bool:
        """Whether later turns see this one: it answered something and no retry replaced it."""
        answered = self.status in ("succeeded", "failed") and bool(self.answer.strip())
        return answered and not self.superseded


class Conversation:
    """This session's turns, oldest first."""

    def __init__(self) -> None:
        self.turns: list[Turn] = []

    def add(self, turn: Turn) -> Turn:
        """Record ``turn`` under the next number; a retry supersedes the turn it retried."""
        if turn.retry_of is not None:
            self._supersede(turn.retry_of)
        numbered = replace(turn, number=len(self.turns) + 1)
        self.turns.append(numbered)
        return numbered

    def last_run(self) -> Turn | None:
        """The newest turn that ran a plan (its report is set)."""
        return next((t for t in reversed(self.turns) if t.report is not None), None)

    def digest(self, budget: int, model: str | None = None) -> str:
        """The context for the next request (empty when nothing fits or there is nothing)."""
        return build_digest([t for t in self.turns if t.is_context], budget, model)

    def _supersede(self, number: int) -> None:
        index = number - 1
        if 0 <= index < len(self.turns):
            self.turns[index] = replace(self.turns[index], superseded=True)


def build_digest(turns: Sequence[Turn], budget: int, model: str | None = None) -> str:
    """The newest ``turns`` that fit in ``budget`` tokens, framed by ``prompts/chat_context.md``.

    When even the newest turn does not fit whole, its answer is cut to fit. The result never
    counts more than ``budget`` tokens; it is empty when the budget cannot hold any turn.
    """
    if budget <= 0 or not turns:
        return ""
    frame = count_tokens(_frame([], len(turns)), model)
    blocks = _newest_that_fit(turns, budget - frame, model)
    while blocks:
        text = _frame(blocks, len(turns) - len(blocks))
        if count_tokens(text, model) <= budget:
            return text
        blocks = blocks[1:]  # token counts of joined text can differ a little: drop the oldest
    return ""


def _newest_that_fit(turns: Sequence[Turn], room: int, model: str | None) -> list[str]:
    """Rendered turns, oldest first, taken from the newest back while ``room`` lasts."""
    blocks: list[str] = []
    for turn in reversed(turns):
        block = _block(turn)
        cost = count_tokens(block, model) + 1  # the blank line between turns
        if cost > room:
            if not blocks:
                blocks.extend(_cut_to_fit(turn, room, model))
            break
        blocks.append(block)
        room -= cost
    return blocks[::-1]


def _cut_to_fit(turn: Turn, room: int, model: str | None) -> list[str]:
    """The turn with the longest prefix of its answer that fits in ``room`` (binary search)."""
    marker = render("chat_cut.md").strip()
    low, high = 0, len(turn.answer)
    best: list[str] = []
    while low <= high:
        middle = (low + high) // 2
        block = _block(turn, turn.answer[:middle].rstrip() + " " + marker)
        if count_tokens(block, model) + 1 <= room:
            best, low = [block], middle + 1
        else:
            high = middle - 1
    return best


def _block(turn: Turn, answer: str | None = None) -> str:
    text = turn.answer if answer is None else answer
    return render("chat_turn.md", number=turn.number, request=turn.request, answer=text.strip())


def _frame(blocks: Sequence[str], omitted: int) -> str:
    note = render("chat_omitted.md", count=omitted) if omitted else ""
    return render("chat_context.md", omitted=note, turns="\n".join(blocks).strip())
