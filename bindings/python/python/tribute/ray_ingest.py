"""Distributed ingest with Ray Data: `tribute.ray.ingest` (see `tribute.ray`).

Ray only distributes. Each worker is an actor that opens the knowledge base once (and so
loads one embedder) and hands its batches to `Index.add` / `Index.add_files`: chunking,
embedding, hashing, deduplication and the transactional writes are the Rust library's,
exactly as in a one-process ingest.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import ray
import ray.data

from ._native import ConfigError, Index, IngestReport, RequestError

__all__ = ["RayIngestReport", "connect", "ingest"]

_StrPath = Union[str, "os.PathLike[str]"]

#: The file types the Rust loaders read (`tribute_index::loaders::Format`), by extension.
_FORMATS = {"jsonl", "ndjson", "txt", "md", "markdown", "pdf", "html", "htm", "docx"}
_JSONL = {"jsonl", "ndjson"}
#: Column names of the datasets made from files (a user's rows never carry them).
_LINE = "__tribute_jsonl_line"
_PATH = "__tribute_file"


@dataclass
class RayIngestReport:
    """What `tribute.ray.ingest` did, summed over its workers' `IngestReport`s."""

    #: Documents new to the knowledge base.
    added: int = 0
    #: Documents whose text changed and replaced the stored version.
    replaced: int = 0
    #: Documents already stored with the same text (left unchanged).
    unchanged: int = 0
    #: Chunks written.
    chunks: int = 0
    #: Exact duplicates as `(doc_id, duplicate_of)` pairs (which of two equal documents is
    #: the "duplicate" depends on which worker wrote first).
    duplicates: list[tuple[str, str]] = field(default_factory=list)
    #: Wall-clock seconds of the whole distributed ingest (driver side).
    seconds: float = 0.0
    #: Seconds the workers spent embedding, summed over workers.
    embed_seconds: float = 0.0
    #: Batches each worker wrote, by worker (`host:pid`).
    batches_by_worker: dict[str, int] = field(default_factory=dict)

    @property
    def documents(self) -> int:
        """Documents seen: added + replaced + unchanged."""
        return self.added + self.replaced + self.unchanged

    def to_dict(self) -> dict[str, Any]:
        """The report as plain data (JSON-ready)."""
        return {
            "added": self.added,
            "replaced": self.replaced,
            "unchanged": self.unchanged,
            "chunks": self.chunks,
            "duplicates": [list(d) for d in self.duplicates],
            "seconds": self.seconds,
            "embed_seconds": self.embed_seconds,
            "batches_by_worker": dict(self.batches_by_worker),
        }


def is_postgres(kb: _StrPath) -> bool:
    """Whether `kb` names a PostgreSQL knowledge base rather than a directory."""
    s = os.fspath(kb)
    return s.startswith("postgres://") or s.startswith("postgresql://")


@ray.remote(num_cpus=0)
class _CoreSlots:
    """Hands out disjoint CPU cores per node, so pinned workers do not share cores."""

    def __init__(self) -> None:
        self.next: dict[str, int] = {}

    def take(self, node: str) -> int:
        n = self.next.get(node, 0)
        self.next[node] = n + 1
        return n


def _pin(slots: Any, cores: int) -> None:
    """Restricts this process to `cores` cores of its node (the embedder sizes its thread
    pool from the cores it may use)."""
    allowed = sorted(os.sched_getaffinity(0))
    if cores >= len(allowed):
        return
    node = ray.get_runtime_context().get_node_id()
    slot = int(ray.get(slots.take.remote(node)))
    start = (slot * cores) % len(allowed)
    os.sched_setaffinity(0, {allowed[(start + i) % len(allowed)] for i in range(cores)})


