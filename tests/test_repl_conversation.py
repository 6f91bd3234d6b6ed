"""The chat's turns and the token-bounded digest the planner sees (no model, no network)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from overseer.backends.tokens import count_tokens
from overseer.config.resources import read_prompt
from overseer.interfaces.chat.conversation import Conversation, Turn, build_digest

MODEL = "gpt-4o-mini"


def turns(*pairs: tuple[str, str]) -> list[Turn]:
    conversation = Conversation()
    for request, answer in pairs:
        conversation.add(Turn(request, "succeeded", answer=answer))
    return conversation.turns


def test_turns_are_numbered_in_order() -> None:
    conversation = Conversation()
    first = conversation.add(Turn("a", "succeeded", answer="A"))
    second = conversation.add(Turn("b", "failed", answer="B"))
    assert (first.number, second.number) == (1, 2)
    assert [t.request for t in conversation.turns] == ["a", "b"]


def test_the_digest_holds_every_turn_oldest_first_in_the_prompt_wording() -> None:
    digest = build_digest(turns(("write a joke", "Why did the cat sit?"), ("shorter", "Cat.")), 500)
    assert (
        digest.index("write a joke") < digest.index("Why did the cat sit?") < digest.index("Cat.")
    )
    assert "Turn 1\nRequest: write a joke\nAnswer: Why did the cat sit?" in digest
    assert "Turn 2\nRequest: shorter\nAnswer: Cat." in digest
    assert read_prompt("chat_context.md").splitlines()[0] in digest
    assert "left out" not in digest


def test_nothing_to_say_is_an_empty_digest() -> None:
    assert build_digest([], 1000) == ""
    assert build_digest(turns(("a", "b")), 0) == ""
    assert Conversation().digest(1000) == ""


def test_the_newest_turns_are_kept_when_the_budget_is_short() -> None:
    history = turns(*[(f"request {i}", f"answer {i} " + "word " * 40) for i in range(1, 9)])
    digest = build_digest(history, 300, MODEL)
    assert count_tokens(digest, MODEL) <= 300
    assert "request 8" in digest and "request 1\n" not in digest
    kept = [i for i in range(1, 9) if f"Request: request {i}\n" in digest]
    assert kept == list(range(kept[0], 9))  # a run of the newest, none skipped
    assert f"(Older turns left out for length: {kept[0] - 1}.)" in digest


def test_a_newest_turn_too_long_for_the_budget_has_its_answer_cut() -> None:
    history = turns(("old", "old answer"), ("summarize the book", "chapter " * 2000))
    digest = build_digest(history, 200, MODEL)
    assert 150 < count_tokens(digest, MODEL) <= 200
    assert "summarize the book" in digest and "Request: old" not in digest
    assert read_prompt("chat_cut.md").strip() in digest
    assert "Older turns left out for length: 1." in digest


def test_a_budget_too_small_for_anything_gives_no_digest() -> None:
    assert build_digest(turns(("a request", "an answer")), 20, MODEL) == ""


def test_only_answered_turns_that_were_not_retried_are_context() -> None:
    conversation = Conversation()
    conversation.add(Turn("planned away", "no plan", error="no valid plan"))
    conversation.add(Turn("stopped", "cancelled", answer="## partial"))
    conversation.add(Turn("half done", "failed", answer="## part one"))
    conversation.add(Turn("half done", "succeeded", answer="all of it", retry_of=3))
    conversation.add(Turn("errored", "error", error="HTTP 500"))
    conversation.add(Turn("empty", "succeeded", answer="  "))
    digest = conversation.digest(2000)
    assert "all of it" in digest
    for absent in ("planned away", "stopped", "part one", "errored", "empty"):
        assert absent not in digest
    assert conversation.turns[2].superseded and not conversation.turns[3].superseded


def test_the_last_run_is_the_newest_turn_with_a_report() -> None:
    conversation = Conversation()
    assert conversation.last_run() is None
    conversation.add(Turn("x", "no plan"))
    assert conversation.last_run() is None


def test_dollar_signs_and_braces_in_turns_survive_the_templates() -> None:
    digest = build_digest(turns(("price in $USD {x}", "costs $5 ${y}")), 500)
    assert "price in $USD {x}" in digest and "costs $5 ${y}" in digest


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.text(min_size=1, max_size=80), st.text(min_size=1, max_size=400)),
        min_size=1,
        max_size=12,
    ),
    st.integers(min_value=0, max_value=600),
)
def test_the_digest_never_exceeds_its_budget_and_keeps_a_newest_run(
    pairs: list[tuple[str, str]], budget: int
) -> None:
    history = [t for t in turns(*pairs) if t.is_context]
    digest = build_digest(history, budget, MODEL)
    assert count_tokens(digest, MODEL) <= budget
    if digest and history:
        assert f"Turn {history[-1].number}\n" in digest
