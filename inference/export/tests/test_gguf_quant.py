"""--quant from a quantized GGUF: the GGUF's own blocks become MatMulNBits blocks without
re-rounding, so the graph computes x @ dequantize(tensor)^T (the gguf package's dequantizer is
the reference) up to float rounding at accuracy level 0."""

import json
import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from conftest import Runner, export, make_weights, quantize_q4_k, ref_forward, tiny_config, write_gguf
from test_tiny import IDS, rel_err

TYPES = ["Q4_0", "Q4_1", "Q8_0", "Q4_K"]


def gguf_tensor(qtype, n, k, seed):
    """(raw bytes [n, row bytes], the gguf package's dequantization [n, k]) of a random matrix, with
    an all-zero row and, for Q4_K, zero sub-block scales (blocks that are one constant)."""
    import gguf
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((n, k)) * 0.05 + rng.standard_normal((n, 1)) * 0.02).astype(np.float32)
    w[1] = 0
    w[2, :64] = np.abs(w[2, :64])  # an all-positive block: Q4_1's min is above zero
    t = gguf.GGMLQuantizationType[qtype]
    raw = quantize_q4_k(w) if qtype == "Q4_K" else gguf.quants.quantize(w, t)
    if qtype == "Q4_K":
        raw[3, 4:8] &= 0xC0  # sub-blocks 0-3 of row 3's first super-block: scale 0 (their low 6 bits)
    return raw, gguf.quants.dequantize(raw, t).reshape(n, k)


def run_linear(qtype, bits, raw, n, k, x, accuracy_level, tmp_path):
    """One Builder.linear over the GGUF blocks, as a graph of its own; returns (y, Builder)."""
    from tribute_export.gguf_quant import SourceBlocks, affine_blocks
    from tribute_export.graph import Builder, ExternalData
    from tribute_export.quant import QuantConfig
    from tribute_export.sources import Weights

    weights = Weights(["w"], lambda name: None,
                      lambda name: SourceBlocks("blk.0.w", qtype, lambda: affine_blocks(qtype, raw, n, k)))
    data = ExternalData(str(tmp_path / "m.onnx.data"), "m.onnx.data")
    b = Builder(data, False, QuantConfig(bits, 32, accuracy_level), weights)
    b.inp("x", TensorProto.FLOAT, [1, "s", k])
    b.linear("x", "w", [("w", np.zeros((n, k), np.float32))], outputs=["y"])
    b.out("y", TensorProto.FLOAT, [1, "s", n])
    data.close()
    model = helper.make_model(helper.make_graph(b.nodes, "g", b.inputs, b.outputs, initializer=b.inits),
                              opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)],
                              ir_version=8)
    path = str(tmp_path / "m.onnx")
    onnx.save(model, path)
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0], b


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("qtype", TYPES)
def test_gguf_blocks_are_copied_losslessly(qtype, bits, tmp_path):
    from tribute_export.gguf_quant import affine_blocks, to_nbits
    n, k = 40, 512
    raw, deq = gguf_tensor(qtype, n, k, seed=TYPES.index(qtype))
    stored = to_nbits(affine_blocks(qtype, raw, n, k), max(bits, 8 if qtype == "Q8_0" else 4))
    np.testing.assert_allclose(stored.dequantize(), deq, rtol=1e-6, atol=1e-7)
    assert (stored.residual is None) == (qtype in ("Q4_0", "Q8_0"))
    x = np.random.default_rng(5).standard_normal((1, 3, k)).astype(np.float32)
    want = x.astype(np.float64) @ deq.T.astype(np.float64)
    y, b = run_linear(qtype, bits, raw, n, k, x, 0, tmp_path)
    assert b.transferred == {qtype: 1} and not b.requantized
    scale = np.abs(want).max()
    assert np.abs(y - want).max() / scale < 2e-6, np.abs(y - want).max() / scale
    # accuracy level 4 quantizes x to int8 per block: close, not exact
    (tmp_path / "acc4").mkdir()
    y4, _ = run_linear(qtype, bits, raw, n, k, x, 4, tmp_path / "acc4")
    assert np.abs(y4 - want).max() / scale < 0.02


