"""tools: what a step calls.

Holds ``registry`` (the ``ToolRegistry`` and the built-in kinds: ``llm`` and ``python``
functions), ``builtin`` (the shipped Python functions, such as ``word_count``) and ``services``
(what a run lends its tools: the budget meter, the gate's slots, the node log). The tool interface
itself is ``overseer.core.toolbase``; the ``code`` kind is the nodes part's, passed in by name.
May import: the engine core, config, the backends' ``chat`` interface. Must not hold: scheduling,
or any knowledge of code nodes.
Neighbours: the executor (core) calls tools; nodes build the ``code`` kind on top of this part.
"""