def connect(address: Optional[str] = None) -> None:
    """Joins the Ray cluster at `address` (or `RAY_ADDRESS`; `None` or `"local"`: start a
    local one) unless this process is connected already. An address where nothing answers
    is a `ConfigError` at once (Ray itself would retry for minutes)."""
    if ray.is_initialized():
        return
    target = address or os.environ.get("RAY_ADDRESS") or None
    if target and target not in ("auto", "local"):
        hostport = target.split("://", 1)[-1]
        host, _, port = hostport.rpartition(":")
        try:
            socket.create_connection((host or "127.0.0.1", int(port)), timeout=3).close()
        except (OSError, ValueError) as e:
            raise ConfigError(
                f"no Ray cluster answers at {target} ({e}): start one (`ray start --head`) "
                "or fix the address; leave it unset to start a local cluster"
            ) from e
    ray.init(address=target)


def _plain(value: Any) -> Any:
    """Arrow/numpy values as plain Python (what `Index.add` accepts)."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


class _Writer:
    """A Ray Data actor: one knowledge-base handle (one embedder) per worker process."""

    def __init__(
        self,
        kb: str,
        embedder: Optional[str],
        datanet: Optional[str],
        contributor: Optional[str],
        pin_cores: Optional[int],
        slots: Any,
    ) -> None:
        if pin_cores:
            _pin(slots, pin_cores)
        self.index = Index.open(kb, embedder)
        self.datanet = datanet
        self.contributor = contributor
        self.worker = f"{os.uname().nodename}:{os.getpid()}"

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        report: IngestReport
        if _PATH in batch:
            paths = [str(p) for p in batch[_PATH]]
            report = self.index.add_files(paths, datanet=self.datanet, contributor=self.contributor)
        else:
            docs = list(_documents(batch))
            report = self.index.add(docs, datanet=self.datanet, contributor=self.contributor)
        return {
            "worker": [self.worker],
            "added": [report.added],
            "replaced": [report.replaced],
            "unchanged": [report.unchanged],
            "chunks": [report.chunks],
            "embed_seconds": [report.embed_seconds],
            "duplicates": [json.dumps(report.duplicates)],
        }


def _documents(batch: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The documents of a batch: JSONL lines, or rows of a user's dataset."""
    if _LINE in batch:
        for line in batch[_LINE]:
            text = str(line)
            if text.strip():
                doc = json.loads(text)
                if not isinstance(doc, dict):
                    raise RequestError(f"a JSONL line is not an object: {text[:80]!r}")
                yield doc
        return
    columns = list(batch)
    n = len(batch[columns[0]]) if columns else 0
    for i in range(n):
        # A dataset has every column on every row; a null means the document has no such key.
        yield {c: _plain(batch[c][i]) for c in columns if batch[c][i] is not None}


def _files(paths: Iterable[_StrPath]) -> list[Path]:
    """Files named, and files of the loaders' types found in folders (walked in name order,
    hidden entries skipped), as the Rust loaders walk them."""
    out: list[Path] = []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            for root, dirs, names in os.walk(path, followlinks=True):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(names):
                    f = Path(root) / name
                    if not name.startswith(".") and f.suffix[1:].lower() in _FORMATS:
                        out.append(f)
        elif path.is_file():
            out.append(path)
        else:
            raise RequestError(f"no such file or folder: {path}")
    return out


def _datasets(data: Any, batch_size: int) -> list[tuple[ray.data.Dataset, int]]:
    """The input as datasets with the batch size to write them in: JSONL lines, other files
    (one file per call), or the user's rows."""
    if isinstance(data, ray.data.Dataset):
        return [(data, batch_size)]
    if isinstance(data, (str, os.PathLike)):
        data = [data]
    files = _files(data)
    if not files:
        raise RequestError("no documents: the paths hold no files Tribute reads")
    jsonl = [str(f) for f in files if f.suffix[1:].lower() in _JSONL]
    other = [str(f) for f in files if f.suffix[1:].lower() not in _JSONL]
    out: list[tuple[ray.data.Dataset, int]] = []
    if jsonl:
        # Reading takes no CPU slot: the workers may hold every CPU of the cluster.
        lines = ray.data.read_text(jsonl, drop_empty_lines=True, num_cpus=0)
        out.append((lines.rename_columns({"text": _LINE}), batch_size))
    if other:
        out.append((ray.data.from_items([{_PATH: f} for f in other]), 1))
    return out


