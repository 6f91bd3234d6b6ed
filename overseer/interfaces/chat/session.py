"""One chat's state and the work behind each kind of message: ask, plan, run, retry.

Every message runs on a fresh ``Overseer`` that shares the chat client and the tool registry but
has its own event bus, so a late event of a cancelled run can never reach the next turn's display.
Expected failures never raise out of ``ask``/``run_plan``/``retry``: they come back as a ``Turn``
whose ``error`` says what happened and whose ``code`` is the exit code DESIGN.md gives.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Protocol

from overseer.backends.chat import ChatClient
from overseer.config import Settings
from overseer.core.plan import Plan
from overseer.core.report import RunReport
from overseer.core.results import StepRecord
from overseer.engine import Overseer
from overseer.errors import (
    EXIT_CONFIG,
    EXIT_INTERRUPTED,
    OverseerError,
    PermanentBackendError,
    PlanError,
    UsageError,
)
from overseer.events import Event, EventBus
from overseer.interfaces.chat.conversation import Conversation, Turn, TurnStatus
from overseer.journal.store import Journal
from overseer.planning.planner import PlanResult
from overseer.tools.registry import ToolRegistry

__all__ = ["ChatSession", "PlannedRequest", "Watcher", "WatcherFactory", "unfinished_steps"]


class Watcher(Protocol):
    """Something that follows one run's events (the live display, the journal)."""

    def handle(self, event: Event) -> None: ...

    def stop(self) -> None: ...


WatcherFactory = Callable[[], Watcher | None]


@dataclass(frozen=True)
class PlannedRequest:
    """A plan and the request it was made for (what ``/run`` and ``/save`` use)."""

    request: str
    plan: Plan


class ChatSession:
    """The settings, the engine's shared parts, the conversation and the last plan."""

    def __init__(
        self,
        settings: Settings,
        *,
        chat: ChatClient | None = None,
        registry: ToolRegistry | None = None,
        watchers: tuple[WatcherFactory, ...] = (),
    ) -> None:
        base = Overseer(settings, chat=chat, registry=registry)
        self.settings = base.settings  # pointed at the embedded model when it started one
        self.chat = base.chat
        self.registry = base.registry
        self.journal = base.journal  # every turn is recorded here (None: journal: false)
        self.watchers = watchers
        self.conversation = Conversation()
        self.last_plan: PlannedRequest | None = None

    def context(self) -> str:
        """The digest of the earlier turns that the planner sees with the next request."""
        model = self.settings.backend.effective_planner_model
        return self.conversation.digest(self.settings.chat.context_tokens, model)

    def ask(self, request: str) -> Turn:
        """Plan ``request`` with the conversation as context, run it, record the turn."""
        return self._run(request, context=self.context())

    def plan(self, request: str) -> PlanResult:
        """Only plan ``request`` (with context); raises ``OverseerError``/``KeyboardInterrupt``."""
        result = self._engine().plan(request, self.context())
        self.last_plan = PlannedRequest(request, result.plan)
        return result

    def run_plan(self) -> Turn:
        """Run the last plan again from scratch, as a new run."""
        planned = self._require_plan()
        return self._run(planned.request, plan=planned.plan)

    def retry(self) -> Turn:
        """Run the steps of the last run that did not succeed; reuse the outputs of the rest."""
        last = self.conversation.last_run()
        if last is None or last.report is None:
            raise UsageError("nothing to retry: no request has run in this chat yet")
        report = last.report
        return self._run(
            report.request,
            plan=report.plan,
            run_id=report.run_id,
            prior=report.outcome.steps,
            retry_of=last.number,
        )

    def _require_plan(self) -> PlannedRequest:
        if self.last_plan is None:
            raise UsageError("there is no plan yet: make one with /plan REQUEST or ask something")
        return self.last_plan

    def runs(self) -> Journal:
        """The journal to read runs from (the default one when this chat records none)."""
        return self.journal if self.journal is not None else Journal()

    def _engine(self) -> Overseer:
        return Overseer(
            self.settings,
            chat=self.chat,
            registry=self.registry,
            bus=EventBus(),
            journal=self.journal or False,
        )

    def _run(
        self,
        request: str,
        *,
        context: str = "",
        plan: Plan | None = None,
        run_id: str | None = None,
        prior: Mapping[str, StepRecord] | None = None,
        retry_of: int | None = None,
    ) -> Turn:
        engine = self._engine()
        try:
            with self._watched(engine):
                report = engine.run(request, context=context, plan=plan, run_id=run_id, prior=prior)
        except KeyboardInterrupt:
            return self._record(_cancelled_turn(request))
        except OverseerError as exc:
            return self._record(_failed_turn(request, exc))
        self.last_plan = PlannedRequest(request, report.plan)
        return self._record(_report_turn(report, retry_of))

    @contextmanager
    def _watched(self, engine: Overseer) -> Iterator[None]:
        """Subscribe this turn's watchers; unsubscribe and stop them however the run ends."""
        with ExitStack() as stack:
            for make in self.watchers:
                watcher = make()
                if watcher is not None:
                    stack.callback(watcher.stop)
                    stack.callback(engine.subscribe(watcher.handle))
            yield

    def _record(self, turn: Turn) -> Turn:
        return self.conversation.add(turn)


def unfinished_steps(report: RunReport) -> list[str]:
    """The steps of ``report``'s plan that did not succeed (what ``/retry`` runs again)."""
    steps = report.outcome.steps
    return [i for i in report.plan.ids if i not in steps or steps[i].status != "succeeded"]


def _report_turn(report: RunReport, retry_of: int | None) -> Turn:
    status: TurnStatus = "succeeded" if report.outcome.ok else "failed"
    if report.outcome.status == "cancelled":
        status = "cancelled"
    return Turn(
        report.request,
        status,
        answer=report.answer,
        report=report,
        error="" if report.outcome.ok else report.outcome.reason,
        code=report.exit_code,
        retry_of=retry_of,
    )


def _cancelled_turn(request: str) -> Turn:
    return Turn(request, "cancelled", error="cancelled", code=EXIT_INTERRUPTED)


def _failed_turn(request: str, exc: OverseerError) -> Turn:
    if isinstance(exc, PlanError):
        return Turn(request, "no plan", error=str(exc), code=exc.exit_code)
    code = exc.exit_code
    if isinstance(exc, PermanentBackendError) and exc.is_configuration:
        code = EXIT_CONFIG
    return Turn(request, "error", error=str(exc), code=code)
