"""chat: the ``overseer chat`` REPL.

Holds ``repl`` (the prompt_toolkit loop, and the plain loop for piped stdin), ``commands`` (the
slash commands), ``session`` (one chat's engine, plans and runs) and ``conversation`` (the digest
of earlier turns the planner sees, bounded in tokens).
May import: the engine facade, the journal, planning, core, config and ``interfaces.common``.
Neighbours: ``interfaces.cli`` starts it; ``interfaces.display`` shows its runs.
"""
