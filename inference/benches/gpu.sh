#!/usr/bin/env bash
# Runs on a CUDA 13 machine without network (the device tool), after
# `inference/benches/gpu_bundle.sh` prepared .gpu/ here and its parts were carried over:
#  1. unpacks ONNX Runtime's GPU libraries and finds the CUDA/cuDNN libraries of the
#     machine's Python (PyPI nvidia-* packages);
#  2. exports random-weight models with the project's exporter (numpy + onnx + tokenizers
#     are on that machine): `tiny` and a Llama-3.2-1B-shaped model (fp16 weights);
#  3. checks that CUDA and CPU produce the same greedy tokens on the tiny model;
#  4. prints decode tokens/s at batch 1, 8 and 32 for the 1B model on CUDA, and the
#     adapter switch time.
# Results go to stdout and $OUT/gpu.txt.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
RES=${OUT:-/tmp}/gpu.txt
log() { echo "$@" | tee -a "$RES"; }
: > "$RES"

LIB=/tmp/tribute-ort/lib
if [ ! -f "$LIB/libonnxruntime_providers_cuda.so" ]; then
  mkdir -p /tmp/tribute-ort
  cat .gpu/ort/part-* | zstd -d -q | tar -C /tmp/tribute-ort -xf - || { log "gpu.sh: ORT GPU parts incomplete"; exit 1; }
fi
export ORT_DYLIB_PATH=$(ls "$LIB"/libonnxruntime.so.1.* | head -n1)
NV=$(python3 -c 'import nvidia, os; print(os.path.dirname(list(nvidia.__path__)[0]))' 2>/dev/null)/nvidia
export LD_LIBRARY_PATH=$LIB:$(ls -d "$NV"/*/lib 2>/dev/null | tr '\n' ':')${LD_LIBRARY_PATH:-}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee -a "$RES"
export PYTHONPATH=$ROOT/inference/export
M=/tmp/tribute-models
mkdir -p $M
[ -f $M/tiny/tribute.json ] || python3 -m tribute_export --random tiny --seed 3 --out $M/tiny 2>/dev/null
[ -f $M/llama1b/tribute.json ] || python3 -m tribute_export --random llama-3.2-1b --dtype fp16 --out $M/llama1b 2>&1 | tail -n1

T=.gpu/bin/tribute
chmod +x .gpu/bin/*
P="The quick brown fox jumps over the lazy dog and keeps on running"
cpu=$($T generate --model $M/tiny --raw --max-tokens 48 --json --device cpu "$P")
gpu=$($T generate --model $M/tiny --raw --max-tokens 48 --json --device cuda "$P")
log "cpu:  $(echo "$cpu" | python3 -c 'import sys,json; d=json.load(sys.stdin); print(d["device"], d["token_ids"])')"
log "cuda: $(echo "$gpu" | python3 -c 'import sys,json; d=json.load(sys.stdin); print(d["device"], d["token_ids"])')"
same=$(python3 -c 'import sys,json; a,b=json.loads(sys.argv[1]),json.loads(sys.argv[2]); print(a["token_ids"]==b["token_ids"] and b["device"]!="cpu")' "$cpu" "$gpu")
log "greedy tokens equal on CUDA and CPU (tiny model): $same"

BENCH_MODEL=$M/llama1b BENCH_DEVICE=cuda BENCH_BATCHES=1,8,32 BENCH_NEW=64 BENCH_REPS=3 .gpu/bin/generation 2>&1 | tee -a "$RES"
BENCH_MODEL=$M/llama1b BENCH_DEVICE=cpu BENCH_BATCHES=1 BENCH_NEW=16 BENCH_REPS=1 .gpu/bin/generation 2>&1 | tee -a "$RES"
