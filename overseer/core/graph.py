"""Pictures of a plan's dependency graph: Mermaid and Graphviz DOT text, with step statuses.

Pure functions of a ``Plan`` (and, optionally, each step's status). Every label is escaped for
its format, so a description holding quotes, brackets, ``#`` or backslashes cannot break the
picture or inject markup.
"""

from __future__ import annotations

from collections.abc import Mapping

from overseer.core.plan import Plan, Step

__all__ = ["GRAPH_FORMATS", "render_graph", "to_dot", "to_mermaid"]

GRAPH_FORMATS = ("mermaid", "dot")

_DESCRIPTION_LIMIT = 60

_COLOURS = {  # status: (fill, stroke)
    "pending": ("#f1f3f5", "#868e96"),
    "running": ("#d0ebff", "#1c7ed6"),
    "succeeded": ("#d3f9d8", "#2b8a3e"),
    "failed": ("#ffe3e3", "#c92a2a"),
    "skipped": ("#fff3bf", "#e67700"),
    "cancelled": ("#f8f0fc", "#862e9c"),
}

_MERMAID_ESCAPES = str.maketrans(
    {
        '"': "#34;",
        "#": "#35;",
        "&": "#38;",
        "<": "#60;",
        ">": "#62;",
        "`": "#96;",
        "\n": " ",
        "\r": " ",
        "\t": " ",
    }
)
_DOT_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"', "\n": " ", "\r": " ", "\t": " "})


def render_graph(plan: Plan, fmt: str, statuses: Mapping[str, str] | None = None) -> str:
    """The plan drawn as ``fmt`` ("mermaid" or "dot")."""
    if fmt == "mermaid":
        return to_mermaid(plan, statuses)
    if fmt == "dot":
        return to_dot(plan, statuses)
    raise ValueError(f"unknown graph format {fmt!r} (the formats are: {', '.join(GRAPH_FORMATS)})")


# -- Mermaid -------------------------------------------------------------------------------------


def to_mermaid(plan: Plan, statuses: Mapping[str, str] | None = None) -> str:
    """A Mermaid flowchart, top to bottom; with ``statuses`` each node is coloured by status."""
    ids = _node_ids(plan)
    lines = ["flowchart TD"]
    for step in plan.steps:
        status = _status_of(step, statuses)
        style = f":::{status}" if status else ""
        label = "<br/>".join(_mermaid_text(part) for part in _label_lines(step, status))
        lines.append(f'    {ids[step.step_id]}["{label}"]{style}')
    lines += [f"    {ids[a]} --> {ids[b]}" for a, b in _edges(plan)]
    lines += [
        f"    classDef {status} fill:{fill},stroke:{stroke}"
        for status, (fill, stroke) in _COLOURS.items()
        if status in _used(plan, statuses)
    ]
    return "\n".join(lines) + "\n"


def _mermaid_text(text: str) -> str:
    return text.translate(_MERMAID_ESCAPES)


# -- Graphviz DOT --------------------------------------------------------------------------------


def to_dot(plan: Plan, statuses: Mapping[str, str] | None = None) -> str:
    """A Graphviz digraph; with ``statuses`` each node is filled by status."""
    lines = [
        "digraph plan {",
        "    rankdir=TB;",
        '    node [shape=box, style="rounded,filled", fillcolor="#ffffff", fontname="Helvetica"];',
    ]
    for step in plan.steps:
        lines.append(f"    {_dot_node(step, _status_of(step, statuses))}")
    lines += [f"    {_dot_quote(a)} -> {_dot_quote(b)};" for a, b in _edges(plan)]
    lines.append("}")
    return "\n".join(lines) + "\n"


def _dot_node(step: Step, status: str | None) -> str:
    label = "\\n".join(_dot_text(part) for part in _label_lines(step, status))
    attributes = f'label="{label}"'
    if status:
        fill, stroke = _COLOURS[status]
        attributes += f', fillcolor="{fill}", color="{stroke}"'
    return f"{_dot_quote(step.step_id)} [{attributes}];"


def _dot_quote(text: str) -> str:
    return f'"{_dot_text(text)}"'


def _dot_text(text: str) -> str:
    return text.translate(_DOT_ESCAPES)


# -- shared --------------------------------------------------------------------------------------


def _node_ids(plan: Plan) -> dict[str, str]:
    """Mermaid-safe node ids (``s1``, ``s2``...): step ids may hold any character."""
    return {step.step_id: f"s{index}" for index, step in enumerate(plan.steps, start=1)}


def _edges(plan: Plan) -> list[tuple[str, str]]:
    known = set(plan.ids)
    return [(dep, s.step_id) for s in plan.steps for dep in s.depends_on if dep in known]


def _status_of(step: Step, statuses: Mapping[str, str] | None) -> str | None:
    if statuses is None:
        return None
    status = statuses.get(step.step_id, "pending")
    return status if status in _COLOURS else "pending"


def _used(plan: Plan, statuses: Mapping[str, str] | None) -> set[str]:
    return {s for s in (_status_of(step, statuses) for step in plan.steps) if s}


def _label_lines(step: Step, status: str | None) -> list[str]:
    lines = [f"{step.step_id} [{step.tool}]", _shorten(step.description)]
    if status:
        lines.append(status)
    return lines


def _shorten(text: str) -> str:
    flat = " ".join(text.split())
    if len(flat) <= _DESCRIPTION_LIMIT:
        return flat
    return flat[: _DESCRIPTION_LIMIT - 1].rstrip() + "…"
