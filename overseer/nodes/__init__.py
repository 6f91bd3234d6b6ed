"""nodes: generated Python code run as a step, in a sandbox, calling tools back through a broker.

Holds ``codetool`` (the ``code`` tool kind: the model writes a node, it is checked and run),
``nodecode`` (the static checks of a node's code), ``sandbox`` (runs a node as a child process
with limits), ``isolation`` (bubblewrap, ``unshare``, Landlock), ``cgroup`` and ``proctree``
(limits and killing whole process trees), ``folders`` (node folders, and the sweep of those a
killed overseer left), ``broker`` (serves a node's tool calls in the parent)
and ``standalone`` (the tools a node builds for itself when run outside overseer).
May import: tools, the backends' interface and factory, the engine core, config. Must not hold:
planning. Finds ``node_runtime`` on disk without importing it.
Neighbours: ``node_runtime`` (what a node imports) talks to ``broker``; the engine facade adds
the ``code`` kind to the registry.
"""
