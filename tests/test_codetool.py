"""The ``code`` tool: a node written by the (scripted) step model, run in the sandbox."""

from __future__ import annotations

import json
import threading
import time
import uuid
from typing import Any

import pytest

from overseer import Overseer
from overseer.backends.chat import ChatRequest
from overseer.config import ToolSpec, load_settings
from overseer.core.report import RunReport
from overseer.core.toolbase import CallContext, Tool
from overseer.errors import ConfigError, ToolError
from overseer.events import NodeCallFinished, NodeCallStarted, NodeFinished, NodeStarted
from overseer.nodes import codetool
from overseer.nodes.codetool import CodeTool, code_tool
from tests.fakes import RuleChat, ScriptedChat, plan_json
from tests.nodehelp import Recorder, processes_with

NODE_MARK = "You write one small Python 3 program"


def fenced(code: str, before: str = "Here is the node:\n") -> str:
    return f"{before}```python\n{code}\n```\nIt prints the result."


def is_node_request(request: ChatRequest) -> bool:
    return request.messages[0]["content"].startswith(NODE_MARK)


class Script:
    """Node replies in order for node-writing requests; tools answer by rule."""

    def __init__(self, *nodes: str, tool_reply: Any = None) -> None:
        self.nodes = list(nodes)
        self.node_requests: list[ChatRequest] = []
        self.tool_reply = tool_reply or (lambda r: "T:" + r.messages[-1]["content"])
        self.lock = threading.Lock()

    def __call__(self, request: ChatRequest) -> str:
        if is_node_request(request):
            with self.lock:
                self.node_requests.append(request)
                if not self.nodes:
                    raise AssertionError("no more scripted nodes")
                return self.nodes.pop(0)
        return str(self.tool_reply(request))


def run(plan: str, script: Script, **overrides: Any) -> tuple[RunReport, Recorder, RuleChat]:
    chat = RuleChat([plan], step=script)
    settings = load_settings(overrides={"run.synthesize": False, **overrides})
    engine = Overseer(settings, chat=chat, journal=False)
    recorder = Recorder()
    engine.subscribe(recorder)
    return engine.run("request"), recorder, chat


ONE_CODE_STEP = plan_json(("step1", "Translate hello into three languages", "code", []))

PARALLEL = """import json, sys
from node_runtime import call_tools_parallel
task = json.load(sys.stdin)["task"]
print(json.dumps(call_tools_parallel([("translator", f"{l}: hello") for l in "abc"])))"""


def test_a_code_step_runs_its_node_and_the_node_calls_tools() -> None:
    report, recorder, _ = run(ONE_CODE_STEP, Script(fenced(PARALLEL)))
    assert report.status == "succeeded", report.outcome.reason
    record = report.outcome.steps["step1"]
    assert json.loads(record.output or "") == ["T:a: hello", "T:b: hello", "T:c: hello"]
    assert record.attempts == 1
    assert len(recorder.of(NodeCallStarted)) == 3 and len(recorder.of(NodeCallFinished)) == 3
    [started] = recorder.of(NodeStarted)
    assert started.step_id == "step1" and started.isolation["backend"] in (
        "bwrap",
        "unshare",
        "none",
    )
    assert started.run_id == report.run_id


def test_the_code_steps_usage_holds_the_writing_and_the_calls() -> None:
    report, _, _ = run(ONE_CODE_STEP, Script(fenced(PARALLEL)))
    # 1 plan + 1 node written + 3 tool calls, 15 tokens each in the fake
    assert report.outcome.steps["step1"].usage.total_tokens == 60
    assert report.usage.total_tokens == 75


def test_the_report_records_the_isolation_in_force() -> None:
    report, _, _ = run(ONE_CODE_STEP, Script(fenced(PARALLEL)))
    node = report.to_json()["nodes"]["step1"]
    assert node["calls"] == 3 and node["attempts"] == 1 and node["error"] is None
    assert set(node["isolation"]) >= {"backend", "network", "filesystem", "processes", "limits"}


def test_the_node_writer_sees_the_task_the_tools_and_the_inputs() -> None:
    plan = plan_json(
        ("step1", "Write a list", "content_generator", []),
        ("step2", "Count the items", "code", ["step1"]),
    )
    node = 'import json, sys\nd = json.load(sys.stdin)\nprint(json.dumps(d["inputs"]))'
    script = Script(node, tool_reply=lambda r: "a, b, c")
    report, _, _ = run(plan, script)
    assert report.status == "succeeded", report.outcome.reason
    assert json.loads(report.outcome.steps["step2"].output or "") == {"step1": "a, b, c"}
    [request] = script.node_requests
    system, user = request.messages[0]["content"], request.messages[1]["content"]
    assert "- translator: Translates" in system and "- code:" not in system
    assert "node_runtime" in system and "statistics" in system
    assert "Count the items" in user and "a, b, c" in user


