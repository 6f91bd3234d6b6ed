"""What start-up imports: nothing heavy before it is needed (issue 12).

``import openai`` builds some 660 pydantic models, about a second before anything happens, and
``rich`` and ``doctor`` serve one command each. Each check runs in a fresh interpreter (a
subprocess) and reads its ``sys.modules``; none measures a duration.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fake_openai import FakeOpenAI

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("openai", "rich", "overseer.interfaces.doctor", "overseer.interfaces.display")

pytestmark = pytest.mark.timeout(120)

_REPORT = """
import json, sys
heavy = {heavy!r}
print(json.dumps(sorted(name for name in heavy if name in sys.modules)))
"""


def loaded_after(code: str, tmp_path: Path) -> list[str]:
    """The heavy modules a fresh interpreter holds after running ``code``."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), XDG_STATE_HOME=str(tmp_path), HOME=str(tmp_path))
    env.pop("OPENAI_API_KEY", None)
    script = code + _REPORT.format(heavy=HEAVY)
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    found: list[str] = json.loads(done.stdout.strip().splitlines()[-1])
    return found


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


def test_preload_imports_openai_on_a_daemon_thread(tmp_path: Path) -> None:
    code = (
        "import threading\n"
        "from overseer.backends.llm import preload\n"
        "preload()\n"
        "preload()  # once is enough\n"
        "loaders = [t for t in threading.enumerate() if t.name == 'overseer-openai-import']\n"
        "assert len(loaders) <= 1, loaders\n"
        "for t in loaders:\n"
        "    assert t.daemon\n"
        "    t.join()\n"
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
