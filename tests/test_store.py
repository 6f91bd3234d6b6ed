"""The run journal through the library: what a run leaves in SQLite, resuming, and a journal that
cannot be written (damaged, locked, unwritable), which must never stop a run."""

from __future__ import annotations

import gc
import sqlite3
import threading
import weakref
from collections.abc import Mapping
from pathlib import Path

import pytest

from overseer import Overseer, PlanError
from overseer.backends.chat import ChatRequest
from overseer.config import load_settings
from overseer.core.plan import parse_plan
from overseer.core.report import RunReport
from overseer.events import (
    Event,
    EventBus,
    JournalProblem,
    PlanReady,
    RunAborted,
    RunFinished,
    RunStarted,
    StepFinished,
    StepStarted,
)
from overseer.journal.store import (
    JOURNAL_FILE,
    Journal,
    JournalError,
    UnknownRunError,
    default_journal_path,
    journal_for,
)
from tests.fakes import RuleChat, plan_json

WAIT = 30.0

JOKE = plan_json(
    ("step1", "Write a joke", "content_generator", []),
    ("step2", "Translate the joke to French", "translator", ["step1"]),
    ("step3", "Translate the joke to Spanish", "translator", ["step1"]),
)


def engine(
    chat: RuleChat,
    journal: Journal | bool | None = True,
    overrides: Mapping[str, object] | None = None,
) -> Overseer:
    return Overseer(load_settings(overrides=overrides), chat=chat, journal=journal)


def journal_path() -> Path:
    return default_journal_path()


def problems_of(events: list[Event]) -> list[str]:
    return [e.message for e in events if isinstance(e, JournalProblem)]


# -- what a run leaves behind ----------------------------------------------------------------------


def test_a_library_run_is_recorded_with_every_step() -> None:
    report = engine(RuleChat([JOKE])).run("write a joke and translate it")
    journal = Journal()
    [summary] = journal.list_runs()
    assert summary.run_id == report.run_id and summary.request == "write a joke and translate it"
    assert summary.status == "succeeded"
    assert (summary.steps_done, summary.steps_total, summary.attempts) == (3, 3, 1)
    assert summary.total_tokens == report.usage.total_tokens == 75
    stored = journal.load(report.run_id)
    assert stored.plan == report.plan
    assert stored.answer == "FINAL ANSWER" and stored.reason == ""
    assert [r.status for r in stored.records.values()] == ["succeeded"] * 3
    assert stored.records["step2"].output == "out:Translate the joke to French"
    assert stored.records["step1"].usage.total_tokens == 15
    assert stored.usage == report.usage


def test_the_stored_run_gives_back_the_very_report_json() -> None:
    report = engine(RuleChat([JOKE])).run("jokes")
    stored = Journal().load(report.run_id)
    assert stored.to_json() == report.to_json()
    rebuilt = stored.report()
    assert rebuilt.to_json()["steps"] == report.to_json()["steps"]
    assert rebuilt.timing == report.timing and rebuilt.status == "succeeded"


def test_the_stored_report_json_keeps_any_text_a_step_returns() -> None:
    """The stored object is encoded by pydantic-core: quotes, newlines, a NUL, accents and
    astral characters come back as they went in."""
    odd = 'é "quoted" \\ back\nslash\x00 nul, \u2603 and \U0001f600'

    def step(request: object) -> str:
        return odd

    plan = parse_plan([{"step_id": "s1", "description": "odd text", "tool": "general"}])
    eng = engine(RuleChat([], step), overrides={"run.synthesize": False})
    report = eng.run("odd", plan=plan)
    stored = Journal().load(report.run_id)
    assert stored.final is not None  # the object written after the run, not one rebuilt
    assert stored.to_json() == report.to_json()
    assert stored.to_json()["steps"][0]["output"] == odd


def test_closing_the_engine_waits_for_the_report_json_the_journal_writes_after_the_run(
    tmp_path: Path,
) -> None:
    """The ``--json`` object is written after ``run()`` returns; here another connection holds
    the file from the moment the run ends, so it is still queued when ``close()`` is called:
    ``close()`` returns only once it is written, where another process can read it."""
    path = tmp_path / JOURNAL_FILE
    Journal(path).list_runs()
    holder = sqlite3.connect(path, isolation_level=None)
    eng = engine(RuleChat([JOKE]), journal=Journal(path))

    def hold(event: Event) -> None:  # after the journal's own subscriber: the end is committed
        if isinstance(event, RunFinished):
            holder.execute("BEGIN IMMEDIATE")

    eng.bus.subscribe(hold)
    report = eng.run("jokes")
    closing = threading.Thread(target=eng.close)
    closing.start()
    holder.execute("ROLLBACK")  # the writer's retry gets the file now
    closing.join(WAIT)
    assert not closing.is_alive()
    reader = sqlite3.connect(path)
    try:
        [(stored,)] = reader.execute("SELECT report FROM runs WHERE run_id = ?", (report.run_id,))
    finally:
        reader.close()
        holder.close()
    assert stored is not None and '"run_id":"' + report.run_id + '"' in stored