def test_a_failing_node_goes_back_once_with_its_stderr_and_the_fix_wins() -> None:
    broken = "import json\nprint(json.dumps(1 / 0))"
    fixed = "import json\nprint(json.dumps('fixed'))"
    script = Script(fenced(broken), fenced(fixed))
    report, recorder, _ = run(ONE_CODE_STEP, script)
    assert report.status == "succeeded" and report.outcome.steps["step1"].output == "fixed"
    fix_request = script.node_requests[1]
    assert fix_request.messages[2]["role"] == "assistant"
    assert "ZeroDivisionError" in fix_request.messages[3]["content"]
    assert [e.attempt for e in recorder.of(NodeFinished)] == [1, 2]
    assert report.to_json()["nodes"]["step1"]["attempts"] == 2


def test_a_node_failing_twice_fails_the_step_with_its_error() -> None:
    broken = "raise ValueError('the data is wrong')"
    report, _, _ = run(ONE_CODE_STEP, Script(broken, broken))
    assert report.status == "failed"
    error = report.outcome.steps["step1"].error or ""
    assert error == (
        "the node failed (2 attempts): the node exited with status 1: "
        "ValueError: the data is wrong (node.py line 1)"
    )


DEEP = "def inner():\n    raise KeyError('k')\n\ndef outer():\n    inner()\n\nouter()\n"


def test_a_failed_nodes_error_is_one_line_and_its_whole_stderr_is_in_the_report() -> None:
    report, recorder, _ = run(ONE_CODE_STEP, Script(DEEP), **{"nodes.max_fixes": 0})
    error = report.outcome.steps["step1"].error or ""
    assert "\n" not in error and "Traceback" not in error
    assert error.endswith(": KeyError: 'k' (node.py line 2)")
    stderr = report.to_json()["nodes"]["step1"]["stderr"]
    assert stderr.startswith("Traceback") and "line 5, in outer" in stderr
    [finished] = recorder.of(NodeFinished)
    assert finished.stderr == stderr and finished.error is not None


def test_a_node_that_used_up_the_steps_time_is_not_asked_to_be_fixed() -> None:
    """Issue 11: it was re-asked with no time left, then 'timed out after 0.001s'."""
    nap = "import time\nwhile True:\n    time.sleep(0.05)"
    script = Script(nap)  # a second node request would fail the script
    overrides = {"run.step_timeout": 1.5, "nodes.max_fixes": 1}
    report, recorder, _ = run(ONE_CODE_STEP, script, **overrides)
    error = report.outcome.steps["step1"].error or ""
    assert len(script.node_requests) == 1 and len(recorder.of(NodeFinished)) == 1
    assert "the step's timeout of 1.5s ran out after the node had run" in error, error
    assert "no fix was asked for" in error and "0.001" not in error


def test_a_quick_failure_is_still_fixed_within_a_step_timeout() -> None:
    script = Script("raise SystemExit(4)", "print(5)")
    report, _, _ = run(ONE_CODE_STEP, script, **{"run.step_timeout": 60})
    assert report.outcome.steps["step1"].output == "5" and len(script.node_requests) == 2


def test_too_little_time_left_after_writing_starts_no_node() -> None:
    settings = load_settings()
    spec = ToolSpec(name="code", kind="code", description="d", timeout=5.0)
    tool = code_tool(spec, settings, ScriptedChat("print(1)"))
    ctx = _ctx_with_services(tool)
    ctx.deadline = time.monotonic() + 0.1  # all but spent
    recorder = Recorder()
    ctx.extra["overseer.tools.services"].bus.subscribe(recorder)
    with pytest.raises(ToolError, match=r"the step's timeout of 5s ran out before the node ran"):
        tool.run("x", {}, ctx)
    assert recorder.of(NodeStarted) == []


@pytest.mark.parametrize(
    ("stderr", "summary"),
    [
        ("", ""),
        ("\n\n", ""),
        ("just a line\n", "just a line"),
        (
            'Traceback (most recent call last):\n  File "/tmp/x/node.py", line 7, in <module>\n'
            '  File "/usr/lib/python3.11/json/__init__.py", line 2, in loads\nValueError: v\n',
            "ValueError: v (node.py line 7)",
        ),
        ("x" * 400, "x" * 297 + "..."),
    ],
)
def test_the_short_form_of_stderr(stderr: str, summary: str) -> None:
    assert codetool._stderr_summary(stderr) == summary


def test_max_fixes_zero_fails_at_once() -> None:
    report, _, _ = run(ONE_CODE_STEP, Script("print(", "never used"), **{"nodes.max_fixes": 0})
    assert report.status == "failed"
    assert "rejected before running: line 1: syntax error" in (
        report.outcome.steps["step1"].error or ""
    )


