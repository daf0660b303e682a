"""--quant int8|int4: MatMulNBits graphs checked against the numpy reference forward pass.

The reference runs on weights rebuilt from the graph's own initializers with an unpacker written
here from the MatMulNBits spec (not tribute_export.quant's), so the packing is checked twice:
the graph (ONNX Runtime) must agree with the reference, and the rebuilt weights must equal
tribute_export.quant's round trip of the source weights.
"""

import json
import os

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from conftest import Runner, export, make_weights, ref_forward, tiny_config, write_gguf, write_hf_dir
from test_tiny import IDS, _random_lora, rel_err

LINEARS = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
           "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]


def spec_dequantize(model_dir):
    """{weight prefix: W [N, K] float64} of every MatMulNBits / GatherBlockQuantized, read back from
    model.onnx + model.onnx.data."""
    m = onnx.load(os.path.join(model_dir, "model.onnx"), load_external_data=True)
    init = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    out = {}
    for node in m.graph.node:
        at = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "MatMulNBits":
            b, scales, zp = (init[n] for n in node.input[1:4])
            n, k, bits, bs = at["N"], at["K"], at["bits"], at["block_size"]
            assert b.dtype == np.uint8 and b.shape == (n, k // bs, bs * bits // 8)
            name = node.input[1].rsplit(".weight_q", 1)[0]
        elif node.op_type == "GatherBlockQuantized":
            b, scales, zp = init[node.input[0]], init[node.input[2]], init[node.input[3]]
            assert (at["gather_axis"], at["quantize_axis"]) == (0, 1) and b.dtype == np.uint8
            bits, bs = at["bits"], at["block_size"]
            n, k = b.shape[0], b.shape[1] * 8 // bits
            b = b.reshape(n, k // bs, bs * bits // 8)
            name = node.input[0].rsplit(".weight_rows", 1)[0]
        else:
            continue
        assert node.domain == "com.microsoft"
        nb = k // bs
        assert scales.dtype == np.float32 and scales.shape == (n, nb)
        if bits == 4:
            codes = np.stack([b & 0xF, b >> 4], axis=-1).reshape(n, nb, bs)  # low nibble = even index
            zps = np.stack([zp & 0xF, zp >> 4], axis=-1).reshape(n, -1)[:, :nb]
            assert zp.shape == (n, (nb + 1) // 2)
        else:
            codes, zps = b, zp
            assert zp.shape == (n, nb)
        w = (codes.astype(np.float64) - zps[..., None]) * scales[..., None].astype(np.float64)
        if name in out:  # a tied head reads the embedding's blocks
            np.testing.assert_array_equal(out[name], w.reshape(n, k))
        out[name] = w.reshape(n, k)
    return out


def graph_weights(cfg, w, model_dir):
    """The source weights with every linear replaced by the graph's dequantized copy."""
    deq = spec_dequantize(model_dir)
    g = dict(w)
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}"
        qkv = deq[f"{p}.self_attn.qkv_proj"]
        gate_up = deq[f"{p}.mlp.gate_up_proj"]
        rows = [w[f"{p}.{m}.weight"].shape[0] for m in ("self_attn.q_proj", "self_attn.k_proj")]
        g[f"{p}.self_attn.q_proj.weight"], g[f"{p}.self_attn.k_proj.weight"], g[f"{p}.self_attn.v_proj.weight"] = \
            np.split(qkv, np.cumsum(rows), axis=0)
        g[f"{p}.mlp.gate_proj.weight"], g[f"{p}.mlp.up_proj.weight"] = np.split(gate_up, 2, axis=0)
        g[f"{p}.self_attn.o_proj.weight"] = deq[f"{p}.self_attn.o_proj"]
        g[f"{p}.mlp.down_proj.weight"] = deq[f"{p}.mlp.down_proj"]
    if "model.embed_tokens" in deq:
        g["model.embed_tokens.weight"] = deq["model.embed_tokens"]
    g["lm_head.weight"] = deq["lm_head"] if "lm_head" in deq else deq["model.embed_tokens"]
    return g


@pytest.fixture(scope="module")
def quant_models(tiny, tmp_path_factory):
    """{(mode, accuracy level): exported dir} from the tiny HF source (level 4: one activation pass),
    and {(mode, "default"): dir} exported with no options but --quant."""
    root = tmp_path_factory.mktemp("quant")
    out = {}
    for mode in ("int8", "int4"):
        for acc in (0, 4):
            d = str(root / f"{mode}_acc{acc}")
            export(["--source", tiny[2], "--out", d, "--quant", mode, "--accuracy-level", str(acc),
                    "--activation-passes", "1"])
            out[(mode, acc)] = d
    for mode in ("int8", "int4"):
        d = str(root / f"{mode}_default")
        export(["--source", tiny[2], "--out", d, "--quant", mode])
        out[(mode, "default")] = d
    return out


@pytest.mark.parametrize("mode", ["int8", "int4"])
def test_quantized_graph_matches_dequantized_reference(tiny, quant_models, mode):
    from tribute_export import quant
    cfg, w = tiny[0], tiny[1]
    d = quant_models[(mode, 0)]
    g = graph_weights(cfg, w, d)
    bits = 8 if mode == "int8" else 4
    for i in range(cfg["num_hidden_layers"]):
        for m in LINEARS:
            name = f"model.layers.{i}.{m}.weight"
            np.testing.assert_array_equal(g[name].astype(np.float32), quant.roundtrip(w[name], bits, 32))
            # round to nearest: off by at most half a step (step <= the block's range / levels)
            step = (np.abs(w[name]).max() * 2) / ((1 << bits) - 1)
            assert np.abs(g[name] - w[name]).max() <= step / 2 * 1.0001
    logits, _ = Runner(d).run(IDS)
    ref_q = ref_forward(cfg, g, IDS)
    assert rel_err(logits[0], ref_q) < 1e-4, rel_err(logits[0], ref_q)
    # against the float model: the quantization error itself, reported
    ref = ref_forward(cfg, w, IDS)
    err = rel_err(ref_q, ref)
    print(f"\n{mode} block 32: max |logit error| / max |logit| vs fp32 = {err:.4f}")
    # random Gaussian weights are a hard case for 4 bits (a step is ~0.3 sigma at block size 32)
    assert err < (0.05 if mode == "int8" else 0.6)


@pytest.mark.parametrize("mode", ["int8", "int4"])
def test_accuracy_level_4_close_to_level_0(quant_models, mode):
    """Level 4 quantizes activations to int8 per block at run time: a small extra error."""
    exact, _ = Runner(quant_models[(mode, 0)]).run(IDS)
    fast, _ = Runner(quant_models[(mode, 4)]).run(IDS)
    err = rel_err(fast[0], exact[0])
    print(f"\n{mode}: accuracy level 4 vs 0, relative logit error {err:.4f}")
    assert err < 0.05
    assert (fast[0].argmax(-1) == exact[0].argmax(-1)).mean() > 0.8


def nbits_inputs(model_dir):
    """(graph, {node output: node}, [(MatMulNBits node, the node that makes its input or None)])."""
    m = onnx.load(os.path.join(model_dir, "model.onnx"), load_external_data=False)
    made_by = {o: n for n in m.graph.node for o in n.output}
    return m.graph, made_by, [(n, made_by.get(n.input[0])) for n in m.graph.node if n.op_type == "MatMulNBits"]


def test_int8_default_is_two_pass_level_4(tiny, quant_models):
    """--quant int8 alone: every linear (4 per layer, the tied-or-not head) is a MatMulNBits at
    accuracy level 4 fed [x1; x - x1] (two activation passes) and summed back; LoRA and attention
    MatMuls stay fp32 on the float activations; int4's default stays one pass."""
    d = quant_models[("int8", "default")]
    with open(os.path.join(d, "tribute.json")) as f:
        q = json.load(f)["quantization"]
    assert (q["dtype"], q["accuracy_level"], q["activation_passes"], q["block_size"]) == ("int8", 4, 2, 32)
    graph, made_by, nbits = nbits_inputs(d)
    assert len(nbits) == 4 * 2 + 1
    consumers = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    for node, src in nbits:
        at = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert (at["bits"], at["accuracy_level"]) == (8, 4), node.name
        assert src.op_type == "Concat" and onnx.helper.get_attribute_value(src.attribute[0]) == 0
        x1, residual = (made_by[i] for i in src.input)
        assert x1.op_type == "Reshape" and residual.op_type == "Sub" and residual.input[1] == src.input[0]
        (split,) = consumers[node.output[0]]
        assert split.op_type == "Split" and [c.op_type for o in split.output for c in consumers[o]] == ["Add", "Add"]
        # LoRA branches read the float activations, not the stacked passes
        x = residual.input[0]
        assert all(c.op_type != "MatMul" for c in consumers[src.output[0]])
        if node.input[1].startswith("model.layers.0.self_attn.qkv"):
            assert any(c.op_type == "MatMul" and c.input[1].endswith("lora_A") for c in consumers[x])
    inits = {t.name for t in graph.initializer}
    for n in graph.node:
        if n.op_type == "MatMul":
            assert not any(i in inits and "lora" not in i for i in n.input), n.input
    with open(os.path.join(quant_models[("int4", "default")], "tribute.json")) as f:
        q4 = json.load(f)["quantization"]
    assert (q4["accuracy_level"], q4["activation_passes"]) == (4, 1)
    assert all(src is None or src.op_type != "Concat" for _, src in nbits_inputs(quant_models[("int4", "default")])[2])


def test_two_activation_passes_match_fp32_compute(tiny, quant_models):
    """Two passes compute what level 0 (fp32 compute on the same int8 weights) computes, far closer
    than one pass; the greedy tokens are the same, with and without an adapter (LoRA stays fp32)."""
    cfg, w = tiny[0], tiny[1]
    exact, one_pass, two_pass = (Runner(quant_models[k]) for k in (("int8", 0), ("int8", 4), ("int8", "default")))
    ref, _ = exact.run(IDS)
    err2 = rel_err(two_pass.run(IDS)[0][0], ref[0])
    err1 = rel_err(one_pass.run(IDS)[0][0], ref[0])
    print(f"\nint8 vs level 0, relative logit error: one pass {err1:.2e}, two passes {err2:.2e}")
    assert err2 < 5e-4 and err2 * 20 < err1  # measured 1.2e-4 vs 2.4e-2
    feed, lora = _random_lora(cfg, np.random.default_rng(11), {"model.layers.0.self_attn.q_proj": 4,
                                                              "model.layers.1.mlp.down_proj": 2})
    g = graph_weights(cfg, w, quant_models[("int8", "default")])
    assert rel_err(two_pass.run(IDS, extra=feed)[0][0], ref_forward(cfg, g, IDS, lora=lora)) < 5e-4
    for extra in (None, feed):
        tokens = {}
        for label, r in (("exact", exact), ("two passes", two_pass)):
            logits, past = r.run(IDS[:3], extra=extra)
            out = []
            for _ in range(8):
                out.append(int(logits[0, -1].argmax()))
                logits, past = r.run([out[-1]], past=past, extra=extra)
            tokens[label] = out
        assert tokens["two passes"] == tokens["exact"]


def test_quantized_incremental_decode(quant_models):
    r = Runner(quant_models[("int4", 4)])
    full, _ = r.run(IDS)
    logits, past = r.run(IDS[:4])
    for t in range(4, len(IDS)):
        logits, past = r.run([IDS[t]], past=past)
        np.testing.assert_allclose(logits[0, 0], full[0, t], atol=1e-4, rtol=1e-3)


def test_lora_on_quantized_graph(tiny, quant_models):
    """LoRA stays an fp32 branch: x @ A @ B on top of the quantized base, exactly as the reference says."""
    cfg, w = tiny[0], tiny[1]
    d = quant_models[("int4", 0)]
    g = graph_weights(cfg, w, d)
    rng = np.random.default_rng(7)
    feed, lora = _random_lora(cfg, rng, {"model.layers.0.self_attn.q_proj": 4, "model.layers.1.mlp.down_proj": 2,
                                         "model.layers.1.self_attn.v_proj": 3})
    r = Runner(d)
    base, _ = r.run(IDS)
    logits, _ = r.run(IDS, extra=feed)
    ref = ref_forward(cfg, g, IDS, lora=lora)
    assert rel_err(logits[0], ref) < 1e-4, rel_err(logits[0], ref)
    assert rel_err(base[0], ref) > 1e-2  # the adapter did change the output


def test_tribute_json_and_graph(tiny, quant_models):
    d = quant_models[("int4", 4)]
    with open(os.path.join(d, "tribute.json")) as f:
        tj = json.load(f)
    q = tj["quantization"]
    assert (q["dtype"], q["bits"], q["block_size"], q["accuracy_level"], q["symmetric"]) == ("int4", 4, 32, 4, False)
    assert tj["weights_dtype"] == "float32" and tj["inputs"]["past_key"] == "past_key_values.%d.key"
    assert len(tj["lora"]["modules"]) == 14
    with open(os.path.join(tiny[3], "tribute.json")) as f:
        assert "quantization" not in json.load(f)
    m = onnx.load(os.path.join(d, "model.onnx"), load_external_data=False)
    assert ("com.microsoft", 1) in [(o.domain, o.version) for o in m.opset_import]
    ops = [n.op_type for n in m.graph.node]
    assert ops.count("MatMulNBits") == 4 * 2 + 1 and ops.count("GatherBlockQuantized") == 1
    assert q["embeddings"] == "com.microsoft.GatherBlockQuantized"
    # the remaining MatMuls are attention and the LoRA branches, never a stored weight
    inits = {t.name for t in m.graph.initializer}
    for n in m.graph.node:
        if n.op_type == "MatMul":
            assert not any(i in inits and "lora" not in i for i in n.input), n.input
    # the same graph as the fp32 export's, input for input and output for output
    fp = onnx.load(os.path.join(tiny[3], "model.onnx"), load_external_data=False)
    assert [i.name for i in m.graph.input] == [i.name for i in fp.graph.input]
    assert [o.name for o in m.graph.output] == [o.name for o in fp.graph.output]


def test_quantized_export_is_reproducible(tiny, quant_models, tmp_path):
    d = str(tmp_path / "again")
    export(["--source", tiny[2], "--out", d, "--quant", "int4", "--accuracy-level", "0"])
    for f in ("model.onnx", "model.onnx.data"):
        with open(os.path.join(d, f), "rb") as a, open(os.path.join(quant_models[("int4", 0)], f), "rb") as b:
            assert a.read() == b.read(), f


def test_tied_embeddings_and_gguf(tmp_path):
    """Tied head from GGUF (a Q8_0 tensor dequantized, then re-quantized), block size 64: the lookup
    (GatherBlockQuantized) and the head (MatMulNBits) read the same blocks, stored once."""
    cfg = tiny_config(tie_word_embeddings=True)
    w = make_weights(cfg, seed=3)
    gg = write_gguf(str(tmp_path / "tiny.gguf"), cfg, w)
    d = str(tmp_path / "int8")
    export(["--source", gg, "--out", d, "--quant", "int8", "--block-size", "64", "--accuracy-level", "0"])
    g = graph_weights(cfg, w, d)
    m = onnx.load(os.path.join(d, "model.onnx"), load_external_data=False)
    head = next(n for n in m.graph.node if n.output[0] == "logits")
    assert head.op_type == "MatMulNBits" and head.input[1] == "model.embed_tokens.weight_q"
    ext = {t.name: {e.key: e.value for e in t.external_data} for t in m.graph.initializer}
    assert ext["model.embed_tokens.weight_rows"]["offset"] == ext["model.embed_tokens.weight_q"]["offset"]
    logits, _ = Runner(d).run(IDS)
    assert rel_err(logits[0], ref_forward(cfg, g, IDS)) < 1e-4
    assert rel_err(logits[0], ref_forward(cfg, w, IDS)) < 0.05


def test_float_embeddings(tmp_path):
    """--float-embeddings: a float Gather, and a quantized copy of a tied table for the head."""
    cfg = tiny_config(tie_word_embeddings=True)
    w = make_weights(cfg, seed=4)
    hf = write_hf_dir(str(tmp_path / "hf"), cfg, w)
    d = str(tmp_path / "int4")
    export(["--source", hf, "--out", d, "--quant", "int4", "--accuracy-level", "0", "--float-embeddings"])
    m = onnx.load(os.path.join(d, "model.onnx"), load_external_data=False)
    gather = next(n for n in m.graph.node if n.input[1:2] == ["input_ids"])
    assert gather.op_type == "Gather" and gather.input[0] == "model.embed_tokens.weight"
    g = graph_weights(cfg, w, d)
    np.testing.assert_array_equal(g["model.embed_tokens.weight"], w["model.embed_tokens.weight"])
    logits, _ = Runner(d).run(IDS)
    assert rel_err(logits[0], ref_forward(cfg, g, IDS)) < 1e-4
    with open(os.path.join(d, "tribute.json")) as f:
        assert json.load(f)["quantization"]["embeddings"] == "float"


def test_bad_quantization_arguments(tiny, tmp_path, capsys):
    from tribute_export import ExportError, quant
    from tribute_export.cli import main
    out = str(tmp_path / "bad")
    # hidden size 64 is not a multiple of 128: named, and nothing written
    assert main(["--source", tiny[2], "--out", out, "--quant", "int4", "--block-size", "128"]) == 1
    err = capsys.readouterr().err
    assert "model.layers.0.self_attn.q_proj.weight" in err and "block size 128" in err
    assert not os.path.exists(out) and not os.path.exists(out + ".tmp")
    with pytest.raises(ExportError, match="unknown quantization 'int3'"):
        quant.parse_quant("int3")
    with pytest.raises(ExportError, match="block size 48"):
        quant.parse_quant("int4", 48)
    with pytest.raises(ExportError, match="accuracy level 7"):
        quant.parse_quant("int4", 32, 7)
    with pytest.raises(ExportError, match="two activation passes need accuracy level 4"):
        quant.parse_quant("int8", 32, 0, 2)
    with pytest.raises(ExportError, match="3 activation passes"):
        quant.parse_quant("int8", 32, 4, 3)
    assert main(["--source", tiny[2], "--out", out, "--quant", "int8", "--accuracy-level", "1",
                 "--activation-passes", "2"]) == 1
    assert "two activation passes need accuracy level 4" in capsys.readouterr().err
    assert not os.path.exists(out)
    # defaults: int8 two passes at level 4; int4 one; any other level one
    assert (quant.parse_quant("int8").accuracy_level, quant.parse_quant("int8").activation_passes) == (4, 2)
    assert (quant.parse_quant("int4").accuracy_level, quant.parse_quant("int4").activation_passes) == (4, 1)
    assert quant.parse_quant("int8", 32, 0).activation_passes == 1
    with pytest.raises(ExportError, match="lm_head.weight: its input size 40"):
        quant.quantize(np.zeros((8, 40), np.float32), 4, 32, name="lm_head.weight")
    with pytest.raises(ExportError, match="NaN"):
        quant.quantize(np.full((2, 32), np.nan, np.float32), 4, 32, name="x")
    with pytest.raises(SystemExit):  # argparse rejects an unknown --quant choice
        main(["--source", tiny[2], "--out", out, "--quant", "int2"])
    assert quant.parse_quant("none") is None


def test_quantizer_edge_cases():
    from tribute_export import quant
    # all-zero, all-positive and all-negative blocks, and exact grid values round-trip well
    w = np.zeros((4, 64), np.float32)
    w[1] = np.linspace(0.1, 1.0, 64)
    w[2] = -np.linspace(0.1, 1.0, 64)
    w[3, :32] = np.arange(-8, 8, 0.5)
    for bits in (4, 8):
        b, s, z = quant.quantize(w, bits, 32)
        back = quant.dequantize(b, s, z, bits)
        np.testing.assert_array_equal(back[0], 0)
        step = 1.0 / ((1 << bits) - 1)
        assert np.abs(back[1:3] - w[1:3]).max() <= step / 2 + 1e-6
        np.testing.assert_allclose(back[3, :32], w[3, :32], atol=(15.5 / ((1 << bits) - 1)) / 2 + 1e-6)
        assert (quant.unpack(quant.pack(quant.unpack(b, bits), bits), bits) == quant.unpack(b, bits)).all()
