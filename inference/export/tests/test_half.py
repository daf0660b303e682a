"""`--compute fp16`: the graph converted to float16 arithmetic with float32 inputs and outputs,
portable and fused, against the fp32 export of the same weights and conftest's numpy forward."""

import json
import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper

from conftest import Runner, export, make_weights, ref_forward, require, tiny_config, write_hf_dir
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


def test_fp16_compute_without_the_converter_is_a_clear_error(tmp_path, monkeypatch, capsys):
    """Refused before anything is written: no output directory, no half-written one."""
    import builtins
    from tribute_export.cli import main
    real = builtins.__import__

    def no_converter(name, *a, **k):
        if name.startswith("onnxconverter_common"):
            raise ImportError(name)
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_converter)
    out = tmp_path / "out"
    assert main(["--random", "tiny", "--compute", "fp16", "--out", str(out)]) == 1
    assert "--compute fp16 needs onnxconverter-common" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []


def converter_or_skip():
    return require("onnxconverter_common.float16", "make setup installs the exporter's fp16 extra")


def test_weights_round_as_the_converter_rounds_them():
    """fp16_as_converter equals the converter's convert_np_to_float16 bit for bit, at its clamps
    (±1e-7, ±1e4), on zeros, infinities, NaN and fp16's subnormals, across chunk boundaries."""
    from tribute_export.half import fp16_as_converter
    float16 = converter_or_skip()
    edges = np.array([0.0, -0.0, 1e-8, -1e-8, 1e-7, -1e-7, 1.5e-7, 6e-8, 3e-5, -3e-5, 1e4, -1e4, 1.0001e4,
                      -2e4, 65504.0, 7e4, -1e9, np.inf, -np.inf, np.nan, 1.0, -0.5, 999.9, 1000.1], np.float32)
    rng = np.random.default_rng(0)
    a = np.concatenate([edges, rng.normal(0, 0.02, 1000).astype(np.float32), edges * 3]).reshape(4, -1)
    want = float16.convert_np_to_float16(a)
    for chunk in (7, 1 << 24):
        got = fp16_as_converter(a, float16, chunk=chunk)
        assert got.dtype == np.float16 and got.shape == a.shape
        assert np.array_equal(got.view(np.uint16), want.view(np.uint16))


def same_models(got: onnx.ModelProto, want: onnx.ModelProto, got_dir: str, want_dir: str):
    """Node by node and tensor by tensor (values, not where they are stored)."""
    for field in ("node", "input", "output", "value_info"):
        assert [x.SerializeToString() for x in getattr(got.graph, field)] == \
            [x.SerializeToString() for x in getattr(want.graph, field)], field
    a = {t.name: t for t in got.graph.initializer}
    b = {t.name: t for t in want.graph.initializer}
    assert a.keys() == b.keys()
    for name, t in a.items():
        assert (t.data_type, list(t.dims)) == (b[name].data_type, list(b[name].dims)), name
        x = numpy_helper.to_array(t, base_dir=got_dir)
        y = numpy_helper.to_array(b[name], base_dir=want_dir)
        assert x.tobytes() == y.tobytes(), name


def reference_fp16(fp32_dir: str, fp16_cache: bool) -> onnx.ModelProto:
    """The converter on the whole loaded fp32 model (it rounds the weights itself), with the same
    boundary steps as the export."""
    from tribute_export.half import convert_graph
    float16 = converter_or_skip()
    model = onnx.load(os.path.join(fp32_dir, "model.onnx"))
    convert_graph(model, fp32_dir, float16, fp16_cache)
    return model


@pytest.mark.parametrize("flags", [["--ops", "portable"], ["--ops", "fused"], ["--ops", "static"],
                                   ["--ops", "fused", "--quant", "int4"]])
def test_weights_halved_as_written_give_the_converters_model(tmp_path, flags):
    """Every layout (and int4, whose packed weights stay as they are): the fp16 export, whose
    weights were rounded as they were written, equals node by node and tensor by tensor what the
    converter makes of the fully loaded fp32 export of the same weights."""
    cfg = tiny_config()
    hf = write_hf_dir(str(tmp_path / "hf"), cfg, make_weights(cfg, seed=2))
    export(["--source", hf, "--out", str(tmp_path / "fp32"), *flags])
    export(["--source", hf, "--out", str(tmp_path / "fp16"), "--compute", "fp16", *flags])
    ours = str(tmp_path / "fp16")
    got = onnx.load(os.path.join(ours, "model.onnx"), load_external_data=False)
    same_models(got, reference_fp16(str(tmp_path / "fp32"), "static" in flags), ours, str(tmp_path / "fp32"))
    size = {d: os.path.getsize(tmp_path / d / "model.onnx.data") for d in ("fp32", "fp16")}
    assert size["fp16"] < 0.6 * size["fp32"] or "--quant" in flags


def blocked_graph(tmp_path, halver):
    """A MatMul on `w` (one value beyond fp16's range, two below its floor) and a Max (on the
    converter's block list) on `floor`, written as the builder writes weights."""
    from onnx import helper
    from tribute_export.graph import ExternalData
    w = np.random.default_rng(1).normal(0, 1, (64, 32)).astype(np.float32)
    w[0, :4] = [3e5, -3e5, 1e-9, -1e-9]
    floor = np.full((32,), 0.25, np.float32)
    data = ExternalData(str(tmp_path / "model.onnx.data"), "model.onnx.data", halver)
    inits = [data.add("w", w), data.add("floor", floor)]
    data.close()
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Max", ["h", "floor"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "model.onnx"))
    return w, floor


def test_weights_halved_as_written_keep_what_the_converter_keeps(tmp_path):
    """An initializer read by an operator on the converter's block list (Max) is float32 again,
    with its exact values; a weight beyond fp16's range is clamped as the converter clamps it;
    the graph equals the converter's on the float32 model."""
    from tribute_export.half import Halver, to_fp16_compute
    float16 = converter_or_skip()
    (tmp_path / "fp32").mkdir()
    (tmp_path / "fp16").mkdir()
    blocked_graph(tmp_path / "fp32", None)
    halver = Halver(float16)
    w, floor = blocked_graph(tmp_path / "fp16", halver)
    to_fp16_compute(str(tmp_path / "fp16"), halver)
    model = onnx.load(str(tmp_path / "fp16" / "model.onnx"), load_external_data=False)
    got = {t.name: t for t in model.graph.initializer}
    assert got["floor"].data_type == TensorProto.FLOAT and got["w"].data_type == TensorProto.FLOAT16
    assert numpy_helper.to_array(got["floor"], base_dir=str(tmp_path / "fp16")).tolist() == floor.tolist()
    first = numpy_helper.to_array(got["w"], base_dir=str(tmp_path / "fp16"))[0, :4]
    assert first.tolist() == [1e4, -1e4, np.float16(1e-7), -np.float16(1e-7)]
    same_models(model, reference_fp16(str(tmp_path / "fp32"), False), str(tmp_path / "fp16"), str(tmp_path / "fp32"))


def test_a_large_weight_read_by_a_blocked_operator_is_an_error(tmp_path):
    """Beyond what the writer keeps in float32, such a weight cannot be restored: an internal
    error naming it, not a silently float16 input of an operator that wants float32."""
    from tribute_export import ExportError
    from tribute_export.half import Halver, to_fp16_compute
    halver = Halver(converter_or_skip(), keep_below=64)  # `floor` (128 bytes) is not kept
    blocked_graph(tmp_path, halver)
    with pytest.raises(ExportError, match=r"floor \(\[32\]\) is read by an operator .* written as float16"):
        to_fp16_compute(str(tmp_path), halver)
