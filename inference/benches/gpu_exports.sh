#!/usr/bin/env bash
# The random-weight exports gpu.sh measures (Llama-3.2-1B-shaped, 16 layers), started by the first
# device call in the background (setsid) so they run while the later calls carry the bundle's parts:
# two lanes at once (each under a minute and ~3 GB at peak; the machine has 16 cores and 128 GiB). Each
# export finishes with its tribute.json; gpu.sh waits for /tmp/tribute-models/.random-done.
#   llama1b            fp16 weights, fp32 compute (the portable graph)
#   llama1b-fp16       fp16 compute (tensor cores, half the bytes per token), portable attention
#   llama1b-static     --ops static --compute fp16: the cache written in place, CUDA graphs
#   llama1b-static-nolora  the same without LoRA inputs: what the LoRA branches cost a step
#   llama1b-static-qv  the same with LoRA on q_proj and v_proj only, and 32 random rank-16
#                      adapters for it (the mixed-adapter stage)
# GPU_RANDOM_SHAPE=tiny makes them small, to rehearse gpu.sh on a machine without a GPU.
# gpu.sh runs a copy in /tmp/gpu/src beside a copy of the exporter: the device tool rewrites the
# working tree at each call, under these long-running exports.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
PKG=$HERE
[ -d "$PKG/tribute_export" ] || PKG=$HERE/../export  # run from the repository
M=/tmp/tribute-models
mkdir -p $M
export PYTHONPATH=$PKG:/tmp/site PYTHONUNBUFFERED=1
one() {  # name, exporter flags
  local name=$1; shift
  [ -f $M/$name/tribute.json ] && return 0
  python3 -W ignore -m tribute_export --random "${GPU_RANDOM_SHAPE:-llama-3.2-1b}" "$@" --out $M/$name 2>&1 | sed "s/^/[$name] /" | tail -n 3
  [ -f $M/$name/tribute.json ]
}
ok=1
( one llama1b --dtype fp16 && one llama1b-static --ops static --compute fp16 &&
  one llama1b-static-nolora --ops static --compute fp16 --lora-targets none ) &
lane=$!
one llama1b-fp16 --compute fp16 || ok=0
one llama1b-static-qv --ops static --compute fp16 --lora-targets q_proj,v_proj || ok=0
[ -d $M/adapters/a31 ] || python3 "$HERE/random_adapters.py" $M/llama1b-static-qv $M/adapters 32 \
  --rank 16 || ok=0
wait $lane || ok=0
[ $ok = 1 ] && touch $M/.random-done || touch $M/.random-failed
