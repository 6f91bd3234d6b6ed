"""planning: a request becomes a validated ``Plan``, streamed into the executor, round by round.

Holds ``planner`` (the whole plan, re-asked with the validation errors), ``streaming`` (the
growing reply parsed as it arrives and each step checked in order: the rules of streamed plans
are written there), ``rounds`` (one round's calls and its repairs of the rest), ``joiner``
(answer or plan again once a round finished), ``session`` (a run's rounds fed into one
executor, ``planner.timeout``), ``examples`` (the few-shot plans picked for a request),
``splitting`` (a translation into several languages made one step per language), ``borrowing``
(the examples' words a plan took, as the planning scorer counts them) and ``jsontext`` (lenient
extraction of JSON from a model's text).
May import: the engine core, config, the backends' ``chat`` interface. Must not hold: HTTP
details (those are ``backends.llm``'s), prompt text (that is ``prompts/``'s), or running steps.
Neighbours: the engine facade starts a session beside the executor (``core.executor``).
"""
