"""The LangChain and LlamaIndex retrievers (the optional extras) with the real frameworks
from PyPI (test.sh installs langchain-core and llama-index-core into its virtualenv):
documents carry their provenance and citation weight, and each signed retrieval journals a
usage receipt crediting the contributors."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import tribute
from conftest import ALICE, BOB, PAYER, SAMPLE

BATTERY_Q = "How should Zephyr drone batteries be stored?"

METADATA_KEYS = {
    "chunk_id",
    "doc_id",
    "title",
    "contributor",
    "datanet",
    "score",
    "content_hash",
    "weight_bps",
    "receipt_id",
}


def journaled(engine: tribute.Engine, receipt_id: object) -> tribute.Receipt:
    """The journaled receipt with this id (which must be there, pending)."""
    assert isinstance(receipt_id, str) and receipt_id.startswith("0x"), receipt_id
    found = [(r, state) for r, state in engine.receipts() if r.id == receipt_id]
    assert len(found) == 1, f"receipt {receipt_id} not journaled"
    receipt, state = found[0]
    assert state == "pending"
    assert receipt.verify() == PAYER
    return receipt


def check_metadata(metadatas: list[dict[str, object]], receipt: tribute.Receipt) -> None:
    for m in metadatas:
        assert set(m) == METADATA_KEYS, m
        assert m["contributor"] in {ALICE, BOB} and m["datanet"]
        assert m["receipt_id"] == receipt.id
    # The weights are the retrieval's citations (the receipt's chunks).
    assert sum(m["weight_bps"] for m in metadatas) == 10_000  # type: ignore[misc]
    assert {c["contributor"] for c in receipt.chunks} <= {m["contributor"] for m in metadatas}


def test_langchain_retriever_returns_credited_documents(engine: tribute.Engine) -> None:
    pytest.importorskip("langchain_core", reason="test.sh installs langchain-core")
    from langchain_core.documents import Document
    from langchain_core.retrievers import BaseRetriever

    from tribute.integrations.langchain import TributeRetriever

    retriever = TributeRetriever(engine=engine, k=3)
    assert isinstance(retriever, BaseRetriever)
    before = len(engine.receipts())
    docs = retriever.invoke(BATTERY_Q)
    assert 0 < len(docs) <= 3 and all(isinstance(d, Document) for d in docs)
    top = docs[0]
    assert top.metadata["doc_id"] == "zephyr-battery", [d.metadata for d in docs]
    assert top.metadata["contributor"] == ALICE and top.metadata["datanet"]
    assert top.page_content and top.id == top.metadata["chunk_id"]
    receipt = journaled(engine, top.metadata["receipt_id"])
    assert len(engine.receipts()) == before + 1
    check_metadata([d.metadata for d in docs], receipt)

    # Async goes through the same path (LangChain runs it in an executor).
    adocs = asyncio.run(retriever.ainvoke(BATTERY_Q))
    assert adocs[0].metadata["doc_id"] == "zephyr-battery"
    journaled(engine, adocs[0].metadata["receipt_id"])

    # Unsigned: no receipt, nothing journaled.
    count = len(engine.receipts())
    unsigned = TributeRetriever(engine=engine, k=2, sign=False).invoke(BATTERY_Q)
    assert unsigned and all(d.metadata["receipt_id"] is None for d in unsigned)
    assert len(engine.receipts()) == count


def test_langchain_retriever_takes_k_and_datanets_at_query_time(engine: tribute.Engine) -> None:
    pytest.importorskip("langchain_core", reason="test.sh installs langchain-core")
    from tribute.integrations.langchain import TributeRetriever

    retriever = TributeRetriever(engine=engine, sign=False)
    assert len(retriever.invoke(BATTERY_Q)) == 4
    assert len(retriever.invoke(BATTERY_Q, k=1)) == 1
    assert len(asyncio.run(retriever.ainvoke(BATTERY_Q, k=2))) == 2
    datanets = {d.metadata["datanet"] for d in retriever.invoke(BATTERY_Q, k=6)}
    only = sorted(datanets)[0]
    docs = retriever.invoke(BATTERY_Q, k=6, datanets=[only])
    assert docs and {d.metadata["datanet"] for d in docs} == {only}
    assert retriever.k == 4 and retriever.datanets is None  # the query did not change them


def test_langchain_vector_store_credits_contributors_and_persists(tmp_path: Path) -> None:
    pytest.importorskip("langchain_core", reason="test.sh installs langchain-core")
    from langchain_core.documents import Document
    from langchain_core.vectorstores import VectorStore

    from tribute.integrations.langchain import TributeVectorStore

    with tribute.Index.open(tmp_path / "kb") as kb:
        kb.add_files(SAMPLE / "alice.jsonl")  # not added through the store
        store = TributeVectorStore(kb, datanet="notes", contributor=BOB)
        assert isinstance(store, VectorStore)
        note = "Zephyr propellers must be replaced after 200 flight hours."
        ids = store.add_texts([note], [{"source": "notes.md", "page": 3}], ids=["prop"])
        assert ids == ["prop"]
        assert kb.search("propeller replacement hours", 1)[0].contributor == BOB
        docs = store.similarity_search("When must propellers be replaced?", k=1)
        assert docs == [Document(id="prop", page_content=note, metadata={"source": "notes.md", "page": 3})]

        # A document the index got another way comes back whole too, from the index.
        (hit, score), *_ = store.similarity_search_with_score(BATTERY_Q, k=2)
        battery = next(
            json.loads(line)
            for line in (SAMPLE / "alice.jsonl").read_text().splitlines()
            if line.strip() and json.loads(line)["id"] == "zephyr-battery"
        )
        assert hit.id == "zephyr-battery" and hit.page_content == battery["text"] and score > 0
        assert store.get_by_ids(["zephyr-battery"]) == [hit]
        assert kb.get("zephyr-battery")["contributor"] == ALICE
        assert store.similarity_search(BATTERY_Q, k=3, datanets=["notes"])[0].id == "prop"
        with pytest.raises(TypeError, match="filter"):
            store.similarity_search(BATTERY_Q, filter={"a": 1})
        with pytest.raises(TypeError):
            store.add_texts(["x"], [{"when": object()}])
        store.close()

        # Changing only the metadata replaces the document (the index alone would keep it).
        store.add_texts([note], [{"source": "notes.md", "page": 4}], ids=["prop"])
        assert store.get_by_ids(["prop"])[0].metadata == {"source": "notes.md", "page": 4}

        # The documents outlive the store object.
        again = TributeVectorStore(kb)
        assert [d.page_content for d in again.get_by_ids(["prop", "missing"])] == [note]
        assert again.delete(["prop"]) is True
        assert again.get_by_ids(["prop"]) == []
        assert all(h.doc_id != "prop" for h in kb.search("propellers 200 flight hours", 5))
        again.close()


def test_llama_index_retriever_returns_credited_nodes(engine: tribute.Engine) -> None:
    pytest.importorskip("llama_index.core", reason="test.sh installs llama-index-core")
    from llama_index.core.retrievers import BaseRetriever
    from llama_index.core.schema import NodeWithScore, TextNode

    from tribute.integrations.llama_index import TributeRetriever

    retriever = TributeRetriever(engine, k=3)
    assert isinstance(retriever, BaseRetriever)
    before = len(engine.receipts())
    nodes = retriever.retrieve(BATTERY_Q)
    assert 0 < len(nodes) <= 3 and all(isinstance(n, NodeWithScore) for n in nodes)
    top = nodes[0]
    assert isinstance(top.node, TextNode)
    assert top.node.metadata["doc_id"] == "zephyr-battery", [n.node.metadata for n in nodes]
    assert top.node.metadata["contributor"] == ALICE and top.node.metadata["datanet"]
    assert top.node.node_id == top.node.metadata["chunk_id"] and top.node.get_content()
    assert top.score == top.node.metadata["score"]
    receipt = journaled(engine, top.node.metadata["receipt_id"])
    assert len(engine.receipts()) == before + 1
    check_metadata([n.node.metadata for n in nodes], receipt)

    anodes = asyncio.run(retriever.aretrieve(BATTERY_Q))
    assert anodes[0].node.metadata["doc_id"] == "zephyr-battery"
    journaled(engine, anodes[0].node.metadata["receipt_id"])

    count = len(engine.receipts())
    unsigned = TributeRetriever(engine, k=2, sign=False).retrieve(BATTERY_Q)
    assert unsigned and all(n.node.metadata["receipt_id"] is None for n in unsigned)
    assert len(engine.receipts()) == count


def test_llama_index_retriever_takes_k_at_query_time(engine: tribute.Engine) -> None:
    pytest.importorskip("llama_index.core", reason="test.sh installs llama-index-core")
    from tribute.integrations.llama_index import TributeRetriever

    retriever = TributeRetriever(engine, k=3, sign=False)
    assert len(retriever.retrieve(BATTERY_Q)) == 3
    assert len(retriever.retrieve(BATTERY_Q, k=1)) == 1
    assert len(asyncio.run(retriever.aretrieve(BATTERY_Q, k=2))) == 2
    assert retriever.k == 3  # the query did not change it
    retriever.similarity_top_k = 5
    assert retriever.k == 5 and len(retriever.retrieve(BATTERY_Q)) == 5


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120
    )


def test_import_tribute_loads_no_framework() -> None:
    r = run_python(
        """
        import sys
        import tribute, tribute.integrations
        loaded = [m for m in ("langchain_core", "llama_index") if m in sys.modules]
        assert not loaded, loaded
        """
    )
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize(
    ("module", "blocked", "extra"),
    [("langchain", "langchain_core", "langchain"), ("llama_index", "llama_index", "llama-index")],
)
def test_missing_framework_raises_an_install_hint(module: str, blocked: str, extra: str) -> None:
    # A None entry in sys.modules makes `import <blocked>…` fail as if it were not installed.
    r = run_python(
        f"""
        import sys
        sys.modules[{blocked!r}] = None
        import tribute
        try:
            import tribute.integrations.{module}
        except ImportError as e:
            print(e)
        else:
            raise SystemExit("imported without {blocked}")
        """
    )
    assert r.returncode == 0, r.stderr
    assert f"pip install tribute[{extra}]" in r.stdout
