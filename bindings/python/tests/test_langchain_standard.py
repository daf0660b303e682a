"""LangChain's own conformance suites (PyPI `langchain-tests`, which test.sh installs) for
`TributeRetriever` and `TributeVectorStore`: the contract every LangChain retriever and
vector store is held to (top-k at query time, ids, upserts, deletes, sync and async)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import tribute

pytest.importorskip("langchain_tests", reason="test.sh installs langchain-tests")

from langchain_tests.integration_tests import (  # noqa: E402
    RetrieversIntegrationTests,
    VectorStoreIntegrationTests,
)

from tribute.integrations.langchain import TributeRetriever, TributeVectorStore  # noqa: E402


class TestTributeRetrieverStandard(RetrieversIntegrationTests):
    """The retriever over the sample datanet's engine (signing receipts, as by default)."""

    @pytest.fixture(autouse=True)
    def _engine(self, engine: tribute.Engine) -> None:
        # The suite builds retrievers from `retriever_constructor_params`, a property.
        self.engine = engine

    @property
    def retriever_constructor(self) -> type[TributeRetriever]:
        return TributeRetriever

    @property
    def retriever_constructor_params(self) -> dict[str, Any]:
        return {"engine": self.engine}

    @property
    def retriever_query_example(self) -> str:
        return "How should Zephyr drone batteries be stored?"


class TestTributeVectorStoreStandard(VectorStoreIntegrationTests):
    """The vector store over a fresh, empty index per test (the suite's contract), embedded
    by the index's own model (MiniLM) rather than the suite's fake embeddings."""

    @pytest.fixture()
    def vectorstore(self, tmp_path: Path) -> Iterator[TributeVectorStore]:  # type: ignore[override]
        with tribute.Index.open(tmp_path / "kb") as kb:
            store = TributeVectorStore(kb)
            yield store
            store.close()
