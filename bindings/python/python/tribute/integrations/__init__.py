"""Retrievers for LLM frameworks, each an optional extra.

* `tribute.integrations.langchain.TributeRetriever` — a LangChain
  (`langchain_core.retrievers.BaseRetriever`) retriever, and
  `tribute.integrations.langchain.TributeVectorStore`, a LangChain vector store over a
  `tribute.Index`: ``pip install tribute[langchain]``.
* `tribute.integrations.llama_index.TributeRetriever` — a LlamaIndex
  (`llama_index.core.retrievers.BaseRetriever`) retriever: ``pip install tribute[llama-index]``.

Both wrap a `tribute.Engine` and call `Engine.retrieve`: every hit comes back with its
provenance (document, contributor, datanet, content hash) and citation weight and, with
``sign=True`` and an engine that has a signer and a ledger, each retrieval journals a
signed usage receipt crediting the contributors (the "retrieval-and-reward" plugin).

This package imports neither framework; each submodule imports its own and raises
`ImportError` with the install hint when it is missing.
"""

from __future__ import annotations

__all__: list[str] = []
