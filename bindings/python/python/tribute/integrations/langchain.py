"""A LangChain retriever over a `tribute.Engine` (``pip install tribute[langchain]``).

>>> from tribute.integrations.langchain import TributeRetriever
>>> retriever = TributeRetriever(engine=engine, k=4)              # doctest: +SKIP
>>> docs = retriever.invoke("How should Zephyr drone batteries be stored?")
>>> docs[0].metadata["contributor"], docs[0].metadata["receipt_id"]

Each retrieval with ``sign=True`` (the default) journals a signed usage receipt crediting
the retrieved chunks' contributors (needs an engine with a signer and a ledger).
"""

from __future__ import annotations

from typing import Any, Optional

try:
    from langchain_core.callbacks import CallbackManagerForRetrieverRun
    from langchain_core.documents import Document
    from langchain_core.retrievers import BaseRetriever
except ImportError:  # the original error stays attached as __context__
    # (no `as e`: the deleted name would be a module attribute for mypy and stubtest)
    raise ImportError(
        "tribute.integrations.langchain needs langchain-core: pip install tribute[langchain]"
    )

from pydantic import ConfigDict

from .._native import Engine
from ._common import retrieve_chunks

__all__ = ["TributeRetriever"]


class TributeRetriever(BaseRetriever):
    """Retrieves `k` chunks through `engine.retrieve` as LangChain `Document`s.

    `page_content` is the chunk's text; `metadata` holds `chunk_id`, `doc_id`, `title`,
    `contributor`, `datanet`, `score`, `content_hash`, `weight_bps` (its citation weight)
    and `receipt_id` (the retrieval's receipt id, or None when unsigned)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    engine: Engine
    """The engine to retrieve through."""
    k: int = 4
    """How many chunks to retrieve."""
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
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        chunks = retrieve_chunks(self.engine, query, self.k, datanets=self.datanets, sign=self.sign)
        return [Document(page_content=c.text, metadata=dict(c.metadata), id=c.chunk_id) for c in chunks]
