"""A LlamaIndex retriever over a `tribute.Engine` (``pip install tribute[llama-index]``).

>>> from tribute.integrations.llama_index import TributeRetriever
>>> retriever = TributeRetriever(engine, k=4)                      # doctest: +SKIP
>>> nodes = retriever.retrieve("How should Zephyr drone batteries be stored?")
>>> nodes[0].node.metadata["contributor"], nodes[0].score
>>> retriever.retrieve("battery storage", k=1)                      # top-k at query time

Each retrieval with ``sign=True`` (the default) journals a signed usage receipt crediting
the retrieved chunks' contributors (needs an engine with a signer and a ledger).
"""

from __future__ import annotations

import contextvars
from typing import Any, Optional

try:
    from llama_index.core.retrievers import BaseRetriever
    from llama_index.core.schema import NodeWithScore, QueryBundle, QueryType, TextNode
except ImportError:  # the original error stays attached as __context__
    # (no `as e`: the deleted name would be a module attribute for mypy and stubtest)
    raise ImportError(
        "tribute.integrations.llama_index needs llama-index-core: pip install tribute[llama-index]"
    )

from .._native import Engine
from ._common import RetrievedChunk, aretrieve_chunks, retrieve_chunks

__all__ = ["TributeRetriever"]

# The `k` of the retrieve() call in progress: LlamaIndex hands `_retrieve` only the query,
# and a context variable follows the call into `_retrieve` (and across awaits) without
# changing the retriever that other threads and tasks share.
_query_k: contextvars.ContextVar[Optional[int]] = contextvars.ContextVar("_query_k", default=None)


class TributeRetriever(BaseRetriever):
    """Retrieves `k` chunks through `engine.retrieve` as LlamaIndex `NodeWithScore`s.

    Each node is a `TextNode` with the chunk's text, `id_` = its chunk id and `metadata`
    holding `chunk_id`, `doc_id`, `title`, `contributor`, `datanet`, `score`,
    `content_hash`, `weight_bps` (its citation weight) and `receipt_id` (the retrieval's
    receipt id, or None when unsigned); the score is the hit's score.

    ``retrieve(query, k=…)`` (and ``aretrieve``) take `k` for one query;
    `similarity_top_k`, LlamaIndex's usual name, is `k`."""

    def __init__(
        self,
        engine: Engine,
        k: int = 4,
        *,
        datanets: Optional[list[str]] = None,
        sign: bool = True,
        **kwargs: Any,
    ) -> None:
        self.engine = engine
        self.k = k
        self.datanets = datanets
        self.sign = sign
        super().__init__(**kwargs)

    @property
    def similarity_top_k(self) -> int:
        """How many chunks to retrieve (LlamaIndex's name for `k`)."""
        return self.k

    @similarity_top_k.setter
    def similarity_top_k(self, k: int) -> None:
        self.k = k

    def retrieve(self, str_or_query_bundle: QueryType, *, k: Optional[int] = None) -> list[NodeWithScore]:
        """Retrieves `k` chunks for the query (None: the retriever's `k`)."""
        token = _query_k.set(k)
        try:
            return super().retrieve(str_or_query_bundle)
        finally:
            _query_k.reset(token)

    async def aretrieve(
        self, str_or_query_bundle: QueryType, *, k: Optional[int] = None
    ) -> list[NodeWithScore]:
        """Retrieves `k` chunks for the query (None: the retriever's `k`) through the
        engine's async API."""
        token = _query_k.set(k)
        try:
            return await super().aretrieve(str_or_query_bundle)
        finally:
            _query_k.reset(token)

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        k = _query_k.get()
        chunks = retrieve_chunks(
            self.engine,
            query_bundle.query_str,
            self.k if k is None else k,
            datanets=self.datanets,
            sign=self.sign,
        )
        return _nodes(chunks)

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        k = _query_k.get()
        chunks = await aretrieve_chunks(
            self.engine,
            query_bundle.query_str,
            self.k if k is None else k,
            datanets=self.datanets,
            sign=self.sign,
        )
        return _nodes(chunks)


def _nodes(chunks: list[RetrievedChunk]) -> list[NodeWithScore]:
    return [
        NodeWithScore(node=TextNode(text=c.text, id_=c.chunk_id, metadata=dict(c.metadata)), score=c.score)
        for c in chunks
    ]