def test_untransferable_blocks_are_requantized_and_named(tmp_path):
    """A Q5_0 tensor has no lossless 4-bit form: dequantized, rounded again, and logged."""
    from tribute_export.quant import roundtrip
    n, k = 8, 64
    raw, deq = gguf_tensor("Q5_0", n, k, seed=9)
    from tribute_export.gguf_quant import SourceBlocks
    from tribute_export.graph import Builder, ExternalData
    from tribute_export.quant import QuantConfig
    from tribute_export.sources import Weights
    logs = []
    weights = Weights(["w"], lambda name: deq, lambda name: SourceBlocks("blk.3.attn_v.weight", "Q5_0", None))
    b = Builder(ExternalData(str(tmp_path / "d"), "d"), False, QuantConfig(4, 32, 0), weights, logs.append)
    qw = b.quantized("w", [("w", deq)])
    assert qw.bits == 4 and qw.residual is None and b.requantized == ["blk.3.attn_v.weight"]
    assert logs and "blk.3.attn_v.weight (Q5_0)" in logs[0] and "re-quantized to 4 bits" in logs[0]
    b.data.close()
    assert roundtrip(deq, 4, 32).shape == deq.shape


def gguf_model(tmp_path, qtype, tie):
    from tribute_export.sources import GGUFSource
    cfg = tiny_config(hidden_size=256, intermediate_size=512, num_attention_heads=4, num_key_value_heads=2,
                      tie_word_embeddings=tie)
    w = make_weights(cfg, seed=11)
    path = write_gguf(str(tmp_path / f"{qtype}.gguf"), cfg, w, qtype=qtype)
    src = GGUFSource(path)
    src.spec()
    ws = src.weights()
    return cfg, {n: ws.get(n) for n in ws.names()}, path


@pytest.mark.parametrize("qtype,tie", [("Q4_0", True), ("Q4_1", True), ("Q8_0", False), ("Q4_K", True)])
def test_gguf_model_exports_exactly(tmp_path, qtype, tie):
    """The whole model (every linear, the embedding lookup and the tied head from the GGUF's blocks):
    logits equal the reference forward pass on the GGUF's dequantized weights."""
    cfg, deq, path = gguf_model(tmp_path, qtype, tie)
    d = str(tmp_path / "int4")
    export(["--source", path, "--out", d, "--quant", "int4", "--accuracy-level", "0"])
    with open(os.path.join(d, "tribute.json")) as f:
        q = json.load(f)["quantization"]
    tensors = 7 * cfg["num_hidden_layers"] + 1 + (0 if tie else 1)  # q, k, v, o, gate, up, down; embeddings, head
    assert q["gguf_blocks_copied"] == {qtype: tensors} and q["gguf_requantized"] == [], q
    logits, _ = Runner(d).run(IDS)
    ref = ref_forward(cfg, deq, IDS)
    assert rel_err(logits[0], ref) < 1e-4, rel_err(logits[0], ref)
    m = onnx.load(os.path.join(d, "model.onnx"), load_external_data=False)
    bits = {n.input[1]: onnx.helper.get_attribute_value(next(a for a in n.attribute if a.name == "bits"))
            for n in m.graph.node if n.op_type == "MatMulNBits"}
    assert set(bits.values()) == {8 if qtype == "Q8_0" else 4}  # Q8_0 stays 8-bit under int4


def test_gguf_transfer_falls_back_for_other_block_sizes(tmp_path, capsys):
    cfg, deq, path = gguf_model(tmp_path, "Q4_1", True)
    d = str(tmp_path / "b64")
    export(["--source", path, "--out", d, "--quant", "int4", "--block-size", "64", "--accuracy-level", "0"])
    err = capsys.readouterr().err
    assert "blk.0.attn_q.weight (Q4_1): --block-size 64 differs from the GGUF's 32-value blocks" in err
    with open(os.path.join(d, "tribute.json")) as f:
        q = json.load(f)["quantization"]
    assert q["gguf_blocks_copied"] == {} and len(q["gguf_requantized"]) == 7 * cfg["num_hidden_layers"] + 1
    logits, _ = Runner(d).run(IDS)
    err = rel_err(logits[0], ref_forward(cfg, deq, IDS))
    assert 1e-3 < err < 1.0, err  # rounded twice: not exact (random weights are a hard case for 4 bits)
