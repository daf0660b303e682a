"""Type stubs of `tribute._native`, the Rust extension; import `tribute` instead."""

import asyncio
import os
from collections.abc import Callable, Coroutine, Iterable, Mapping
from typing import Any, Literal, Optional, TypedDict, Union, final

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

__version__: str

_StrPath = Union[str, os.PathLike[str]]
_Mode = Literal["hybrid", "bm25", "dense"]
_Method = Literal["loo", "ablation", "similarity", "retrieval"]
_State = Literal["pending", "batched", "submitted", "confirmed"]
#: `{id: weight}`, a list of ids (weight 1.0) or of `(id, weight)` pairs, or one id.
_Adapters = Union[Mapping[str, float], Iterable[Union[str, tuple[str, float]]], str]
#: `{"chainId": 31337, "contract": "0x…"}` or the path of a ledger JSON file.
_LedgerSpec = Union[dict[str, Any], _StrPath]

class TributeError(Exception):
    """Base class of every error Tribute raises; the message is the Rust library's."""

class KnowledgeBaseError(TributeError):
    """The knowledge base failed (malformed document, unreadable file, corrupt index)."""

class ModelError(TributeError):
    """A model (generator or embedder) could not be loaded or run."""

class AdapterError(TributeError):
    """A LoRA adapter was refused."""

class AttributionError(TributeError):
    """Citation weights could not be computed."""

class ReceiptError(TributeError):
    """A receipt or signing key was refused, or the receipt journal failed."""

class ChainError(TributeError):
    """Settlement on chain failed or is not configured."""

class ConfigError(TributeError):
    """The configuration is invalid or unreadable."""

class RequestError(TributeError):
    """The request is invalid (empty question, top_k=0, unknown mode, method or state)."""

class OverloadedError(TributeError):
    """Too much work is in flight (a bounded queue is full); retry later or raise the limit."""

@final
class IngestProgress:
    """Progress of an ingest, passed to the `progress` callback after each embedded batch."""

    @property
    def docs_done(self) -> int: ...
    @property
    def docs_total(self) -> int: ...
    @property
    def chunks_done(self) -> int: ...
    @property
    def chunks_total(self) -> int: ...

@final
class IngestReport:
    """What an ingest did."""

    @property
    def added(self) -> int: ...
    @property
    def replaced(self) -> int: ...
    @property
    def unchanged(self) -> int: ...
    @property
    def chunks(self) -> int: ...
    @property
    def duplicates(self) -> list[tuple[str, str]]: ...
    @property
    def near_duplicates(self) -> list[tuple[str, str, float]]: ...
    @property
    def seconds(self) -> float: ...
    @property
    def embed_seconds(self) -> float: ...
    def to_dict(self) -> dict[str, Any]: ...

@final
class SyncReport:
    """What `Index.sync` did, file by file (paths inside the folder, `/`-separated)."""

    @property
    def added(self) -> list[str]: ...
    @property
    def replaced(self) -> list[str]: ...
    @property
    def deleted(self) -> list[str]: ...
    @property
    def unchanged(self) -> int: ...
    @property
    def failed(self) -> list[tuple[str, str]]: ...
    @property
    def skipped(self) -> list[tuple[str, str]]: ...
    @property
    def documents(self) -> int: ...
    @property
    def chunks(self) -> int: ...
    @property
    def seconds(self) -> float: ...
    def to_dict(self) -> dict[str, Any]: ...

@final
class Locator:
    """Where a chunk lies in its document: its pages (PDF), the heading path of its section
    (Markdown, HTML, DOCX) and its character span in the document's extracted text."""

    @property
    def pages(self) -> list[int]: ...
    @property
    def headings(self) -> list[str]: ...
    @property
    def char_start(self) -> int: ...
    @property
    def char_end(self) -> int: ...
    def to_dict(self) -> dict[str, Any]: ...
    def __eq__(self, value: object, /) -> bool: ...
    def __hash__(self) -> int: ...

@final
class Hit:
    """A search result: one chunk of a document, with its provenance and scores."""

    @property
    def chunk_id(self) -> str: ...
    @property
    def doc_id(self) -> str: ...
    @property
    def title(self) -> str: ...
    @property
    def text(self) -> str: ...
    @property
    def score(self) -> float: ...
    @property
    def contributor(self) -> str: ...
    @property
    def datanet(self) -> str: ...
    @property
    def content_hash(self) -> str: ...
    @property
    def start(self) -> int: ...
    @property
    def end(self) -> int: ...
    @property
    def bm25_score(self) -> Optional[float]: ...
    @property
    def dense_score(self) -> Optional[float]: ...
    @property
    def locator(self) -> Optional[Locator]: ...

