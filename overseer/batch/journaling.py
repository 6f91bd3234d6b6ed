"""Recording a run that ran elsewhere (a Dask worker) into this machine's journal.

The worker's engine records nothing: the client owns the journal, as it owns the output. When a
report comes back, the client replays the three events the journal needs, in order, as if the
run had happened here: ``RunStarted`` (with the batch id), ``PlanReady`` and ``RunFinished``
carrying the report, which holds every step's status, output, error, times and the usage.
"""

from __future__ import annotations

from overseer.core.report import RunReport
from overseer.events import Event, PlanReady, RunFinished, RunStarted
from overseer.journal.store import Journal

__all__ = ["record_report"]


def record_report(journal: Journal, report: RunReport, batch_id: str | None) -> str | None:
    """Write ``report`` as one finished run; returns the journal's problem, if any."""
    for event in _events(report, batch_id):
        problem = journal.record(event)
        if problem is not None:
            return problem
    return None


def _events(report: RunReport, batch_id: str | None) -> list[Event]:
    run_id = report.run_id
    events: list[Event] = [RunStarted(0.0, run_id, report.request, batch_id=batch_id)]
    if report.plan.steps:
        events.append(PlanReady(report.timing.plan_s, report.plan, report.warnings, run_id=run_id))
    extra = {"report": report}
    reason = report.outcome.reason
    events.append(RunFinished(report.timing.wall_s, report.status, reason, extra, run_id=run_id))
    return events
