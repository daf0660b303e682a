"""Tribute: embeddable retrieval-augmented generation that credits — and pays — the
people whose data and models made each answer.

Documents come from *contributors* (EVM addresses) and live in *datanets*; every search
hit says whose text it is, every answer carries citation weights measured with the model,
and, with a signing key and a ledger, an EIP-712 usage receipt naming who to pay.

>>> import tribute
>>> kb = tribute.Index.open("kb")                                  # doctest: +SKIP
>>> kb.add([{"id": "d1", "title": "…", "text": "…"}], datanet="demo", contributor="0x…")
>>> engine = tribute.Engine(index=kb, signer=tribute.Signer.from_env("TRIBUTE_KEY"),
...                         ledger={"chainId": 31337, "contract": "0x…"}, journal="receipts")
>>> answer = engine.ask("question", top_k=4)
>>> answer.cited_text, answer.citations[0].weight_bps, answer.receipt.verify()

Everything long-running releases the GIL; errors are `TributeError` subclasses carrying
the Rust library's message.
"""

from ._native import (
    AdapterError,
    Answer,
    AskStream,
    AttributionError,
    ChainError,
    Citation,
    ConfigError,
    Engine,
    Generator,
    Hit,
    Index,
    IngestProgress,
    IngestReport,
    KnowledgeBaseError,
    Locator,
    ModelError,
    OverloadedError,
    Receipt,
    ReceiptError,
    RequestError,
    Retrieval,
    Sentence,
    Session,
    SettledBatch,
    SettleReport,
    Signer,
    SyncReport,
    TributeError,
    Usage,
    __version__,
    finetune,
    pull_model,
)

__all__ = [
    "AdapterError",
    "Answer",
    "AskStream",
    "AttributionError",
    "ChainError",
    "Citation",
    "ConfigError",
    "Engine",
    "Generator",
    "Hit",
    "Index",
    "IngestProgress",
    "IngestReport",
    "KnowledgeBaseError",
    "Locator",
    "ModelError",
    "OverloadedError",
    "Receipt",
    "ReceiptError",
    "RequestError",
    "Retrieval",
    "Sentence",
    "Session",
    "SettleReport",
    "SettledBatch",
    "Signer",
    "SyncReport",
    "TributeError",
    "Usage",
    "__version__",
    "finetune",
    "pull_model",
]