def test_a_disallowed_import_is_refused_before_running_and_sent_back() -> None:
    bad = "import socket\nprint(1)"
    good = "print(2)"
    script = Script(bad, good)
    report, recorder, _ = run(ONE_CODE_STEP, script)
    assert report.outcome.steps["step1"].output == "2"
    assert "import of 'socket' is not allowed" in script.node_requests[1].messages[3]["content"]
    assert len(recorder.of(NodeStarted)) == 1  # the refused node never ran


def test_invalid_output_and_empty_output_are_failures() -> None:
    script = Script("print('not json')", "pass")
    report, _, _ = run(ONE_CODE_STEP, script)
    assert "printed nothing on stdout" in (report.outcome.steps["step1"].error or "")
    assert "is not one JSON value" in script.node_requests[1].messages[3]["content"]


def test_the_step_timeout_bounds_the_node_and_kills_it() -> None:
    marker = "overseer-step-timeout-" + uuid.uuid4().hex
    spin = f"import sys\nsys.argv.append({marker!r})\nwhile True:\n    pass"
    stopped = threading.Event()
    chat = RuleChat([ONE_CODE_STEP], step=Script(spin))
    overrides = {"run.synthesize": False, "run.step_timeout": 1.5, "nodes.max_fixes": 0}
    engine = Overseer(load_settings(overrides=overrides), chat=chat, journal=False)
    engine.subscribe(lambda e: stopped.set() if isinstance(e, NodeFinished) else None)
    report = engine.run("x")
    assert report.status == "failed"
    assert "timed out" in (report.outcome.steps["step1"].error or "")
    assert stopped.wait(30)
    assert processes_with(marker) == []


def test_the_tools_own_timeout_bounds_the_node() -> None:
    settings = load_settings(overrides={"nodes.max_fixes": 0})
    spec = ToolSpec(name="code", kind="code", description="d", timeout=1.0)
    tool = code_tool(spec, settings, ScriptedChat("while True:\n    pass"))
    assert isinstance(tool, CodeTool) and tool.timeout == 1.0
    ctx = _ctx_with_services(tool)
    with pytest.raises(ToolError, match="timed out after 1s"):
        tool.run("spin", {}, ctx)


def test_a_string_output_is_kept_as_is_and_other_values_become_json() -> None:
    report, _, _ = run(ONE_CODE_STEP, Script('import json\nprint(json.dumps({"n": 3}))'))
    assert report.outcome.steps["step1"].output == '{"n": 3}'


def test_the_code_tool_needs_a_run() -> None:
    tool = code_tool(
        ToolSpec(name="code", kind="code", description="d"), load_settings(), ScriptedChat()
    )
    with pytest.raises(ToolError, match="runs inside a run"):
        tool.run("x", {}, CallContext())


def test_a_missing_prompt_file_is_a_configuration_error() -> None:
    spec = ToolSpec(name="code", kind="code", description="d", system_prompt_file="nope.md")
    with pytest.raises(ConfigError, match=r"'nope\.md' was not found"):
        code_tool(spec, load_settings(), ScriptedChat())


def test_an_unavailable_backend_fails_the_step_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    from overseer.nodes import isolation

    caps = isolation.Capabilities(None, None, 0, None, root=False)
    monkeypatch.setattr(isolation, "capabilities", lambda: caps)
    report, _, _ = run(ONE_CODE_STEP, Script("print(1)"), **{"nodes.sandbox.backend": "bwrap"})
    assert "sandbox backend 'bwrap' does not work here" in (
        report.outcome.steps["step1"].error or ""
    )


def test_a_node_blocked_on_its_calls_never_deadlocks_a_one_slot_run() -> None:
    """max_workers=1: the code step holds the only slot; its calls run in that slot."""
    report, recorder, _ = run(ONE_CODE_STEP, Script(fenced(PARALLEL)), **{"run.max_workers": 1})
    assert report.status == "succeeded", report.outcome.reason
    finished = recorder.of(NodeCallFinished)
    assert len(finished) == 3 and all(e.error is None for e in finished)


def test_node_calls_and_steps_share_a_tools_cap() -> None:
    """translator capped at 1: the node asks while a translator step runs, and gets its turn
    only once that step is done."""
    node_asked = threading.Event()
    order: list[str] = []

    def reply(request: ChatRequest) -> str:
        text = request.messages[-1]["content"]
        if text.startswith("Translate a"):
            assert node_asked.wait(30)
            order.append("step done")
        else:
            order.append("node call")
        return "ok"

    plan = plan_json(
        ("step1", "Translate a", "translator", []),
        ("step2", "Translate b, c and d", "code", []),
    )
    settings = load_settings(overrides={"run.synthesize": False})
    capped = tuple(
        t.model_copy(update={"max_concurrency": 1}) if t.name == "translator" else t
        for t in settings.tools
    )
    settings = settings.model_copy(update={"tools": capped})
    script = Script(fenced(PARALLEL), tool_reply=reply)
    engine = Overseer(settings, chat=RuleChat([plan], step=script), journal=False)
    engine.subscribe(lambda e: node_asked.set() if isinstance(e, NodeCallStarted) else None)
    report = engine.run("x")
    assert report.status == "succeeded", report.outcome.reason
    assert order == ["step done", "node call", "node call", "node call"]