def ingest(
    data: Union[ray.data.Dataset, _StrPath, Sequence[_StrPath]],
    kb: _StrPath,
    *,
    datanet: Optional[str] = None,
    contributor: Optional[str] = None,
    embedder: Optional[_StrPath] = None,
    workers: Optional[int] = None,
    batch_size: int = 64,
    cpus_per_worker: float = 1.0,
    pin_cores: Optional[int] = None,
    address: Optional[str] = None,
) -> RayIngestReport:
    """Ingests documents into the knowledge base `kb` with Ray Data.

    `data` is a `ray.data.Dataset` whose rows are documents (the keys `Index.add` takes:
    `id`, `text`, optionally `title`, `datanet`, `contributor`, `license`, `metadata`;
    null columns are left out), or files and folders as for `Index.add_files` (JSONL files
    are split by line across workers; each other file is loaded whole by one worker).

    `kb` is a `postgres://` URL: `workers` actors (default: the cluster's CPUs divided by
    `cpus_per_worker`, less one CPU for a dataset's own operators; file reads take none)
    each open it once, with one embedder, and write `batch_size`
    documents per `Index.add` call, each call one transaction per commit group. A
    directory knowledge base can be open in one process only, so it takes one worker.
    `pin_cores` restricts each worker to that many cores of its node (the embedder runs
    one session per usable core), so that workers on one machine do not contend.

    Uses the Ray cluster this process is connected to, else the one at `address` (see
    `connect`), else a local one. Documents already
    stored with the same text are left unchanged, as in a one-process ingest, so an
    interrupted ingest can simply be run again.
    """
    if batch_size < 1:
        raise RequestError("batch_size must be at least 1")
    kb_s = os.fspath(kb)
    if not is_postgres(kb_s):
        if workers not in (None, 1):
            raise ConfigError(
                f"{kb_s} is a directory, which one process writes: use workers=1, or a "
                "postgres:// knowledge base for many workers"
            )
        workers = 1
    connect(address)
    if workers is None:
        cpus = float(ray.cluster_resources().get("CPU", 1.0))  # type: ignore[no-untyped-call]
        # A user's dataset may have operators of its own that need a CPU to feed the workers.
        spare = 1.0 if isinstance(data, ray.data.Dataset) else 0.0
        workers = max(1, int((cpus - spare) // max(cpus_per_worker, 0.001)))
    if workers < 1:
        raise RequestError("workers must be at least 1")
    sources = _datasets(data, batch_size)  # missing paths fail before the kb is touched
    # Open (and migrate) the knowledge base once before the workers race to it, so that a
    # wrong URL or embedder fails here with the library's error.
    with Index.open(kb_s, None if embedder is None else os.fspath(embedder)):
        pass
    slots = _CoreSlots.remote() if pin_cores else None  # type: ignore[attr-defined]
    started = time.perf_counter()
    report = RayIngestReport()
    for ds, size in sources:
        stats = ds.map_batches(
            _Writer,
            batch_size=size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=workers),
            num_cpus=cpus_per_worker,
            fn_constructor_kwargs={
                "kb": kb_s,
                "embedder": None if embedder is None else os.fspath(embedder),
                "datanet": datanet,
                "contributor": contributor,
                "pin_cores": pin_cores,
                "slots": slots,
            },
        ).take_all()
        for row in stats:
            report.added += int(row["added"])
            report.replaced += int(row["replaced"])
            report.unchanged += int(row["unchanged"])
            report.chunks += int(row["chunks"])
            report.embed_seconds += float(row["embed_seconds"])
            report.duplicates.extend((a, b) for a, b in json.loads(str(row["duplicates"])))
            w = str(row["worker"])
            report.batches_by_worker[w] = report.batches_by_worker.get(w, 0) + 1
    report.seconds = time.perf_counter() - started
    return report
