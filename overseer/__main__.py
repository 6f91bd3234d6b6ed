"""``python -m overseer`` is the ``overseer`` command."""

from overseer.interfaces.cli import entry

entry()
