"""The journal's version-2 columns through the library: rounds, batches, the run's settings and
what it spent, process identity, the writer thread (queued, group-committed, retried while
locked), and migrating a journal written by an older build in place."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest

from overseer import Overseer
from overseer.config import load_settings
from overseer.core.plan import Plan, Step, parse_plan
from overseer.engine import RECORDED_SETTINGS, run_settings
from overseer.events import (
    Event,
    EventBus,
    JournalProblem,
    PlanReady,
    RunFinished,
    RunStarted,
    StepCancelled,
    StepFailed,
    StepFinished,
    StepPlanned,
    StepSkipped,
    StepStarted,
    UsageRecorded,
)
from overseer.interfaces.runs import format_run
from overseer.journal import schema
from overseer.journal import writer as writer_module
from overseer.journal.reader import is_live
from overseer.journal.schema import SCHEMA_VERSION
from overseer.journal.sql import process_start, read_start_time, write_batch
from overseer.journal.store import JOURNAL_FILE, Journal, default_journal_path
from overseer.journal.writer import Writer
from overseer.usage import Usage
from tests.fakes import RuleChat, plan_json

JOKE = plan_json(
    ("step1", "Write a joke", "content_generator", []),
    ("step2", "Translate the joke to French", "translator", ["step1"]),
)
WAIT = 60.0


def step(step_id: str, *deps: str) -> Step:
    return Step(step_id=step_id, description=f"do {step_id}", tool="general", depends_on=deps)


def two_rounds(journal: Journal, run_id: str = "r2") -> None:
    """A run whose joiner planned a second round: c (streamed) and d, after a and b."""
    journal.record(RunStarted(0.0, run_id, "two rounds"))
    journal.record(PlanReady(0.1, Plan(steps=(step("a"), step("b", "a"))), run_id=run_id))
    journal.record(StepFinished(0.2, "a", "A", 0.1, run_id=run_id))
    journal.record(StepFinished(0.3, "b", "B", 0.1, run_id=run_id))
    journal.record(StepPlanned(0.4, step("c", "b"), round=2, run_id=run_id))
    second = Plan(steps=(step("c", "b"), step("d", "a", "c")))
    journal.record(PlanReady(0.5, second, round=2, run_id=run_id))
    journal.record(StepStarted(0.6, "c", run_id=run_id))


# -- rounds ----------------------------------------------------------------------------------------


def test_a_later_round_adds_its_steps_after_the_earlier_ones() -> None:
    journal = Journal()
    two_rounds(journal)
    stored = journal.load("r2")
    assert stored.plan is not None and stored.plan.ids == ["a", "b", "c", "d"]
    assert stored.plan.step("d").depends_on == ("a", "c")
    assert stored.steps_round == {"a": 1, "b": 1, "c": 2, "d": 2}
    assert stored.rounds == 2 and stored.summary.rounds == 2
    assert [r.round for r in stored.records.values()] == [1, 1, 2, 2]
    assert [r.status for r in stored.records.values()] == [
        "succeeded",
        "succeeded",
        "running",
        "pending",
    ]
    data = stored.to_json()
    assert data["rounds"] == 2 and [s["round"] for s in data["steps"]] == [1, 1, 2, 2]
    assert stored.summary.to_dict()["rounds"] == 2


def test_a_plan_still_streaming_is_recorded_as_incomplete_until_its_round_is_ready() -> None:
    journal = Journal()
    journal.record(RunStarted(0.0, "r3", "streaming"))
    journal.record(StepPlanned(0.1, step("a"), run_id="r3"))
    journal.record(StepFinished(0.2, "a", "A", 0.1, run_id="r3"))
    stored = journal.load("r3")
    assert stored.plan is not None and stored.plan.ids == ["a"]
    assert stored.plan_complete is False  # resume asks for the rest of this plan
    journal.record(StepPlanned(0.3, step("b", "a"), run_id="r3"))
    journal.record(PlanReady(0.4, Plan(steps=(step("a"), step("b", "a"))), run_id="r3"))
    assert journal.load("r3").plan_complete is True
    journal.record(StepPlanned(0.5, step("c", "b"), round=2, run_id="r3"))
    assert journal.load("r3").plan_complete is False  # round 2 is being written


def test_a_run_planned_in_one_piece_is_complete() -> None:
    journal = Journal()
    two_rounds(journal)
    assert journal.load("r2").plan_complete is True


def test_runs_show_marks_where_each_round_begins() -> None:
    journal = Journal()
    two_rounds(journal)
    text = format_run(journal.load("r2"))
    assert "  steps     2/4 succeeded in 2 rounds\n" in text
    plan = text[text.index("plan (4 steps)") :].split("\n\n")[0].splitlines()
    assert [line.split()[0] for line in plan[1:]] == ["a", "b", "round", "c", "d"]


def test_a_first_round_plan_again_keeps_the_later_rounds() -> None:
    """Resuming hands the engine the union of the rounds as its plan: rounds stay as they were."""
    journal = Journal()
    two_rounds(journal)
    union = journal.load("r2").plan
    journal.record(RunStarted(0.0, "r2", "two rounds"))
    journal.record(PlanReady(0.1, union, run_id="r2"))
    stored = journal.load("r2")
    assert stored.plan == union and stored.steps_round == {"a": 1, "b": 1, "c": 2, "d": 2}
    assert stored.prior.keys() == {"a", "b"}


def test_a_run_of_one_round_reads_as_one() -> None:
    report = Overseer(load_settings(), chat=RuleChat([JOKE])).run("x")
    stored = Journal().load(report.run_id)
    assert stored.rounds == 1 and set(stored.steps_round.values()) == {1}
    assert stored.to_json()["rounds"] == 1


# -- batches ---------------------------------------------------------------------------------------


def test_runs_are_listed_by_batch() -> None:
    journal = Journal()
    for run_id, batch in (("x1", "b1"), ("x2", None), ("x3", "b1"), ("x4", "b2")):
        journal.record(RunStarted(0.0, run_id, f"request {run_id}", batch_id=batch))
    assert [s.run_id for s in journal.list_runs(batch_id="b1")] == ["x3", "x1"]
    assert [s.run_id for s in journal.list_runs(limit=1, batch_id="b1")] == ["x3"]
    assert journal.list_runs(batch_id="none") == []
    assert len(journal.list_runs()) == 4
    assert journal.load("x4").summary.batch_id == "b2" and journal.load("x4").batch_id == "b2"
    assert journal.list_runs(batch_id="b2")[0].to_dict()["batch_id"] == "b2"


def test_a_resumed_batch_run_keeps_its_batch() -> None:
    journal = Journal()
    journal.record(RunStarted(0.0, "x1", "r", batch_id="b1"))
    journal.record(RunStarted(0.0, "x1", "r"))  # resumed by 'overseer resume', no batch given
    assert journal.load("x1").batch_id == "b1"


# -- settings and what was spent -------------------------------------------------------------------


def test_a_run_records_its_settings_and_never_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "sk-settings-test-0123456789abcdef"
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    overrides = {
        "backend.base_url": "http://127.0.0.1:9/v1",
        "backend.model": "m-steps",
        "backend.planner_model": "m-plans",
        "backend.structured_output": "json_object",
        "run.max_workers": 3,
        "run.step_timeout": 42.0,
        "run.on_error": "continue",
        "run.max_tokens": 5000,
    }
    events: list[Event] = []
    engine = Overseer(load_settings(overrides=overrides), chat=RuleChat([JOKE]))
    engine.subscribe(events.append)
    report = engine.run("x")
    [started] = [e for e in events if isinstance(e, RunStarted)]
    assert started.settings == run_settings(engine.settings)
    stored = Journal().load(report.run_id)
    assert {k: stored.settings[k] for k in overrides} == overrides
    assert set(stored.settings) == {*RECORDED_SETTINGS, "tools.max_concurrency"}
    assert stored.settings["backend.api_key_env"] == "OPENAI_API_KEY"
    assert stored.spent == report.usage and stored.spent.total_tokens > 0
    files = [p for p in default_journal_path().parent.iterdir() if p.is_file()]
    assert secret.encode() not in b"".join(p.read_bytes() for p in files)


def test_the_tools_caps_are_recorded_by_name(tmp_path: Path) -> None:
    config = tmp_path / "caps.yaml"
    config.write_text("tools:\n  - name: translator\n    max_concurrency: 2\n")
    settings = load_settings(config)
    assert run_settings(settings)["tools.max_concurrency"] == {"translator": 2}


def test_the_settings_are_those_configured_not_those_of_a_started_backend() -> None:
    """The embedded model's server gets a fresh port each run: recording it would send a resume
    to a port where nothing listens. What the user configured is recorded."""
    settings = load_settings()
    engine = Overseer(settings, chat=RuleChat([]))
    assert engine.run_settings["backend.base_url"] is None
    assert engine.run_settings == run_settings(settings)


def test_the_budget_recorded_is_the_whole_runs() -> None:
    """A resumed attempt runs on what is left of the budget; read back, the budget is whole."""
    journal = Journal()
    journal.record(RunStarted(0.0, "b", "x", settings={"run.max_tokens": 1000}))
    journal.record(UsageRecorded(0.1, Usage(300, 100), run_id="b"))
    journal.record(RunFinished(0.2, "failed", "budget spent", run_id="b"))
    assert journal.load("b").settings["run.max_tokens"] == 1000
    journal.record(RunStarted(0.0, "b", "x", settings={"run.max_tokens": 600}))  # 1000 - 400
    journal.record(UsageRecorded(0.1, Usage(50, 50), run_id="b"))
    stored = journal.load("b")
    assert stored.settings["run.max_tokens"] == 1000
    assert stored.spent == Usage(350, 150)


# -- is the run's process still there? -------------------------------------------------------------


def test_this_process_is_known_by_its_start_time() -> None:
    start = process_start()
    assert start is not None and start == read_start_time(os.getpid())
    assert is_live(os.getpid(), start)
    assert not is_live(os.getpid(), str(int(start) + 1))  # the same pid, another process


@pytest.fixture
def other_process() -> Iterator[subprocess.Popen[bytes]]:
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
    )
    try:
        yield child
    finally:
        child.communicate(timeout=WAIT)


def _pretend_recorded_by(pid: int, start: str | None) -> Journal:
    journal = Journal()
    journal.record(RunStarted(0.0, "live", "x"))
    journal.record(
        PlanReady(
            0.0,
            parse_plan([{"step_id": "a", "description": "A", "tool": "general"}]),
            run_id="live",
        )
    )
    conn = sqlite3.connect(default_journal_path())
    with conn:
        conn.execute("UPDATE runs SET pid = ?, proc_start = ?", (pid, start))
    conn.close()
    return journal


def test_a_run_is_live_while_the_process_that_wrote_it_runs(
    other_process: subprocess.Popen[bytes],
) -> None:
    journal = _pretend_recorded_by(other_process.pid, read_start_time(other_process.pid))
    assert journal.load("live").status == "running"


def test_a_reused_pid_does_not_make_a_run_live(other_process: subprocess.Popen[bytes]) -> None:
    start = read_start_time(other_process.pid)
    assert start is not None
    journal = _pretend_recorded_by(other_process.pid, str(int(start) - 1))
    assert journal.load("live").status == "interrupted"


def test_a_run_whose_process_is_gone_is_interrupted(
    other_process: subprocess.Popen[bytes],
) -> None:
    start = read_start_time(other_process.pid)
    other_process.communicate(timeout=WAIT)  # it ends, nothing else has its pid yet
    journal = _pretend_recorded_by(other_process.pid, start)
    assert journal.load("live").status == "interrupted"


def test_a_row_of_version_1_without_a_start_time_trusts_the_pid() -> None:
    journal = _pretend_recorded_by(os.getpid(), None)
    assert journal.load("live").status == "running"


# -- the writer thread -----------------------------------------------------------------------------


def test_queued_events_are_written_by_close(tmp_path: Path) -> None:
    journal = Journal(tmp_path / JOURNAL_FILE)
    bus = EventBus()
    journal.attach(bus)
    bus.emit(RunStarted(0.0, "q", "x"))
    for n in range(200):
        bus.emit(StepStarted(0.1, f"s{n}", run_id="q"))  # nobody waits for these
    journal.close()
    conn = sqlite3.connect(tmp_path / JOURNAL_FILE)
    assert conn.execute("SELECT COUNT(*) FROM steps WHERE status = 'running'").fetchone()[0] == 200
    conn.close()


def test_many_queued_events_of_each_step_fold_into_its_row(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL_FILE
    journal = Journal(path)
    bus = EventBus()
    journal.attach(bus)
    bus.emit(RunStarted(0.0, "g", "x"))
    for n in range(500):
        bus.emit(StepStarted(0.1, f"s{n}", run_id="g"))
        if n % 2:
            bus.emit(StepStarted(0.15, f"s{n}", attempt=2, run_id="g"))  # a retry
        bus.emit(StepFinished(0.2, f"s{n}", f"out {n}", 0.1, attempts=1 + n % 2, run_id="g"))
        bus.emit(UsageRecorded(0.2, Usage(1, 2), f"s{n}", run_id="g"))
    bus.emit(UsageRecorded(0.3, Usage(10, 20), None, "plan", run_id="g"))
    journal.flush()
    stored = Journal(path).load("g")
    assert stored.usage == Usage(510, 1020)
    assert len(stored.records) == 500
    for n, record in enumerate(stored.records.values()):
        assert (record.status, record.output, record.attempts) == (
            "succeeded",
            f"out {n}",
            1 + n % 2,
        )
        assert (record.started_at, record.finished_at, record.usage) == (0.1, 0.2, Usage(1, 2))


def test_every_way_a_step_ends_folds_into_its_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In one batch: a step that fails, one that fails and then succeeds on its retry, one
    that fails after a retry, and steps settled without running (skipped, cancelled)."""
    monkeypatch.setattr(writer_module, "GATHER_S", WAIT)  # all of it in one batch
    path = tmp_path / JOURNAL_FILE
    writer = _writer(path)
    events: list[Event] = [
        StepStarted(0.1, "fails", run_id="r"),
        StepFailed(0.2, "fails", "boom", 0.1, run_id="r"),
        StepStarted(0.1, "retried", run_id="r"),
        StepStarted(0.3, "retried", attempt=2, run_id="r"),
        StepFinished(0.4, "retried", "second time", 0.3, attempts=2, run_id="r"),
        StepStarted(0.1, "fails twice", run_id="r"),
        StepStarted(0.3, "fails twice", attempt=2, run_id="r"),
        StepFailed(0.5, "fails twice", "again", 0.4, attempts=2, run_id="r"),
        StepSkipped(0.5, "skipped", "skipped: 'fails' failed", run_id="r"),
        StepCancelled(0.5, "cancelled", "cancelled: the run stopped", run_id="r"),
    ]
    places = [writer.submit(event) for event in events]
    writer.settle(places[-1])
    with sqlite3.connect(path) as conn:
        rows = conn.execute(
            "SELECT step_id, status, output, error, attempts, started_at, finished_at FROM steps"
        ).fetchall()
    assert sorted(rows) == [
        ("cancelled", "cancelled", None, "cancelled: the run stopped", 0, None, None),
        ("fails", "failed", None, "boom", 1, 0.1, 0.2),
        ("fails twice", "failed", None, "again", 2, 0.1, 0.5),
        ("retried", "succeeded", "second time", None, 2, 0.1, 0.4),
        ("skipped", "skipped", None, "skipped: 'fails' failed", 0, None, None),
    ]
    writer.close()


