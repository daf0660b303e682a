"""The engine end to end with the real models: cited answers, verified receipts,
streaming, async, the GIL released, adapters and the documented errors."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

import tribute
from conftest import ALICE, BOB, GUST_Q, LEDGER, LORA, PAYER, PRICING_Q, SAMPLE


def check_citations(answer: tribute.Answer) -> None:
    assert answer.citations, answer
    assert sum(c.weight_bps for c in answer.citations) == 10_000
    weights = [c.weight_bps for c in answer.citations]
    assert weights == sorted(weights, reverse=True)


def test_ask_cites_the_source_and_signs_a_verifiable_receipt(engine: tribute.Engine) -> None:
    answer = engine.ask(PRICING_Q, top_k=3)
    assert "900" in answer.text, answer.text
    check_citations(answer)
    top = answer.citations[0]
    assert (top.doc_id, top.contributor, top.datanet) == ("zephyr-pricing", BOB, "pilot-notes")
    assert top.weight_bps > 5_000 and 0.5 < top.weight <= 1.0
    assert f"[{top.marker}]" in answer.cited_text
    assert str(answer) == answer.cited_text
    assert answer.question == PRICING_Q
    usage = answer.usage
    assert usage.sources_used == 3 and usage.method == "loo"
    assert usage.prompt_tokens > 100 and usage.answer_tokens > 0 and usage.attribution_passes >= 3
    assert usage.total_ms >= usage.prefill_ms + usage.decode_ms + usage.attribution_ms > 0
    assert usage.decode_tokens_per_s > 0 and usage.to_dict()["sources_used"] == 3
    assert "Usage(" in repr(usage)
    assert answer.sentences and any(s.markers for s in answer.sentences)
    for s in answer.sentences:
        assert answer.text[s.start : s.end] == s.text
        assert all(1 <= m <= usage.sources_used for m in s.markers)

    receipt = answer.receipt
    assert receipt is not None, answer.no_receipt
    assert receipt.verify() == PAYER  # against the engine's ledger
    assert receipt.verify(ledger=LEDGER) == PAYER
    assert receipt.payer == PAYER and receipt.fee == 10**15
    assert receipt.id.startswith("0x") and len(receipt.id) == 66
    assert sum(c["weight_bps"] for c in receipt.chunks) == 10_000
    assert {c["contributor"] for c in receipt.chunks} <= {ALICE, BOB}
    # A receipt verified against another ledger's domain recovers someone else.
    with pytest.raises(tribute.ReceiptError, match="not by its payer"):
        receipt.verify(ledger={"chainId": 1, "contract": LEDGER["contract"]})
    # The canonical JSON round-trips; the journal holds the receipt as pending.
    again = tribute.Receipt.from_json(receipt.to_json(), ledger=LEDGER)
    assert again == receipt and again.verify() == PAYER
    assert receipt.to_dict()["receiptId"] == receipt.id
    pending = engine.receipts("pending")
    assert any(r == receipt and state == "pending" for r, state in pending)
    assert "Answer(" in repr(answer) and "Receipt(" in repr(receipt)


def test_gust_question_cites_the_field_notes(engine: tribute.Engine) -> None:
    answer = engine.ask(GUST_Q, top_k=3, method="loo")
    check_citations(answer)
    assert answer.citations[0].doc_id == "gust-field-notes", answer.citations
    assert answer.citations[0].contributor == BOB


def test_streaming_yields_pieces_then_the_answer(engine: tribute.Engine) -> None:
    with engine.stream(GUST_Q, top_k=3) as stream:
        assert stream.answer is None
        pieces = []
        for piece in stream:
            assert isinstance(piece, str)
            pieces.append(piece)
    answer = stream.answer
    assert answer is not None and len(pieces) > 1
    assert "".join(pieces).strip() == answer.text.strip()
    check_citations(answer)
    assert answer.receipt is not None and answer.receipt.verify() == PAYER
    # Greedy decoding: the streamed answer is the blocking one.
    assert engine.ask(GUST_Q, top_k=3).text == answer.text


def test_closing_a_stream_early_gives_its_session_back(engine: tribute.Engine) -> None:
    stream = engine.stream(PRICING_Q, top_k=2)
    assert "streaming" in repr(stream)
    first = next(stream)
    assert isinstance(first, str)
    stream.close()
    assert repr(stream) == "AskStream(closed)" and stream.answer is None
    assert list(stream) == []
    # The generator has one session: a leaked one would block this ask forever.
    done: list[tribute.Answer] = []
    worker = threading.Thread(target=lambda: done.append(engine.ask(GUST_Q, top_k=2, max_tokens=8)), daemon=True)
    worker.start()
    worker.join(timeout=120)
    assert not worker.is_alive() and done, "the closed stream kept the generator's session"


def test_ask_async(engine: tribute.Engine) -> None:
    async def main() -> list[tribute.Answer]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        t = asyncio.ensure_future(ticker())
        answer = await engine.ask_async(PRICING_Q, top_k=3, max_tokens=24)
        t.cancel()
        assert ticks > 5, "the event loop was blocked during ask_async"
        return [answer]

    (answer,) = asyncio.run(main())
    assert isinstance(answer, tribute.Answer)
    assert answer.citations[0].doc_id == "zephyr-pricing"


def test_gil_is_released_during_ask_and_search(engine: tribute.Engine) -> None:
    ticks: list[float] = []
    stop = threading.Event()

    def tick() -> None:
        while not stop.is_set():
            ticks.append(time.perf_counter())
            time.sleep(0.002)

    thread = threading.Thread(target=tick)
    thread.start()
    try:
        time.sleep(0.05)
        start = time.perf_counter()
        engine.ask(GUST_Q, top_k=2, max_tokens=16)
        end = time.perf_counter()
    finally:
        stop.set()
        thread.join()
    during = [t for t in ticks if start < t < end]
    assert end - start > 0.2
    assert len(during) >= 10, f"{len(during)} ticks in {end - start:.2f} s: the GIL was held"

    # Searches from several threads at once.
    results: list[str] = []
    threads = [
        threading.Thread(target=lambda: results.append(engine.search(GUST_Q, k=1)[0].doc_id))
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == ["gust-field-notes"] * 4


def test_index_handle_serves_through_the_engine(engine: tribute.Engine) -> None:
    kb = engine.index
    assert "served by an engine" in repr(kb) and kb.document_count == 5
    assert kb.search(PRICING_Q, k=1)[0].doc_id == "zephyr-pricing"
    assert kb.search(PRICING_Q, k=1, mode="hybrid")[0].doc_id == "zephyr-pricing"
    # Per-call mode and datanets, through the index handle and the engine alike.
    bm25 = kb.search(PRICING_Q, k=3, mode="bm25")
    assert bm25 and all(h.bm25_score is not None and h.dense_score is None for h in bm25)
    dense = engine.search(PRICING_Q, k=3, mode="dense")
    assert dense and all(h.dense_score is not None and h.bm25_score is None for h in dense)
    docs = engine.search(GUST_Q, k=5, datanets=["zephyr-docs"])
    assert docs and {h.datanet for h in docs} == {"zephyr-docs"}
    assert {h.datanet for h in kb.search(GUST_Q, k=5, datanets=["pilot-notes"])} == {"pilot-notes"}
    with pytest.raises(tribute.RequestError, match="unknown mode"):
        engine.search(PRICING_Q, mode="fuzzy")  # type: ignore[arg-type]
    with pytest.raises(tribute.RequestError):
        tribute.Engine(index=kb)


def test_delete_through_an_engine(tmp_path: Path, generator: tribute.Generator) -> None:
    kb = tribute.Index.open(tmp_path / "kb")
    kb.add_files(SAMPLE)
    with tribute.Engine(index=kb, generator=generator) as engine:
        assert kb.delete("gust-field-notes") is True
        assert kb.delete("gust-field-notes") is False
        assert kb.document_count == 4
        assert all(h.doc_id != "gust-field-notes" for h in engine.search(GUST_Q, k=5))


def test_retrieve_signs_a_retrieval_receipt(engine: tribute.Engine) -> None:
    r = engine.retrieve(PRICING_Q, 3)
    assert r.hits and r.hits[0].doc_id == "zephyr-pricing"
    assert sum(c.weight_bps for c in r.citations) == 10_000
    assert r.receipt is not None and r.receipt.verify() == PAYER
    assert r.receipt.fee == 10**14
    assert r.receipt.model_id == "0x" + "00" * 32
    unsigned = engine.retrieve(PRICING_Q, sign=False)
    assert unsigned.receipt is None and unsigned.no_receipt


def test_question_without_relevant_sources_signs_nothing(engine: tribute.Engine) -> None:
    answer = engine.ask("What is the boiling point of mercury in kelvin?")
    assert answer.citations == [] and answer.receipt is None
    assert answer.no_receipt and "no source" in answer.no_receipt


def test_adapter_is_used_and_named_in_the_receipt(engine: tribute.Engine) -> None:
    lora = LORA / "smollm2-135m-zephyr-lora"
    if not lora.is_dir():
        pytest.fail(f"the test adapter is required at {lora}", pytrace=False)
    gen = engine.generator
    gen.add_adapter("zephyr", lora)
    assert "zephyr" in gen.adapters
    answer = engine.ask(PRICING_Q, adapters={"zephyr": 1.0}, top_k=3, max_tokens=24)
    assert answer.adapters == [("zephyr", 1.0)]
    assert answer.receipt is not None and len(answer.receipt.adapters) == 1
    assert answer.receipt.adapters[0][1] == 1.0
    with pytest.raises(tribute.AdapterError, match="no adapter registered"):
        engine.ask(PRICING_Q, adapters={"nope": 1.0}, max_tokens=4)
    with pytest.raises(tribute.AdapterError):
        gen.add_adapter("broken", SAMPLE)


def test_request_errors(engine: tribute.Engine) -> None:
    with pytest.raises(tribute.RequestError, match="empty"):
        engine.ask("   ")
    with pytest.raises(tribute.RequestError, match="top_k"):
        engine.ask(PRICING_Q, top_k=0)
    with pytest.raises(tribute.RequestError, match="unknown attribution method"):
        engine.ask(PRICING_Q, method="vibes")  # type: ignore[arg-type]
    with pytest.raises(tribute.RequestError, match="unknown receipt state"):
        engine.receipts("lost")  # type: ignore[arg-type]


def test_model_key_and_config_errors(tmp_path: Path) -> None:
    with pytest.raises(tribute.ModelError, match="model directory"):
        tribute.Generator.load(tmp_path / "no-model")
    with pytest.raises(tribute.ReceiptError, match="32-byte hex private key"):
        tribute.Signer.from_hex("0xnot-a-key")
    with pytest.raises(tribute.ReceiptError, match="not set"):
        tribute.Signer.from_env("TRIBUTE_TEST_UNSET_VARIABLE")
    with pytest.raises(tribute.ConfigError, match="ledger"):
        tribute.Engine(tmp_path / "kb", ledger={"chainId": 1})
    bad = tmp_path / "tribute.toml"
    bad.write_text('index = "kb"\nno_such_key = 1\n')
    with pytest.raises(tribute.ConfigError, match="no_such_key"):
        tribute.Engine.from_config(bad)


def test_signer_never_shows_the_key() -> None:
    s = tribute.Signer.from_hex("0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80")
    assert s.address == PAYER and repr(s) == f"Signer({PAYER})"
    assert tribute.Signer.random().address != PAYER


def test_from_config_and_context_manager(tmp_path: Path, generator: tribute.Generator) -> None:
    config = tmp_path / "tribute.toml"
    config.write_text(
        'index = "kb"\n'
        "[retrieval]\ntop_k = 2\n"
        '[receipts]\njournal = "receipts"\nledger = { chainId = 31337, contract = "0x5FbDB2315678afecb367f032d93F642f64180aa3" }\n'
    )
    with tribute.Engine.from_config(config) as engine:
        assert engine.config["retrieval"]["top_k"] == 2
        assert engine.ledger == LEDGER
        assert engine.model == "SmolLM2-135M-Instruct"
        assert Path(engine.index.path) == tmp_path / "kb"
        engine.index.add_files(SAMPLE / "bob.jsonl")
        assert engine.search(GUST_Q, k=1)[0].doc_id == "gust-field-notes"
        assert "Engine(" in repr(engine)
    assert engine.closed and engine.index.closed and repr(engine) == "Engine(closed)"
    with pytest.raises(tribute.TributeError, match="closed"):
        engine.ask(GUST_Q)
    # The journal and index were released: a new engine can open them.
    with tribute.Engine(tmp_path / "kb", generator=generator, journal=tmp_path / "receipts") as again:
        assert again.index.document_count == 2


def test_failed_engine_build_gives_the_index_back(tmp_path: Path) -> None:
    kb = tribute.Index.open(tmp_path / "kb")
    kb.add_files(SAMPLE / "alice.jsonl")
    with pytest.raises(tribute.ConfigError):
        tribute.Engine(index=kb, generator=None, ledger="/no/such/ledger.json")
    with pytest.raises(tribute.ModelError):
        # A generator from a missing directory: the engine is never built.
        tribute.Engine(index=kb, generator=tribute.Generator.load(tmp_path / "nope"))
    journal_blocker = tmp_path / "journal-is-a-file"
    journal_blocker.write_text("")
    with pytest.raises(tribute.ReceiptError):
        tribute.Engine(index=kb, journal=journal_blocker)
    assert not kb.closed and "served by" not in repr(kb)
    assert kb.search("Zephyr", k=1)[0].contributor == ALICE
    kb.close()


def test_a_dominant_low_trust_source_raises_an_alert(tmp_path: Path) -> None:
    config = tmp_path / "tribute.toml"
    config.write_text('index = "kb"\n[datanets.pilot-notes]\ntrust = "low"\n')
    with tribute.Engine.from_config(config) as engine:
        engine.index.add_files(SAMPLE / "bob.jsonl")
        answer = engine.ask(GUST_Q, top_k=2, method="loo")
        alert = answer.source_alert
        assert alert is not None, answer.citations
        assert (alert["doc_id"], alert["contributor"], alert["datanet"]) == (
            "gust-field-notes",
            BOB,
            "pilot-notes",
        )
        assert alert["reason"] == "low_trust" and alert["share"] >= 0.6
        assert alert["reanswered"] is False
        assert answer.to_dict()["source_alert"] == alert
    # The same sources at normal trust: no alert.
    plain = tmp_path / "plain.toml"
    plain.write_text('index = "kb"\n')
    with tribute.Engine.from_config(plain) as engine:
        assert engine.ask(GUST_Q, top_k=2, method="loo").source_alert is None
