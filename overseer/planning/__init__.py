"""planning: a request becomes a validated ``Plan``.

Holds ``planner`` (asks the model for a plan, re-asks with the validation errors) and
``jsontext`` (lenient extraction of JSON from a model's text).
May import: the engine core, config, the backends' ``chat`` interface. Must not hold: HTTP
details (those are ``backends.llm``'s), prompt text (that is ``prompts/``'s), or running steps.
Neighbours: the engine facade calls the planner and hands its plan to ``core.executor``.
"""