@final
class Index:
    """A knowledge base stored in a directory; open it with `Index.open(path)`."""

    @staticmethod
    def open(path: _StrPath, embedder: Optional[_StrPath] = None) -> Index: ...
    def add(
        self,
        documents: Iterable[dict[str, Any]],
        *,
        datanet: Optional[str] = None,
        contributor: Optional[str] = None,
        progress: Optional[Callable[[IngestProgress], object]] = None,
    ) -> IngestReport: ...
    def add_files(
        self,
        paths: Union[_StrPath, Iterable[_StrPath]],
        *,
        datanet: Optional[str] = None,
        contributor: Optional[str] = None,
        progress: Optional[Callable[[IngestProgress], object]] = None,
    ) -> IngestReport: ...
    def sync(
        self,
        dir: _StrPath,
        *,
        datanet: Optional[str] = None,
        contributor: Optional[str] = None,
    ) -> SyncReport: ...
    def search(
        self,
        query: str,
        k: int = 5,
        *,
        mode: Optional[_Mode] = None,
        datanets: Optional[list[str]] = None,
    ) -> list[Hit]: ...
    def get(self, doc_id: str) -> Optional[dict[str, Any]]: ...
    def delete(self, doc_id: str) -> bool: ...
    @property
    def path(self) -> str: ...
    @property
    def closed(self) -> bool: ...
    @property
    def document_count(self) -> int: ...
    @property
    def chunk_count(self) -> int: ...
    def __len__(self) -> int: ...
    def close(self) -> None: ...
    def __enter__(self) -> Index: ...
    def __exit__(self, *_args: object) -> bool: ...

