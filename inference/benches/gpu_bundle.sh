#!/usr/bin/env bash
# Prepares, on a build machine with the package registries, what `inference/benches/gpu.sh`
# needs on a CUDA machine that has no network: release builds of the `tribute` CLI and the
# generation bench with the `cuda` feature, and ONNX Runtime's GPU libraries from the PyPI
# wheel `onnxruntime-gpu` (CUDA 13 build), zstd-compressed and split into parts that fit
# the device tool's 64 MiB per call. Everything goes to .gpu/ (git-ignored):
#   .gpu/bin/{tribute,generation}     .gpu/ort/part-NN (cat | zstd -d | tar -x → lib/)
# Carry `.gpu/bin` + the first part in the first call, one part per later call, then run gpu.sh.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
ORT_GPU_VERSION=${ORT_GPU_VERSION:-1.31.1}  # the newest CUDA 13 build on PyPI
OUT=.gpu
mkdir -p "$OUT/bin" "$OUT/ort" "$OUT/wheel"
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude

echo "gpu_bundle: building release binaries with --features cuda" >&2
cargo build --release -p tribute-cli --features cuda
cp target/release/tribute "$OUT/bin/tribute"
bench=$(cargo bench -p tribute-inference --features cuda --bench generation --no-run --message-format=json 2>/dev/null \
  | python3 -c 'import sys,json
for l in sys.stdin:
    m=json.loads(l)
    if m.get("reason")=="compiler-artifact" and m["target"]["name"]=="generation" and m.get("executable"): print(m["executable"])' | tail -n1)
cp "$bench" "$OUT/bin/generation"
strip "$OUT/bin/tribute" "$OUT/bin/generation" || true

if ! ls "$OUT"/ort/part-* >/dev/null 2>&1; then
  echo "gpu_bundle: fetching onnxruntime-gpu==$ORT_GPU_VERSION" >&2
  python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.11 \
    --platform manylinux_2_28_x86_64 -d "$OUT/wheel" "onnxruntime-gpu==$ORT_GPU_VERSION"
  tmp=$(mktemp -d)
  (cd "$tmp" && python3 -m zipfile -e "$ROOT"/$OUT/wheel/onnxruntime_gpu-*.whl x >/dev/null)
  mkdir -p "$tmp/lib"
  cp "$tmp"/x/onnxruntime/capi/libonnxruntime.so.* "$tmp"/x/onnxruntime/capi/libonnxruntime_providers_*.so "$tmp/lib/"
  (cd "$tmp/lib" && ln -sf libonnxruntime.so.* libonnxruntime.so)
  tar -C "$tmp" -cf - lib | zstd -T0 -12 -q -c | split -b 60m -d - "$OUT/ort/part-"
  rm -rf "$tmp" "$OUT/wheel"
fi
du -sh "$OUT"/bin/* "$OUT"/ort/* >&2
echo "gpu_bundle: ready; carry one .gpu/ort/part-NN per device call (64 MiB limit), .gpu/bin with the last, then run gpu.sh" >&2
