"""Python functions shipped as tools (``kind: python`` in config.yaml)."""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["word_count"]


def word_count(prompt: str, inputs: Mapping[str, str] | None = None) -> str:
    """Words in the dependencies' outputs, or in the prompt when the step has none."""
    if inputs:
        counts = {step_id: len(text.split()) for step_id, text in inputs.items()}
        lines = [f"{step_id}: {n} words" for step_id, n in counts.items()]
        return "\n".join([*lines, f"total: {sum(counts.values())} words"])
    return f"{len(prompt.split())} words"
