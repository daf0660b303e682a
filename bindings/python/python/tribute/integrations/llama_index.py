"""A LlamaIndex retriever over a `tribute.Engine` (``pip install tribute[llama-index]``).

>>> from tribute.integrations.llama_index import TributeRetriever
>>> retriever = TributeRetriever(engine, k=4)                      # doctest: +SKIP
>>> nodes = retriever.retrieve("How should Zephyr drone batteries be stored?")
>>> nodes[0].node.metadata["contributor"], nodes[0].score

Each retrieval with ``sign=True`` (the default) journals a signed usage receipt crediting
the retrieved chunks' contributors (needs an engine with a signer and a ledger).
"""

from __future__ import annotations

import asyncio
from typing import Any, Optional

try:
    from llama_index.core.retrievers import BaseRetriever
    from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
except ImportError:  # the original error stays attached as __context__
    # (no `as e`: the deleted name would be a module attribute for mypy and stubtest)
    raise ImportError(
        "tribute.integrations.llama_index needs llama-index-core: pip install tribute[llama-index]"
    )

from .._native import Engine
from ._common import retrieve_chunks

__all__ = ["TributeRetriever"]


class TributeRetriever(BaseRetriever):
    """Retrieves `k` chunks through `engine.retrieve` as LlamaIndex `NodeWithScore`s.

    Each node is a `TextNode` with the chunk's text, `id_` = its chunk id and `metadata`
    holding `chunk_id`, `doc_id`, `title`, `contributor`, `datanet`, `score`,
    `content_hash`, `weight_bps` (its citation weight) and `receipt_id` (the retrieval's
    receipt id, or None when unsigned); the score is the hit's score."""

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

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        chunks = retrieve_chunks(
            self.engine, query_bundle.query_str, self.k, datanets=self.datanets, sign=self.sign
        )
        return [
            NodeWithScore(node=TextNode(text=c.text, id_=c.chunk_id, metadata=dict(c.metadata)), score=c.score)
            for c in chunks
        ]

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        # The engine releases the GIL: retrieve in a worker thread.
        return await asyncio.to_thread(self._retrieve, query_bundle)
