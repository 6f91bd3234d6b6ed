"""``overseer doctor``: is this machine ready? One line per check, and why not when it is not.

Checks the configuration, the backend (``GET /models``, else a one-token completion, against the
configured server), the tools, the sandbox nodes get here (with a trial node) and the journal's
location. Exit status 0 when nothing failed, 1 otherwise; ``--json`` prints one object instead.
Secrets are never printed: the API key is redacted from anything a server says.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from overseer.errors import EXIT_OK, EXIT_RUN_FAILED, OverseerError
from overseer.interfaces.common import Parser

if TYPE_CHECKING:
    from urllib.error import HTTPError

__all__ = ["Check", "check_backend", "check_journal", "check_sandbox", "check_tools", "main"]

_OPENAI = "https://api.openai.com/v1"
_HTTP_TIMEOUT = 15.0
_TRIAL_NODE = "import json, sys\njson.load(sys.stdin)\nprint(json.dumps('ok'))\n"


@dataclass(frozen=True)
class Check:
    """One line of the report: ``status`` is ok, warn or FAIL."""

    name: str
    status: str
    detail: str

    def line(self) -> str:
        return f"  {self.name:<9} {self.status:<5} {self.detail}"


def parser() -> argparse.ArgumentParser:
    from overseer.interfaces.common import add_common_flags

    made = Parser(prog="overseer doctor", description="Check that overseer can run here.")
    add_common_flags(made)  # the shared flags, so a command line can be checked as it is run
    return made


def main(args: argparse.Namespace) -> int:
    """The ``overseer doctor`` command."""
    checks = run_checks(args)
    if args.json:
        sys.stdout.write(json.dumps({"checks": [asdict(c) for c in checks]}, indent=2) + "\n")
    else:
        sys.stdout.write("overseer doctor\n" + "".join(c.line() + "\n" for c in checks))
    return EXIT_RUN_FAILED if any(c.status == "FAIL" for c in checks) else EXIT_OK


def run_checks(args: argparse.Namespace) -> list[Check]:
    from overseer.interfaces.common import settings_from_args

    try:
        settings = settings_from_args(args)
    except OverseerError as exc:
        return [Check("config", "FAIL", str(exc)), check_journal()]
    checks = [Check("config", "ok", settings.source)]
    for check in (check_backend, check_tools, check_sandbox):
        checks += check(settings)
    return [*checks, check_journal()]


# -- backend ----------------------------------------------------------------------------------


def check_backend(settings: Any) -> list[Check]:
    import urllib.error  # here, not at the top: every command imports this module

    backend = settings.backend
    key = os.environ.get(backend.api_key_env) or ""
    if backend.base_url is None and not key:
        return [_no_backend(settings)]
    url = (backend.base_url or _OPENAI).rstrip("/")
    timeout = min(float(backend.request_timeout), _HTTP_TIMEOUT)
    try:
        return [_list_models(url, key, backend.model, timeout)]
    except urllib.error.HTTPError as exc:
        if exc.code not in (404, 405):
            return [Check("backend", "FAIL", _http_problem(url, exc, key, backend.api_key_env))]
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return [Check("backend", "FAIL", f"cannot reach {url}: {_reason(exc, key)}")]
    return [_tiny_completion(url, key, backend.model, timeout, backend.api_key_env)]


def _no_backend(settings: Any) -> Check:
    """No server configured: the embedded model serves the runs, so it must really answer (a
    one-token completion): a wheel built for another CPU installs fine and dies on first use."""
    from overseer.backends.local_model import locate_model, try_model

    try:
        model = locate_model(settings.local, settings.backend.api_key_env)
    except OverseerError as exc:
        return Check("backend", "FAIL", str(exc))
    try:
        trial = try_model(settings)
    except OverseerError as exc:
        return Check("backend", "FAIL", f"the embedded model {model.name!r} cannot answer: {exc}")
    return Check(
        "backend",
        "ok",
        f"no server configured: runs use the embedded model {model.name!r} ({model.path}), which "
        f"{trial}; set --base-url / OPENAI_BASE_URL or an API key for a capable model",
    )


def _list_models(url: str, key: str, model: str, timeout: float) -> Check:
    body = _http(f"{url}/models", key, None, timeout)
    ids = [str(m.get("id")) for m in body.get("data") or [] if isinstance(m, dict)]
    listed = "listed" if model in ids else "not listed (the server may still serve it)"
    return Check(
        "backend", "ok", f"{url} answered GET /models: {len(ids)} models; {model!r} {listed}"
    )


def _tiny_completion(url: str, key: str, model: str, timeout: float, env: str) -> Check:
    import urllib.error

    payload = {"model": model, "messages": [{"role": "user", "content": "ping"}], "max_tokens": 1}
    try:
        _http(f"{url}/chat/completions", key, payload, timeout)
    except urllib.error.HTTPError as exc:
        return Check("backend", "FAIL", _http_problem(url, exc, key, env))
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return Check("backend", "FAIL", f"cannot reach {url}: {_reason(exc, key)}")
    return Check("backend", "ok", f"{url} answered a one-token completion with {model!r}")


def _http(url: str, key: str, payload: dict[str, Any] | None, timeout: float) -> dict[str, Any]:
    import urllib.request

    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(url, data=data, headers=headers)
    with urllib.request.urlopen(request, timeout=timeout) as response:
        try:
            body = json.loads(response.read() or b"{}")
        except RecursionError:
            raise ValueError("the server answered JSON nested too deeply to read") from None
    if not isinstance(body, dict):
        raise ValueError("the server did not answer with a JSON object")
    return body


def _http_problem(url: str, exc: HTTPError, key: str, env: str) -> str:
    hint = {
        401: f"the key in ${env} was refused",
        403: f"the key in ${env} may not use this",
        404: "not found: is the base URL right (it usually ends in /v1)?",
        429: "rate limited or out of quota",
    }.get(exc.code, "the server failed")
    said = _redact(_error_text(exc), key)
    return f"{url} answered HTTP {exc.code}: {hint}" + (f" ({said})" if said else "")


def _error_text(exc: HTTPError) -> str:
    try:
        body = json.loads(exc.read() or b"{}")
        return str((body.get("error") or {}).get("message") or "")[:200]
    except (ValueError, AttributeError, OSError, RecursionError):
        return ""


def _reason(exc: BaseException, key: str) -> str:
    reason = getattr(exc, "reason", None) or exc
    return _redact(str(reason), key)


def _redact(text: str, key: str) -> str:
    return text.replace(key, "***") if key else text


# -- tools ------------------------------------------------------------------------------------


class _NoChat:
    """Tools are built, never called, here."""

    def complete(self, request: Any) -> Any:
        raise OverseerError("overseer doctor does not call tools")


def check_tools(settings: Any) -> list[Check]:
    from overseer.nodes.kinds import build_registry

    try:
        registry = build_registry(settings, _NoChat())
    except OverseerError as exc:
        return [Check("tools", "FAIL", str(exc))]
    kinds = {spec.name: spec.kind for spec in settings.enabled_tools}
    listing = ", ".join(f"{name} ({kinds.get(name, '?')})" for name in registry.names())
    return [Check("tools", "ok" if len(registry) else "warn", f"{len(registry)}: {listing}")]


# -- sandbox ----------------------------------------------------------------------------------


def check_sandbox(settings: Any) -> list[Check]:
    """The isolation nodes get here, what is missing and how to get it, and a trial node."""
    from overseer.nodes import isolation as iso

    try:
        isolation = iso.decide(settings.nodes.sandbox)
        missing = iso.missing(iso.capabilities(), isolation)
    except iso.SandboxUnavailable as exc:
        return [Check("sandbox", "FAIL", str(exc))]
    lines = [
        Check("sandbox", "warn" if "NOT" in line else "ok", line) for line in isolation.lines()
    ]
    gaps = [Check("sandbox", "warn", line) for line in missing]
    return [*lines, *gaps, _trial_node(settings, isolation)]


def _trial_node(settings: Any, isolation: Any) -> Check:
    from overseer.nodes.sandbox import run_node

    started = time.monotonic()
    run = run_node(
        _TRIAL_NODE,
        {"task": "doctor", "inputs": {}},
        isolation=isolation,
        settings=settings.nodes.sandbox,
        timeout=30.0,
        max_output=1000,
    )
    took = (time.monotonic() - started) * 1000
    if run.ok and run.stdout.strip() == b'"ok"':
        return Check("sandbox", "ok", f"a trial node ran in {took:.0f} ms")
    problem = run.failure() or f"it printed {run.stdout[:80]!r}"
    last = run.stderr.strip().splitlines()[-1:] or [""]
    return Check("sandbox", "FAIL", f"a trial node failed: {problem} {last[0]}".strip())


# -- journal ----------------------------------------------------------------------------------


def check_journal() -> Check:
    path = journal_path()
    if path.exists():
        writable = os.access(path, os.W_OK)
        state = "exists"
    else:
        parent = _nearest_existing(path.parent)
        writable = os.access(parent, os.W_OK | os.X_OK)
        state = "will be created"
    words = "writable" if writable else "NOT writable"
    return Check("journal", "ok" if writable else "FAIL", f"{path} ({state}, {words})")


def journal_path() -> Path:
    """``$OVERSEER_HOME``, else ``$XDG_STATE_HOME/overseer``, else ~/.local/state/overseer."""
    try:
        from overseer.journal.store import default_journal_path
    except ImportError:
        return _journal_folder() / "journal.sqlite3"
    found: Callable[[], Path] = default_journal_path
    return found()


def _journal_folder() -> Path:
    env = os.environ
    if env.get("OVERSEER_HOME"):
        return Path(env["OVERSEER_HOME"])
    if env.get("XDG_STATE_HOME"):
        return Path(env["XDG_STATE_HOME"]) / "overseer"
    return Path.home() / ".local" / "state" / "overseer"


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path