def _ctx_with_services(tool: Tool) -> CallContext:
    from overseer.events import EventBus
    from overseer.tools.registry import ToolRegistry
    from overseer.tools.services import SERVICES_KEY, RunServices

    services = RunServices.for_run(load_settings(), ToolRegistry([tool]), EventBus(), t0=0.0)
    return CallContext(step_id="s1", task="spin", extra={SERVICES_KEY: services})


def test_the_tools_model_and_temperature_reach_the_node_writer() -> None:
    chat = ScriptedChat("print(1)")
    spec = ToolSpec(name="code", kind="code", description="d", model="coder", temperature=0.1)
    tool = code_tool(spec, load_settings(), chat)
    assert tool.run("do it", {}, _ctx_with_services(tool)).output == "1"
    [request] = chat.requests
    assert (request.model, request.temperature) == ("coder", 0.1)
    assert request.timeout is None  # no step deadline here


def test_a_literal_system_prompt_replaces_the_packaged_one() -> None:
    chat = ScriptedChat("print(2)")
    spec = ToolSpec(name="code", kind="code", description="d", system_prompt="Write Python.")
    tool = code_tool(spec, load_settings(), chat)
    tool.run("x", {}, _ctx_with_services(tool))
    assert chat.requests[0].messages[0] == {"role": "system", "content": "Write Python."}


def test_a_prompt_file_is_rendered_with_the_tools_and_modules() -> None:
    chat = ScriptedChat("print(3)")
    spec = ToolSpec(name="code", kind="code", description="d", system_prompt_file="node_system.md")
    tool = code_tool(spec, load_settings(overrides={"nodes.allowed_modules": ["math"]}), chat)
    tool.run("x", {}, _ctx_with_services(tool))
    system = chat.requests[0].messages[0]["content"]
    assert "import only these modules: math, node_runtime" in system
    assert "(none)" in system  # the only tool is the code tool itself, which nodes cannot call


def test_a_cancelled_step_stops_its_node() -> None:
    chat = ScriptedChat("while True:\n    pass")
    spec = ToolSpec(name="code", kind="code", description="d")
    tool = code_tool(spec, load_settings(overrides={"nodes.max_fixes": 0}), chat)
    ctx = _ctx_with_services(tool)
    ctx.cancelled.set()
    with pytest.raises(ToolError, match="the node was cancelled"):
        tool.run("spin", {}, ctx)


def test_no_fix_is_asked_for_once_the_step_is_cancelled() -> None:
    chat = ScriptedChat("raise SystemExit(3)")  # a second node request would fail the script
    spec = ToolSpec(name="code", kind="code", description="d")
    tool = code_tool(spec, load_settings(), chat)
    ctx = _ctx_with_services(tool)

    class CancelOnFinish:
        def __call__(self, event: object) -> None:
            if isinstance(event, NodeFinished):
                ctx.cancelled.set()

    services = ctx.extra["overseer.tools.services"]
    services.bus.subscribe(CancelOnFinish())
    with pytest.raises(ToolError, match=r"the node failed \(1 attempt\)"):
        tool.run("x", {}, ctx)
    assert len(chat.requests) == 1


def test_a_spent_budget_fails_the_nodes_calls() -> None:
    node = (
        "import json\nfrom node_runtime import call_tools_parallel\n"
        "out = call_tools_parallel([('translator', 'a'), ('translator', 'b')], "
        "return_exceptions=True)\n"
        "print(json.dumps([getattr(o, 'kind', o) for o in out]))"
    )
    # the plan's 15 tokens leave room for the step; writing the node (15 more) spends it all
    report, _, _ = run(ONE_CODE_STEP, Script(node), **{"run.max_tokens": 16})
    assert json.loads(report.outcome.steps["step1"].output or "") == ["budget", "budget"]


def test_failed_calls_still_let_the_node_decide() -> None:
    node = (
        "import json\nfrom node_runtime import call_tools_parallel, ToolCallsFailed\n"
        "try:\n    call_tools_parallel([('translator', 'a'), ('painter', 'b')])\n"
        "except Exception as exc:\n    print(json.dumps(type(exc).__name__))"
    )
    report, recorder, _ = run(ONE_CODE_STEP, Script(node))
    assert report.outcome.steps["step1"].output == "UnknownToolError"
    assert recorder.of(NodeCallStarted) == []  # an unknown tool stops the batch before it starts