@final
class Generator:
    """A local language model and its LoRA adapters."""

    @staticmethod
    def load(
        path: Optional[_StrPath] = None,
        *,
        device: str = "cpu",
        sessions: int = 1,
        prompt_cache_mib: Optional[int] = None,
    ) -> Generator: ...
    def add_adapter(self, id: str, path: _StrPath) -> None: ...
    def remove_adapter(self, id: str) -> bool: ...
    def generate(
        self,
        prompt: str,
        *,
        max_tokens: int = 128,
        adapters: Optional[_Adapters] = None,
        temperature: float = 0.0,
        seed: int = 0,
    ) -> str: ...
    @property
    def adapters(self) -> list[str]: ...
    @property
    def path(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def device(self) -> str: ...
    @property
    def context_length(self) -> int: ...

@final
class Signer:
    """The payer's signing key; its repr shows the address only."""

    @staticmethod
    def from_env(var: str = "TRIBUTE_KEY") -> Signer: ...
    @staticmethod
    def from_hex(key: str) -> Signer: ...
    @staticmethod
    def from_file(path: _StrPath) -> Signer: ...
    @staticmethod
    def from_keystore(path: _StrPath, password: str) -> Signer: ...
    @staticmethod
    def random() -> Signer: ...
    @property
    def address(self) -> str: ...

@final
class Receipt:
    """A signed usage receipt."""

    @staticmethod
    def from_json(text: str, ledger: Optional[_LedgerSpec] = None) -> Receipt: ...
    def verify(self, ledger: Optional[_LedgerSpec] = None) -> str: ...
    @property
    def id(self) -> str: ...
    @property
    def payer(self) -> str: ...
    @property
    def serving_node(self) -> str: ...
    @property
    def model_id(self) -> str: ...
    @property
    def fee(self) -> int: ...
    @property
    def nonce(self) -> int: ...
    @property
    def timestamp(self) -> int: ...
    @property
    def query_hash(self) -> str: ...
    @property
    def answer_hash(self) -> str: ...
    @property
    def chunks(self) -> list[dict[str, Any]]: ...
    @property
    def adapters(self) -> list[tuple[str, float]]: ...
    def to_json(self) -> str: ...
    def to_dict(self) -> dict[str, Any]: ...
    def __eq__(self, value: object, /) -> bool: ...
    def __hash__(self) -> int: ...

@final
class Citation:
    """One cited source of an answer."""

    @property
    def marker(self) -> int: ...
    @property
    def weight_bps(self) -> int: ...
    @property
    def weight(self) -> float: ...
    @property
    def chunk_id(self) -> str: ...
    @property
    def doc_id(self) -> str: ...
    @property
    def title(self) -> str: ...
    @property
    def contributor(self) -> str: ...
    @property
    def datanet(self) -> str: ...
    @property
    def content_hash(self) -> str: ...
    @property
    def score(self) -> float: ...
    @property
    def snippet(self) -> str: ...
    @property
    def locator(self) -> Optional[Locator]: ...

@final
class Sentence:
    """One sentence of an answer and the sources that support it."""

    @property
    def text(self) -> str: ...
    @property
    def start(self) -> int: ...
    @property
    def end(self) -> int: ...
    @property
    def markers(self) -> list[int]: ...
    @property
    def supported(self) -> bool: ...
    @property
    def support(self) -> Optional[float]: ...
    @property
    def unused_markers(self) -> list[int]: ...
    @property
    def uncited_markers(self) -> list[int]: ...

@final
class Usage:
    """Token counts, sources and time per stage (ms) of an ask."""

    @property
    def prompt_tokens(self) -> int: ...
    @property
    def answer_tokens(self) -> int: ...
    @property
    def sources_retrieved(self) -> int: ...
    @property
    def sources_used(self) -> int: ...
    @property
    def sources_dropped(self) -> int: ...
    @property
    def source_truncated(self) -> bool: ...
    @property
    def method(self) -> Optional[str]: ...
    @property
    def attribution_passes(self) -> int: ...
    @property
    def retrieval_ms(self) -> float: ...
    @property
    def prompt_ms(self) -> float: ...
    @property
    def prefill_ms(self) -> float: ...
    @property
    def decode_ms(self) -> float: ...
    @property
    def attribution_ms(self) -> float: ...
    @property
    def receipt_ms(self) -> float: ...
    @property
    def total_ms(self) -> float: ...
    @property
    def decode_tokens_per_s(self) -> float: ...
    def to_dict(self) -> dict[str, Any]: ...

@final
class SettledBatch:
    """One settled batch of a `SettleReport`."""

    @property
    def root(self) -> str: ...
    @property
    def tx_hash(self) -> str: ...
    @property
    def block_number(self) -> Optional[int]: ...
    @property
    def gas_used(self) -> int: ...
    @property
    def payee_count(self) -> int: ...
    @property
    def total_wei(self) -> int: ...
    @property
    def receipts(self) -> int: ...
    @property
    def resumed(self) -> bool: ...
    @property
    def already_settled(self) -> bool: ...

@final
class SettleReport:
    """What `Engine.settle` did."""

    @property
    def batches(self) -> list[SettledBatch]: ...
    @property
    def awaiting(self) -> list[SettledBatch]: ...
    @property
    def reorged(self) -> list[str]: ...
    @property
    def moved(self) -> list[str]: ...
    @property
    def unresolved(self) -> list[tuple[str, str]]: ...
    @property
    def skipped(self) -> list[tuple[str, str]]: ...
    @property
    def other_payers(self) -> int: ...
    @property
    def still_pending(self) -> int: ...
    @property
    def confirmed_receipts(self) -> int: ...
    @property
    def gas_used(self) -> int: ...

@final
class Answer:
    """An answer with its citations and receipt; `str(answer)` is `cited_text`."""

    @property
    def question(self) -> str: ...
    @property
    def retrieval_query(self) -> Optional[str]: ...
    @property
    def text(self) -> str: ...
    @property
    def cited_text(self) -> str: ...
    @property
    def citations(self) -> list[Citation]: ...
    @property
    def sentences(self) -> list[Sentence]: ...
    @property
    def citation_audit(self) -> Optional[dict[str, Any]]: ...
    @property
    def source_alert(self) -> Optional[dict[str, Any]]: ...
    @property
    def adapters(self) -> list[tuple[str, float]]: ...
    @property
    def usage(self) -> Usage: ...
    @property
    def receipt(self) -> Optional[Receipt]: ...
    @property
    def no_receipt(self) -> Optional[str]: ...
    def to_json(self) -> str: ...
    def to_dict(self) -> dict[str, Any]: ...

@final
class AskStream:
    """A streamed ask: iterate (`for` or `async for`) for text pieces; then `answer`
    holds the `Answer`."""

    def __iter__(self) -> AskStream: ...
    def __next__(self) -> str: ...
    def __aiter__(self) -> AskStream: ...
    def __anext__(self) -> asyncio.Future[str]: ...
    @property
    def answer(self) -> Optional[Answer]: ...
    def close(self) -> None: ...
    def __enter__(self) -> AskStream: ...
    def __exit__(self, *_args: object) -> bool: ...
    def __aenter__(self) -> asyncio.Future[AskStream]: ...
    def __aexit__(self, *_args: object) -> asyncio.Future[bool]: ...

@final
class Retrieval:
    """A retrieval-only use of the knowledge base, with its receipt."""

    @property
    def query(self) -> str: ...
    @property
    def hits(self) -> list[Hit]: ...
    @property
    def citations(self) -> list[Citation]: ...
    @property
    def receipt(self) -> Optional[Receipt]: ...
    @property
    def no_receipt(self) -> Optional[str]: ...
    def to_json(self) -> str: ...

@final
class Session:
    """A conversation (`Engine.chat()`): follow-ups rewritten for retrieval, citations
    numbered across turns, one receipt per turn."""

    def ask(self, question: str) -> Answer: ...
    def stream(self, question: str) -> AskStream: ...
    def retrieval_query(self, question: str) -> Optional[str]: ...
    @property
    def history(self) -> list[tuple[str, str]]: ...
    @property
    def sources(self) -> list[tuple[int, str, str]]: ...
    def reset(self) -> None: ...
    def __len__(self) -> int: ...

@final
class Engine:
    """Retrieval, generation, attribution and receipts behind one object."""

    def __new__(
        cls,
        index: Union[Index, _StrPath, None] = None,
        *,
        generator: Optional[Generator] = None,
        signer: Optional[Signer] = None,
        ledger: Optional[_LedgerSpec] = None,
        journal: Optional[_StrPath] = None,
        chain: Union[str, dict[str, Any], None] = None,
        embedder: Optional[_StrPath] = None,
        top_k: Optional[int] = None,
        mode: Optional[_Mode] = None,
        method: Optional[_Method] = None,
        max_tokens: Optional[int] = None,
        answer_mode: Optional[Literal["generative", "extractive"]] = None,
    ) -> Engine: ...
    @staticmethod
    def from_config(path: _StrPath) -> Engine: ...
    def ask(
        self,
        question: str,
        *,
        adapters: Optional[_Adapters] = None,
        method: Optional[_Method] = None,
        top_k: Optional[int] = None,
        mode: Optional[_Mode] = None,
        datanets: Optional[list[str]] = None,
        max_tokens: Optional[int] = None,
        temperature: Optional[float] = None,
        seed: Optional[int] = None,
        fee: Optional[int] = None,
    ) -> Answer: ...
    def stream(
        self,
        question: str,
        *,
        adapters: Optional[_Adapters] = None,
        method: Optional[_Method] = None,
        top_k: Optional[int] = None,
        mode: Optional[_Mode] = None,
        datanets: Optional[list[str]] = None,
        max_tokens: Optional[int] = None,
        temperature: Optional[float] = None,
        seed: Optional[int] = None,
        fee: Optional[int] = None,
    ) -> AskStream: ...
    def chat(
        self,
        *,
        adapters: Optional[_Adapters] = None,
        method: Optional[_Method] = None,
        top_k: Optional[int] = None,
        mode: Optional[_Mode] = None,
        datanets: Optional[list[str]] = None,
        max_tokens: Optional[int] = None,
        temperature: Optional[float] = None,
        seed: Optional[int] = None,
        fee: Optional[int] = None,
        rewrite: Optional[Literal["model", "content-words", "off"]] = None,
    ) -> Session: ...
    def ask_async(
        self,
        question: str,
        *,
        adapters: Optional[_Adapters] = None,
        method: Optional[_Method] = None,
        top_k: Optional[int] = None,
        mode: Optional[_Mode] = None,
        datanets: Optional[list[str]] = None,
        max_tokens: Optional[int] = None,
        temperature: Optional[float] = None,
        seed: Optional[int] = None,
        fee: Optional[int] = None,
    ) -> Coroutine[Any, Any, Answer]: ...
    def stream_async(
        self,
        question: str,
        *,
        adapters: Optional[_Adapters] = None,
        method: Optional[_Method] = None,
        top_k: Optional[int] = None,
        mode: Optional[_Mode] = None,
        datanets: Optional[list[str]] = None,
        max_tokens: Optional[int] = None,
        temperature: Optional[float] = None,
        seed: Optional[int] = None,
        fee: Optional[int] = None,
    ) -> AskStream: ...
    def search(
        self,
        query: str,
        k: int = 5,
        *,
        mode: Optional[_Mode] = None,
        datanets: Optional[list[str]] = None,
    ) -> list[Hit]: ...
    def retrieve(
        self,
        query: str,
        k: Optional[int] = None,
        *,
        datanets: Optional[list[str]] = None,
        sign: bool = True,
    ) -> Retrieval: ...
    def retrieve_async(
        self,
        query: str,
        k: Optional[int] = None,
        *,
        datanets: Optional[list[str]] = None,
        sign: bool = True,
    ) -> Coroutine[Any, Any, Retrieval]: ...
    def settle(self) -> SettleReport: ...
    def settle_async(self) -> Coroutine[Any, Any, SettleReport]: ...
    def receipt_stats(self) -> dict[str, int]: ...
    def receipts(self, state: Optional[_State] = None) -> list[tuple[Receipt, _State]]: ...
    @property
    def index(self) -> Index: ...
    @property
    def generator(self) -> Generator: ...
    @property
    def payer(self) -> Optional[str]: ...
    @property
    def ledger(self) -> Optional[dict[str, Any]]: ...
    @property
    def model(self) -> str: ...
    @property
    def config(self) -> dict[str, Any]: ...
    @property
    def closed(self) -> bool: ...
    def close(self) -> None: ...
    def __enter__(self) -> Engine: ...
    def __exit__(self, *_args: object) -> bool: ...

class _PulledModel(TypedDict):
    """What `pull_model` found or made; `dir` is the model directory for `Generator.load`."""

    repo: str
    revision: str
    commit: str
    file: Optional[str]
    dir: str
    cached: bool

def pull_model(
    spec: str,
    *,
    home: Optional[_StrPath] = None,
    endpoint: Optional[str] = None,
    python: Optional[_StrPath] = None,
    refresh: bool = False,
    progress: bool = False,
) -> _PulledModel:
    """Find or download, verify and export a Hugging Face hub model
    (``ORG/NAME[/FILE.gguf][@REV][:OPTIONS]``; ``:int4`` or ``:static,fp16`` pick what it
    is exported as); offline, a model exported before (or files copied into the hub cache)
    still resolves, else `ModelError` names the cache."""

class _KeptEpoch(TypedDict):
    """The epoch whose weights the adapter holds."""

    epoch: int
    steps: int
    eval_loss: Optional[float]

class _FinetuneReport(TypedDict):
    """What `finetune` did (the shape `tribute finetune --json` prints)."""

    adapter_dir: str
    examples: int
    train_examples: int
    held_out: int
    truncated: int
    steps: int
    epochs: int
    eval_loss_before: Optional[float]
    eval_losses: list[float]
    kept: Optional[_KeptEpoch]
    stopped_early: bool
    resumed: bool
    tokens_per_second: float
    seconds: float
    provenance_hash: Optional[str]

def finetune(
    out: _StrPath,
    *,
    data: Optional[_StrPath] = None,
    kb: Optional[_StrPath] = None,
    datanet: Optional[str] = None,
    base: Optional[_StrPath] = None,
    rank: int = 8,
    alpha: float = 16.0,
    targets: Optional[list[str]] = None,
    lr: float = 1e-3,
    schedule: Literal["constant", "linear", "cosine"] = "cosine",
    warmup: int = 0,
    epochs: int = 3,
    steps: Optional[int] = None,
    batch: int = 4,
    seed: int = 0,
    max_len: int = 512,
    held_out: float = 10.0,
    patience: int = 2,
    signer: Optional[Signer] = None,
    resume: bool = False,
    progress: Optional[Callable[[dict[str, Any]], object]] = None,
) -> _FinetuneReport:
    """Fine-tune a LoRA adapter into `out` on `data` (JSONL question/answer, chat or
    document lines) or on a knowledge base's datanet (`kb` + `datanet`), from `base`
    (default: the installed SmolLM2-135M-Instruct); keeps the epoch with the lowest
    held-out loss. With `signer`, `provenance.json` is signed beside the adapter.
    `progress` gets one dict per event (``{"event": "start" | "step" | "epoch", ...}``);
    an exception it raises is raised again when the run ends."""
