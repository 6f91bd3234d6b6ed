"""The output file of a batch: what a rerun skips, the batch id it keeps, one line per id."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from overseer.batch.output import OutputFile, new_batch_id, read_prior
from overseer.errors import UsageError


def line(ident: object, status: str, batch: str = "b-1") -> str:
    return json.dumps({"id": ident, "batch_id": batch, "status": status})


def test_no_file_means_nothing_done_and_a_new_batch(tmp_path: Path) -> None:
    output = OutputFile(tmp_path / "out.jsonl")
    assert output.prior.succeeded == {} and output.batch_id.startswith("batch-")


def test_succeeded_lines_are_kept_and_failed_or_cut_ones_dropped(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    path.write_text("\n".join([line(1, "succeeded"), line("b", "failed"), '{"id": 3, "st']))
    prior = read_prior(path)
    assert set(prior.succeeded) == {"1"} and prior.dropped == 2 and not prior.clean
    with OutputFile(path) as output:
        assert output.batch_id == "b-1"
        output.write({"id": "b", "batch_id": output.batch_id, "status": "succeeded"})
    lines = [json.loads(text) for text in path.read_text().splitlines()]
    assert [(d["id"], d["status"]) for d in lines] == [(1, "succeeded"), ("b", "succeeded")]


def test_a_clean_file_is_appended_to_not_rewritten(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    path.write_text(line(1, "succeeded") + "\n")
    inode = path.stat().st_ino
    with OutputFile(path) as output:
        output.write({"id": 2, "status": "succeeded"})
    assert path.stat().st_ino == inode and len(path.read_text().splitlines()) == 2


def test_a_last_line_without_its_newline_is_rewritten(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    path.write_text(line(1, "succeeded"))
    assert not read_prior(path).clean
    with OutputFile(path) as output:
        output.write({"id": 2, "status": "succeeded"})
    assert [json.loads(t)["id"] for t in path.read_text().splitlines()] == [1, 2]


def test_a_later_line_for_the_same_id_wins(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    path.write_text(line(1, "succeeded") + "\n" + line(1, "failed") + "\n")
    assert read_prior(path).succeeded == {}


def test_an_unwritable_output_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="cannot write the output file"):
        OutputFile(tmp_path / "no" / "such" / "dir.jsonl").open()


def test_batch_ids_differ() -> None:
    assert new_batch_id("x") != new_batch_id("x")


def test_a_line_nested_too_deeply_is_dropped_not_raised(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    path.write_text(line(1, "succeeded") + "\n" + "[" * 200_000 + "\n")
    prior = read_prior(path)
    assert set(prior.succeeded) == {"1"} and prior.dropped == 1
