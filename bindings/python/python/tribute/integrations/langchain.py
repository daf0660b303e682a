"""LangChain over Tribute (``pip install tribute[langchain]``): a retriever over a
`tribute.Engine` and a vector store over a `tribute.Index`.

>>> from tribute.integrations.langchain import TributeRetriever, TributeVectorStore
>>> retriever = TributeRetriever(engine=engine, k=4)              # doctest: +SKIP
>>> docs = retriever.invoke("How should Zephyr drone batteries be stored?")
>>> docs[0].metadata["contributor"], docs[0].metadata["receipt_id"]
>>> retriever.invoke("battery storage", k=1)                      # top-k at query time
>>> store = TributeVectorStore(kb, datanet="notes")               # doctest: +SKIP
>>> store.add_texts(["Store batteries at 40-60% charge."], ids=["b1"])
>>> store.similarity_search("battery storage", k=1)

Each retrieval with ``sign=True`` (the default) journals a signed usage receipt crediting
the retrieved chunks' contributors (needs an engine with a signer and a ledger).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from typing import Any, Literal, Optional

try:
    from langchain_core.callbacks import (
        AsyncCallbackManagerForRetrieverRun,
        CallbackManagerForRetrieverRun,
    )
    from langchain_core.documents import Document
    from langchain_core.embeddings import Embeddings
    from langchain_core.retrievers import BaseRetriever
    from langchain_core.vectorstores import VectorStore
except ImportError:  # the original error stays attached as __context__
    # (no `as e`: the deleted name would be a module attribute for mypy and stubtest)
    raise ImportError(
        "tribute.integrations.langchain needs langchain-core: pip install tribute[langchain]"
    )

from pydantic import ConfigDict

from .._native import Engine, Hit, Index
from ._common import aretrieve_chunks, retrieve_chunks

__all__ = ["TributeRetriever", "TributeVectorStore"]


class TributeRetriever(BaseRetriever):
    """Retrieves `k` chunks through `engine.retrieve` as LangChain `Document`s;
    ``invoke(query, k=…, datanets=…)`` overrides `k` and `datanets` for one query.

    `page_content` is the chunk's text; `metadata` holds `chunk_id`, `doc_id`, `title`,
    `contributor`, `datanet`, `score`, `content_hash`, `weight_bps` (its citation weight)
    and `receipt_id` (the retrieval's receipt id, or None when unsigned)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    engine: Engine
    """The engine to retrieve through."""
    k: int = 4
    """How many chunks to retrieve (unless a query names its own `k`)."""
    datanets: Optional[list[str]] = None
    """Restrict retrieval to these datanets (None: the engine's)."""
    sign: bool = True
    """Sign and journal a usage receipt for each retrieval."""

    def __init__(
        self,
        *,
        engine: Engine,
        k: int = 4,
        datanets: Optional[list[str]] = None,
        sign: bool = True,
        **kwargs: Any,
    ) -> None:
        # Spelled out (pydantic would synthesize it) so that type checkers and stubtest see
        # the same signature; other keywords (tags, metadata, …) go to BaseRetriever.
        kwargs.update(engine=engine, k=k, datanets=datanets, sign=sign)
        super().__init__(**kwargs)

    def _get_relevant_documents(
        self,
        query: str,
        *,
        run_manager: CallbackManagerForRetrieverRun,
        k: Optional[int] = None,
        datanets: Optional[list[str]] = None,
    ) -> list[Document]:
        # `k` and `datanets` given to invoke() override the retriever's for this query.
        chunks = retrieve_chunks(
            self.engine,
            query,
            self.k if k is None else k,
            datanets=self.datanets if datanets is None else datanets,
            sign=self.sign,
        )
        return [Document(page_content=c.text, metadata=dict(c.metadata), id=c.chunk_id) for c in chunks]

    async def _aget_relevant_documents(
        self,
        query: str,
        *,
        run_manager: AsyncCallbackManagerForRetrieverRun,
        k: Optional[int] = None,
        datanets: Optional[list[str]] = None,
    ) -> list[Document]:
        # Native async (LangChain's default would drop the query-time `k`).
        chunks = await aretrieve_chunks(
            self.engine,
            query,
            self.k if k is None else k,
            datanets=self.datanets if datanets is None else datanets,
            sign=self.sign,
        )
        return [Document(page_content=c.text, metadata=dict(c.metadata), id=c.chunk_id) for c in chunks]


class TributeVectorStore(VectorStore):
    """A LangChain vector store over a `tribute.Index`: documents are chunked, embedded by
    the index's own model and searched hybrid (BM25 + dense) by default; each is credited
    to `contributor` in `datanet`, so an engine over the same index cites and pays for them.

    Ids are document ids: adding an id again replaces that document (an upsert), and
    `delete` and `get_by_ids` take the same ids. A search returns documents, not chunks: a
    document appears once, with the score of its best chunk. Texts and metadata come back
    from the index as they were added (metadata must be JSON-serialisable), for documents
    the index got another way too (their metadata is the index's, without provenance). A
    text identical to an earlier document's is recorded as its duplicate and not indexed
    again (the first contributor is credited), so searches return the earlier one.

    The index must keep whole texts: a local index made by this version (format 2) does;
    an older index directory or a Postgres knowledge base raises `KnowledgeBaseError` on
    `get_by_ids` and searches.

    The async methods run the sync ones in an executor (the index releases the GIL)."""

    def __init__(
        self,
        index: Index,
        *,
        datanet: Optional[str] = None,
        contributor: Optional[str] = None,
        mode: Optional[Literal["hybrid", "bm25", "dense"]] = None,
    ) -> None:
        self.index = index
        """The knowledge base."""
        self.datanet = datanet
        """The datanet added documents go to (None: the index's default)."""
        self.contributor = contributor
        """The EVM address added documents are credited to (None: nobody)."""
        self.mode = mode
        """`"hybrid"`, `"bm25"` or `"dense"` (None: the index's or engine's default)."""

    @classmethod
    def from_texts(
        cls,
        texts: list[str],
        embedding: Optional[Embeddings],
        metadatas: Optional[list[dict[Any, Any]]] = None,
        *,
        ids: Optional[list[str]] = None,
        **kwargs: Any,
    ) -> TributeVectorStore:
        """A store over ``kwargs["index"]`` (other keywords as for the constructor) with
        `texts` added. `embedding` must be None: the index embeds with its own model."""
        if embedding is not None:
            raise ValueError("the index embeds with its own model: pass embedding=None")
        store = cls(**kwargs)
        store.add_texts(texts, metadatas, ids=ids)
        return store

    def add_texts(
        self,
        texts: Iterable[str],
        metadatas: Optional[list[dict[Any, Any]]] = None,
        *,
        ids: Optional[list[str]] = None,
        **kwargs: Any,
    ) -> list[str]:
        """Adds or replaces documents; returns their ids (a missing id gets a new UUID)."""
        if kwargs:
            raise TypeError(f"unexpected arguments: {', '.join(kwargs)}")
        texts = list(texts)
        if metadatas is not None and len(metadatas) != len(texts):
            raise ValueError(f"{len(metadatas)} metadatas for {len(texts)} texts")
        if ids is not None and len(ids) != len(texts):
            raise ValueError(f"{len(ids)} ids for {len(texts)} texts")
        given: list[Optional[str]] = list(ids) if ids is not None else [None] * len(texts)
        out = [str(i) if i else str(uuid.uuid4()) for i in given]
        # The last of repeated ids wins, as if each were added in turn.
        docs = {
            id_: {"id": id_, "text": text, "metadata": dict(metadatas[n]) if metadatas else {}}
            for n, (id_, text) in enumerate(zip(out, texts))
        }
        for d in docs.values():  # fail before anything is written
            json.dumps(d["metadata"])
        # The index leaves a document whose text is unchanged as it is: one whose metadata
        # (or credit) changes is deleted first, so the upsert replaces it.
        for id_, d in docs.items():
            old = self.index.get(id_)
            if old is not None and old["text"] == d["text"] and not self._same(old, d):
                self.index.delete(id_)
        self.index.add(list(docs.values()), datanet=self.datanet, contributor=self.contributor)
        return out

    def delete(self, ids: Optional[list[str]] = None, **kwargs: Any) -> Optional[bool]:
        """Deletes the documents with these ids (unknown ids are ignored)."""
        if ids is None:
            raise ValueError("pass the ids of the documents to delete")
        if kwargs:
            raise TypeError(f"unexpected arguments: {', '.join(kwargs)}")
        for id_ in ids:
            self.index.delete(id_)
        return True

    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        """The documents with these ids, as they were added (unknown ids are left out)."""
        found = (self.index.get(i) for i in dict.fromkeys(ids))
        return [_document(d) for d in found if d is not None]

    def similarity_search_with_score(
        self, query: str, k: int = 4, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        """The `k` documents best matching `query`, best first, with their best chunk's
        score; ``datanets=[…]`` searches only those datanets."""
        datanets: Optional[list[str]] = kwargs.pop("datanets", None)
        if kwargs:
            raise TypeError(f"unexpected arguments: {', '.join(kwargs)}")
        if k <= 0:
            return []
        out = []
        for hit in self._best_hits(query, k, datanets):
            doc = self.index.get(hit.doc_id)
            if doc is not None:  # (deleted since the search)
                out.append((_document(doc), float(hit.score)))
        return out

    def similarity_search(self, query: str, k: int = 4, **kwargs: Any) -> list[Document]:
        """The `k` documents best matching `query`, best first (see
        `similarity_search_with_score`)."""
        return [doc for doc, _ in self.similarity_search_with_score(query, k, **kwargs)]

    def close(self) -> None:
        """Nothing to release: the index stays open (it is the caller's). Kept so that
        code written for earlier versions, which kept a side file, still runs."""

    def _same(self, old: dict[str, Any], new: dict[str, Any]) -> bool:
        """Whether re-adding `new` over the stored `old` (same text) changes nothing."""
        if old["metadata"] != json.loads(json.dumps(new["metadata"])):
            return False
        if self.datanet is not None and old["datanet"] != self.datanet:
            return False
        return self.contributor is None or old["contributor"].lower() == self.contributor.lower()

    def _best_hits(self, query: str, k: int, datanets: Optional[list[str]]) -> list[Hit]:
        """The best-scoring chunk of each of the `k` best documents: asks for more chunks
        until `k` documents are found or the index has no more."""
        fetch = k
        while True:
            hits = self.index.search(query, fetch, mode=self.mode, datanets=datanets)
            best: dict[str, Hit] = {}
            for hit in hits:
                best.setdefault(hit.doc_id, hit)
            if len(best) >= k or len(hits) < fetch:
                return list(best.values())[:k]
            fetch *= 4


def _document(doc: dict[str, Any]) -> Document:
    return Document(id=doc["id"], page_content=doc["text"], metadata=dict(doc["metadata"]))
