"""core: the engine's ground floor, pure or thread-level, importing no outside system.

Holds ``plan`` (``Step``, ``Plan`` and their validation), ``scheduler`` (the pure dependency
organizer), ``executor`` (runs a plan on the warm worker ``pool``, under the ``gate``'s caps, with
``cancel`` tokens), ``results`` and ``report`` (what a run produced), ``graph`` (pictures of a
plan) and ``toolbase`` (the interface every tool implements: the executor calls it, so it lives
here; the tools part builds the kinds).
May import: the standard library, pydantic, ``overseer.errors``, ``overseer.usage`` and
``overseer.events``. Must not hold: I/O beyond threads, prompt text, ``rich`` or ``openai``.
Neighbours: planning hands it plans; tools implement ``toolbase``; the engine facade drives it.
"""
