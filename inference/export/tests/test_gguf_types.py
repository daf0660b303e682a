"""GGUF tensor types: a tiny llama whose linears and embedding table are stored in each ggml type
exports to a float graph that computes the numpy reference on dequantize(quantize(W)); the K-quants
gguf-py cannot quantize load from well-formed random blocks; an unsupported type or architecture
fails with the supported list in the message."""

import os

import numpy as np
import pytest

from conftest import Runner, export, gguf_bytes, make_weights, ref_forward, tiny_config, write_gguf
from test_adapter_and_errors import assert_clean_failure, run_export_cli
from test_tiny import IDS, rel_err

# Q4_K is covered by test_gguf_quant.py (whole model) and the Gemma 3 270M GGUF (Q4_K, Q6_K)
QUANTIZED = ["F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"]
LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def stored(a, qtype):
    """What a GGUF of type `qtype` holds for `a`, as fp32 (gguf-py's quantizer and dequantizer)."""
    import gguf
    t = gguf.GGMLQuantizationType[qtype]
    return gguf.quants.dequantize(gguf_bytes(a, qtype)["tensor"], t).reshape(a.shape).astype(np.float32)


@pytest.mark.parametrize("qtype", QUANTIZED)
def test_quantized_gguf_exports_to_reference(tmp_path, qtype):
    cfg = tiny_config()
    w = make_weights(cfg, seed=21)
    path = write_gguf(str(tmp_path / f"{qtype}.gguf"), cfg, w, qtype=qtype)
    ref = dict(w)
    for name in list(ref):  # the quantization grid does not care about llama.cpp's Q/K row order
        if name.endswith("embed_tokens.weight") or name == "lm_head.weight" or \
                any(name.endswith(f"{m}.weight") for m in LINEARS):
            ref[name] = stored(w[name], qtype)
    out = str(tmp_path / "onnx")
    export(["--source", path, "--out", out, "--lora-targets", "none"])
    logits, _ = Runner(out).run(IDS)
    want = ref_forward(cfg, ref, IDS)
    assert rel_err(logits[0], want) < 1e-4, rel_err(logits[0], want)


def k_quant_blocks(qtype, rows, k, rng):
    """Random blocks of a K-quant with finite fp16 super-block scales (where each layout keeps them)."""
    import gguf
    block, size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[qtype]]
    raw = rng.integers(0, 256, (rows, k // block, size), dtype=np.uint8)
    scale_at = {"Q2_K": [80, 82], "Q3_K": [108], "Q5_K": [0, 2], "Q6_K": [208]}[qtype]
    for at in scale_at:
        raw[..., at:at + 2] = np.array([0.01], np.float16).view(np.uint8)
    return raw.reshape(rows, -1)


@pytest.mark.parametrize("qtype", ["Q2_K", "Q3_K", "Q5_K", "Q6_K"])
def test_k_quants_load(tmp_path, qtype):
    import gguf
    from tribute_export.sources import GGUFSource
    cfg = tiny_config(intermediate_size=256)
    w = make_weights(cfg, seed=22)
    raw = k_quant_blocks(qtype, 64, 256, np.random.default_rng(3))
    path = write_gguf(str(tmp_path / "k.gguf"), cfg, w)
    # the same model with layer 1's down_proj replaced by the raw blocks
    patched = str(tmp_path / f"{qtype}.gguf")
    r = gguf.GGUFReader(path)
    g = gguf.GGUFWriter(patched, "llama")
    for key, field in r.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        val = field.contents()
        vtype = field.types[0]
        if vtype == gguf.GGUFValueType.ARRAY:
            g.add_key_value(key, val, vtype, sub_type=field.types[-1])
        else:
            g.add_key_value(key, val, vtype)
    for t in r.tensors:
        if t.name == "blk.1.ffn_down.weight":
            g.add_tensor(t.name, raw, raw_dtype=gguf.GGMLQuantizationType[qtype])
        else:
            g.add_tensor(t.name, np.array(t.data), raw_dtype=t.tensor_type)
    g.write_header_to_file()
    g.write_kv_data_to_file()
    g.write_tensors_to_file()
    g.close()
    src = GGUFSource(patched)
    src.spec()
    got = src.weights().get("model.layers.1.mlp.down_proj.weight")
    want = gguf.quants.dequantize(raw, gguf.GGMLQuantizationType[qtype]).reshape(64, 256)
    assert got.shape == (64, 256) and np.isfinite(got).all() and np.abs(got).max() > 0
    np.testing.assert_array_equal(got, want)
    out = str(tmp_path / "onnx")
    export(["--source", patched, "--out", out, "--lora-targets", "none"])
    ref = dict(w, **{"model.layers.1.mlp.down_proj.weight": want})
    ref["lm_head.weight"] = w["lm_head.weight"].astype(np.float16).astype(np.float32)  # write_gguf stores it F16
    logits, _ = Runner(out).run(IDS)
    assert rel_err(logits[0], ref_forward(cfg, ref, IDS)) < 1e-4


def test_unsupported_tensor_type_names_the_supported_list(tmp_path):
    import gguf
    cfg = tiny_config(intermediate_size=256)
    w = make_weights(cfg, seed=23)
    path = str(tmp_path / "tq.gguf")
    g = gguf.GGUFWriter(path, "llama")
    g.add_block_count(1)
    t = gguf.GGMLQuantizationType.TQ2_0
    g.add_tensor("token_embd.weight", gguf.quants.quantize(np.zeros((300, 256), np.float32), t), raw_dtype=t)
    g.write_header_to_file()
    g.write_kv_data_to_file()
    g.write_tensors_to_file()
    g.close()
    out = str(tmp_path / "out")
    res = run_export_cli("--source", path, "--out", out)
    assert_clean_failure(res, out, "TQ2_0", "supported: F32, F16, BF16, Q4_0", "Q6_K")
    del w


def test_unsupported_architecture_names_the_supported_list(tmp_path):
    import gguf
    path = str(tmp_path / "phi2.gguf")
    g = gguf.GGUFWriter(path, "phi2")
    g.add_block_count(1)
    g.add_tensor("token_embd.weight", np.zeros((8, 4), np.float32))
    g.write_header_to_file()
    g.write_kv_data_to_file()
    g.write_tensors_to_file()
    g.close()
    out = str(tmp_path / "out")
    res = run_export_cli("--source", path, "--out", out)
    assert_clean_failure(res, out, "phi2", "gemma3, llama, mistral, qwen2, qwen3")