def test_a_step_finishing_in_a_later_batch_than_it_started(tmp_path: Path) -> None:
    journal = Journal(tmp_path / JOURNAL_FILE)
    journal.record(RunStarted(0.0, "h", "x"))
    journal.record(StepStarted(0.1, "a", run_id="h"))
    journal.record(UsageRecorded(0.2, Usage(3, 4), "a", run_id="h"))
    journal.record(StepFinished(0.5, "a", "done", 0.4, run_id="h"))
    record = journal.load("h").records["a"]
    assert (record.status, record.output, record.started_at, record.finished_at) == (
        "succeeded",
        "done",
        0.1,
        0.5,
    )
    assert record.usage == Usage(3, 4)


def test_a_step_others_need_is_on_disk_before_they_start(tmp_path: Path) -> None:
    """When the start of the step that needs s1 returns (its tool runs next), another
    connection sees s1 finished; s1's end itself is only queued. Read at once, in this process:
    a reader slower than the writer's 10 ms of gathering would see it without the wait."""
    path = tmp_path / JOURNAL_FILE
    journal = Journal(path)
    bus = EventBus()
    journal.attach(bus)
    bus.emit(RunStarted(0.0, "d", "x"))
    bus.emit(PlanReady(0.0, Plan(steps=(step("s1"), step("s2", "s1"))), run_id="d"))
    bus.emit(StepStarted(0.05, "s1", run_id="d"))
    bus.emit(StepFinished(0.1, "s1", "one", 0.1, run_id="d"))
    bus.emit(StepStarted(0.1, "s2", run_id="d"))
    with sqlite3.connect(path) as conn:
        seen = conn.execute(
            "SELECT status FROM steps WHERE run_id = ? AND step_id = ?", ("d", "s1")
        ).fetchone()
    assert seen == ("succeeded",)
    journal.close()


