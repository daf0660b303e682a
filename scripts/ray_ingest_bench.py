"""One measured ingest of a BEIR corpus into a PostgreSQL knowledge base: with
`tribute.ray.ingest` and N workers, or in this process with `Index.add` (`--plain`).
Prints one JSON line. scripts/ray_ingest_bench.sh runs it against a fresh server per run.

    python scripts/ray_ingest_bench.py --pg-url URL --corpus beir/vaswani/corpus.jsonl \
        --limit 5000 --workers 2 [--pin-cores 1] [--plain] [--verify]

`--verify` (Ray runs): then ingests the same documents into a local directory in this
process (timed: the one-process rate) and compares the two indexes: document and chunk
counts, and for up to 200 queries (the BEIR set's
`queries.jsonl` beside the corpus) the dense and hybrid top-10: chunk ids, attribution
fields, and dense scores. A second JSON line reports it; a difference exits non-zero.
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
    ap.add_argument("--verify", action="store_true", help="compare with a local ingest of the same documents")
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
    if args.verify and not args.plain:
        report = verify(tribute, args.pg_url, lines, args.corpus.parent / "queries.jsonl", work / "local")
        print(json.dumps(report), flush=True)
        if report["differences"]:
            raise SystemExit(f"the Postgres index differs from the local one: {report['differences'][:5]}")


def verify(tribute, pg_url: str, lines: list[str], queries_file: Path, local_dir: Path) -> dict:
    """Ingests `lines` into a local directory and compares it with the Postgres index."""
    docs = [json.loads(line) for line in lines]
    started = time.perf_counter()
    differences: list[str] = []
    with tribute.Index.open(local_dir) as local, tribute.Index.open(pg_url) as pg:
        ref = local.add(docs)
        local_seconds = time.perf_counter() - started
        counts = {"local": [local.document_count, local.chunk_count], "postgres": [pg.document_count, pg.chunk_count]}
        if counts["local"] != counts["postgres"]:
            differences.append(f"counts {counts}")
        queries = []
        if queries_file.exists():
            queries = [json.loads(q)["text"] for q in queries_file.read_text().splitlines()[:200]]
        if not queries:
            queries = [d.get("title") or d["text"][:80] for d in docs[:200]]

        def fields(h):  # every attribution field of a hit
            return (h.chunk_id, h.doc_id, h.title, h.text, h.content_hash, h.start, h.end, h.contributor, h.datanet)

        same = {"dense": 0, "hybrid": 0}
        worst_dense = 0.0
        for q in queries:
            for mode in same:
                want = local.search(q, k=10, mode=mode)
                got = pg.search(q, k=10, mode=mode)
                if [fields(h) for h in got] == [fields(h) for h in want]:
                    same[mode] += 1
                elif mode == "dense":
                    differences.append(f"dense top-10 of {q!r}")
                if mode == "dense":
                    for g, w in zip(got, want):
                        worst_dense = max(worst_dense, abs((g.dense_score or 0.0) - (w.dense_score or 0.0)))
        if worst_dense > 1e-4:
            differences.append(f"dense scores differ by up to {worst_dense}")
    return {
        "verify": True,
        "local_seconds": round(local_seconds, 2),
        "local_docs_per_s": round(ref.added / local_seconds, 1),
        "counts": counts,
        "queries": len(queries),
        "same_top10": same,
        "max_dense_score_difference": worst_dense,
        "differences": differences,
    }


if __name__ == "__main__":
    main()
