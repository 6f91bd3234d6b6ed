"""The composed answer loses the step labels a model copies from the results it was shown."""

from __future__ import annotations

from overseer.core.plan import parse_plan
from overseer.engine import without_step_labels

PLAN = parse_plan(
    [
        {"step_id": "step1", "description": "Write a joke", "tool": "t"},
        {"step_id": "step2", "description": "Translate it", "tool": "t", "depends_on": ["step1"]},
    ]
)


def test_a_label_line_goes_and_so_does_a_copied_description() -> None:
    text = "[step4]\nWhy did the cat sit?\n[step2] Translate it\nPourquoi ?\n [step1]  "
    assert without_step_labels(text, PLAN) == "Why did the cat sit?\nPourquoi ?"


def test_a_label_in_front_of_text_goes_and_the_text_stays() -> None:
    assert without_step_labels("[step2] Pourquoi le chat ?", PLAN) == "Pourquoi le chat ?"


def test_other_brackets_and_labels_inside_a_line_stay() -> None:
    text = "[Verse 1]\nSee [step1] above\n[x] done"
    assert without_step_labels(text, PLAN) == text


def test_a_plan_with_other_ids_has_its_own_labels_removed() -> None:
    plan = parse_plan([{"step_id": "joke", "description": "Write a joke", "tool": "t"}])
    assert without_step_labels("[joke] Write a joke\nHa.", plan) == "Ha."
