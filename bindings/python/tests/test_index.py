"""The knowledge base on its own: ingest, search, progress callbacks, malformed input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import tribute
from conftest import ALICE, BOB, SAMPLE

DOCS = [
    {"id": "d1", "title": "Kites", "text": "A box kite flies steadily in strong wind."},
    {"id": "d2", "title": "Gliders", "text": "Gliders ride thermals to stay aloft for hours."},
]


@pytest.fixture(scope="module")
def kb(tmp_path_factory: pytest.TempPathFactory) -> tribute.Index:
    kb = tribute.Index.open(tmp_path_factory.mktemp("kb") / "kb")
    kb.add_files([SAMPLE / "alice.jsonl", SAMPLE / "bob.jsonl"])
    yield kb
    kb.close()


def test_add_search_and_report(tmp_path: Path) -> None:
    with tribute.Index.open(tmp_path / "kb") as kb:
        report = kb.add(DOCS, datanet="demo", contributor=ALICE)
        assert (report.added, report.replaced, report.unchanged, report.chunks) == (2, 0, 0, 2)
        assert report.to_dict()["added"] == 2
        assert "added=2" in repr(report)
        assert len(kb) == 2 and kb.document_count == 2 and kb.chunk_count == 2

        hits = kb.search("which aircraft uses thermals?", k=2)
        assert [h.doc_id for h in hits][0] == "d2"
        top = hits[0]
        assert top.chunk_id == "d2#0"
        assert top.title == "Gliders"
        assert top.text == DOCS[1]["text"]
        assert top.contributor == ALICE
        assert top.datanet == "demo"
        assert top.content_hash.startswith("0x") and len(top.content_hash) == 66
        assert top.score > 0 and top.dense_score is not None
        assert "d2#0" in repr(top)

        # Re-adding the same text changes nothing; other text replaces.
        again = kb.add([DOCS[0], {**DOCS[1], "text": "Gliders have no engine."}], datanet="demo")
        assert (again.added, again.replaced, again.unchanged) == (0, 1, 1)
        assert kb.delete("d1") is True and kb.delete("d1") is False
        assert len(kb) == 1
    assert kb.closed
    assert "closed" in repr(kb)
    with pytest.raises(tribute.KnowledgeBaseError, match="closed"):
        kb.search("gliders")


def test_sample_datanet_has_two_contributors(kb: tribute.Index) -> None:
    assert kb.document_count == 5
    hit = kb.search("At what gust speed should pilots land?", k=3)[0]
    assert (hit.doc_id, hit.contributor, hit.datanet) == ("gust-field-notes", BOB, "pilot-notes")
    hit = kb.search("What is the Zephyr SDK?", k=1, mode="bm25")[0]
    assert hit.contributor == ALICE and hit.bm25_score is not None and hit.dense_score is None
    dense = kb.search("charging the drone battery", k=1, mode="dense")[0]
    assert dense.doc_id == "zephyr-battery"
    only_bob = kb.search("Zephyr", k=5, datanets=["pilot-notes"])
    assert only_bob and all(h.contributor == BOB for h in only_bob)
    with pytest.raises(tribute.RequestError, match="unknown mode"):
        kb.search("Zephyr", mode="fuzzy")  # type: ignore[arg-type]


def test_progress_callback(tmp_path: Path) -> None:
    seen: list[tribute.IngestProgress] = []
    with tribute.Index.open(tmp_path / "kb") as kb:
        kb.add_files(SAMPLE, progress=seen.append)
        assert seen, "the callback was never called"
        last = seen[-1]
        assert (last.docs_done, last.docs_total) == (5, 5)
        assert last.chunks_done == last.chunks_total == 5
        assert "IngestProgress" in repr(last)

        # An exception in the callback reaches the caller (after the ingest finished).
        def boom(p: tribute.IngestProgress) -> None:
            raise ValueError(f"stop at {p.chunks_done}")

        with pytest.raises(ValueError, match="stop at"):
            kb.add(DOCS, progress=boom)
        assert len(kb) == 7


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"id": "x"}, 'missing "text"'),
        ({"text": "no id"}, 'missing "id"'),
        ({"id": "x", "text": "   "}, "empty text"),
        ({"id": "x", "text": 42}, '"text" must be a string'),
        ({"id": "x", "text": "t", "contributor": "0x1234"}, "invalid contributor address"),
        ({"id": "x", "text": "t", "metadata": {"when": object()}}, "not JSON-serialisable"),
        ("just a string", "expected a dict"),
    ],
)
def test_malformed_document(kb: tribute.Index, doc: object, message: str) -> None:
    before = kb.document_count
    with pytest.raises(tribute.KnowledgeBaseError, match=message):
        kb.add([DOCS[0] | {"id": "ok"}, doc])  # type: ignore[list-item]
    assert kb.document_count == before, "nothing of a batch with a bad document is ingested"


def test_malformed_jsonl_line_names_file_and_line(kb: tribute.Index, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "a", "text": "fine"}) + "\n{not json\n")
    with pytest.raises(tribute.KnowledgeBaseError, match=r"bad\.jsonl:2"):
        kb.add_files(bad)


def test_metadata_and_extra_keys_are_kept(tmp_path: Path) -> None:
    with tribute.Index.open(tmp_path / "kb") as kb:
        report = kb.add([{"id": 7, "text": "numbered", "license": "CC0", "metadata": {"a": 1}, "lang": "en"}])
        assert report.added == 1
        assert kb.search("numbered", k=1)[0].doc_id == "7"


def test_get_returns_a_document_as_it_was_added(tmp_path: Path, generator: tribute.Generator) -> None:
    text = "  Kites need wind.\n\nA box kite flies steadily in strong wind.  " * 20
    doc = {
        "id": "k1",
        "text": text,
        "title": "Kites",
        "datanet": "hobbies",
        "contributor": ALICE,
        "license": "CC0",
        "metadata": {"nested": {"list": [1, 2.5, None, "x"]}, "flag": True},
    }
    with tribute.Index.open(tmp_path / "kb") as kb:
        kb.add([doc, {"id": 2, "text": "numbered", "lang": "en"}])
        assert kb.get("k1") == doc  # the whole text, byte for byte, though it is chunked
        got = kb.get("2")
        assert got is not None and got["metadata"] == {"lang": "en"} and got["license"] is None
        assert kb.get("missing") is None
        kb.delete("k1")
        assert kb.get("k1") is None
        with tribute.Engine(index=kb, generator=generator):  # served by an engine: the same
            assert kb.get("2") == got


def test_bad_embedder_dir_is_a_model_error(tmp_path: Path) -> None:
    with pytest.raises(tribute.ModelError, match="embedding model"):
        tribute.Index.open(tmp_path / "kb", embedder=tmp_path / "no-such-model")


def test_errors_form_one_hierarchy() -> None:
    for cls in (
        tribute.KnowledgeBaseError,
        tribute.ModelError,
        tribute.AdapterError,
        tribute.AttributionError,
        tribute.ReceiptError,
        tribute.ChainError,
        tribute.ConfigError,
        tribute.RequestError,
    ):
        assert issubclass(cls, tribute.TributeError) and cls.__module__ == "tribute"
    assert tribute.TributeError.__module__ == "tribute"
    assert not issubclass(tribute.KnowledgeBaseError, IndexError)
