"""journal: the SQLite run store.

``store`` is the face (``Journal``, ``journal_for``): plans and their rounds, step events, outputs,
usage and the settings of each run (never a secret), queued as events arrive and written by one
writer thread per journal in batched transactions (``writer``, with one function per event in
``sql``); ``reader`` turns rows back into ``RunSummary`` and ``StoredRun``; ``schema`` creates the
tables and migrates an older journal in place. Read back by ``overseer runs`` and ``resume``.
May import: the engine core, events, errors, usage. Must not hold: display or command-line code.
Neighbours: the engine facade subscribes it to a run's events; the interfaces read from it.
"""
