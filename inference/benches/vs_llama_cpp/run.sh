#!/usr/bin/env bash
# Tribute (Python ONNX Runtime over exported fp32 / int8 / int4 graphs) vs llama.cpp (node-llama-cpp,
# the Q4_1 GGUF the exports come from), CPU only, same prompt tokens, same thread count.
# Runs are interleaved round by round (the machine may be shared); the table gives medians and ranges.
#
#   inference/benches/vs_llama_cpp/run.sh            (make bench-llama)
#   ROUNDS=5 N_DECODE=128 THREADS=2 inference/benches/vs_llama_cpp/run.sh
#
# Needs scripts/setup.sh's assets (venv with onnxruntime, the GGUF, the fp32 export) and node >= 20.
# node-llama-cpp 3.22.1 is installed once into $TRIBUTE_HOME/node-llama-cpp (CPU binary only).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../../.." && pwd)
TRIBUTE_HOME=${TRIBUTE_HOME:-$HOME/.cache/tribute}
PY=${PY:-$TRIBUTE_HOME/venv/bin/python}
GGUF=${GGUF:-$TRIBUTE_HOME/gguf/SmolLM2-135M-Instruct.Q4_1.gguf}
MODELS=$TRIBUTE_HOME/models
FP32=$MODELS/SmolLM2-135M-Instruct
ROUNDS=${ROUNDS:-3}
N_DECODE=${N_DECODE:-64}
THREADS=${THREADS:-2}
BATCHES=${BATCHES:-4 16}
NLC=$TRIBUTE_HOME/node-llama-cpp
OUT=${OUT:-$TRIBUTE_HOME/bench/vs_llama_cpp.jsonl}
export PYTHONPATH=$ROOT/inference/export${PYTHONPATH:+:$PYTHONPATH}

[ -f "$GGUF" ] || { echo "missing $GGUF (run scripts/setup.sh)" >&2; exit 1; }
[ -f "$FP32/tribute.json" ] || { echo "missing $FP32 (run scripts/setup.sh)" >&2; exit 1; }

if [ ! -d "$NLC/node_modules/node-llama-cpp" ]; then
  echo "installing node-llama-cpp 3.22.1 (CPU build only) into $NLC" >&2
  mkdir -p "$NLC"
  [ -f "$NLC/package.json" ] || echo '{"name":"tribute-bench-llama","private":true,"type":"module"}' > "$NLC/package.json"
  (cd "$NLC" && npm install --omit=optional --no-audit --no-fund \
     node-llama-cpp@3.22.1 @node-llama-cpp/linux-x64@3.22.1 >&2)
fi

export_q() {  # export_q DIR ARGS...: re-exported when the exporter or its arguments changed
  local dir=$1; shift
  local stamp="$* $(cat "$ROOT"/inference/export/tribute_export/*.py | sha256sum | cut -c1-16)"
  if [ "$(cat "$dir.stamp" 2>/dev/null)" != "$stamp" ]; then
    "$PY" -m tribute_export --source "$GGUF" --out "$dir" "$@" >&2
    echo "$stamp" > "$dir.stamp"
  fi
}
# int8's default (accuracy level 0) is the exact mode and slow on CPU; the fast mode is level 4.
export_q "$MODELS/SmolLM2-135M-Instruct-int8" --quant int8 --accuracy-level 4
export_q "$MODELS/SmolLM2-135M-Instruct-int4" --quant int4
export_q "$MODELS/SmolLM2-135M-Instruct-int4-float-emb" --quant int4 --float-embeddings

TOKENS=$(mktemp --suffix=.json)
trap 'rm -f "$TOKENS"' EXIT
"$PY" - "$FP32/tokenizer.json" "$TOKENS" <<'PYEOF'
import json, sys
from tokenizers import Tokenizer
text = ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        "<|im_start|>user\nThe Eiffel Tower was built for the 1889 World's Fair in Paris. It is 330 metres tall "
        "and was the tallest man-made structure in the world until 1930. Gustave Eiffel's company designed and "
        "built it; critics at first called it an eyesore. Summarise this paragraph in two sentences and then "
        "explain why the tower became a symbol of France.<|im_end|>\n<|im_start|>assistant\n")
ids = Tokenizer.from_file(sys.argv[1]).encode(text, add_special_tokens=False).ids
json.dump(ids, open(sys.argv[2], "w"))
print(f"prompt: {len(ids)} tokens", file=sys.stderr)
PYEOF

mkdir -p "$(dirname "$OUT")"
: > "$OUT"
for r in $(seq "$ROUNDS"); do
  echo "round $r/$ROUNDS" >&2
  NODE_LLAMA_CPP_DIR=$NLC/node_modules/node-llama-cpp node "$HERE/bench_llama.mjs" "$GGUF" "$TOKENS" "$N_DECODE" "$THREADS" \
    2>/dev/null | grep '^{' >> "$OUT"
  for v in fp32: int8-level4:-int8 int4:-int4 int4-float-emb:-int4-float-emb; do
    "$PY" "$HERE/bench_tribute.py" "$FP32${v#*:}" "$TOKENS" "$N_DECODE" "$THREADS" "${v%%:*}" >> "$OUT"
  done
  for b in $BATCHES; do
    "$PY" "$HERE/bench_tribute.py" "$MODELS/SmolLM2-135M-Instruct-int4" "$TOKENS" "$N_DECODE" "$THREADS" int4 "$b" >> "$OUT"
  done
done
echo "threads $THREADS, prompt $(python3 -c "import json,sys;print(len(json.load(open(sys.argv[1]))))" "$TOKENS") tokens, $N_DECODE decode steps, $ROUNDS interleaved rounds; $(nproc) cores; load $(cut -d' ' -f1-3 /proc/loadavg)"
"$PY" "$HERE/bench_tribute.py" --summary "$OUT"
