"""backends: how overseer talks to a model.

Holds ``chat`` (the small ``ChatClient`` interface every other part uses), ``llm`` (the one
module that imports ``openai``: transport, retries, cancellation), ``prepared`` (a request the
openai client built once, sent again through its connection pool), ``tokens`` (token counting with
tiktoken, offline), ``local_model`` (the embedded model's server) and ``factory`` (picks and opens
the backend a run uses).
May import: the engine core, config, errors, usage. Must not hold: planning logic or tools.
Neighbours: planning and tools call ``chat.ChatClient``; the engine facade opens a backend
through ``factory``.
"""
