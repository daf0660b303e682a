"""`--compute fp16`: the graph converted to float16 arithmetic with float32 inputs and outputs,
portable and fused, against the fp32 export of the same weights and conftest's numpy forward."""

import json
import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto

from conftest import Runner, export, make_weights, ref_forward, tiny_config, write_hf_dir
from test_fused import check_lora, check_same
from test_tiny import IDS, rel_err

# fp16 keeps ~3 decimal digits: logits of magnitude ~6 move by ~1e-2
ATOL = 3e-2


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("half"))
    cfg = tiny_config()
    w = make_weights(cfg, seed=1)
    hf = write_hf_dir(os.path.join(root, "hf"), cfg, w)
    out = {}
    for name, flags in (("fp32", []), ("portable", ["--compute", "fp16"]),
                        ("fused", ["--compute", "fp16", "--ops", "fused"])):
        export(["--source", hf, "--out", os.path.join(root, name), *flags])
        out[name] = Runner(os.path.join(root, name))
    return cfg, w, out


@pytest.mark.parametrize("ops", ["portable", "fused"])
def test_fp16_compute_matches_fp32(models, ops):
    cfg, w, m = models
    r = m[ops]
    logits, present = r.run(IDS)
    assert logits.dtype == np.float32 and present["past_key_values.0.key"].dtype == np.float32
    assert rel_err(logits[0], ref_forward(cfg, w, IDS)) < 5e-3
    # prefill, decode on the cache, several tokens over a prefix, a left-padded batch
    check_same(m["fp32"], r, IDS, cfg["pad_token_id"], atol=ATOL)
    assert r.tj["compute_dtype"] == "float16" and r.tj["weights_dtype"] == "float16"
    g = onnx.load(os.path.join(r.dir, "model.onnx"), load_external_data=False).graph
    lora = {n for m in r.tj["lora"]["modules"] for n in (m["a"], m["b"])} | {"lora_mask"}
    for v in list(g.input) + list(g.output):
        assert (v.type.tensor_type.elem_type == TensorProto.FLOAT16) == (v.name in lora), v.name
    weights = [t for t in g.initializer if t.data_location == TensorProto.EXTERNAL]
    assert weights and all(t.data_type in (TensorProto.FLOAT16, TensorProto.INT64) for t in weights)
    assert os.path.getsize(os.path.join(r.dir, "model.onnx.data")) < \
        0.6 * os.path.getsize(os.path.join(m["fp32"].dir, "model.onnx.data"))


@pytest.mark.parametrize("ops", ["portable", "fused"])
def test_fp16_compute_takes_lora_inputs_in_float16(models, ops):
    """The LoRA inputs and lora_mask are float16 at the boundary (no Cast after them), their
    defaults too, and `lora.dtype` says so; fed in float16 they give the fp32 export's results."""
    cfg, w, m = models
    r = m[ops]
    assert r.tj["lora"]["dtype"] == "float16" and "dtype" not in m["fp32"].tj["lora"]
    g = onnx.load(os.path.join(r.dir, "model.onnx"), load_external_data=False).graph
    lora = {n for mod in r.tj["lora"]["modules"] for n in (mod["a"], mod["b"])} | {"lora_mask"}
    assert not [n for n in g.node if n.op_type == "Cast" and n.input[0] in lora]
    defaults = [t for t in g.initializer if t.name in lora]
    assert defaults and all(t.data_type == TensorProto.FLOAT16 for t in defaults)
    assert all(r.float_inputs[n] == np.float16 for n in lora)
    check_lora(cfg, w, r, m["fp32"], 5e-3, ATOL)  # Runner feeds them as the graph takes them


def test_fp16_compute_with_int4(tmp_path):
    cfg = tiny_config()
    w = make_weights(cfg, seed=5)
    hf = write_hf_dir(str(tmp_path / "hf"), cfg, w)
    runners = []
    for name, flags in (("q32", []), ("q16", ["--compute", "fp16", "--ops", "fused"])):
        export(["--source", hf, "--out", str(tmp_path / name), "--quant", "int4", "--accuracy-level", "0", *flags])
        runners.append(Runner(str(tmp_path / name)))
    check_same(*runners, IDS, cfg["pad_token_id"], atol=ATOL)
    with open(tmp_path / "q16" / "tribute.json") as f:
        tj = json.load(f)
    assert tj["quantization"]["bits"] == 4 and tj["compute_dtype"] == "float16"


def test_fp16_compute_without_the_converter_is_a_clear_error(tmp_path, monkeypatch):
    import builtins
    from tribute_export import ExportError
    from tribute_export.half import to_fp16_compute
    real = builtins.__import__

    def no_converter(name, *a, **k):
        if name.startswith("onnxconverter_common"):
            raise ImportError(name)
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_converter)
    with pytest.raises(ExportError, match="onnxconverter-common"):
        to_fp16_compute(str(tmp_path))
