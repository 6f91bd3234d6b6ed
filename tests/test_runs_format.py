"""The text of ``overseer runs`` and ``overseer runs show``: pure functions of stored runs."""

from __future__ import annotations

from datetime import datetime

from overseer.core.plan import parse_plan
from overseer.core.report import Timing
from overseer.core.results import StepRecord
from overseer.interfaces.runs import format_run, format_runs
from overseer.journal.store import RunSummary, StoredRun, iso_time
from overseer.usage import Usage

WHEN = datetime(2026, 3, 4, 5, 6, 7).timestamp()


def summary(**changes: object) -> RunSummary:
    fields: dict[str, object] = {
        "run_id": "20260304-050607-abcdef",
        "request": "write a joke and translate it",
        "status": "failed",
        "created_at": WHEN,
        "finished_at": WHEN + 3,
        "steps_done": 1,
        "steps_total": 3,
        "attempts": 2,
        "total_tokens": 90,
        "pid": 1,
    }
    fields.update(changes)
    return RunSummary(**fields)  # type: ignore[arg-type]


def stored(**changes: object) -> StoredRun:
    plan = parse_plan(
        [
            {"step_id": "a", "description": "Write a joke", "tool": "content_generator"},
            {"step_id": "b", "description": "To French", "tool": "translator", "depends_on": ["a"]},
            {
                "step_id": "c",
                "description": "To Spanish",
                "tool": "translator",
                "depends_on": ["a"],
            },
        ]
    )
    records = {
        "a": StepRecord(
            "a",
            "succeeded",
            "line one\nline two\nline three\nline four\nline five",
            None,
            1,
            0.5,
            1.75,
            Usage(10, 5),
        ),
        "b": StepRecord("b", "failed", None, "HTTP 503 after 4 attempts", 2, 1.75, 2.0),
        "c": StepRecord("c", "cancelled", None, "the run stopped", 0),
    }
    fields: dict[str, object] = {
        "summary": summary(),
        "plan": plan,
        "records": records,
        "answer": "",
        "reason": "step 'b' failed: HTTP 503 after 4 attempts",
        "usage": Usage(60, 30),
        "timing": Timing(wall_s=2.5),
        "warnings": (),
    }
    fields.update(changes)
    return StoredRun(**fields)  # type: ignore[arg-type]


def test_the_runs_table_lines_up_and_shortens_requests() -> None:
    long = summary(run_id="r2", request="a " * 80, status="succeeded", steps_done=3)
    text = format_runs([long, summary()])
    lines = text.splitlines()
    assert lines[0].split() == ["ID", "WHEN", "STATUS", "STEPS", "REQUEST"]
    assert lines[2] == (
        "20260304-050607-abcdef  2026-03-04 05:06  failed     1/3    write a joke and translate it"
    )
    assert lines[1].startswith("r2                      2026-03-04 05:06  succeeded  3/3    a a")
    assert lines[1].endswith("...") and len(lines[1].split("3/3", 1)[1].strip()) == 60
    assert {line.index("STATUS") for line in lines[:1]} == {
        line.index("failed") for line in lines[2:]
    }


def test_a_run_shows_its_plan_steps_and_why_it_failed() -> None:
    text = format_run(stored())
    assert text == (
        "run 20260304-050607-abcdef: failed\n"
        "  request   write a joke and translate it\n"
        "  started   2026-03-04 05:06:07 (2 attempts)\n"
        "  steps     1/3 succeeded\n"
        "  tokens    90 (60 in, 30 out)\n"
        "  wall time 2.50s\n"
        "  reason    step 'b' failed: HTTP 503 after 4 attempts\n"
        "\n"
        "plan (3 steps)\n"
        "  a [content_generator] Write a joke\n"
        "  b [translator] To French  after a\n"
        "  c [translator] To Spanish  after a\n"
        "\n"
        "steps\n"
        "  a  succeeded  1.25s  15 tokens\n"
        "      line one\n"
        "      line two\n"
        "      line three\n"
        "      ... (2 more lines)\n"
        "  b  failed  0.25s  2 attempts\n"
        "      HTTP 503 after 4 attempts\n"
        "  c  cancelled\n"
        "      the run stopped\n"
    )


def test_a_run_that_never_got_a_plan() -> None:
    text = format_run(stored(plan=None, records={}, summary=summary(steps_total=0, attempts=1)))
    assert "plan\n  (none: the run stopped while planning)\n" in text
    assert "steps\n" not in text and "(2 attempts)" not in text


def test_an_answer_is_indented_under_its_heading() -> None:
    text = format_run(stored(answer="Bonjour\n\nHola\n"))
    assert text.endswith("\n\nanswer\n  Bonjour\n\n  Hola\n")


def test_long_output_lines_are_cut() -> None:
    records = {"a": StepRecord("a", "succeeded", "x" * 500, None, 1, 0.0, 1.0)}
    text = format_run(stored(records=records))
    [line] = [ln for ln in text.splitlines() if ln.startswith("      x")]
    assert line.endswith("...") and len(line) == 6 + 100


def test_summary_json_times_are_iso_with_an_offset() -> None:
    data = summary().to_dict()
    assert data["created_at"] == iso_time(WHEN) and data["created_at"].startswith(
        "2026-03-04T05:06:07"
    )
    assert data["finished_at"] == iso_time(WHEN + 3)
    assert summary(finished_at=None).to_dict()["finished_at"] is None


def test_a_run_of_two_rounds_shows_where_the_second_begins() -> None:
    text = format_run(stored(rounds=2, steps_round={"a": 1, "b": 2, "c": 2}))
    assert "  steps     1/3 succeeded in 2 rounds\n" in text
    assert (
        "plan (3 steps)\n"
        "  a [content_generator] Write a joke\n"
        "  round 2\n"
        "  b [translator] To French  after a\n"
        "  c [translator] To Spanish  after a\n"
    ) in text


def test_a_run_of_a_batch_names_it() -> None:
    text = format_run(stored(summary=summary(batch_id="tickets-7")))
    assert "  batch     tickets-7\n" in text
    assert "batch" not in format_run(stored())


def test_summary_json_has_its_rounds_and_batch() -> None:
    data = summary(batch_id="b1", rounds=3).to_dict()
    assert (data["batch_id"], data["rounds"]) == ("b1", 3)
    assert (summary().to_dict()["batch_id"], summary().to_dict()["rounds"]) == (None, 1)
