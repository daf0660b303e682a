"""One measured ingest of a BEIR corpus into a PostgreSQL knowledge base: with
`tribute.ray.ingest` and N workers, or in this process with `Index.add` (`--plain`).
Prints one JSON line. scripts/ray_ingest_bench.sh runs it against a fresh server per run.

    python scripts/ray_ingest_bench.py --pg-url URL --corpus beir/vaswani/corpus.jsonl \
        --limit 5000 --workers 2 [--pin-cores 1] [--plain]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--pg-url", required=True)
    ap.add_argument("--corpus", required=True, type=Path, help="a BEIR corpus.jsonl")
    ap.add_argument("--limit", type=int, default=5000, help="first N documents")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--pin-cores", type=int, default=None, help="cores per worker")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--plain", action="store_true", help="Index.add in this process, no Ray")
    args = ap.parse_args()

    lines = args.corpus.read_text().splitlines()[: args.limit]
    work = Path(tempfile.mkdtemp(prefix="tribute-raybench-"))
    corpus = work / "corpus.jsonl"
    corpus.write_text("".join(line + "\n" for line in lines))
    load_before = os.getloadavg()

    import tribute

    if args.plain:
        docs = [json.loads(line) for line in lines]
        started = time.perf_counter()
        with tribute.Index.open(args.pg_url) as kb:
            rep = kb.add(docs)
        seconds = time.perf_counter() - started
        added, chunks, embed = rep.added, rep.chunks, rep.embed_seconds
        startup = 0.0
    else:
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        import ray

        import tribute.ray as tray

        t0 = time.perf_counter()
        ray.init(
            num_cpus=os.cpu_count(),
            object_store_memory=200_000_000,
            include_dashboard=False,
            log_to_driver=False,
            _temp_dir=str(work / "ray"),
        )
        startup = time.perf_counter() - t0
        # `seconds` counts from here: the workers' start (model load) is part of an ingest.
        report = tray.ingest(
            corpus,
            args.pg_url,
            workers=args.workers,
            batch_size=args.batch_size,
            pin_cores=args.pin_cores,
        )
        ray.shutdown()
        seconds, added, chunks, embed = report.seconds, report.added, report.chunks, report.embed_seconds
    print(
        json.dumps(
            {
                "mode": "plain" if args.plain else "ray",
                "workers": 1 if args.plain else args.workers,
                "pin_cores": args.pin_cores,
                "docs": added,
                "chunks": chunks,
                "seconds": round(seconds, 2),
                "docs_per_s": round(added / seconds, 1),
                "chunks_per_s": round(chunks / seconds, 1),
                "embed_seconds": round(embed, 2),
                "ray_start_seconds": round(startup, 2),
                "load_before": [round(x, 2) for x in load_before],
                "load_after": [round(x, 2) for x in os.getloadavg()],
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
