"""What start-up imports: nothing heavy before it is needed (issue 12).

``import openai`` builds some 660 pydantic models, about a second before anything happens, and
``rich`` and ``doctor`` serve one command each; the journal (sqlite3), tenacity (only a retry
needs it) and the embedded model's module are not needed before a first request to a named
server either. Each check runs in a fresh interpreter (a subprocess) and reads its
``sys.modules``; none measures a duration. The command's own process also pauses the garbage
collector while it starts and freezes what start-up made (``overseer.interfaces.startup``).
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from overseer.interfaces import startup
from tests.fake_openai import FakeOpenAI

ROOT = Path(__file__).resolve().parent.parent
HEAVY = (
    "openai",
    "rich",
    "overseer.interfaces.doctor",
    "overseer.interfaces.display",
    "overseer.journal.store",
    "overseer.backends.local_model",
    "tenacity",
)

pytestmark = pytest.mark.timeout(120)

_REPORT = """
import json, sys
heavy = {heavy!r}
print(json.dumps(sorted(name for name in heavy if name in sys.modules)))
"""


def loaded_after(code: str, tmp_path: Path) -> list[str]:
    """The heavy modules a fresh interpreter holds after running ``code``."""
    done = _python(code + _REPORT.format(heavy=HEAVY), tmp_path)
    assert done.returncode == 0, done.stderr
    found: list[str] = json.loads(done.stdout.strip().splitlines()[-1])
    return found


def _python(script: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), XDG_STATE_HOME=str(tmp_path), HOME=str(tmp_path))
    env.pop("OPENAI_API_KEY", None)
    return subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=False
    )


def test_importing_the_engine_imports_neither_openai_nor_rich(tmp_path: Path) -> None:
    assert loaded_after("import overseer.engine\n", tmp_path) == []


def test_an_engine_built_for_a_server_imports_openai_only_at_its_first_call(
    tmp_path: Path,
) -> None:
    code = (
        "from overseer.config import load_settings\n"
        "from overseer.engine import Overseer\n"
        "settings = load_settings(None, {'backend.base_url': 'http://127.0.0.1:9/v1'})\n"
        "engine = Overseer(settings, journal=False)\n"
    )
    assert loaded_after(code, tmp_path) == []


def test_the_first_call_imports_openai_and_answers(tmp_path: Path) -> None:
    with FakeOpenAI(lambda body: "hello") as fake:
        code = (
            "from overseer.backends.chat import ChatRequest\n"
            "from overseer.backends.llm import OpenAIChat\n"
            f"chat = OpenAIChat(base_url={fake.url!r}, api_key=None, model='m')\n"
            "import sys\n"
            "assert 'openai' not in sys.modules\n"
            "reply = chat.complete(ChatRequest(messages=[{'role': 'user', 'content': 'hi'}]))\n"
            "assert reply.text == 'hello', reply\n"
        )
        assert loaded_after(code, tmp_path) == ["openai"]


@pytest.mark.parametrize(
    "argv",
    [["--help"], ["plan", "--help"], ["runs", "--help"], ["resume", "--help"], ["--version"]],
)
def test_help_and_version_import_nothing_heavy(argv: list[str], tmp_path: Path) -> None:
    code = (
        "import contextlib, io\n"
        "from overseer.interfaces.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        f"    main({argv!r})\n"
    )
    assert loaded_after(code, tmp_path) == []


def test_overseer_plan_imports_no_display_and_no_doctor(tmp_path: Path) -> None:
    plan: dict[str, object] = {
        "steps": [
            {
                "step_id": "step1",
                "description": "Write a joke",
                "tool": "content_generator",
                "depends_on": [],
                "parallel_group": None,
            }
        ]
    }
    with FakeOpenAI(lambda body: json.dumps(plan)) as fake:
        code = (
            "import contextlib, io\n"
            "from overseer.interfaces.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
            f"    code = main(['plan', 'a joke', '--base-url', {fake.url!r}])\n"
            "assert code == 0 and 'step1' in out.getvalue(), (code, out.getvalue())\n"
        )
        assert loaded_after(code, tmp_path) == ["openai"]


_AT_EXIT = """
import atexit, gc, json, sys
def report():
    heavy = {heavy!r}
    found = sorted(name for name in heavy if name in sys.modules)
    state = {{"enabled": gc.isenabled(), "frozen": gc.get_freeze_count(), "heavy": found}}
    print(json.dumps(state), file=sys.stderr)
atexit.register(report)
sys.argv = ["overseer", *{argv!r}]
from overseer.interfaces.cli import entry
entry()
"""


def test_the_command_process_starts_with_the_collector_paused_and_exits_frozen(
    tmp_path: Path,
) -> None:
    """The whole ``overseer plan`` process, as its entry point runs it: the plan on stdout, the
    collector on again once start-up is over, start-up's objects frozen (so the exit's
    collections walk none of them), and nothing loaded that the plan did not need."""
    plan = {"steps": [{"step_id": "step1", "description": "A joke", "tool": "general"}]}
    with FakeOpenAI(lambda body: json.dumps(plan)) as fake:
        argv = ["plan", "a joke", "--base-url", fake.url]
        done = _python(_AT_EXIT.format(heavy=HEAVY, argv=argv), tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["steps"][0]["step_id"] == "step1"
    state = json.loads(done.stderr.strip().splitlines()[-1])
    assert state["enabled"] is True and state["frozen"] > 10_000, state
    assert state["heavy"] == ["openai"]  # no journal either: a plan is no run


def test_help_in_the_command_process_imports_nothing_heavy(tmp_path: Path) -> None:
    done = _python(_AT_EXIT.format(heavy=HEAVY, argv=["--help"]), tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stderr.strip().splitlines()[-1])["heavy"] == []


@pytest.fixture
def owned(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """This process taken for the command's own, the SDK import recorded instead of made;
    whatever a test froze is unfrozen after it, so that pytest's own objects stay collectable."""
    imported: list[str] = []
    monkeypatch.setattr(startup, "_OWNED", [True])
    monkeypatch.setattr(startup, "_import_sdk", lambda: imported.append("sdk"))
    try:
        yield imported
    finally:
        gc.unfreeze()
        gc.enable()


def test_starting_pauses_the_collector_then_imports_the_sdk_and_freezes(owned: list[str]) -> None:
    before = gc.get_freeze_count()
    with startup.starting():
        assert not gc.isenabled() and owned == []
    assert gc.isenabled() and owned == ["sdk"]
    assert gc.get_freeze_count() > before


def test_a_nested_start_up_leaves_the_collector_to_the_outer_one(owned: list[str]) -> None:
    with startup.starting():
        with startup.starting():
            pass
        assert not gc.isenabled() and owned == []
    assert gc.isenabled() and owned == ["sdk"]


def test_a_failed_start_up_resumes_the_collector_without_the_sdk(owned: list[str]) -> None:
    with pytest.raises(ValueError), startup.starting():
        raise ValueError("bad config")
    assert gc.isenabled() and owned == []


def test_a_start_up_that_calls_no_model_skips_the_sdk(owned: list[str]) -> None:
    with startup.starting(calls=False):
        pass
    assert gc.isenabled() and owned == []


def test_outside_the_command_s_process_nothing_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    """A library user's or a test's process keeps its collector as it is."""
    monkeypatch.setattr(startup, "_OWNED", [])
    before = gc.get_freeze_count()
    with startup.starting():
        assert gc.isenabled()
    startup.finishing()
    assert gc.isenabled() and gc.get_freeze_count() == before
