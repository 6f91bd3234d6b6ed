"""journal: the SQLite run store.

Holds ``store``: plans, step events, outputs, usage and the settings of each run (never a
secret), written as events arrive, read back by ``overseer runs`` and ``overseer resume``.
May import: the engine core, events, errors, usage. Must not hold: display or command-line code.
Neighbours: the engine facade subscribes it to a run's events; the interfaces read from it.
"""