def test_the_journal_file_is_in_the_state_directory(tmp_path: Path) -> None:
    assert default_journal_path({"OVERSEER_HOME": str(tmp_path)}) == tmp_path / JOURNAL_FILE
    assert default_journal_path({"XDG_STATE_HOME": str(tmp_path)}) == (
        tmp_path / "overseer" / JOURNAL_FILE
    )
    fallback = default_journal_path({})
    assert fallback == Path.home() / ".local" / "state" / "overseer" / JOURNAL_FILE
    engine(RuleChat([JOKE])).run("x")
    assert journal_path().is_file()


@pytest.mark.parametrize("choice", [False, None])
def test_journal_false_or_none_records_nothing(choice: bool | None) -> None:
    eng = engine(RuleChat([JOKE]), journal=choice)
    assert eng.journal is None
    eng.run("x")
    assert not journal_path().exists()


def test_the_setting_journal_false_records_nothing() -> None:
    eng = engine(RuleChat([JOKE]), overrides={"journal": False})
    assert eng.journal is None
    eng.run("x")
    assert not journal_path().exists()


def test_planning_alone_writes_nothing() -> None:
    engine(RuleChat([JOKE])).plan("x")
    assert not journal_path().exists()


def test_every_overseer_of_a_process_shares_the_default_journal() -> None:
    first, second = engine(RuleChat([])), engine(RuleChat([]))
    assert first.journal is second.journal is journal_for(True)
    assert journal_for(True, enabled=False) is None


def test_steps_are_written_as_each_finishes() -> None:
    """When step1 finishes, a separate reader already sees it, before the run ends."""
    seen: list[str] = []
    eng = engine(RuleChat([JOKE]))
    reader = Journal()

    def spy(event: Event) -> None:
        if isinstance(event, StepFinished) and event.step_id == "step1":
            stored = reader.load(event.run_id)
            seen.append(f"{stored.status} {stored.records['step1'].status}")

    eng.subscribe(spy)
    eng.run("x")
    assert seen == ["running succeeded"]


# -- run ids on events, concurrent runs ----------------------------------------------------------


def test_every_event_of_a_run_carries_its_run_id() -> None:
    events: list[Event] = []
    eng = engine(RuleChat([JOKE]))
    eng.subscribe(events.append)
    report = eng.run("x")
    assert events and {e.run_id for e in events} == {report.run_id}
    assert isinstance(events[0], RunStarted) and isinstance(events[-1], RunFinished)


def test_the_run_view_stamps_only_events_without_an_id() -> None:
    bus = EventBus()
    got: list[Event] = []
    view = bus.for_run("r1")
    view.subscribe(got.append)
    view.emit(StepStarted(0.0, "a"))
    view.emit(StepStarted(0.0, "b", run_id="other"))
    bus.emit(StepStarted(0.0, "c"))
    assert [(e.run_id, getattr(e, "step_id", "")) for e in got] == [
        ("r1", "a"),
        ("other", "b"),
        ("", "c"),
    ]


def test_concurrent_runs_on_one_bus_are_kept_apart() -> None:
    overlap = threading.Barrier(2, timeout=30)

    def step(request: ChatRequest) -> str:
        text = request.messages[-1]["content"].splitlines()[0]
        if text.endswith("first"):
            overlap.wait()  # the first step of each run is running at the same time
        return "out:" + text

    eng = engine(RuleChat([], step), overrides={"run.synthesize": False})
    plans = {
        name: parse_plan(
            [
                {"step_id": "a", "description": f"{name} first", "tool": "general"},
                {
                    "step_id": "b",
                    "description": f"{name} then",
                    "tool": "general",
                    "depends_on": ["a"],
                },
            ]
        )
        for name in ("red", "blue")
    }
    reports = {}

    def run(name: str) -> None:
        reports[name] = eng.run(f"{name} request", plan=plans[name], run_id=f"run-{name}")

    threads = [threading.Thread(target=run, args=(name,)) for name in plans]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    journal = Journal()
    for name in plans:
        stored = journal.load(f"run-{name}")
        assert stored.request == f"{name} request" and stored.status == "succeeded"
        assert {i: r.output for i, r in stored.records.items()} == {
            "a": f"out:{name} first",
            "b": f"out:{name} then",
        }
        assert stored.to_json() == reports[name].to_json()