def test_a_lock_held_elsewhere_slows_no_step_and_loses_nothing(tmp_path: Path) -> None:
    """Another connection holds the journal locked while every step of a run finishes; once it
    lets go, the run ends and its record is whole, with no problem reported."""
    path = tmp_path / JOURNAL_FILE
    Journal(path).list_runs()
    journal = Journal(path, busy_timeout=0.05, lock_patience=WAIT)
    journal.record(RunStarted(0.0, "before", "x"))  # the file and its tables exist
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    last_done = threading.Event()
    events: list[Event] = []

    def watch(event: Event) -> None:
        events.append(event)
        if isinstance(event, StepFinished) and event.step_id == "s2":
            last_done.set()

    chain = parse_plan(
        [
            {"step_id": "s1", "description": "one", "tool": "general"},
            {"step_id": "s2", "description": "two", "tool": "general", "depends_on": ["s1"]},
        ]
    )
    engine = Overseer(
        load_settings(overrides={"run.synthesize": False}), chat=RuleChat([]), journal=journal
    )
    engine.subscribe(watch)
    result: list[str] = []
    runner = threading.Thread(target=lambda: result.append(engine.run("x", plan=chain).status))
    runner.start()
    try:
        assert last_done.wait(WAIT), "the steps waited for the locked journal"
        assert not result  # the run's end waits for its record
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    runner.join(WAIT)
    assert result == ["succeeded"]
    assert not [e for e in events if isinstance(e, JournalProblem)]
    [stored] = [
        Journal(path).load(s.run_id) for s in Journal(path).list_runs() if s.run_id != "before"
    ]
    assert stored.status == "succeeded" and stored.summary.steps_done == 2
    assert stored.to_json()["status"] == "succeeded"


