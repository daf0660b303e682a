#!/usr/bin/env bash
# Ray ingest speed-up: ingests the first LIMIT documents of a BEIR corpus into a fresh
# PostgreSQL (index/tests/pg/pg.sh) per run, with tribute.ray.ingest and 1 then 2 workers
# (each pinned to PIN cores, so a worker stands for a machine's share), ROUNDS times,
# alternating; one JSON line per run (scripts/ray_ingest_bench.py). Needs the Python test
# venv with the ray extra (bindings/python/test.sh makes it) and the built extension.
#
#   scripts/ray_ingest_bench.sh BEIR_CORPUS_JSONL [LIMIT] [ROUNDS]
#   env: WORKERS="1 2", PIN=1 (empty: unpinned), PLAIN=1 (also a run without Ray),
#        VERIFY=1 (after each Ray run, compare with a local ingest: ray_ingest_bench.py --verify)
set -euo pipefail
[[ $# -ge 1 ]] || { echo "usage: $0 CORPUS.jsonl [LIMIT] [ROUNDS]" >&2; exit 2; }
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
corpus=$1
limit=${2:-5000}
rounds=${3:-1}
home="${TRIBUTE_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/tribute}"
py="$home/pyvenv/bin/python"
[[ -x $py ]] || { echo "no $py: run bindings/python/test.sh first" >&2; exit 1; }
"$py" -c "import tribute.ray" || { echo "tribute.ray is not importable in $py" >&2; exit 1; }
pin=${PIN-1}

one() {  # ARGS… : one run against a fresh server
  local dir
  dir=$(mktemp -d -t tribute-raybench-pg.XXXXXX)
  local url
  url=$("$repo/index/tests/pg/pg.sh" start "$dir")
  "$py" "$repo/scripts/ray_ingest_bench.py" --pg-url "$url" --corpus "$corpus" --limit "$limit" "$@" \
    2> >(grep -v -E '^\s*$|INFO|WARNING' >&2) || true
  "$repo/index/tests/pg/pg.sh" stop "$dir"
  rm -rf "$dir"
}

for _ in $(seq "$rounds"); do
  if [[ -n ${PLAIN:-} ]]; then one --plain; fi
  for w in ${WORKERS:-1 2}; do
    one --workers "$w" ${pin:+--pin-cores "$pin"} ${VERIFY:+--verify}
  done
done
