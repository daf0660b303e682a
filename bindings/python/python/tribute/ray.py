"""Tribute on a Ray cluster: distributed ingest and multi-adapter serving.

This is the optional extra `tribute[ray]` (`ray[data,serve]`). Ray only distributes the
work; chunking, embedding, search, generation, attribution and receipts stay in the Rust
library, so a Ray ingest builds the same knowledge base as a one-process one and a Ray
Serve replica answers exactly as `tribute.Engine` does.

>>> import tribute.ray
>>> report = tribute.ray.ingest("corpus/", kb="postgres://app@db/kb", workers=8)  # doctest: +SKIP
>>> handle = tribute.ray.serve(                                                 # doctest: +SKIP
...     "postgres://app@db/kb", journal="postgres://app@db/kb",
...     adapters={"legal": "adapters/legal", "medical": "adapters/medical"},
...     ledger={"chainId": 31337, "contract": "0x…"})
>>> handle.options(multiplexed_model_id="legal").remote({"question": "…"}).result()  # doctest: +SKIP

See docs/SCALING.md for the topology (Postgres knowledge base and journal, Ray for ingest
and serving, settlers).
"""

from __future__ import annotations

try:
    import ray as _ray  # noqa: F401
except ImportError as e:  # the extra is not installed
    raise ImportError(
        "tribute.ray needs the optional extra tribute[ray]: pip install 'tribute[ray]'"
    ) from e

from .ray_ingest import RayIngestReport, connect, ingest
from .ray_serve import deployment, serve

__all__ = ["RayIngestReport", "connect", "deployment", "ingest", "serve"]
