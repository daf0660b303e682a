#!/usr/bin/env bash
# The three attention layouts of SmolLM2-135M-Instruct's int4 export (portable, fused, static),
# each run by the Rust generator, a Python onnxruntime loop and onnxruntime-genai on the same
# directory (docs/INFERENCE.md, "int4 layouts vs ONNX Runtime and onnxruntime-genai"):
# `make bench-layouts`. The exports are cached in $TRIBUTE_HOME/models/bench-int4-LAYOUT (made
# again when the exporter changes); onnxruntime-genai is installed into the exporter's venv
# if missing. The bench is built with the dev profile (it optimises tribute-inference; the
# numbers in the docs were measured so). Overrides: THREADS (2), NEW (64), REPS (3). Wants a
# quiet machine.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
HOME_DIR=${TRIBUTE_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/tribute}
PY=$HOME_DIR/venv/bin/python
GGUF=$HOME_DIR/gguf/SmolLM2-135M-Instruct.Q4_1.gguf
[ -f "$GGUF" ] && [ -x "$PY" ] || { echo "int4_layouts: run make setup first" >&2; exit 1; }
"$PY" -c "import onnxruntime_genai" 2>/dev/null ||
  "$PY" -m pip install --quiet --disable-pip-version-check onnxruntime-genai==0.18.0 onnxruntime==1.32.0
STAMP="$("$PY" -m tribute_export --version) $(cat "$ROOT"/inference/export/tribute_export/*.py | sha256sum | cut -c1-16)"
PEERS=()
for ops in portable fused static; do
  dir=$HOME_DIR/models/bench-int4-$ops
  if [ "$(cat "$dir/.stamp" 2>/dev/null)" != "$STAMP" ]; then
    "$PY" -m tribute_export --source "$GGUF" --out "$dir" --quant int4 --ops "$ops" >&2
    echo "$STAMP" > "$dir/.stamp"
  fi
  PEERS+=("int4 $ops=$dir")
done
cd "$ROOT"
BENCH_PEERS=$(IFS=,; echo "${PEERS[*]}") BENCH_THREADS=${THREADS:-2} BENCH_NEW=${NEW:-64} \
  BENCH_REPS=${REPS:-3} cargo bench --profile dev -p tribute-inference --bench generation
