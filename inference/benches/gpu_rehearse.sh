#!/usr/bin/env bash
# Rehearses the device calls on this machine (no GPU) before a lease spends minutes on them: after
# gpu_bundle.sh, runs gpu.sh call by call as the device tool would, in a copy of the working tree
# that gets only what each call carries (.gpu/early with the first part, then one part a call),
# with the random models tiny (GPU_RANDOM_SHAPE=tiny). On the CPU, `--device cuda` falls back to
# the CPU with a warning, so `compare` prints "== CPU: False" and the numbers mean nothing: this
# checks collection, unpacking, the background exports and every stage's commands. The Python
# stages (static, profile) need the device's Python 3.12 for ONNX Runtime's GPU module and are
# skipped unless python3 is 3.12. Uses /tmp/gpu and /tmp/tribute-models, as gpu.sh does, and
# removes them first.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
ls .gpu/parts/part-* >/dev/null 2>&1 || { echo "gpu_rehearse: run inference/benches/gpu_bundle.sh first" >&2; exit 1; }
VENV=${TRIBUTE_HOME:-$HOME/.cache/tribute}/venv
[ -x "$VENV/bin/python3" ] && export PATH=$VENV/bin:$PATH  # numpy and onnx for the exporter
stages=compare,bench,adapters
python3 -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' && stages=compare,static,bench,adapters,profile
rm -rf /tmp/gpu /tmp/tribute-models
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
first=1
for part in .gpu/parts/part-*; do
  rm -rf "$work/tree"
  mkdir -p "$work/tree"
  git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t "$work/tree"
  mkdir -p "$work/tree/.gpu/parts"
  cp "$part" "$work/tree/.gpu/parts/"
  [ $first = 1 ] && cp -r .gpu/early "$work/tree/.gpu/"
  first=0
  size=$(( $(du -sb "$work/tree" | cut -f1) / 1048576 ))
  echo "== call: $(basename "$part") ($size MiB travel)"
  [ "$size" -lt 62 ] || { echo "gpu_rehearse: $size MiB is too near the device tool's 64 MiB a call" >&2; exit 1; }
  (cd "$work/tree" && OUT="$work" GPU_RANDOM_SHAPE=tiny GPU_STAGES=compare bash inference/benches/gpu.sh) 2>&1 | tail -n 25
done
for s in ${stages#compare,}; do
  rm -rf "$work/tree/.gpu"
  echo "== call: GPU_STAGES=$s"
  (cd "$work/tree" && OUT="$work" GPU_RANDOM_SHAPE=tiny GPU_STAGES=$s bash inference/benches/gpu.sh) 2>&1 | tail -n 25
done
