#!/usr/bin/env bash
# Tribute vs LanceDB 0.40 + plain Python onnxruntime (2 threads), side by side, same model
# (all-MiniLM-L6-v2), same machine, interleaved: ROUNDS rounds, each running both sides on
# every set (the order alternates between rounds). Prints p50/p95 per side and the ratios.
#
#   index/benches/vs_lancedb/run.sh                  # cisi + vaswani, 3 rounds
#   ROUNDS=2 SETS="cisi" index/benches/vs_lancedb/run.sh
#
# Environment: BEIR (folder holding the sets, default ../shared/data), SETS, ROUNDS,
# QUERY_LIMIT, CORPUS_LIMIT (first N documents of each set: ingest is the slow part),
# BENCH_VENV (default $TRIBUTE_HOME/bench-venv, created with lancedb/onnxruntime when missing;
# never inside the repository). Raw JSON lines go to $OUT (default a file under /tmp).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"
cd "$repo"
TRIBUTE_HOME="${TRIBUTE_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/tribute}"
BEIR="${BEIR:-$repo/../shared/data}"
SETS="${SETS:-cisi vaswani}"
ROUNDS="${ROUNDS:-3}"
BENCH_VENV="${BENCH_VENV:-$TRIBUTE_HOME/bench-venv}"
MODEL="$TRIBUTE_HOME/models/all-MiniLM-L6-v2"
OUT="${OUT:-$(mktemp /tmp/vs_lancedb.XXXXXX.jsonl)}"
export CORPUS_LIMIT="${CORPUS_LIMIT:-}" QUERY_LIMIT="${QUERY_LIMIT:-}"

if ! "$BENCH_VENV/bin/python" -c "import lancedb, onnxruntime, tokenizers, pyarrow" 2>/dev/null; then
  python3 -m venv "$BENCH_VENV"
  "$BENCH_VENV/bin/pip" install --quiet --disable-pip-version-check \
    "lancedb==0.40.*" "onnxruntime==1.32.0" tokenizers numpy pyarrow
fi
# The int8 query encoder beside the model is written by `make setup`; the int8 rows are
# skipped without it.
# Build once (release-optimised bench profile), then run the binary each round.
cargo bench -p tribute-index --bench vs_lancedb --no-run
: > "$OUT"
for round in $(seq 1 "$ROUNDS"); do
  for set in $SETS; do
    tribute() {
      TRIBUTE_BENCH_DATA="$BEIR/$set" cargo bench -q -p tribute-index --bench vs_lancedb 2>/dev/null \
        | grep '^{' | sed "s/^{/{\"round\": $round, /" >> "$OUT"
    }
    lancedb() {
      "$BENCH_VENV/bin/python" -W ignore "$here/lancedb_side.py" "$MODEL" "$BEIR/$set" \
        | sed "s/^{/{\"round\": $round, /" >> "$OUT"
    }
    if (( round % 2 )); then tribute; lancedb; else lancedb; tribute; fi
    echo "round $round/$ROUNDS: $set done" >&2
  done
done
"$BENCH_VENV/bin/python" "$here/summary.py" "$OUT"
echo "raw results: $OUT" >&2
