#!/usr/bin/env bash
# The fact experiment of docs/FINETUNE.md: fine-tune SmolLM2-135M-Instruct on invented facts
# (facts_train.jsonl, 4 phrasings per fact) and ask the held-out paraphrases
# (facts_heldout.jsonl) with and without the adapter, greedy, counting answers that contain
# the expected words (case-insensitive).
#
#   examples/data/finetune/run.sh [OUT_DIR] [extra tribute finetune flags...]
# Needs `tribute` on PATH (or TRIBUTE=path/to/tribute) and scripts/setup.sh's models.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-/tmp/tribute-facts-adapter}"
shift || true
tribute="${TRIBUTE:-tribute}"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
start=$(date +%s)
"$tribute" finetune --data "$here/facts_train.jsonl" --out "$out" --held-out 0 \
  --epochs 8 --batch 4 --lr 3e-3 --rank 16 --alpha 32 --schedule cosine --warmup 2 "$@"
echo "training wall time: $(( $(date +%s) - start )) s, load after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
score() { # $1: label, rest: generate flags
  local label="$1"; shift
  local hits=0 total=0
  while IFS= read -r line; do
    q=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["question"])' "$line")
    want=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["expect"])' "$line")
    got=$("$tribute" generate --max-new-tokens 40 "$@" "$q" 2>/dev/null | tr '\n' ' ')
    total=$((total + 1))
    if [[ "${got,,}" == *"${want,,}"* ]]; then hits=$((hits + 1)); mark=ok; else mark=--; fi
    printf '%s [%s] %s -> %s\n' "$label" "$mark" "$q" "$got"
  done < "$here/facts_heldout.jsonl"
  echo "$label: $hits / $total contain the answer"
}
score base
score adapter --adapter "$out"
