"""interfaces: how people reach overseer.

Holds ``cli`` (the ``overseer`` command and its table of subcommands), ``common`` (the flags,
engine making and printing that every command shares), ``runs`` (``runs``, ``runs show`` and
``resume``), ``doctor``, ``display`` (the live progress; the only importer of ``rich``),
``safe_text`` (model text made safe to print: every interface prints it through there),
``startup`` (the command's process: its garbage collector while it starts and as it exits) and
``chat`` (the ``overseer chat`` REPL).
May import: everything below (the engine facade, the journal, config, core). Must not hold: logic
worth testing alone; that belongs in a lower part.
"""