def _writer(path: Path, patience: float = WAIT) -> Writer:
    writer = Writer(path, 0.05, patience, lambda event, message: None)
    writer.submit(RunStarted(0.0, "r", "x"), "commit")  # the file and its tables exist
    return writer


def test_when_done_calls_back_once_the_event_is_committed(tmp_path: Path) -> None:
    """The executor's hold on a step's dependents: ``then`` comes after the commit, so what it
    releases can read the result from the file."""
    path = tmp_path / JOURNAL_FILE
    writer = _writer(path)
    place = writer.submit(StepFinished(0.1, "s1", "out", 0.1, run_id="r"))
    seen: list[object] = []
    called = threading.Event()

    def then() -> None:
        with sqlite3.connect(path) as conn:
            seen.append(conn.execute("SELECT status FROM steps WHERE step_id = 's1'").fetchone())
        called.set()

    if writer.when_done(place, then):  # committed already (the writer was quick): no call
        assert writer.flush(WAIT) and not called.is_set()
        return
    assert called.wait(WAIT)
    assert seen == [("succeeded",)]
    assert writer.when_done(place, lambda: seen.append("again"))  # now it says so at once
    writer.close()
    assert seen == [("succeeded",)]


def test_when_done_calls_back_when_the_file_is_locked(tmp_path: Path) -> None:
    """A lock held elsewhere never holds a step up: ``then`` comes once the write finds it."""
    path = tmp_path / JOURNAL_FILE
    writer = _writer(path)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    called = threading.Event()
    try:
        place = writer.submit(StepFinished(0.1, "s1", "out", 0.1, run_id="r"))
        assert not writer.when_done(place, called.set)
        assert called.wait(WAIT), "a step waited for the locked journal"
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert writer.flush(WAIT)
    with sqlite3.connect(path) as conn:  # and the event is written once the lock is gone
        assert conn.execute("SELECT status FROM steps WHERE step_id = 's1'").fetchone() == (
            "succeeded",
        )
    writer.close()


