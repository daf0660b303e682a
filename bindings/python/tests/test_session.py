"""Conversations: `Engine.chat()` returns a `Session` whose follow-ups are rewritten for
retrieval, whose citations keep their numbers across turns, and whose turns each sign a
receipt crediting only that turn's sources."""

from __future__ import annotations

import pytest

import tribute
from conftest import PAYER


def check_turn(session: tribute.Session, answer: tribute.Answer) -> None:
    numbered = {marker: chunk for marker, chunk, _title in session.sources}
    for c in answer.citations:
        assert numbered[c.marker] == c.chunk_id
    receipt = answer.receipt
    assert receipt is not None and receipt.verify() == PAYER
    # The receipt credits exactly this turn's citations.
    assert {c["content_hash"] for c in receipt.chunks} == {c.content_hash for c in answer.citations}


def test_a_follow_up_is_searched_as_a_standalone_question(engine: tribute.Engine) -> None:
    chat = engine.chat(top_k=3, max_tokens=32)
    first = chat.ask("What is the Zephyr SDK?")
    check_turn(chat, first)
    assert first.retrieval_query is None
    intro = next(c for c in first.citations if c.doc_id == "zephyr-intro")

    with chat.stream("Who released it?") as stream:
        pieces = list(stream)
    second = stream.answer
    assert second is not None and "".join(pieces).strip() == second.text.strip()
    check_turn(chat, second)
    assert second.question == "Who released it?"
    assert second.retrieval_query is not None and "zephyr" in second.retrieval_query.lower()
    again = [c for c in second.citations if c.chunk_id == intro.chunk_id]
    assert again and again[0].marker == intro.marker, "the same source keeps its number"
    assert len(chat) == 2
    assert chat.history[2] == ("user", "Who released it?")
    assert chat.history[3] == ("assistant", second.text)
    assert first.receipt is not None and second.receipt is not None
    assert first.receipt.id != second.receipt.id

    chat.reset()
    assert len(chat) == 0 and chat.sources == []
    assert chat.retrieval_query("Who released it?") is None


def test_the_fallback_rewrite_uses_the_previous_content_words(engine: tribute.Engine) -> None:
    chat = engine.chat(top_k=2, max_tokens=24, rewrite="content-words")
    chat.ask("What is the Zephyr SDK?")
    assert chat.retrieval_query("Who released it?") == "zephyr sdk Who released it?"
    assert chat.retrieval_query("How long does a full charge take?") is None
    assert engine.chat(rewrite="off").retrieval_query("Who released it?") is None
    with pytest.raises(tribute.RequestError, match="content-words"):
        engine.chat(rewrite="clever")
