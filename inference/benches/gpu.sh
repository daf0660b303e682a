#!/usr/bin/env bash
# Runs on a CUDA 13 machine without network (the device tool), after
# `inference/benches/gpu_bundle.sh` prepared .gpu/ here. Every call runs this script with what it
# carried of .gpu/ (one part of the bundle, 64 MiB a call): it copies that into /tmp/gpu (which
# outlives calls on a warm machine) and, until the last part is there, only collects:
#  0. the first call also starts the random-weight 1B exports in the background
#     (gpu_exports.sh: fp16 weights; fp16 compute; the static layout, fp16, with and without LoRA
#     inputs, and with LoRA on q_proj,v_proj and 32 random adapters), which run while the parts
#     arrive;
#  1. the call that brings the last part unpacks ONNX Runtime's GPU build (the Python package;
#     the Rust binaries load its C library) and the release binaries, and finds the CUDA/cuDNN
#     libraries of the machine's Python (PyPI nvidia-* packages);
#  2. exports SmolLM2-135M-Instruct from its GGUF: fp32, `--compute fp16`, and `--ops static
#     --compute fp16`, and the tiny random model; waits for the 1B exports;
#  3. compare: CUDA and CPU produce the same greedy tokens on SmolLM2 (three chat prompts;
#     fp32, fp16 compute, and the static layout with its cache in device memory and its
#     decode steps captured as CUDA graphs) and on the tiny model (the Rust CLI);
#  4. static: static_decode.py on the static exports: SmolLM2's greedy tokens on CUDA against
#     the portable export on the CPU, then the 1B model's decode tok/s at batch 1, 8 and 32,
#     plain and as CUDA graphs, against the card's bandwidth limit, and without LoRA inputs;
#  5. bench: the Rust generation bench, decode tokens/s at batch 1, 8 and 32 for the 1B
#     model on CUDA (padded fp16 weights, fp16 compute, and the static layout with its decode
#     steps as CUDA graphs and without, each with 8 callers at once against one after another),
#     and the adapter switch time (then the CPU numbers, for scale).
#  6. profile: operators per decode step on CUDA (ONNX Runtime's profiler, profile_step.py)
#     for the 1B model's padded fp16-weights, fp16-compute and static fp16 exports: the
#     before/after counts docs/INFERENCE.md asks for.
#  7. adapters: 32 rows over 32 random rank-16 adapters (adapter slots, one forward pass per
#     step) against 32 rows on one adapter, on the 1B model's static fp16 export with LoRA on
#     q_proj and v_proj: the issue's >= 0.8x.
# GPU_STAGES (default compare,static,bench,adapters,profile) picks stages; a warm machine keeps the
# exports, so stages can run in separate calls. Results go to stdout and $OUT/gpu.txt.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
G=/tmp/gpu
M=/tmp/tribute-models
mkdir -p "$G/parts" $M
[ -d .gpu/parts ] && cp .gpu/parts/* "$G/parts/" 2>/dev/null
[ -d .gpu/early ] && cp -r .gpu/early "$G/"
STAGES=",${GPU_STAGES:-compare,static,bench,adapters,profile},"
RES=${OUT:-/tmp}/gpu.txt
log() { echo "$@" | tee -a "$RES"; }
: > "$RES"

# 0. the exporter's wheels, then the 1B exports in a session of their own (they outlive this call)
if [ -d "$G/early" ] && [ ! -f $M/.random-started ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "$G"/early/*.whl >/dev/null 2>&1 \
    || log "gpu.sh: the exporter's wheels did not install"
  touch $M/.random-started
  rm -rf "$G/src" && mkdir -p "$G/src"  # the tree is rewritten at each call, under the exports
  cp -r inference/export/tribute_export inference/benches/gpu_exports.sh inference/benches/random_adapters.py "$G/src/"
  setsid nohup bash "$G/src/gpu_exports.sh" > $M/exports.log 2>&1 < /dev/null &
  log "gpu.sh: 1B exports started in the background"
fi

P=$G/payload
if [ ! -f $P/.complete ]; then
  have=$(ls "$G"/parts/part-* 2>/dev/null | wc -l)
  want=$(ls "$G"/parts/part-* 2>/dev/null | head -n1 | sed -n 's/.*-of-0*\([0-9]*\)$/\1/p')
  if [ -z "$want" ] || [ "$have" -lt "$want" ]; then
    log "gpu.sh: $have of ${want:-?} parts here; collecting only"
    [ -f $M/exports.log ] && tail -n 2 $M/exports.log
    exit 0
  fi
  mkdir -p $P
  cat "$G"/parts/part-* | python3 -c 'import sys, tarfile
tarfile.open(fileobj=sys.stdin.buffer, mode="r|xz").extractall(sys.argv[1], filter="data")' $P \
    || { log "gpu.sh: the bundle does not unpack"; exit 1; }
  touch $P/.complete
fi

LIB=$P/ort/lib
BIN=$P/bin
chmod +x $BIN/*
export ORT_DYLIB_PATH=$(ls "$LIB"/libonnxruntime.so.1.* | head -n1)
# CUDA 13 / cuDNN 9 libraries from the machine's PyPI nvidia-* packages (nvidia/<pkg>/lib or
# nvidia/cu13/lib, depending on the package generation): every folder holding a shared library.
NV=$(python3 -c 'import nvidia, os; print(list(nvidia.__path__)[0])' 2>/dev/null)
CUDA_DIRS=$( [ -n "$NV" ] && find "$NV" -name 'lib*.so*' -printf '%h\n' 2>/dev/null | sort -u | tr '\n' ':')
export LD_LIBRARY_PATH=$LIB:${CUDA_DIRS}${LD_LIBRARY_PATH:-}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee -a "$RES"
missing=$(ldd "$LIB/libonnxruntime_providers_cuda.so" | grep 'not found')
[ -z "$missing" ] || log "gpu.sh: CUDA provider libraries not found: $missing"

export PYTHONPATH=$ROOT/inference/export:/tmp/site
GGUF=$P/gguf/SmolLM2-135M-Instruct.Q4_1.gguf
smol() {  # name, exporter flags
  local name=$1; shift
  [ -f $M/$name/tribute.json ] || python3 -W ignore -m tribute_export --source $GGUF --out $M/$name "$@" 2>&1 | tail -n1
}
smol smollm2 --dtype fp32
smol smollm2-fp16 --compute fp16  # fp16 arithmetic, portable attention
smol smollm2-static --ops static --compute fp16  # right-padded rows, the cache written in place
[ -f $M/tiny/tribute.json ] || python3 -m tribute_export --random tiny --seed 3 --out $M/tiny 2>/dev/null
waited=0
until [ -f $M/.random-done ] || [ -f $M/.random-failed ] || [ $waited -ge 420 ]; do sleep 5; waited=$((waited + 5)); done
[ -f $M/.random-done ] || { log "gpu.sh: the 1B exports are not all there (waited ${waited}s)"; tail -n 20 $M/exports.log | tee -a "$RES"; }

T=$BIN/tribute
compare() {  # model, extra flags, prompt
  local cpu gpu
  cpu=$($T generate --model "$1" $2 --max-tokens 48 --json --device cpu "$3")
  gpu=$($T generate --model "$1" $2 --max-tokens 48 --json --device cuda "$3")
  python3 - "$cpu" "$gpu" "$1" <<'PY' | tee -a "$RES"
import json, sys
a, b = json.loads(sys.argv[1]), json.loads(sys.argv[2])
same = a["token_ids"] == b["token_ids"] and b["device"] != "cpu"
print(f"{sys.argv[3].split('/')[-1]}: {len(a['token_ids'])} tokens, {len(set(a['token_ids']))} distinct, "
      f"CUDA ({b['device']}{', CUDA graphs' if b.get('cuda_graphs') else ''}) == CPU: {same}")
print(f"   cpu:  {a['text']!r}")
if not same:
    print(f"   cuda: {b['text']!r}\n   cpu ids  {a['token_ids']}\n   cuda ids {b['token_ids']}")
PY
}
if [[ $STAGES == *,compare,* ]]; then
if [ -f $M/smollm2/tribute.json ]; then
  compare $M/smollm2 "" "What is the capital of France? Answer in one sentence."
  compare $M/smollm2 "" "Write a haiku about drones flying in the wind."
  compare $M/smollm2 "" "List three uses of lithium batteries."
  # fp16 compute: CUDA against the CPU running the same graph
  compare $M/smollm2-fp16 "" "What is the capital of France? Answer in one sentence."
  compare $M/smollm2-fp16 "" "List three uses of lithium batteries."
  # The static layout in the Rust generator (buffers in device memory, a float16 cache)
  if [ -f $M/smollm2-static/tribute.json ]; then
    compare $M/smollm2-static "" "What is the capital of France? Answer in one sentence."
    compare $M/smollm2-static "" "Write a haiku about drones flying in the wind."
    compare $M/smollm2-static "--cuda-graphs off" "Write a haiku about drones flying in the wind."
    # sampled rows picked on the device (CUDA) and on the host (CPU), same seed
    compare $M/smollm2-static "--temperature 0.8 --seed 7" "List three uses of lithium batteries."
  fi
else
  log "gpu.sh: no SmolLM2 export: only the tiny random model is compared"
fi
compare $M/tiny --raw "The quick brown fox jumps over the lazy dog and keeps on running"
fi

GPU_NAME=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n1)
case "$GPU_NAME" in  # bytes/s: H200 HBM3e, H100 SXM HBM3, H100 PCIe HBM2e
  *H200*) BW=4.8e12 ;; *H100*HBM3*|*H100*SXM*) BW=3.35e12 ;; *H100*) BW=2.0e12 ;; *) BW=3.35e12 ;;
esac
if [[ $STAGES == *,static,* ]]; then
  # ONNX Runtime's GPU build ahead of the machine's own onnxruntime (a CPU build)
  SD="env PYTHONPATH=$P/ort/py:$PYTHONPATH PYTHONUNBUFFERED=1 python3 inference/benches/static_decode.py"
  [ -f $M/smollm2-static/tribute.json ] && $SD $M/smollm2-static --device cuda --cuda-graph --check $M/smollm2 \
    --batches 1 --new 48 --reps 1 2>&1 | tee -a "$RES"
  $SD $M/llama1b-static --device cuda --batches 1,8,32 --new 64 --bandwidth $BW 2>&1 | tee -a "$RES"
  $SD $M/llama1b-static --device cuda --cuda-graph --batches 1,8,32 --new 64 --bandwidth $BW 2>&1 | tee -a "$RES"
  # the same graph without its LoRA branches (4 operators per module and layer, run even with no
  # adapter fed): what they cost a captured step
  $SD $M/llama1b-static-nolora --device cuda --cuda-graph --batches 1,32 --new 64 --bandwidth $BW 2>&1 | tee -a "$RES"
fi

if [[ $STAGES == *,bench,* ]]; then
  export BENCH_BANDWIDTH=$BW
  BENCH_MODEL=$M/llama1b BENCH_DEVICE=cuda BENCH_BATCHES=1,8,32 BENCH_NEW=64 BENCH_REPS=3 $BIN/generation 2>&1 | tee -a "$RES"
  BENCH_MODEL=$M/llama1b-fp16 BENCH_DEVICE=cuda BENCH_BATCHES=1,8,32 BENCH_NEW=64 BENCH_REPS=3 $BIN/generation 2>&1 | tee -a "$RES"
  # the Rust generator on the static layout: the cache in device memory, written in place;
  # decode steps as CUDA graphs (the default there), then without; then 8 callers at once,
  # each from a thread of its own (every run through the engine's thread, one capture per step)
  for graphs in on off; do
    [ -f $M/llama1b-static/tribute.json ] && BENCH_MODEL=$M/llama1b-static BENCH_DEVICE=cuda BENCH_BATCHES=1,8,32 \
      BENCH_NEW=64 BENCH_REPS=3 BENCH_CUDA_GRAPHS=$graphs BENCH_CALLERS=8 $BIN/generation 2>&1 | tee -a "$RES"
  done
  # without LoRA inputs: the graph's LoRA branches (run with no adapter fed) against none
  BENCH_MODEL=$M/llama1b-static-nolora BENCH_DEVICE=cuda BENCH_BATCHES=1,32 BENCH_NEW=64 BENCH_REPS=3 \
    $BIN/generation 2>&1 | tee -a "$RES"
  unset BENCH_BANDWIDTH
  BENCH_MODEL=$M/llama1b BENCH_DEVICE=cpu BENCH_BATCHES=1 BENCH_NEW=16 BENCH_REPS=1 $BIN/generation 2>&1 | tee -a "$RES"
fi

if [[ $STAGES == *,adapters,* ]]; then
  QV=$M/llama1b-static-qv  # and its adapters: gpu_exports.sh
  ALL=$(for i in $(seq 0 31); do printf '%s,' $M/adapters/a$i; done)
  AB="env BENCH_MODEL=$QV BENCH_DEVICE=cuda BENCH_BATCHES=32 BENCH_NEW=64 BENCH_REPS=3 BENCH_SLOT_RANK=16"
  # one adapter, its own batch (no slots); one adapter through the slots; 32 adapters, 32 slots
  $AB BENCH_ADAPTERS=$M/adapters/a0 BENCH_SLOTS=0 $BIN/generation 2>&1 | grep -E '^# |^rows take|^\| 32 ' | tee -a "$RES"
  $AB BENCH_ADAPTERS=$M/adapters/a0 BENCH_SLOTS=32 $BIN/generation 2>&1 | grep -E '^# |^rows take|^\| 32 ' | tee -a "$RES"
  $AB BENCH_ADAPTERS=${ALL%,} BENCH_SLOTS=32 $BIN/generation 2>&1 | grep -E '^# |^rows take|^\| 32 ' | tee -a "$RES"
fi

if [[ $STAGES == *,profile,* ]]; then
  # ONNX Runtime's GPU build ahead of the machine's own onnxruntime (a CPU build)
  PS="env PYTHONPATH=$P/ort/py:$PYTHONPATH PYTHONUNBUFFERED=1 python3 inference/benches/profile_step.py"
  for m in llama1b llama1b-fp16 llama1b-static llama1b-static-nolora; do
    [ -f $M/$m/tribute.json ] && $PS $M/$m --cuda --steps 8 --prompt 100 2>&1 | tail -n1 | tee -a "$RES"
  done
fi
