"""Framework-independent part of the retrievers: one `Engine.retrieve` call turned into
(text, metadata, score) records."""

from __future__ import annotations

from typing import NamedTuple, Optional, Union

from .._native import Engine, Retrieval

#: The metadata each retrieved document carries (flat, so every framework accepts it).
MetadataValue = Union[str, int, float, None]


class RetrievedChunk(NamedTuple):
    """One hit of a retrieval: its chunk id, text, score and metadata."""

    chunk_id: str
    text: str
    score: float
    metadata: dict[str, MetadataValue]


def retrieve_chunks(
    engine: Engine,
    query: str,
    k: int,
    *,
    datanets: Optional[list[str]] = None,
    sign: bool = True,
) -> list[RetrievedChunk]:
    """Retrieves `k` chunks for `query` through `engine` (journaling a receipt when `sign`)
    and describes each with `chunk_id`, `doc_id`, `title`, `contributor`, `datanet`,
    `score`, `content_hash`, `weight_bps` (the chunk's citation weight in basis points, 0 if
    it is not cited) and `receipt_id` (the retrieval's receipt id, or None)."""
    return chunks_of(engine.retrieve(query, k, datanets=datanets, sign=sign))


async def aretrieve_chunks(
    engine: Engine,
    query: str,
    k: int,
    *,
    datanets: Optional[list[str]] = None,
    sign: bool = True,
) -> list[RetrievedChunk]:
    """`retrieve_chunks` through the engine's async API (cancelling the awaiting task
    cancels the retrieval)."""
    return chunks_of(await engine.retrieve_async(query, k, datanets=datanets, sign=sign))


def chunks_of(retrieval: Retrieval) -> list[RetrievedChunk]:
    """The hits of `retrieval` as `RetrievedChunk`s (see `retrieve_chunks`)."""
    weights = {c.chunk_id: c.weight_bps for c in retrieval.citations}
    receipt_id = retrieval.receipt.id if retrieval.receipt is not None else None
    chunks = []
    for hit in retrieval.hits:
        metadata: dict[str, MetadataValue] = {
            "chunk_id": hit.chunk_id,
            "doc_id": hit.doc_id,
            "title": hit.title,
            "contributor": hit.contributor,
            "datanet": hit.datanet,
            "score": hit.score,
            "content_hash": hit.content_hash,
            "weight_bps": weights.get(hit.chunk_id, 0),
            "receipt_id": receipt_id,
        }
        chunks.append(RetrievedChunk(hit.chunk_id, hit.text, hit.score, metadata))
    return chunks
