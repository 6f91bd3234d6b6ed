from __future__ import annotations

from pathlib import Path

import pytest

from overseer.config import Settings, find_config_file, load_settings
from overseer.errors import ConfigError


def write(tmp_path: Path, text: str, name: str = "c.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_packaged_defaults_load_with_the_shipped_tools() -> None:
    settings = load_settings()
    names = [t.name for t in settings.tools]
    for required in ("content_generator", "translator", "summarizer", "general"):
        assert required in names
    assert settings.run.max_workers == 8
    assert settings.run.on_error == "fail-fast"
    assert settings.planner.max_repairs == 2


def test_a_user_file_merges_over_the_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, "run:\n  max_workers: 3\nbackend:\n  model: local-model\n")
    settings = load_settings(path)
    assert settings.run.max_workers == 3
    assert settings.run.on_error == "fail-fast"
    assert settings.backend.model == "local-model"
    assert settings.source == str(path)


def test_tools_merge_by_name(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "tools:\n"
        "  - name: translator\n    max_concurrency: 2\n"
        "  - name: shout\n    kind: python\n    description: Shouts\n    function: m:f\n",
    )
    tools = {t.name: t for t in load_settings(path).tools}
    assert tools["translator"].max_concurrency == 2
    assert tools["translator"].kind == "llm"
    assert tools["shout"].function == "m:f"


def test_overrides_keep_zero_and_ignore_none(tmp_path: Path) -> None:
    path = write(tmp_path, "run:\n  step_retries: 3\n  max_workers: 5\n")
    settings = load_settings(path, {"run.step_retries": 0, "run.max_workers": None})
    assert settings.run.step_retries == 0
    assert settings.run.max_workers == 5


def test_config_from_environment_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "run:\n  max_workers: 2\n")
    monkeypatch.setenv("OVERSEER_CONFIG", str(path))
    assert load_settings().run.max_workers == 2


def test_local_config_yaml_is_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, "run:\n  max_workers: 4\n", "config.yaml")
    monkeypatch.chdir(tmp_path)
    assert find_config_file() == Path("config.yaml")
    assert load_settings().run.max_workers == 4


def test_base_url_from_environment_unless_the_file_sets_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:1/v1")
    assert load_settings().backend.base_url == "http://127.0.0.1:1/v1"
    path = write(tmp_path, "backend:\n  base_url: http://127.0.0.1:2/v1\n")
    assert load_settings(path).backend.base_url == "http://127.0.0.1:2/v1"
    flag = load_settings(path, {"backend.base_url": "http://127.0.0.1:3/v1"})
    assert flag.backend.base_url == "http://127.0.0.1:3/v1"


def test_missing_config_file_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.yaml")


def test_broken_yaml_names_the_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "run:\n  max_workers: [1,\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert str(path) in str(info.value) and "line" in str(info.value)


def test_a_bad_value_names_the_key_and_the_value(tmp_path: Path) -> None:
    path = write(tmp_path, "run:\n  on_error: explode\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert "run.on_error" in str(info.value) and "'explode'" in str(info.value)


def test_an_unknown_key_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="max_wrokers"):
        load_settings(write(tmp_path, "run:\n  max_wrokers: 3\n"))


def test_a_file_that_is_not_a_mapping(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="mapping"):
        load_settings(write(tmp_path, "- a\n- b\n"))


def test_tools_must_be_a_list_with_names(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="list"):
        load_settings(write(tmp_path, "tools: {a: 1}\n"))
    with pytest.raises(ConfigError, match="name"):
        load_settings(write(tmp_path, "tools:\n  - kind: llm\n"))


def test_python_tool_needs_module_and_function(tmp_path: Path) -> None:
    path = write(tmp_path, "tools:\n  - name: f\n    kind: python\n    description: d\n")
    with pytest.raises(ConfigError, match="module:function"):
        load_settings(path)


def test_an_empty_file_means_defaults(tmp_path: Path) -> None:
    assert load_settings(write(tmp_path, "")).run.max_workers == 8


def test_settings_are_frozen_and_hold_no_key() -> None:
    settings = load_settings()
    with pytest.raises(ValueError):
        settings.run = settings.run  # type: ignore[misc]
    assert "sk-" not in settings.model_dump_json()
    assert "api_key" not in Settings.model_fields["backend"].annotation.model_fields  # type: ignore[union-attr]


def test_planner_model_defaults_to_the_step_model() -> None:
    settings = load_settings(overrides={"backend.model": "m1"})
    assert settings.backend.effective_planner_model == "m1"
    other = settings.with_overrides(**{"backend.planner_model": "big"})
    assert other.backend.effective_planner_model == "big"


def test_every_setting_of_the_default_config_is_commented(repo_root: Path) -> None:
    """Each key above the tools list has a comment on its line or just above it; the tools'
    keys are explained once in the comment above ``tools:``."""
    lines = (repo_root / "config.yaml").read_text().split("\ntools:")[0].splitlines()
    for index, line in enumerate(lines):
        stripped = line.strip()
        if ":" in stripped and not stripped.startswith("#") and not stripped.endswith(":"):
            assert "#" in line or lines[index - 1].strip().startswith("#"), line
