"""config: the one frozen settings object, its sections, and where the packaged files live.

Holds ``settings`` (loading ``config.yaml`` files, the environment and flags into ``Settings``),
``nodes`` (the code-node section), ``resources`` (where the packaged ``prompts/`` and default
config live) and ``templates`` (renders a prompt of ``prompts/``: every part that talks to a model
uses it, so it sits here, below them all).
May import: the standard library, pydantic, PyYAML and ``overseer.errors``. Must not hold: I/O
beyond reading configuration files, or anything of the parts above it (every part reads settings;
settings know none of them).
"""

from overseer.config.settings import (
    BackendSettings,
    ChatSettings,
    LocalSettings,
    PlannerSettings,
    RetrySettings,
    RunSettings,
    Settings,
    ToolSpec,
    find_config_file,
    load_settings,
)

__all__ = [
    "BackendSettings",
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
