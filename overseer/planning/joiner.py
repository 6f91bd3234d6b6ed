"""The joiner: once a round's steps have finished, the planner model answers or plans again.

One call decides (``prompts/joiner_*.md``, schema ``joiner_schema``): ``{"decision": "answer"}``
ends the planning and the answer is composed as usual; ``{"decision": "replan", "steps": [...]}``
adds a round of new steps, numbered on from the last id, that may depend on the steps that
succeeded (whose outputs the joiner was shown). Finished steps are never run again. The new steps
are checked and streamed like any round's (``overseer.planning.rounds``); a decision that cannot
be read counts as ``answer`` (with a warning): the finished steps are worth an answer.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from overseer.backends.chat import Message
from overseer.config.resources import read_prompt
from overseer.config.templates import render
from overseer.core.plan import Step, plan_json_schema
from overseer.core.results import StepRecord

__all__ = [
    "Decision",
    "Joiner",
    "decision_of",
    "joiner_schema",
    "load_joiner_examples",
    "wants_replan",
]

JOINER_SCHEMA_NAME = "joiner_decision"
_OUTPUT_LIMIT = 2000
"""Characters of each step's output the joiner is shown."""


def joiner_schema(tool_names: Sequence[str] | None = None) -> dict[str, Any]:
    """The decision's JSON Schema: ``decision``, ``reason``, and the new ``steps`` (may be [])."""
    steps = dict(plan_json_schema(tool_names)["properties"]["steps"])
    steps.pop("minItems", None)
    properties = {
        "decision": {"type": "string", "enum": ["answer", "replan"]},
        "reason": {"type": "string"},
        "steps": steps,
    }
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


def wants_replan(value: Mapping[str, Any]) -> bool:
    """Whether a decision (whole or still arriving) asks for a new round."""
    return value.get("decision") == "replan"


@dataclass(frozen=True)
class Decision:
    """``kind`` is "answer" or "replan"; ``readable`` is False when the reply made no sense."""

    kind: str
    reason: str = ""
    readable: bool = True


def decision_of(value: Any) -> Decision:
    """The decision in the joiner's reply (its JSON value; None when it had none)."""
    if not isinstance(value, Mapping) or value.get("decision") not in ("answer", "replan"):
        return Decision("answer", "the joiner's reply could not be read", readable=False)
    reason = value.get("reason")
    return Decision(str(value["decision"]), reason if isinstance(reason, str) else "")


def load_joiner_examples() -> list[dict[str, Any]]:
    """The few-shot decisions of ``prompts/joiner_examples.json``."""
    data: list[dict[str, Any]] = json.loads(read_prompt("joiner_examples.json"))
    return data


@dataclass(frozen=True)
class Joiner:
    """Builds the joiner's messages over the tools ``tool_lines`` describes."""

    tool_lines: str
    max_steps: int

    def opening(
        self,
        request: str,
        steps: Sequence[Step],
        records: Mapping[str, StepRecord],
        next_id: str,
    ) -> list[Message]:
        system = render(
            "joiner_system.md",
            tools=self.tool_lines,
            max_steps=self.max_steps,
            examples=format_joiner_examples(),
        )
        results = "\n\n".join(_result_block(step, records.get(step.step_id)) for step in steps)
        user = render("joiner_user.md", request=request, results=results, next_id=next_id)
        return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def _result_block(step: Step, record: StepRecord | None) -> str:
    status = record.status if record is not None else "pending"
    if record is not None and record.status == "succeeded":
        text = record.output or ""
    else:
        text = (record.error if record is not None else None) or "(no output)"
    if len(text) > _OUTPUT_LIMIT:
        text = text[:_OUTPUT_LIMIT] + " …(cut)"
    return render(
        "joiner_step.md",
        step_id=step.step_id,
        status=status,
        description=step.description,
        output=text,
    ).strip()


def format_joiner_examples() -> str:
    blocks = []
    for example in load_joiner_examples():
        decision = json.dumps(example["decision"], ensure_ascii=False)
        blocks.append(f"Request: {example['request']}\n{example['results']}\nDecision: {decision}")
    return "\n\n".join(blocks)
