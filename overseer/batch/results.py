"""One finished request of a batch and the line it adds to the output."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from overseer.batch.inputs import BatchItem
from overseer.core.report import RunReport

__all__ = ["Finished"]


@dataclass(frozen=True)
class Finished:
    """A request and the report of its run (a failed one when it never got a plan)."""

    item: BatchItem
    report: RunReport

    @property
    def ok(self) -> bool:
        return self.report.outcome.ok

    @property
    def tokens(self) -> int:
        return self.report.usage.total_tokens

    def line(self, batch_id: str) -> dict[str, Any]:
        """The one-shot ``--json`` object, with the request's ``id`` and the ``batch_id``."""
        return {"id": self.item.id, "batch_id": batch_id, **self.report.to_json()}
