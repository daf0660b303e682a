"""The documents a framework's vector store put into a `tribute.Index`, as the framework
gave them (text and metadata of any JSON shape), kept in a SQLite file beside the index:
the index keeps chunks and provenance, and hands back neither a document's whole text nor
its metadata, which the frameworks' stores must return unchanged."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple, Union


class StoredDocument(NamedTuple):
    """A document as it was added: its id, text and metadata."""

    id: str
    text: str
    metadata: dict[str, Any]


class DocStore:
    """Documents by id in a SQLite file; safe to use from several threads (the frameworks'
    async methods run the sync ones in executor threads)."""

    def __init__(self, path: Union[str, Path]) -> None:
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False)
        with self._lock, self._db:
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS documents "
                "(id TEXT PRIMARY KEY, text TEXT NOT NULL, metadata TEXT NOT NULL)"
            )

    def put(self, docs: Iterable[StoredDocument]) -> None:
        """Inserts or replaces `docs` in one transaction."""
        rows = [(d.id, d.text, json.dumps(d.metadata)) for d in docs]
        with self._lock, self._db:
            self._db.executemany(
                "INSERT OR REPLACE INTO documents (id, text, metadata) VALUES (?, ?, ?)", rows
            )

    def get(self, ids: Sequence[str]) -> dict[str, StoredDocument]:
        """The stored documents among `ids`, by id (missing ones are left out)."""
        found: dict[str, StoredDocument] = {}
        unique = list(dict.fromkeys(ids))
        # SQLite caps the parameters of one statement (999 in old builds).
        for start in range(0, len(unique), 500):
            batch = unique[start : start + 500]
            marks = ",".join("?" * len(batch))
            with self._lock:
                rows = self._db.execute(
                    f"SELECT id, text, metadata FROM documents WHERE id IN ({marks})", batch
                ).fetchall()
            for id_, text, metadata in rows:
                found[id_] = StoredDocument(id_, text, json.loads(metadata))
        return found

    def remove(self, ids: Sequence[str]) -> None:
        """Removes `ids` (missing ones are ignored)."""
        with self._lock, self._db:
            self._db.executemany("DELETE FROM documents WHERE id = ?", [(i,) for i in ids])

    def close(self) -> None:
        """Closes the file."""
        with self._lock:
            self._db.close()
