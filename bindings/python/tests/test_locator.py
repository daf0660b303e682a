"""Locators: where each hit and citation points in its document (pages, heading path,
character span of the extracted text)."""

from __future__ import annotations

import json
from pathlib import Path

import tribute
from conftest import ALICE

# The accent makes character offsets differ from UTF-8 byte offsets (`Hit.start`).
NOTES = """# Zéphyr notes

Zephyr keeps a knowledge base of attributed documents.

## Ingest

Documents are cut into chunks of whole sentences.

### Formats

PDF, HTML, DOCX, Markdown and plain text are read.

## Search

Hybrid search fuses BM25 and dense retrieval.
"""
FORMATS = ["Zéphyr notes", "Ingest", "Formats"]


def write_notes(dir: Path) -> Path:
    path = dir / "notes.md"
    path.write_text(NOTES, encoding="utf-8")
    return path


def test_markdown_hits_carry_heading_paths_and_character_spans(tmp_path: Path) -> None:
    with tribute.Index.open(tmp_path / "kb") as kb:
        kb.add_files([write_notes(tmp_path)], datanet="docs", contributor=ALICE)
        hit = kb.search("PDF DOCX plain text", k=1, mode="bm25")[0]
        assert hit.text.startswith("### Formats") and "DOCX" in hit.text
        loc = hit.locator
        assert loc is not None
        assert loc.headings == FORMATS
        assert loc.pages == []
        start = NOTES.index("### Formats")
        assert (loc.char_start, loc.char_end) == (start, start + len(hit.text))
        assert NOTES[loc.char_start : loc.char_end] == hit.text
        # Characters, not bytes: "é" is two bytes before the chunk.
        assert hit.start == len(NOTES[:start].encode()) == loc.char_start + 1
        assert loc.to_dict() == {
            "pages": [],
            "headings": FORMATS,
            "char_start": loc.char_start,
            "char_end": loc.char_end,
        }
        assert str(loc) == f"Zéphyr notes › Ingest › Formats · chars {loc.char_start}–{loc.char_end}"
        assert "Formats" in repr(loc)
        # Each access builds an equal, hashable value.
        assert loc == hit.locator and hash(loc) == hash(hit.locator)
        first = kb.search("knowledge base of attributed documents", k=1, mode="bm25")[0]
        assert first.locator is not None and first.locator.headings == ["Zéphyr notes"]
        assert first.locator != loc


def test_plain_documents_get_a_span_without_headings(tmp_path: Path) -> None:
    text = "Gliders ride thermals to stay aloft for hours."
    with tribute.Index.open(tmp_path / "kb") as kb:
        kb.add([{"id": "d1", "title": "Gliders", "text": text}], datanet="demo")
        loc = kb.search("thermals", k=1)[0].locator
        assert loc is not None
        assert (loc.pages, loc.headings, loc.char_start, loc.char_end) == ([], [], 0, len(text))


def test_citations_carry_the_locator_of_their_chunk(
    tmp_path: Path, generator: tribute.Generator
) -> None:
    kb = tribute.Index.open(tmp_path / "kb")
    kb.add_files([write_notes(tmp_path)], datanet="docs", contributor=ALICE)
    with tribute.Engine(index=kb, generator=generator) as engine:
        r = engine.retrieve("Which formats are read: PDF, HTML, DOCX?", 2, sign=False)
        assert r.citations
        by_chunk = {h.chunk_id: h.locator for h in r.hits}
        for c in r.citations:
            assert c.locator is not None and c.locator == by_chunk[c.chunk_id]
        top = max(r.citations, key=lambda c: c.score)
        assert top.locator is not None and top.locator.headings == FORMATS
        # The JSON form names the same locator.
        cited = json.loads(r.to_json())["citations"]
        assert {c["chunk_id"]: c["locator"]["headings"] for c in cited}[top.chunk_id] == FORMATS
