#!/usr/bin/env bash
# Prepares, on a build machine with the package registries, what `inference/benches/gpu.sh`
# needs on a CUDA machine that has no network: release builds of the `tribute` CLI and the
# generation bench with the `cuda` feature, and ONNX Runtime's GPU libraries from the PyPI
# wheel `onnxruntime-gpu` (CUDA 13 build), zstd-compressed and split into parts that fit
# the device tool's 64 MiB per call. Everything goes to .gpu/ (git-ignored):
#   .gpu/bin-zst/{tribute,generation}.zst   .gpu/ort/part-NN (cat | zstd -d | tar -x → py/onnxruntime, lib/)
#   .gpu/gguf/part-NN (SmolLM2-135M-Instruct Q4_1 GGUF) + the gguf wheel   .gpu/tools (zstd)
# The calls are listed at the end of this script's output.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
ORT_GPU_VERSION=${ORT_GPU_VERSION:-1.31.1}  # the newest CUDA 13 build on PyPI
OUT=.gpu
mkdir -p "$OUT/bin" "$OUT/ort" "$OUT/wheel"
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude

echo "gpu_bundle: building release binaries with --features cuda" >&2
cargo build --release -p tribute-cli --features cuda
cp "${CARGO_TARGET_DIR:-target}/release/tribute" "$OUT/bin/tribute"
bench=$(cargo bench -p tribute-inference --features cuda --bench generation --no-run --message-format=json 2>/dev/null \
  | python3 -c 'import sys,json
for l in sys.stdin:
    m=json.loads(l)
    if m.get("reason")=="compiler-artifact" and m["target"]["name"]=="generation" and m.get("executable"): print(m["executable"])' | tail -n1)
cp "$bench" "$OUT/bin/generation"
strip "$OUT/bin/tribute" "$OUT/bin/generation" || true

if ! ls "$OUT"/ort/part-* >/dev/null 2>&1; then
  # The whole Python package (the device's python3 is 3.12): its capi/ holds the C library the
  # Rust binaries load (lib/ links to it) and the pybind module static_decode.py imports.
  echo "gpu_bundle: fetching onnxruntime-gpu==$ORT_GPU_VERSION" >&2
  python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    -d "$OUT/wheel" "onnxruntime-gpu==$ORT_GPU_VERSION"
  tmp=$(mktemp -d)
  (cd "$tmp" && python3 -m zipfile -e "$ROOT"/$OUT/wheel/onnxruntime_gpu-*.whl x >/dev/null)
  mkdir -p "$tmp/py"
  mv "$tmp/x/onnxruntime" "$tmp/py/"
  rm -f "$tmp"/py/onnxruntime/capi/libonnxruntime_providers_tensorrt.so
  (cd "$tmp/py/onnxruntime/capi" && ln -sf libonnxruntime.so.* libonnxruntime.so)
  ln -s py/onnxruntime/capi "$tmp/lib"
  tar -C "$tmp" -cf - lib py | zstd -T0 -12 -q -c | split -b 60m -d - "$OUT/ort/part-"
  rm -rf "$tmp" "$OUT/wheel"
fi
# The real small model for the CPU/CUDA greedy comparison: SmolLM2-135M-Instruct's GGUF
# (from `make setup`), exported on the GPU machine, plus the `gguf` wheel the exporter needs
# there; zstd for unpacking (the GPU image has none).
GGUF=${TRIBUTE_HOME:-$HOME/.cache/tribute}/gguf/SmolLM2-135M-Instruct.Q4_1.gguf
[ -f "$GGUF" ] || { echo "gpu_bundle: $GGUF missing; run make setup" >&2; exit 1; }
mkdir -p "$OUT/gguf" "$OUT/tools"
rm -f "$OUT"/gguf/part-*
split -b 47m -d "$GGUF" "$OUT/gguf/part-"
python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$OUT/gguf" "gguf==0.19.0" \
  "onnxconverter-common==1.16.0"  # --compute fp16 exports there
cp "$(command -v zstd)" "$OUT/tools/"
for l in $(ldd "$(command -v zstd)" | awk '/=>/{print $3}'); do
  case "$l" in */libc.so*|*/libm.so*|*/ld-linux*) ;; *) cp "$l" "$OUT/tools/" ;; esac
done
zstd -q -f -T0 -10 "$OUT/bin/tribute" -o "$OUT/bin/tribute.zst"
zstd -q -f -T0 -10 "$OUT/bin/generation" -o "$OUT/bin/generation.zst"
mkdir -p "$OUT/bin-zst" && mv "$OUT"/bin/*.zst "$OUT/bin-zst/"
du -sh "$OUT"/bin-zst/* "$OUT"/ort/* "$OUT"/gguf/* >&2
echo "gpu_bundle: ready. Device calls (64 MiB carried each; a warm machine keeps /tmp/gpu between calls):
  1-3: carry .gpu/ort/part-00, -01, -02 (one each), command: bash inference/benches/gpu.sh --collect
  4:   carry .gpu/ort/part-03 .gpu/bin-zst .gpu/tools and the wheels in .gpu/gguf, same command
  5:   carry .gpu/gguf/part-00, same command
  6:   carry .gpu/gguf/part-01, command: GPU_STAGES=compare,static bash inference/benches/gpu.sh
  7:   command: GPU_STAGES=bench bash inference/benches/gpu.sh
  8:   command: GPU_STAGES=adapters,profile bash inference/benches/gpu.sh" >&2
