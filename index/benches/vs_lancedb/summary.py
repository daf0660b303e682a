"""Summarises the JSON lines of `run.sh`: per set and side, p50 and p95 of each measure as
ranges over the rounds, ingest seconds, and the ratios the issue sets targets for
(Tribute / LanceDB, paired within each round)."""

import json
import sys
from collections import defaultdict

import numpy as np

MEASURES = [
    ("hybrid_with_embedding", "hybrid incl. embedding, fp32 query session, not spinning"),
    ("hybrid_with_embedding_int8", "hybrid incl. embedding, int8 query encoder"),
    ("hybrid_with_embedding_int8_spinning", "hybrid incl. embedding, int8, spinning (default)"),
    ("hybrid", "hybrid, vector given"),
    ("dense_with_embedding", "dense incl. embedding"),
    ("lexical", "lexical (BM25 / FTS)"),
    ("embed", "embedding alone, fp32 query session, not spinning"),
    ("embed_int8", "embedding alone, int8 query encoder"),
    ("embed_int8_spinning", "embedding alone, int8, spinning (default)"),
    ("embed_spinning", "embedding, fp32, spinning"),
    ("embed_single_session", "embedding, 1-thread session (before)"),
    ("embed_cached", "embedding, cache hit"),
]


def rng(values: list[float], digits: int = 2) -> str:
    lo, hi = min(values), max(values)
    return f"{lo:.{digits}f}" if round(lo, digits) == round(hi, digits) else f"{lo:.{digits}f}–{hi:.{digits}f}"


def main() -> None:
    runs = defaultdict(list)  # (set, side) -> [run]
    for line in open(sys.argv[1], encoding="utf-8"):
        if line.strip():
            r = json.loads(line)
            runs[(r["data"], r["side"])].append(r)
    for data in sorted({d for d, _ in runs}):
        print(f"\n## {data}: p50 / p95 in ms, ranges over {len(runs[(data, 'tribute')])} rounds")
        print(f"| measure | Tribute p50 | Tribute p95 | LanceDB p50 | LanceDB p95 |")
        print("|---|---|---|---|---|")
        for key, label in MEASURES:
            cells = []
            for side in ("tribute", "lancedb"):
                rs = [r[key] for r in runs[(data, side)] if key in r]
                if rs:
                    cells += [rng([float(np.percentile(x, 50)) for x in rs]), rng([float(np.percentile(x, 95)) for x in rs])]
                else:
                    cells += ["—", "—"]
            if any(c != "—" for c in cells):
                print(f"| {label} | " + " | ".join(cells) + " |")
        ingest = [rng([r["ingest_s"] for r in runs[(data, s)]], 1) if runs[(data, s)] else "—" for s in ("tribute", "lancedb")]
        print(f"| ingest (s) | {ingest[0]} | | {ingest[1]} | |")
        by_round = defaultdict(dict)
        for side in ("tribute", "lancedb"):
            for r in runs[(data, side)]:
                by_round[r["round"]][side] = r
        for key, peer, target in (
            ("hybrid_with_embedding", "hybrid_with_embedding", 0.5),
            ("hybrid_with_embedding_int8", "hybrid_with_embedding", 0.5),
            ("hybrid_with_embedding_int8_spinning", "hybrid_with_embedding", 0.5),
            ("embed", "embed", 0.8),
            ("embed_int8", "embed", 0.8),
            ("embed_int8_spinning", "embed", 0.8),
            ("embed_spinning", "embed", 0.8),
        ):
            ratios = [
                float(np.percentile(p["tribute"][key], 50) / np.percentile(p["lancedb"][peer], 50))
                for p in by_round.values()
                if "tribute" in p and "lancedb" in p and key in p["tribute"]
            ]
            if ratios:
                print(f"{key} p50, Tribute / LanceDB: {rng(ratios)} (target ≤ {target})")
        ndcg = defaultdict(list)
        for r in runs[(data, "tribute")]:
            for k, v in r.get("ndcg10", {}).items():
                ndcg[k].append(v)
        if ndcg:
            print("nDCG@10 (Tribute, judged queries): " + ", ".join(f"{k} {rng(v, 4)}" for k, v in sorted(ndcg.items())))


if __name__ == "__main__":
    main()
