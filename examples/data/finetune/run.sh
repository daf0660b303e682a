#!/usr/bin/env bash
# The fact experiment of docs/FINETUNE.md: fine-tune SmolLM2-135M-Instruct on invented facts
# (facts_train.jsonl, 4 phrasings per fact) and ask the held-out paraphrases
# (facts_heldout.jsonl) with and without the adapter (`tribute eval adapter`: greedy, exact
# match and contains-answer against each line's "expect").
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
# Both sides in one process: every held-out paraphrase, greedy, 40 tokens, base and adapter.
"$tribute" eval adapter --adapter "$out" --data "$here/facts_heldout.jsonl" --max-tokens 40
