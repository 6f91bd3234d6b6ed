from __future__ import annotations

from pathlib import Path

import pytest

from overseer.config import Settings, ToolSpec, load_settings
from overseer.core.toolbase import CallContext
from overseer.errors import ConfigError, ToolError, UnknownToolError
from overseer.nodes.kinds import build_registry
from overseer.tools.registry import FunctionTool, LlmTool, ToolRegistry, output_text
from tests.fakes import ScriptedChat


def test_the_default_registry_holds_the_shipped_tools_in_order() -> None:
    registry = build_registry(load_settings(), ScriptedChat())
    assert registry.names()[:4] == ["content_generator", "translator", "summarizer", "general"]
    assert "- translator: Translates" in registry.describe()


def test_unknown_tool_is_an_error_naming_the_tools() -> None:
    registry = build_registry(load_settings(), ScriptedChat())
    with pytest.raises(UnknownToolError) as info:
        registry.get("painter")
    assert "'painter'" in str(info.value) and "translator" in str(info.value)


def test_an_llm_tool_sends_its_system_prompt_and_the_step_prompt() -> None:
    chat = ScriptedChat("bonjour")
    tool = LlmTool("t", "d", "You translate.", chat, model="m", temperature=0.1, max_tokens=50)
    result = tool.run("Translate hello", {}, CallContext())
    assert result.output == "bonjour" and result.usage.total_tokens == 15
    [request] = chat.requests
    assert request.messages == [
        {"role": "system", "content": "You translate."},
        {"role": "user", "content": "Translate hello"},
    ]
    assert (request.model, request.temperature, request.max_tokens) == ("m", 0.1, 50)


def test_call_options_override_the_tool_defaults() -> None:
    chat = ScriptedChat("x")
    LlmTool("t", "d", "s", chat, temperature=0.9).run("p", {"temperature": 0}, CallContext())
    assert chat.requests[0].temperature == 0


def test_the_step_deadline_bounds_the_request() -> None:
    import time

    chat = ScriptedChat("x")
    LlmTool("t", "d", "s", chat).run("p", {}, CallContext(deadline=time.monotonic() + 5))
    timeout = chat.requests[0].timeout
    assert timeout is not None and 0 < timeout <= 5


def test_shipped_system_prompts_are_read_from_prompts(repo_root: Path) -> None:
    chat = ScriptedChat("x")
    registry = build_registry(load_settings(), chat)
    registry.get("translator").run("p", {}, CallContext())
    expected = (repo_root / "prompts/tools/translator.md").read_text().strip()
    assert chat.requests[0].messages[0]["content"] == expected


def test_a_python_tool_gets_the_prompt_and_the_inputs_it_asks_for() -> None:
    def joiner(prompt: str, inputs: dict[str, str], task: str, sep: str = "+") -> list[str]:
        return [prompt, sep.join(inputs.values()), task]

    tool = FunctionTool("j", "d", joiner)
    ctx = CallContext(task="the task", inputs={"a": "1", "b": "2"})
    assert tool.run("P", {"sep": "-"}, ctx).output == '["P", "1-2", "the task"]'


def test_a_python_tool_that_raises_is_a_tool_error() -> None:
    def broken(prompt: str) -> str:
        raise ValueError("bad input")

    with pytest.raises(ToolError, match="ValueError: bad input"):
        FunctionTool("b", "d", broken).run("p", {}, CallContext())


def test_word_count_counts_dependency_outputs() -> None:
    registry = build_registry(load_settings(), ScriptedChat())
    ctx = CallContext(inputs={"s1": "one two", "s2": "three"})
    assert registry.get("word_count").run("ignored", {}, ctx).output.endswith("total: 3 words")
    assert registry.get("word_count").run("a b c d", {}, CallContext()).output == "4 words"


@pytest.mark.parametrize(
    ("function", "message"),
    [("no_such_module_xyz:f", "cannot import module"), ("os:no_such_function", "not a function")],
)
def test_bad_python_tools_are_config_errors(function: str, message: str) -> None:
    settings = Settings(
        tools=(ToolSpec(name="f", kind="python", description="d", function=function),)
    )
    with pytest.raises(ConfigError, match=message):
        build_registry(settings, ScriptedChat())


def test_a_missing_prompt_file_is_a_config_error() -> None:
    spec = ToolSpec(name="t", description="d", system_prompt_file="tools/nope.md")
    with pytest.raises(ConfigError, match=r"nope\.md"):
        build_registry(Settings(tools=(spec,)), ScriptedChat())


def test_a_kind_that_is_not_available_is_a_config_error() -> None:
    spec = ToolSpec(name="sh", kind="shell", description="d")
    with pytest.raises(ConfigError, match="'shell'"):
        build_registry(Settings(tools=(spec,)), ScriptedChat())


def test_disabled_tools_are_left_out() -> None:
    specs = (
        ToolSpec(name="a", description="d"),
        ToolSpec(name="b", description="d", enabled=False),
    )
    assert build_registry(Settings(tools=specs), ScriptedChat()).names() == ["a"]


def test_tool_timeouts_come_from_the_config() -> None:
    specs = (ToolSpec(name="a", description="d", timeout=5), ToolSpec(name="b", description="d"))
    assert build_registry(Settings(tools=specs), ScriptedChat()).timeouts() == {"a": 5}


def test_an_llm_step_hands_its_cancel_token_to_the_call() -> None:
    chat = ScriptedChat("x")
    ctx = CallContext()
    LlmTool("t", "d", "s", chat).run("p", {}, ctx)
    assert chat.requests[0].cancel is ctx.cancelled


def test_caps_come_from_max_concurrency() -> None:
    specs = (
        ToolSpec(name="a", description="d", max_concurrency=2),
        ToolSpec(name="b", description="d"),
    )
    assert build_registry(Settings(tools=specs), ScriptedChat()).caps() == {"a": 2}


def test_registry_basics() -> None:
    registry = ToolRegistry([FunctionTool("f", "d", str)])
    assert "f" in registry and "g" not in registry and len(registry) == 1


@pytest.mark.parametrize(
    ("value", "text"), [("s", "s"), ({"a": 1}, '{"a": 1}'), (3, "3"), ({1, 2}, "{1, 2}")]
)
def test_output_text(value: object, text: str) -> None:
    assert output_text(value) == text