def test_fifty_steps_finishing_at_once_are_all_recorded() -> None:
    count = 50
    together = threading.Barrier(count, timeout=60)

    def step(request: ChatRequest) -> str:
        together.wait()  # every step is running; they all finish at once
        return "out:" + request.messages[-1]["content"].splitlines()[0]

    plan = parse_plan(
        [{"step_id": f"s{i}", "description": f"part {i}", "tool": "general"} for i in range(count)],
        max_steps=count,
    )
    eng = engine(RuleChat([], step), overrides={"run.max_workers": count, "run.synthesize": False})
    report = eng.run("fifty", plan=plan)
    stored = Journal().load(report.run_id)
    assert stored.summary.steps_done == stored.summary.steps_total == count
    assert {i: r.output for i, r in stored.records.items()} == {
        f"s{i}": f"out:part {i}" for i in range(count)
    }
    assert all(r.attempts == 1 and r.started_at is not None for r in stored.records.values())


def test_two_engines_on_one_bus_record_each_run_once() -> None:
    bus = EventBus()
    first = Overseer(load_settings(), chat=RuleChat([JOKE]), bus=bus)
    Overseer(load_settings(), chat=RuleChat([]), bus=bus)
    report = first.run("x")
    stored = Journal().load(report.run_id)
    assert stored.usage == report.usage  # not counted twice


