"""`Index.sync`: a knowledge base kept in step with a folder."""

from __future__ import annotations

from pathlib import Path

import pytest

import tribute
from conftest import ALICE


def write(folder: Path, rel: str, text: str) -> None:
    path = folder / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_sync_adds_replaces_and_deletes(tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    write(folder, "kites.md", "# Kites\n\nA box kite flies steadily in strong wind.\n")
    write(folder, "notes/gliders.txt", "Gliders ride thermals to stay aloft for hours.\n")
    write(folder, "sheet.xlsx", "PK")
    with tribute.Index.open(tmp_path / "kb") as kb:
        kb.add([{"id": "manual", "text": "Balloons rise on hot air."}])

        report = kb.sync(folder, datanet="air", contributor=ALICE)
        assert report.added == ["kites.md", "notes/gliders.txt"]
        assert (report.replaced, report.deleted, report.unchanged) == ([], [], 0)
        assert [Path(p).name for p, _ in report.skipped] == ["sheet.xlsx"]
        assert report.failed == []
        assert (report.documents, report.chunks) == (2, 2)
        assert report.to_dict()["added"] == report.added
        assert "added=2" in repr(report)
        assert kb.document_count == 3

        hit = kb.search("which aircraft uses thermals?", k=1)[0]
        assert (hit.doc_id, hit.datanet, hit.contributor) == ("notes/gliders.txt", "air", ALICE)

        # Unchanged folder: nothing to do.
        again = kb.sync(folder)
        assert (again.added, again.replaced, again.deleted, again.unchanged) == ([], [], [], 2)

        # Change one, delete one, break one: the broken file is reported, the rest syncs.
        write(folder, "notes/gliders.txt", "Gliders land on a single wheel.\n")
        (folder / "kites.md").unlink()
        write(folder, "bad.jsonl", '{"id": "1", "text": \n')
        report = kb.sync(folder)
        assert report.replaced == ["notes/gliders.txt"]
        assert report.deleted == ["kites.md"]
        assert [Path(p).name for p, _ in report.failed] == ["bad.jsonl"]
        assert "bad.jsonl:1" in report.failed[0][1]
        assert kb.document_count == 2 and kb.chunk_count == 2
        assert [h.doc_id for h in kb.search("box kite", k=5, mode="bm25")] == []
        assert kb.search("single wheel", k=1, mode="bm25")[0].doc_id == "notes/gliders.txt"


def test_sync_refuses_a_file(tmp_path: Path) -> None:
    write(tmp_path, "a.md", "text")
    with tribute.Index.open(tmp_path / "kb") as kb:
        with pytest.raises(tribute.KnowledgeBaseError, match="a.md"):
            kb.sync(tmp_path / "a.md")
