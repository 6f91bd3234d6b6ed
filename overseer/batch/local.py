"""The requests of a batch on threads of this process, all through one engine.

One ``Overseer`` runs ``concurrency`` requests at once (``run()`` is safe from several threads);
its runs share the engine's step threads (``shared_threads``) and its gate, so
``run.max_workers`` and every tool's ``max_concurrency`` hold over the whole batch, not per
request, and the batch needs ``max_workers`` step threads in all. Each run is recorded in the
engine's journal, tagged with the batch id, as it happens.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from overseer.batch.inputs import BatchItem
from overseer.batch.results import Finished
from overseer.core.fanout import fan_out
from overseer.engine import Overseer, new_run_id

__all__ = ["run_local"]


def run_local(
    engine: Overseer,
    items: Iterable[BatchItem],
    *,
    concurrency: int,
    batch_id: str,
    on_start: Callable[[BatchItem], None] | None = None,
) -> Iterator[Finished]:
    """Yield each request's ``Finished`` as it finishes; ``on_start`` hears of each start."""

    def one(item: BatchItem) -> Finished:
        if on_start is not None:
            on_start(item)
        report = engine.run_settled(item.request, run_id=new_run_id(), batch_id=batch_id)
        return Finished(item, report)

    with engine.shared_threads():
        yield from fan_out(one, items, concurrency)