def test_detaching_stops_recording(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite3")
    eng = engine(RuleChat([JOKE]), journal=False)
    detach = journal.attach(eng.bus)
    assert journal.attach(eng.bus)() is None  # attaching again changes nothing
    detach()
    eng.run("x")
    assert journal.list_runs() == []


# -- failures of the run itself --------------------------------------------------------------------


def test_a_run_without_a_plan_is_recorded_as_failed() -> None:
    bad = plan_json(("a", "A", "painter", []))
    events: list[Event] = []
    eng = engine(RuleChat([bad, bad, bad]))
    eng.subscribe(events.append)
    with pytest.raises(PlanError):
        eng.run("paint")
    [aborted] = [e for e in events if isinstance(e, RunAborted)]
    assert aborted.status == "failed" and "no valid plan" in aborted.reason
    [summary] = Journal().list_runs()
    assert summary.status == "failed" and summary.steps_total == 0
    stored = Journal().load(summary.run_id)
    assert stored.plan is None and "no valid plan" in stored.reason
    assert stored.to_json()["plan"] == {"steps": []}


def test_a_run_that_stopped_while_planning_is_planned_again_on_resume() -> None:
    bad = plan_json(("a", "A", "painter", []))
    with pytest.raises(PlanError):
        engine(RuleChat([bad, bad, bad])).run("jokes")
    stored = Journal().load(Journal().list_runs()[0].run_id)
    chat = RuleChat([JOKE])
    report = engine(chat).run(stored.request, plan=stored.plan, run_id=stored.run_id)
    assert report.status == "succeeded" and report.run_id == stored.run_id
    again = Journal().load(stored.run_id)
    assert again.status == "succeeded" and again.summary.attempts == 2
    assert again.plan == report.plan


# -- resuming --------------------------------------------------------------------------------------


def _fails_french_once() -> RuleChat:
    failed: list[bool] = []

    def step(request: ChatRequest) -> str | Exception:
        text = request.messages[-1]["content"].splitlines()[0]
        if "French" in text and not failed:
            failed.append(True)
            return RuntimeError("the French translator is down")
        return "out:" + text

    return RuleChat([JOKE], step)


def test_a_failed_run_resumes_without_rerunning_what_succeeded() -> None:
    chat = _fails_french_once()
    eng = engine(chat, overrides={"run.on_error": "continue"})
    first = eng.run("jokes")
    assert first.status == "failed"
    stored = Journal().load(first.run_id)
    assert stored.status == "failed" and "French translator is down" in stored.reason
    assert sorted(stored.prior) == ["step1", "step3"]
    before = len(chat.requests)
    second = eng.run(stored.request, plan=stored.plan, run_id=stored.run_id, prior=stored.prior)
    sent = chat.requests[before:]
    assert [r.messages[-1]["content"].splitlines()[0] for r in sent[:-1]] == [
        "Translate the joke to French"
    ]
    assert second.run_id == first.run_id and second.status == "succeeded"
    assert second.outcome.steps["step1"].output == stored.records["step1"].output
    after = Journal().load(first.run_id)
    assert after.status == "succeeded" and after.summary.attempts == 2
    assert after.records["step2"].output == "out:Translate the joke to French"
    assert after.records["step1"].started_at == stored.records["step1"].started_at
    assert after.usage == first.usage + second.usage  # every attempt's tokens
    assert after.to_json() == second.to_json()


def test_a_resumed_run_is_listed_once() -> None:
    chat = _fails_french_once()
    eng = engine(chat, overrides={"run.on_error": "continue"})
    first = eng.run("jokes")
    stored = Journal().load(first.run_id)
    eng.run(stored.request, plan=stored.plan, run_id=stored.run_id, prior=stored.prior)
    assert [s.run_id for s in Journal().list_runs()] == [first.run_id]


def test_a_new_plan_under_an_old_id_drops_the_old_steps() -> None:
    eng = engine(RuleChat([JOKE]))
    first = eng.run("x")
    other = parse_plan([{"step_id": "only", "description": "Just this", "tool": "general"}])
    eng2 = engine(RuleChat([]))
    eng2.run("x", plan=other, run_id=first.run_id)
    assert list(Journal().load(first.run_id).records) == ["only"]


# -- reading ---------------------------------------------------------------------------------------


def test_runs_are_listed_newest_first_and_limited() -> None:
    eng = engine(RuleChat([JOKE, JOKE, JOKE]))
    ids = [eng.run(f"request {n}").run_id for n in range(3)]
    journal = Journal()
    assert [s.run_id for s in journal.list_runs()] == ids[::-1]
    assert [s.run_id for s in journal.list_runs(limit=2)] == ids[:0:-1]
    data = journal.list_runs()[0].to_dict()
    assert set(data) >= {"run_id", "request", "status", "created_at"}
    assert data["request"] == "request 2" and "T" in data["created_at"]


def test_an_id_or_a_unique_prefix_names_a_run() -> None:
    eng = engine(RuleChat([JOKE, JOKE, JOKE]))
    for run_id in ("abc-1", "abc-2", "xyz-9"):
        eng.run("x", run_id=run_id)
    journal = Journal()
    assert journal.resolve("xyz-9") == "xyz-9"
    assert journal.resolve("xy") == "xyz-9"
    assert journal.resolve(" abc-2 ") == "abc-2"
    with pytest.raises(UnknownRunError, match="several runs") as info:
        journal.resolve("abc")
    assert info.value.exit_code == 2
    with pytest.raises(UnknownRunError, match="no run 'nope'") as info:
        journal.load("nope")
    assert info.value.exit_code == 2


def test_an_exact_id_wins_over_a_longer_id_it_prefixes() -> None:
    eng = engine(RuleChat([JOKE, JOKE]))
    eng.run("short", run_id="abc")
    eng.run("long", run_id="abcdef")
    assert Journal().load("abc").request == "short"


def test_reading_a_journal_that_does_not_exist_creates_nothing(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "none" / JOURNAL_FILE)
    assert journal.list_runs() == []
    with pytest.raises(UnknownRunError):
        journal.load("x")
    assert not (tmp_path / "none").exists()


def test_an_unfinished_run_reads_as_running() -> None:
    journal = Journal()
    plan = parse_plan([{"step_id": "a", "description": "A", "tool": "general"}])
    journal.record(RunStarted(0.0, "live", "still going"))
    journal.record(PlanReady(0.1, plan, run_id="live"))
    journal.record(StepStarted(0.2, "a", run_id="live"))
    stored = journal.load("live")
    assert stored.status == "running" and stored.records["a"].status == "running"
    data = stored.to_json()
    assert data["status"] == "running" and data["steps"][0]["status"] == "running"
    assert stored.prior == {}


def test_events_outside_a_recorded_run_are_ignored(tmp_path: Path) -> None:
    journal = Journal(tmp_path / JOURNAL_FILE)
    assert journal.record(StepStarted(0.0, "a", run_id="never-started")) is None
    assert journal.record(StepStarted(0.0, "a")) is None
    assert not (tmp_path / JOURNAL_FILE).exists()


# -- a journal that cannot be written --------------------------------------------------------------


def _run_with(journal: Journal) -> tuple[RunReport, list[str]]:
    events: list[Event] = []
    eng = engine(RuleChat([JOKE]), journal=journal)
    eng.subscribe(events.append)
    report = eng.run("x")
    return report, problems_of(events)


def test_a_damaged_journal_is_one_problem_and_the_run_completes(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL_FILE
    path.write_bytes(b"this is not a database at all \x00\x01\x02" * 100)
    report, problems = _run_with(Journal(path))
    assert report.status == "succeeded"
    [problem] = problems
    assert str(path) in problem and "damaged" in problem and "not recorded" in problem
    with pytest.raises(JournalError, match="cannot read the run journal"):
        Journal(path).list_runs()


def test_a_locked_journal_is_one_problem_and_the_run_completes(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL_FILE
    Journal(path).list_runs()  # nothing there yet
    engine(RuleChat([JOKE]), journal=Journal(path)).run("before")
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        report, problems = _run_with(Journal(path, busy_timeout=0.05, lock_patience=0.2))
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert report.status == "succeeded"
    [problem] = problems
    assert "locked" in problem and str(path) in problem
    assert [s.request for s in Journal(path).list_runs()] == ["before"]


def test_a_journal_under_a_regular_file_is_one_problem(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("I am a file, not a directory")
    path = blocker / "state" / JOURNAL_FILE
    report, problems = _run_with(Journal(path))
    assert report.status == "succeeded"
    [problem] = problems
    assert "cannot be written" in problem and str(path) in problem


def test_a_journal_path_that_is_a_directory_is_one_problem(tmp_path: Path) -> None:
    report, problems = _run_with(Journal(tmp_path))
    assert report.status == "succeeded"
    [problem] = problems
    assert str(tmp_path) in problem


def test_a_journal_from_a_newer_overseer_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL_FILE
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    report, problems = _run_with(Journal(path))
    assert report.status == "succeeded"
    [problem] = problems
    assert "newer overseer" in problem
    with pytest.raises(JournalError):
        Journal(path).list_runs()


def test_the_next_run_is_recorded_once_the_problem_is_gone(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL_FILE
    path.write_bytes(b"garbage" * 200)
    journal = Journal(path)
    eng = engine(RuleChat([JOKE, JOKE]), journal=journal)
    problems: list[Event] = []
    eng.subscribe(problems.append)
    eng.run("first")
    path.unlink()
    eng.run("second")
    assert len(problems_of(problems)) == 1
    assert [s.request for s in journal.list_runs()] == ["second"]


def test_a_problem_event_names_its_run(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    bus = EventBus()
    journal = Journal(tmp_path / "file" / JOURNAL_FILE)
    journal.attach(bus)
    seen: list[Event] = []
    bus.subscribe(seen.append)
    bus.emit(RunStarted(0.0, "r9", "x"))
    bus.emit(StepStarted(0.1, "a", run_id="r9"))
    [problem] = [e for e in seen if isinstance(e, JournalProblem)]
    assert problem.run_id == "r9"


# -- the durability rule: a dependent runs only once its inputs are on disk ----------------------


def test_a_dependent_runs_only_once_the_result_it_is_given_is_committed(tmp_path: Path) -> None:
    """The step's own tool, reading the file through another connection (not this process's
    journal, which would wait for its writer), finds the step it depends on succeeded; the
    independent steps finishing around it never wait for a commit (they take no part here)."""
    from overseer.core.plan import Plan, Step
    from overseer.tools.registry import FunctionTool, ToolRegistry

    path = tmp_path / "journal.sqlite3"
    seen: list[tuple[str, str]] = []

    def probe(prompt: str) -> str:
        with sqlite3.connect(path) as conn:
            rows = conn.execute("SELECT step_id, status FROM steps WHERE step_id LIKE 'a%'")
            seen.extend((str(i), str(s)) for i, s in rows)
        return "probed"

    registry = ToolRegistry()
    registry.register(FunctionTool("quick", "returns at once", lambda prompt: "done"))
    registry.register(FunctionTool("probe", "reads the journal", probe))
    steps = [Step(step_id=f"a{i}", description="first", tool="quick") for i in range(4)]
    steps.append(
        Step(step_id="b", description="then", tool="probe", depends_on=("a0", "a1", "a2", "a3"))
    )
    overrides = {"planner.max_replans": 0, "run.synthesize": False}
    eng = Overseer(
        load_settings(overrides=overrides),
        chat=RuleChat([]),
        registry=registry,
        journal=Journal(path),
    )
    report = eng.run("x", plan=Plan(steps=tuple(steps)))
    assert report.status == "succeeded"
    assert sorted(seen) == [(f"a{i}", "succeeded") for i in range(4)]


def test_the_writer_keeps_nothing_it_wrote_while_it_idles(tmp_path: Path) -> None:
    """Its thread waits a while for more before it ends: the last batch (a run's whole report,
    at the end of a run) must not stay alive with it."""
    journal = Journal(tmp_path / "journal.sqlite3")
    event = RunStarted(0.0, "r1", "a request")
    gone = weakref.ref(event)
    assert journal.record(event) is None
    assert journal.flush(WAIT)
    del event
    gc.collect()
    assert gone() is None
    journal.close()
