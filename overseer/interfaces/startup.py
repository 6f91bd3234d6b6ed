"""The ``overseer`` process's start-up and exit: the cyclic garbage collector kept off what lasts.

Starting a command allocates a few hundred thousand objects that live until the process ends and
none of which is garbage: the modules, the openai SDK's some 660 pydantic models, the settings.
Every full collection the collector runs while they are made walks them all for nothing (about
0.1 s of a start-up), and the interpreter's collections at exit walk them again (about 0.25 s
after ``import openai`` alone). So in overseer's own process, and only there (``own_process``,
called by the command's entry point; a library user's process or a test's is left alone):

- ``starting()`` pauses the collector while a command loads and builds its engine; when the
  block ends without an error it imports the openai SDK (a call follows, and this is where it
  costs least), then freezes everything that exists (``gc.freeze``: moved where the collector
  never looks) and resumes the collector, which from then on only sees what the run allocates;
- ``finishing()`` freezes again before the process exits, so the exit walks nothing.

Objects made during start-up that turn out to be garbage in a cycle are kept until the end of
the process (a few hundred kilobytes); nothing that needs a finaliser relies on the collector:
the embedded server and the journal are closed by their owners and at exit (``atexit``).
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

__all__ = ["finishing", "own_process", "starting"]

_OWNED: list[bool] = []


def own_process() -> None:
    """Say that this process is the ``overseer`` command's own: ``starting`` and ``finishing``
    then manage its garbage collector (elsewhere they do nothing)."""
    if not _OWNED:
        _OWNED.append(True)


@contextlib.contextmanager
def starting(*, calls: bool = True) -> Iterator[None]:
    """A command's start-up with the collector paused (see the module docstring); ``calls``:
    the command will call a model, so the SDK is imported before the collector resumes."""
    if not _OWNED or not gc.isenabled():  # not ours, or an outer start-up holds it already
        yield
        return
    gc.disable()
    try:
        yield
        if calls:
            _import_sdk()
    finally:
        gc.freeze()
        gc.enable()


def finishing() -> None:
    """Before the process exits: nothing that exists now is walked by the exit's collections."""
    if _OWNED:
        gc.freeze()


def _import_sdk() -> None:
    from overseer.backends.llm import import_sdk

    with contextlib.suppress(Exception):  # the first call imports it again and says what failed
        import_sdk()
