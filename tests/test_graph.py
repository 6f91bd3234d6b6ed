"""Plan pictures: golden Mermaid and DOT text, and labels that cannot break out of their quotes."""

from __future__ import annotations

import pytest

from overseer.core.graph import GRAPH_FORMATS, render_graph, to_dot, to_mermaid
from overseer.core.plan import Plan, parse_plan

JOKE = parse_plan(
    [
        {"step_id": "step1", "description": "Write a joke", "tool": "content_generator"},
        {
            "step_id": "step2",
            "description": "Translate the joke to French",
            "tool": "translator",
            "depends_on": ["step1"],
        },
        {
            "step_id": "step3",
            "description": "Translate the joke to Spanish",
            "tool": "translator",
            "depends_on": ["step1"],
        },
        {
            "step_id": "step4",
            "description": "Compare both",
            "tool": "general",
            "depends_on": ["step2", "step3"],
        },
    ]
)

STATUSES = {"step1": "succeeded", "step2": "failed", "step3": "running"}

MERMAID_PLAIN = """\
flowchart TD
    s1["step1 [content_generator]<br/>Write a joke"]
    s2["step2 [translator]<br/>Translate the joke to French"]
    s3["step3 [translator]<br/>Translate the joke to Spanish"]
    s4["step4 [general]<br/>Compare both"]
    s1 --> s2
    s1 --> s3
    s2 --> s4
    s3 --> s4
"""

MERMAID_STATUS = """\
flowchart TD
    s1["step1 [content_generator]<br/>Write a joke<br/>succeeded"]:::succeeded
    s2["step2 [translator]<br/>Translate the joke to French<br/>failed"]:::failed
    s3["step3 [translator]<br/>Translate the joke to Spanish<br/>running"]:::running
    s4["step4 [general]<br/>Compare both<br/>pending"]:::pending
    s1 --> s2
    s1 --> s3
    s2 --> s4
    s3 --> s4
    classDef pending fill:#f1f3f5,stroke:#868e96
    classDef running fill:#d0ebff,stroke:#1c7ed6
    classDef succeeded fill:#d3f9d8,stroke:#2b8a3e
    classDef failed fill:#ffe3e3,stroke:#c92a2a
"""

DOT_PLAIN = """\
digraph plan {
    rankdir=TB;
    node [shape=box, style="rounded,filled", fillcolor="#ffffff", fontname="Helvetica"];
    "step1" [label="step1 [content_generator]\\nWrite a joke"];
    "step2" [label="step2 [translator]\\nTranslate the joke to French"];
    "step3" [label="step3 [translator]\\nTranslate the joke to Spanish"];
    "step4" [label="step4 [general]\\nCompare both"];
    "step1" -> "step2";
    "step1" -> "step3";
    "step2" -> "step4";
    "step3" -> "step4";
}
"""

DOT_STATUS = """\
digraph plan {
    rankdir=TB;
    node [shape=box, style="rounded,filled", fillcolor="#ffffff", fontname="Helvetica"];
    "step1" [label="step1 [content_generator]\\nWrite a joke\\nsucceeded", \
fillcolor="#d3f9d8", color="#2b8a3e"];
    "step2" [label="step2 [translator]\\nTranslate the joke to French\\nfailed", \
fillcolor="#ffe3e3", color="#c92a2a"];
    "step3" [label="step3 [translator]\\nTranslate the joke to Spanish\\nrunning", \
fillcolor="#d0ebff", color="#1c7ed6"];
    "step4" [label="step4 [general]\\nCompare both\\npending", \
fillcolor="#f1f3f5", color="#868e96"];
    "step1" -> "step2";
    "step1" -> "step3";
    "step2" -> "step4";
    "step3" -> "step4";
}
"""


def test_mermaid_of_a_known_plan() -> None:
    assert to_mermaid(JOKE) == MERMAID_PLAIN


def test_mermaid_with_statuses_colours_each_step() -> None:
    assert to_mermaid(JOKE, STATUSES) == MERMAID_STATUS


def test_dot_of_a_known_plan() -> None:
    assert to_dot(JOKE) == DOT_PLAIN


def test_dot_with_statuses_fills_each_step() -> None:
    assert to_dot(JOKE, STATUSES) == DOT_STATUS


def test_render_graph_picks_the_format() -> None:
    assert GRAPH_FORMATS == ("mermaid", "dot")
    assert render_graph(JOKE, "mermaid") == MERMAID_PLAIN
    assert render_graph(JOKE, "dot", STATUSES) == DOT_STATUS
    with pytest.raises(ValueError, match="'svg'"):
        render_graph(JOKE, "svg")


def _hostile() -> Plan:
    return parse_plan(
        [
            {
                "step_id": 'a"] --> x["evil',
                "description": 'Say "hi" <b>#1</b> & `tick`\nthen\\n more',
                "tool": "general",
            },
            {
                "step_id": "b\\",
                "description": 'quote " and backslash \\ end',
                "tool": "general",
                "depends_on": ['a"] --> x["evil'],
            },
        ]
    )


def test_mermaid_labels_are_escaped() -> None:
    text = to_mermaid(_hostile())
    assert text == (
        "flowchart TD\n"
        '    s1["a#34;] --#62; x[#34;evil [general]<br/>'
        'Say #34;hi#34; #60;b#62;#35;1#60;/b#62; #38; #96;tick#96; then\\n more"]\n'
        '    s2["b\\ [general]<br/>quote #34; and backslash \\ end"]\n'
        "    s1 --> s2\n"
    )
    for line in text.splitlines()[1:3]:
        label = line.split('["', 1)[1].rsplit('"]', 1)[0]
        assert '"' not in label and "<b>" not in label and "\n" not in label


def test_dot_labels_and_ids_are_escaped() -> None:
    text = to_dot(_hostile())
    lines = text.splitlines()
    assert lines[3] == (
        '    "a\\"] --> x[\\"evil" [label="a\\"] --> x[\\"evil [general]\\n'
        'Say \\"hi\\" <b>#1</b> & `tick` then\\\\n more"];'
    )
    assert lines[4] == '    "b\\\\" [label="b\\\\ [general]\\nquote \\" and backslash \\\\ end"];'
    assert lines[5] == '    "a\\"] --> x[\\"evil" -> "b\\\\";'


def test_long_descriptions_are_shortened_in_pictures() -> None:
    plan = parse_plan([{"step_id": "a", "description": "word " * 40, "tool": "general"}])
    label = to_mermaid(plan).splitlines()[1]
    assert label.endswith('…"]') and len(label) < 100


def test_unknown_statuses_draw_as_pending() -> None:
    plan = parse_plan([{"step_id": "a", "description": "A", "tool": "general"}])
    assert ":::pending" in to_mermaid(plan, {"a": "exploded"})
