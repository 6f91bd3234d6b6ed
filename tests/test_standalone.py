"""A node run on its own: ``python node.py < input.json``, tools built from the configuration."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.fake_openai import FakeOpenAI

NODE = """
import json, sys
from node_runtime import call_tool, call_tools_parallel, ToolCallError
data = json.load(sys.stdin)
out = call_tools_parallel([("shout", data["task"]), ("word_count", "one two three")])
try:
    call_tool("painter", "x")
except ToolCallError as exc:
    out.append(str(exc))
print(json.dumps(out))
"""

CONFIG = """
tools:
  - name: shout
    kind: python
    description: Upper-cases its prompt.
    function: tests.nodehelp:upper
"""


def run_node_file(
    folder: Path, code: str, payload: dict[str, Any], env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    node = folder / "node.py"
    node.write_text(code)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "OVERSEER_"))}
    base["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent)
    return subprocess.run(
        [sys.executable, str(node)],
        input=json.dumps(payload),
        capture_output=True,
        text=True,
        cwd=folder,
        env={**base, **(env or {})},
        timeout=120,
    )


def test_a_node_runs_alone_with_tools_from_the_local_config(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text(CONFIG)
    done = run_node_file(tmp_path, NODE, {"task": "hello", "inputs": {}})
    assert done.returncode == 0, done.stderr
    shout, count, unknown = json.loads(done.stdout)
    assert shout == "HELLO" and count == "3 words"
    assert "unknown tool 'painter'" in unknown and "shout" in unknown
    assert "code" not in unknown.split("the tools are: ")[1].split(", ")


def test_overseer_config_names_the_file(tmp_path: Path) -> None:
    config = tmp_path / "elsewhere.yaml"
    config.write_text(CONFIG)
    folder = tmp_path / "work"
    folder.mkdir()
    done = run_node_file(
        folder, NODE, {"task": "x", "inputs": {}}, {"OVERSEER_CONFIG": str(config)}
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)[0] == "X"


def test_without_a_config_the_packaged_tools_are_there(tmp_path: Path) -> None:
    code = (
        "import json\nfrom node_runtime import call_tool\n"
        "print(json.dumps(call_tool('word_count', 'a b')))"
    )
    done = run_node_file(tmp_path, code, {"task": "x", "inputs": {}})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == "2 words"


def test_llm_tools_use_the_key_from_the_environment(tmp_path: Path) -> None:
    key = "sk-standalone-key-42"
    with FakeOpenAI(lambda body: "bonjour") as fake:
        (tmp_path / "config.yaml").write_text(f"backend:\n  base_url: {fake.url}\n")
        code = (
            "import json\nfrom node_runtime import call_tool\n"
            "print(json.dumps(call_tool('translator', 'To French: hello', temperature=0)))"
        )
        done = run_node_file(tmp_path, code, {"task": "x", "inputs": {}}, {"OPENAI_API_KEY": key})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == "bonjour"
    assert fake.headers[0]["authorization"] == f"Bearer {key}"
    assert fake.requests[0]["temperature"] == 0


def test_a_broken_config_is_a_tool_call_error_not_a_traceback_of_overseer(
    tmp_path: Path,
) -> None:
    (tmp_path / "config.yaml").write_text("tools: 3\n")
    code = (
        "from node_runtime import call_tool, ToolCallError\n"
        "try:\n    call_tool('shout', 'x')\n"
        "except ToolCallError as exc:\n    print(repr(exc.kind), exc)\n"
    )
    done = run_node_file(tmp_path, code, {"task": "x", "inputs": {}})
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("'config' the tools could not be built")


def test_a_node_that_calls_no_tool_never_loads_overseer(tmp_path: Path) -> None:
    code = (
        "import sys, json\nimport node_runtime\n"
        "print(json.dumps([m for m in ('overseer', 'openai', 'pydantic') if m in sys.modules]))"
    )
    done = run_node_file(tmp_path, code, {"task": "x", "inputs": {}})
    assert json.loads(done.stdout) == []
