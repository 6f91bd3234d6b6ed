from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from overseer.config import Settings, find_config_file, load_settings
from overseer.config.settings import NO_TIMEOUT_ABOVE
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


# -- hostile or careless configs (issue 11) --------------------------------------------------------

BOMB = (
    'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    "b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
    "c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
    "d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n"
    "e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\n"
    "f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n"
    "g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\n"
    "h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]\n"
    "i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]\n"
    "run: {max_workers: *i}\n"
)


def test_a_yaml_alias_bomb_is_refused_before_it_is_built(tmp_path: Path) -> None:
    path = write(tmp_path, BOMB)
    assert len(BOMB.encode()) < 400
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert str(info.value) == (
        f"config file {str(path)!r} expands to more than 100,000 values "
        "through its YAML aliases (&anchor / *alias)"
    )


def test_a_yaml_alias_bomb_in_the_current_directory_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, BOMB, "config.yaml")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="expands to more than"):
        load_settings()


def test_a_few_aliases_are_still_fine(tmp_path: Path) -> None:
    text = "backend:\n  model: &m small\n  planner_model: *m\n"
    assert load_settings(write(tmp_path, text)).backend.planner_model == "small"


def test_an_alias_inside_itself_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="refers to itself"):
        load_settings(write(tmp_path, "run: &r {max_workers: 2, other: *r}\n"))


def test_deeply_nested_yaml_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nested too deeply|expands|not valid YAML"):
        load_settings(write(tmp_path, "run: " + "[" * 50_000 + "]" * 50_000 + "\n"))


def test_a_huge_config_file_is_refused_by_its_size(tmp_path: Path) -> None:
    path = write(tmp_path, "# padding\n" * 200_000)
    with pytest.raises(ConfigError, match="larger than 1,000,000 bytes"):
        load_settings(path)


def test_a_bad_value_is_quoted_short(tmp_path: Path) -> None:
    path = write(tmp_path, "run:\n  max_workers: [" + ", ".join(["1"] * 5000) + "]\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert "run.max_workers" in str(info.value) and len(str(info.value)) < 300


def test_a_config_that_is_not_utf8_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("backend:\n  model: caf\u00e9\n".encode("latin-1"))
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert str(info.value) == (
        f"config file {str(path)!r} is not UTF-8 text (byte b'\\xe9' at offset 21)"
    )


def test_a_directory_as_config_says_it_is_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(tmp_path)
    assert str(info.value) == (
        f"config file {str(tmp_path)!r} (from --config) is a directory, not a file"
    )


def test_dev_null_as_config_says_it_is_a_device() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings("/dev/null")
    assert str(info.value) == "config file '/dev/null' (from --config) is a device, not a file"


def test_the_environment_variable_is_named_for_a_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OVERSEER_CONFIG", str(tmp_path))
    with pytest.raises(ConfigError, match="from OVERSEER_CONFIG\\) is a directory"):
        find_config_file()


def test_a_bad_override_is_blamed_on_its_flag() -> None:
    flags = {"run.max_workers": "--max-workers"}
    with pytest.raises(ConfigError) as info:
        load_settings(None, {"run.max_workers": 100_000}, flags=flags)
    assert str(info.value) == (
        "--max-workers: Input should be less than or equal to 256 (got 100000)"
    )


def test_an_override_without_a_flag_name_is_blamed_on_the_override() -> None:
    with pytest.raises(ConfigError, match=r"^the override run\.max_workers: "):
        load_settings().with_overrides(**{"run.max_workers": 0})


def test_a_bad_file_value_is_still_blamed_on_the_file_with_flags_given(tmp_path: Path) -> None:
    path = write(tmp_path, "run:\n  max_workers: 0\n")
    with pytest.raises(ConfigError, match=f"configuration {str(path)!r}: run.max_workers"):
        load_settings(path, {"run.step_timeout": 5.0}, flags={"run.step_timeout": "--x"})


@pytest.mark.parametrize("value", [float("inf"), 1e10, 1e308, NO_TIMEOUT_ABOVE])
def test_a_huge_step_timeout_means_no_timeout(value: float) -> None:
    assert load_settings(None, {"run.step_timeout": value}).run.step_timeout is None


def test_inf_in_the_config_means_no_timeout(tmp_path: Path) -> None:
    text = "run:\n  step_timeout: .inf\ntools:\n  - name: general\n    timeout: .inf\n"
    settings = load_settings(write(tmp_path, text))
    assert settings.run.step_timeout is None
    assert next(t for t in settings.tools if t.name == "general").timeout is None


def test_a_long_but_finite_step_timeout_is_kept() -> None:
    assert load_settings(None, {"run.step_timeout": 86_400.0}).run.step_timeout == 86_400.0


def test_nan_as_a_timeout_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"run\.step_timeout: Input should be greater than 0"):
        load_settings(write(tmp_path, "run:\n  step_timeout: .nan\n"))


_YAML_BITS = st.sampled_from(
    [
        *("run:", "\n  ", "max_workers: ", "&a ", "*a", "[", "]", "{", "}", ", ", "- ", ": "),
        *("\n", "step_timeout: ", ".inf", ".nan", "1e308", "'", '"', "!!str ", "<<: *a", "#"),
        "tools:",
    ]
)


@settings(
    max_examples=80,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(text=st.lists(_YAML_BITS | st.text(max_size=5), max_size=60).map("".join))
def test_any_config_text_gives_settings_or_one_config_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "any.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        load_settings(path)
    except ConfigError as exc:
        assert str(exc) and "\n" not in str(exc) and len(str(exc)) < 400


def test_a_control_character_is_invalid_yaml_not_a_traceback(tmp_path: Path) -> None:
    """Found by the property test: the YAML reader refuses it while being made."""
    path = write(tmp_path, "\x1f")
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert str(info.value) == f"config file {str(path)!r} is not valid YAML"


def test_the_packaged_defaults_read_the_same_with_libyaml_as_without() -> None:
    """Start-up reads the packaged config.yaml with libyaml (where PyYAML has it), a user's file
    with the pure-Python loader: the defaults must not depend on which one read them."""
    import yaml

    from overseer.config.resources import default_config_path

    text = default_config_path().read_text(encoding="utf-8")
    assert yaml.load(text, Loader=yaml.CSafeLoader) == yaml.load(text, Loader=yaml.SafeLoader)