def _status(path: Path, step_id: str) -> object:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT status FROM steps WHERE step_id = ?", (step_id,)).fetchone()


def test_when_done_commits_at_once_while_the_writer_lets_a_batch_gather(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The executor asking is the commit: no hand-off to the writer's thread and back, whose
    batch is still gathering (for a minute here)."""
    monkeypatch.setattr(writer_module, "GATHER_S", WAIT)
    path = tmp_path / JOURNAL_FILE
    writer = _writer(path)
    first = writer.submit(StepFinished(0.1, "s1", "one", 0.1, run_id="r"))
    place = writer.submit(StepFinished(0.2, "s2", "two", 0.1, run_id="r"))
    called: list[str] = []
    assert writer.when_done(place, lambda: called.append("then"))
    assert (_status(path, "s1"), _status(path, "s2")) == (("succeeded",), ("succeeded",))
    assert writer.when_done(first, lambda: called.append("then")) and called == []
    later = writer.submit(StepFinished(0.3, "s3", "three", 0.1, run_id="r"))
    assert writer.when_done(later, lambda: called.append("then"))  # and again
    assert _status(path, "s3") == ("succeeded",) and called == []
    writer.close()


def test_when_done_never_waits_for_a_lock_held_elsewhere(tmp_path: Path) -> None:
    """Its own commit does not wait out the busy timeout (a minute here): the batch goes to the
    writer's thread, which waits for the lock, and ``then`` comes once it finds it locked."""
    path = tmp_path / JOURNAL_FILE
    writer = Writer(path, WAIT, WAIT, lambda event, message: None)
    writer.submit(RunStarted(0.0, "r", "x"), "commit")
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    answers: list[bool] = []
    called = threading.Event()
    try:
        place = writer.submit(StepFinished(0.1, "s1", "out", 0.1, run_id="r"))
        ask = lambda: answers.append(writer.when_done(place, called.set))  # noqa: E731
        asking = threading.Thread(target=ask)
        asking.start()
        asking.join(WAIT / 4)
        assert answers == [False], "the question waited for the lock"
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert called.wait(WAIT) and writer.flush(WAIT)
    assert _status(path, "s1") == ("succeeded",)
    writer.close()


def test_events_queued_during_an_asked_commit_follow_it_in_order(tmp_path: Path) -> None:
    """While ``when_done`` commits on one thread, others go on queueing; the writer's thread
    writes those after it, in order (the last status of a step is the one it ends with)."""
    path = tmp_path / JOURNAL_FILE
    writer = _writer(path)
    for i in range(200):
        start = writer.submit(StepStarted(float(i), f"s{i}", run_id="r"))
        done = threading.Thread(
            target=writer.submit, args=(StepFinished(i + 0.5, f"s{i}", "ok", 0.5, run_id="r"),)
        )
        done.start()
        writer.when_done(start, lambda: None)
        done.join()
    assert writer.flush(WAIT)
    with sqlite3.connect(path) as conn:
        statuses = conn.execute("SELECT status, COUNT(*) FROM steps GROUP BY status").fetchall()
    assert statuses == [("succeeded", 200)]
    writer.close()


def test_events_queued_during_an_asked_commit_wake_the_idle_writer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer's thread, idle, is woken by an event queued while ``when_done`` commits; it
    must not go back to sleep (for an hour here) with that event queued."""
    monkeypatch.setattr(writer_module, "IDLE_EXIT_S", 3600.0)
    path = tmp_path / JOURNAL_FILE
    writer = _writer(path)
    inside, go_on = threading.Event(), threading.Event()
    real = write_batch

    def slow_here(conn: sqlite3.Connection, events: list[Event]) -> None:
        if threading.current_thread().name != "overseer-journal":
            inside.set()
            assert go_on.wait(WAIT)
        real(conn, events)

    monkeypatch.setattr(writer_module, "write_batch", slow_here)
    place = writer.submit(StepFinished(0.1, "s1", "one", 0.1, run_id="r"))
    asking = threading.Thread(target=writer.when_done, args=(place, lambda: None))
    asking.start()
    assert inside.wait(WAIT)  # the question is committing s1 on its own thread
    writer.submit(StepFinished(0.2, "s2", "two", 0.1, run_id="r"))
    go_on.set()
    asking.join(WAIT)
    assert writer.flush(WAIT / 4)
    assert _status(path, "s2") == ("succeeded",)
    writer.close()


def test_when_done_leaves_a_long_queue_to_the_writers_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The asking thread has steps to start: more than ``HERE_MAX`` events it does not write."""
    monkeypatch.setattr(writer_module, "GATHER_S", WAIT)
    monkeypatch.setattr(writer_module, "HERE_MAX", 3)
    path = tmp_path / JOURNAL_FILE
    writer = _writer(path)
    places = [writer.submit(StepFinished(0.1, f"s{i}", "x", 0.1, run_id="r")) for i in range(4)]
    called = threading.Event()
    assert not writer.when_done(places[-1], called.set)
    assert called.wait(WAIT) and _status(path, "s3") == ("succeeded",)
    writer.close()


def test_one_batch_of_many_steps_is_stored_exactly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch folds its steps into rows written a few hundred per statement: every value
    arrives as it was, floats to the last bit, text with NUL and astral characters."""
    monkeypatch.setattr(writer_module, "GATHER_S", WAIT)  # all of it in one batch
    path = tmp_path / JOURNAL_FILE
    writer = _writer(path)
    count = 700  # several statements, the last one shorter
    times = [i / 7 + 1e-9 * i for i in range(count)]
    outputs = [f"out {i}\x00 \U0001f600 '\"" for i in range(count)]
    for i in range(count):
        writer.submit(StepStarted(times[i], f"s{i}", run_id="r"))
        writer.submit(StepFinished(times[i] + 0.5, f"s{i}", outputs[i], 0.5, 2, run_id="r"))
    writer.settle(writer.submit(UsageRecorded(1.0, Usage(3, 4), "s1", "step", run_id="r")))
    with sqlite3.connect(path) as conn:
        rows = conn.execute(
            """SELECT step_id, status, output, attempts, started_at, finished_at,
                 prompt_tokens, completion_tokens FROM steps WHERE run_id = 'r'"""
        ).fetchall()
    tokens = {"s1": (3, 4)}
    assert sorted(rows) == sorted(
        (
            f"s{i}",
            "succeeded",
            outputs[i],
            2,
            times[i],
            times[i] + 0.5,
            *tokens.get(f"s{i}", (0, 0)),
        )
        for i in range(count)
    )
    writer.close()


def test_when_done_calls_back_when_the_run_is_given_up(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL_FILE
    writer = _writer(path, patience=0.0)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    calls: list[str] = []
    done = threading.Event()

    def then() -> None:
        calls.append("then")
        done.set()

    try:
        place = writer.submit(StepFinished(0.1, "s1", "out", 0.1, run_id="r"))
        waits = not writer.when_done(place, then)
        if waits:  # else the writer gave up before the question: nothing to wait for
            assert done.wait(WAIT)
        assert writer.flush(WAIT)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert calls == (["then"] if waits else [])  # exactly once when it said to wait
    writer.close()


# -- migrating an older journal --------------------------------------------------------------------

_VERSION_1 = """
CREATE TABLE runs (
    run_id TEXT PRIMARY KEY, request TEXT NOT NULL, status TEXT NOT NULL, reason TEXT,
    plan TEXT, answer TEXT, timing TEXT, warnings TEXT, report TEXT,
    prompt_tokens INTEGER NOT NULL DEFAULT 0, completion_tokens INTEGER NOT NULL DEFAULT 0,
    base_prompt_tokens INTEGER NOT NULL DEFAULT 0,
    base_completion_tokens INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 1, created_at REAL NOT NULL, updated_at REAL NOT NULL,
    finished_at REAL, pid INTEGER, host TEXT
);
CREATE INDEX runs_newest ON runs (created_at DESC);
CREATE TABLE steps (
    run_id TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    step_id TEXT NOT NULL, position INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL DEFAULT 'pending', output TEXT, error TEXT,
    attempts INTEGER NOT NULL DEFAULT 0, started_at REAL, finished_at REAL,
    prompt_tokens INTEGER NOT NULL DEFAULT 0, completion_tokens INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (run_id, step_id)
);
PRAGMA user_version = 1;
"""


def _version_1_journal(path: Path) -> None:
    """A journal as version 1 left it: one failed run, a step done, one failed."""
    plan = json.dumps({"steps": [step("a").model_dump(), step("b", "a").model_dump()]})
    conn = sqlite3.connect(path)
    conn.executescript(_VERSION_1)
    with conn:
        conn.execute(
            """INSERT INTO runs (run_id, request, status, reason, plan, prompt_tokens,
                 completion_tokens, created_at, updated_at, pid, host)
               VALUES ('old', 'an old request', 'failed', 'b broke', ?, 30, 12, 1, 2, 1, 'h')""",
            (plan,),
        )
        conn.executemany(
            "INSERT INTO steps (run_id, step_id, position, status, output, error) "
            "VALUES ('old', ?, ?, ?, ?, ?)",
            [("a", 0, "succeeded", "A", None), ("b", 1, "failed", None, "b broke")],
        )
    conn.close()


def _version(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])
    finally:
        conn.close()


def test_a_version_1_journal_is_migrated_in_place(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL_FILE
    _version_1_journal(path)
    journal = Journal(path)
    [old] = journal.list_runs()
    assert (old.run_id, old.status, old.steps_done, old.steps_total) == ("old", "failed", 1, 2)
    assert old.batch_id is None and old.rounds == 1
    stored = journal.load("old")
    assert stored.plan is not None and stored.plan.ids == ["a", "b"]
    assert stored.settings == {} and stored.spent == Usage(30, 12) and stored.rounds == 1
    assert stored.prior.keys() == {"a"} and stored.records["b"].round == 1
    assert _version(path) == SCHEMA_VERSION


def test_a_migrated_run_resumes_and_a_new_run_is_recorded(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL_FILE
    _version_1_journal(path)
    journal = Journal(path)
    old = journal.load("old")
    problems: list[Event] = []
    engine = Overseer(
        load_settings(overrides={"run.synthesize": False}), chat=RuleChat([JOKE]), journal=journal
    )
    engine.subscribe(lambda e: problems.append(e) if isinstance(e, JournalProblem) else None)
    again = engine.run(old.request, plan=old.plan, run_id="old", prior=old.prior)
    fresh = engine.run("a new request")
    assert again.status == fresh.status == "succeeded" and problems == []
    resumed = journal.load("old")
    assert resumed.status == "succeeded" and resumed.summary.attempts == 2
    assert resumed.plan == old.plan and resumed.records["a"].output == "A"
    assert journal.load(fresh.run_id).settings["backend.model"] == engine.settings.backend.model


def test_a_journal_of_an_earlier_build_missing_columns_is_repaired(tmp_path: Path) -> None:
    """Tables without some columns (an unversioned development build): every write failed and
    every run warned. The missing columns are added and runs are recorded again."""
    path = tmp_path / JOURNAL_FILE
    conn = sqlite3.connect(path)
    conn.executescript(
        """CREATE TABLE runs (run_id TEXT PRIMARY KEY, request TEXT NOT NULL,
             status TEXT NOT NULL, created_at REAL NOT NULL, updated_at REAL NOT NULL);
           CREATE TABLE steps (run_id TEXT NOT NULL, step_id TEXT NOT NULL,
             status TEXT NOT NULL DEFAULT 'pending', PRIMARY KEY (run_id, step_id));"""
    )
    conn.close()
    problems: list[Event] = []
    engine = Overseer(load_settings(), chat=RuleChat([JOKE]), journal=Journal(path))
    engine.subscribe(lambda e: problems.append(e) if isinstance(e, JournalProblem) else None)
    report = engine.run("x")
    assert problems == []
    assert Journal(path).load(report.run_id).to_json() == report.to_json()
    assert _version(path) == SCHEMA_VERSION


def test_a_migration_is_done_once_however_many_open_it(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL_FILE
    _version_1_journal(path)
    results: list[int] = []
    barrier = threading.Barrier(4, timeout=WAIT)

    def open_and_count() -> None:
        barrier.wait()
        results.append(len(Journal(path).list_runs()))

    threads = [threading.Thread(target=open_and_count) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    assert results == [1, 1, 1, 1] and _version(path) == SCHEMA_VERSION


class _LockedAtFirst:
    """A connection whose switch to WAL meets "locked" ``times`` times: what SQLite answers,
    at once and without its busy handler, to one of several processes opening a journal not
    yet in WAL (the real race, test_a_migration_is_done_once_however_many_open_it, met it in
    about 1 run of 50 on a loaded machine)."""

    def __init__(self, times: int, message: str = "database is locked") -> None:
        self.left = times
        self.message = message
        self.calls = 0

    def execute(self, sql: str) -> None:
        self.calls += 1
        if self.left:
            self.left -= 1
            raise sqlite3.OperationalError(self.message)


def test_the_switch_to_wal_is_retried_while_the_file_is_locked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pauses: list[float] = []
    monkeypatch.setattr(schema, "_pause", pauses.append)
    conn = _LockedAtFirst(3)
    schema._use_wal(cast(sqlite3.Connection, conn), busy_timeout=WAIT)
    assert conn.calls == 4 and len(pauses) == 3 and pauses == sorted(pauses)


def test_a_lock_beyond_the_busy_timeout_or_another_error_is_raised(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(schema, "_pause", lambda seconds: None)
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        schema._use_wal(cast(sqlite3.Connection, _LockedAtFirst(10**9)), busy_timeout=0.0)
    broken = _LockedAtFirst(1, "disk I/O error")
    with pytest.raises(sqlite3.OperationalError, match="disk I/O"):
        schema._use_wal(cast(sqlite3.Connection, broken), busy_timeout=WAIT)
    assert broken.calls == 1


_FORKING = """
import os, sys
from pathlib import Path
from overseer.events import RunStarted
from overseer.journal.store import Journal

path = Path(sys.argv[1])
journal = Journal(path)
journal.record(RunStarted(0.0, "parent", "x"))  # the writer thread is running now
pid = os.fork()
if pid == 0:  # the child
    code = 2
    try:
        code = 0 if journal.record(RunStarted(0.0, "child", "y")) is None else 1
    finally:
        os._exit(code)
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def test_a_forked_child_records_with_the_journal_it_inherited(tmp_path: Path) -> None:
    """A worker forked while the writer thread runs (multiprocessing, Dask) gets none of it:
    its own writer starts, and the parent's queued events are written once, by the parent.

    Forked from a process of its own: forking the test process, whose other threads (from
    earlier tests) may be inside SQLite just then, can leave the child waiting forever for
    SQLite's own locks, a hazard of fork in any threaded process."""
    path = tmp_path / JOURNAL_FILE
    done = subprocess.run(
        [sys.executable, "-c", _FORKING, str(path)], capture_output=True, timeout=WAIT
    )
    assert done.returncode == 0, done.stderr.decode()
    assert {s.run_id for s in Journal(path).list_runs()} == {"parent", "child"}


def test_resume_takes_the_recorded_settings_and_the_flags_over_them() -> None:
    from overseer.interfaces.runs import resume_parser, resume_settings

    journal = Journal()
    recorded = {
        "backend.model": "recorded-model",
        "backend.structured_output": "text",
        "run.max_workers": 3,
        "run.max_tokens": 100,
        "tools.max_concurrency": {"translator": 2, "a-tool-since-removed": 5},
        "not.a.setting": "ignored",
    }
    journal.record(RunStarted(0.0, "s", "x", settings=recorded))
    journal.record(UsageRecorded(0.1, Usage(30, 10), run_id="s"))
    stored = journal.load("s")
    args = resume_parser().parse_args(["s", "--max-workers", "5"])
    settings = resume_settings(args, stored)
    assert settings.backend.model == "recorded-model"
    assert settings.backend.structured_output == "text"
    assert settings.run.max_workers == 5  # the flag wins
    assert {t.name: t.max_concurrency for t in settings.tools}["translator"] == 2
    assert settings.run.max_tokens == 60  # 100, less the 40 already spent


def test_a_lock_beyond_the_patience_gives_up_on_the_run_once(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL_FILE
    journal = Journal(path, busy_timeout=0.02, lock_patience=0.2)
    assert journal.record(RunStarted(0.0, "first", "x")) is None
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        problem = journal.record(RunStarted(0.0, "held", "x"))
        assert journal.record(StepStarted(0.1, "a", run_id="held")) is None  # not recorded
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert problem is not None and "locked" in problem and "not recorded" in problem
    assert journal.record(RunStarted(0.0, "after", "x")) is None
    assert [s.run_id for s in journal.list_runs()] == ["after", "first"]


def test_a_problem_subscriber_may_read_the_journal(tmp_path: Path) -> None:
    """The problem is told on the writer's thread; reading there must not wait for itself."""
    path = tmp_path / JOURNAL_FILE
    path.write_bytes(b"not a database " * 100)
    journal = Journal(path)
    bus = EventBus()
    journal.attach(bus)
    read: list[str] = []

    def on_problem(event: Event) -> None:
        if isinstance(event, JournalProblem):
            try:
                journal.list_runs()
            except Exception as exc:  # the file is damaged: reading says so
                read.append(type(exc).__name__)

    bus.subscribe(on_problem)
    bus.emit(RunStarted(0.0, "p", "x"))
    assert read == ["JournalError"]
