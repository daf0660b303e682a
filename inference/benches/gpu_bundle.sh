#!/usr/bin/env bash
# Prepares, on a build machine with the package registries, what `inference/benches/gpu.sh`
# needs on a CUDA machine that has no network, in as few device calls as the 64 MiB each
# carries (the working tree travels in each too, ~12 MiB):
#   .gpu/early/   the exporter's missing wheels (onnxconverter-common, gguf): carried with the
#                 first part, so the random-weight 1B exports start while the parts arrive;
#   .gpu/parts/   one xz tarball split into part-NN-of-MM (44 MiB): release builds of the `tribute`
#                 CLI and the generation bench with the `cuda` feature, ONNX Runtime's GPU build
#                 (the PyPI wheel `onnxruntime-gpu`, CUDA 13; its CUDA provider pruned to the
#                 H100/H200's sm_90a machine code by prune_fatbin.py: 218 MB of other
#                 architectures' SASS would cost three more calls; FULL_ORT=1 keeps them), and
#                 the SmolLM2-135M-Instruct Q4_1 GGUF.
# Everything lands in .gpu/ (git-ignored). The device calls are printed at the end.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
ORT_GPU_VERSION=${ORT_GPU_VERSION:-1.31.1}  # the newest CUDA 13 build on PyPI
PART=${PART:-44m}  # + the working tree (~12 MiB) within 64 MiB, with room for it to grow
OUT=.gpu
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
rm -rf "$OUT/stage" "$OUT/parts" "$OUT/early"
mkdir -p "$OUT/stage/bin" "$OUT/stage/gguf" "$OUT/parts" "$OUT/early" "$OUT/cache"
pip_get() {  # wheels for the device's Python 3.12
  python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform any "$@"
}

echo "gpu_bundle: building release binaries with --features cuda" >&2
cargo build --release -p tribute-cli --features cuda
cp "${CARGO_TARGET_DIR:-target}/release/tribute" "$OUT/stage/bin/tribute"
bench=$(cargo bench -p tribute-inference --features cuda --bench generation --no-run --message-format=json 2>/dev/null \
  | python3 -c 'import sys,json
for l in sys.stdin:
    m=json.loads(l)
    if m.get("reason")=="compiler-artifact" and m["target"]["name"]=="generation" and m.get("executable"): print(m["executable"])' | tail -n1)
cp "$bench" "$OUT/stage/bin/generation"
strip "$OUT/stage/bin/tribute" "$OUT/stage/bin/generation" || true

# ONNX Runtime's whole Python package (the device's python3 is 3.12): its capi/ holds the C library
# the Rust binaries load (ort/lib links to it) and the module static_decode.py imports.
ls "$OUT"/cache/onnxruntime_gpu-"$ORT_GPU_VERSION"-*.whl >/dev/null 2>&1 || \
  pip_get -d "$OUT/cache" "onnxruntime-gpu==$ORT_GPU_VERSION"
tmp=$(mktemp -d)
(cd "$tmp" && python3 -m zipfile -e "$ROOT"/$OUT/cache/onnxruntime_gpu-"$ORT_GPU_VERSION"-*.whl x >/dev/null)
mkdir -p "$OUT/stage/ort/py"
mv "$tmp/x/onnxruntime" "$OUT/stage/ort/py/"
rm -rf "$tmp"
CAPI=$OUT/stage/ort/py/onnxruntime/capi
rm -f "$CAPI"/libonnxruntime_providers_tensorrt.so
if [ -z "${FULL_ORT:-}" ]; then
  python3 inference/benches/prune_fatbin.py "$CAPI/libonnxruntime_providers_cuda.so" "$CAPI/pruned.so" --arch 90
  mv "$CAPI/pruned.so" "$CAPI/libonnxruntime_providers_cuda.so"
  # cuobjdump (PyPI) must read every image back, and list no other architecture
  ls "$OUT"/cache/nvidia_cuda_cuobjdump-*.whl >/dev/null 2>&1 || pip_get -d "$OUT/cache" nvidia-cuda-cuobjdump
  tmp=$(mktemp -d)
  (cd "$tmp" && python3 -m zipfile -e "$ROOT"/$OUT/cache/nvidia_cuda_cuobjdump-*.whl x >/dev/null)
  cuobjdump=$(find "$tmp/x" -name cuobjdump -type f) && chmod +x "$cuobjdump"
  archs=$("$cuobjdump" --list-elf "$CAPI/libonnxruntime_providers_cuda.so" | sed -n 's/.*\.\(sm_[0-9a-z]*\)\.cubin.*/\1/p' | sort | uniq -c)
  echo "gpu_bundle: CUDA provider images after pruning: $(echo $archs)" >&2
  (cd "$tmp" && "$cuobjdump" -xelf all "$ROOT/$CAPI/libonnxruntime_providers_cuda.so" >/dev/null) || \
    { echo "gpu_bundle: cuobjdump cannot read the pruned provider back" >&2; exit 1; }
  rm -rf "$tmp"
fi
(cd "$CAPI" && ln -sf libonnxruntime.so.* libonnxruntime.so)
ln -s py/onnxruntime/capi "$OUT/stage/ort/lib"

# The real small model for the CPU/CUDA greedy comparison: SmolLM2-135M-Instruct's GGUF (from
# `make setup`), exported on the GPU machine.
GGUF=${TRIBUTE_HOME:-$HOME/.cache/tribute}/gguf/SmolLM2-135M-Instruct.Q4_1.gguf
[ -f "$GGUF" ] || { echo "gpu_bundle: $GGUF missing; run make setup" >&2; exit 1; }
cp "$GGUF" "$OUT/stage/gguf/"
pip_get -d "$OUT/early" "gguf==0.19.0" "onnxconverter-common==1.16.0"  # --compute fp16 exports there

echo "gpu_bundle: compressing" >&2
tar -C "$OUT/stage" -cf - . | xz -T0 -6 | split -b "$PART" -d -a 2 - "$OUT/parts/part-"
n=$(ls "$OUT"/parts/part-* | wc -l)
for f in "$OUT"/parts/part-*; do mv "$f" "$f-of-$(printf %02d "$n")"; done
rm -rf "$OUT/stage"
du -sh "$OUT"/early "$OUT"/parts/* >&2
calls=""
for f in "$OUT"/parts/part-*; do
  extra=""; [ "$f" = "$(ls "$OUT"/parts/part-* | head -n1)" ] && extra=" .gpu/early"
  calls="$calls
  carry $f$extra"
done
echo "gpu_bundle: ready. Device calls, each with the command
  GPU_STAGES=compare,static bash inference/benches/gpu.sh
(a call before the last part only collects; a warm machine keeps /tmp/gpu between calls):$calls
then GPU_STAGES=bench, then GPU_STAGES=adapters,profile (nothing carried)." >&2
