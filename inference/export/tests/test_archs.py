"""Gemma 3 and Qwen3: tiny random models exported and checked against conftest's independent numpy
forward (`ref_forward`), from safetensors and from GGUF, with the graph's full input contract
(KV cache, left padding, logits_to_keep, LoRA inputs and lora_mask)."""

import json
import os

import numpy as np
import pytest

from conftest import Runner, export, make_weights, ref_forward, write_hf_dir

IDS = [5, 17, 260, 99, 3, 250, 42, 7, 128, 64, 1, 77, 12, 200]  # longer than the sliding window


def rel_err(a, b):
    return float(np.abs(a - b).max() / (np.abs(b).max() + 1e-9))


def gemma3_config(**kw):
    cfg = {
        "architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text",
        "hidden_activation": "gelu_pytorch_tanh", "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 3, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 32,
        "vocab_size": 300, "max_position_embeddings": 256, "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0, "rope_local_base_freq": 10000.0, "query_pre_attn_scalar": 24,
        "sliding_window": 4, "layer_types": ["sliding_attention", "full_attention", "sliding_attention"],
        "rope_scaling": {"rope_type": "linear", "factor": 2.0},  # global layers only
        "final_logit_softcapping": None, "attn_logit_softcapping": None,
        "tie_word_embeddings": True, "bos_token_id": 2, "eos_token_id": 1, "pad_token_id": 0,
    }
    cfg.update(kw)
    return cfg


def qwen3_config():
    return {"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "hidden_act": "silu",
            "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
            "num_key_value_heads": 2, "head_dim": 32, "vocab_size": 300, "max_position_embeddings": 256,
            "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "tie_word_embeddings": False,
            "attention_bias": False, "bos_token_id": 256, "eos_token_id": 257}


def arch_weights(cfg, seed):
    """make_weights' llama tensors plus q/k norms (and Gemma's sandwich norms), in HF conventions:
    Gemma's norm weights are stored as w with the gain 1 + w."""
    w = make_weights(cfg, seed=seed)
    rng = np.random.default_rng(seed + 100)
    D, H = cfg["head_dim"], cfg["hidden_size"]
    gemma = cfg["model_type"] == "gemma3_text"
    for name in list(w):
        if gemma and name.endswith("norm.weight"):
            w[name] = (rng.standard_normal(w[name].shape) * 0.3).astype(np.float32)
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        base = 0.0 if gemma else 1.0
        for n in ("q_norm", "k_norm"):
            w[p + f"self_attn.{n}.weight"] = (base + rng.standard_normal(D) * 0.3).astype(np.float32)
        if gemma:
            for n in ("pre_feedforward_layernorm", "post_feedforward_layernorm"):
                w[p + f"{n}.weight"] = (rng.standard_normal(H) * 0.3).astype(np.float32)
    return w


@pytest.fixture(scope="module")
def gemma(tmp_path_factory):
    root = tmp_path_factory.mktemp("gemma3")
    cfg = gemma3_config()
    w = arch_weights(cfg, seed=3)
    hf = write_hf_dir(str(root / "hf"), cfg, w)
    out = str(root / "onnx")
    export(["--source", hf, "--out", out])
    return cfg, w, hf, out, Runner(out)


def test_gemma3_prefill_matches_numpy(gemma):
    cfg, w, _, out, r = gemma
    logits, present = r.run(IDS)
    want = ref_forward(cfg, w, IDS)
    assert rel_err(logits[0], want) < 1e-4, rel_err(logits[0], want)
    assert present["past_key_values.2.key"].shape == (1, 2, len(IDS), 32)
    # the pieces that differ from llama each matter: without the sliding window the answer changes
    full = ref_forward(dict(cfg, layer_types=["full_attention"] * 3), w, IDS)
    assert rel_err(full, want) > 1e-3
    with open(os.path.join(out, "tribute.json")) as f:
        tj = json.load(f)
    assert (tj["architecture"], tj["model_type"]) == ("llama", "gemma3")
    with open(os.path.join(out, "config.json")) as f:
        assert json.load(f)["model_type"] == "gemma3_text"


def test_gemma3_incremental_decode_and_padding(gemma):
    r = gemma[4]
    full, _ = r.run(IDS)
    logits, past = r.run(IDS[:3])
    for t in range(3, len(IDS)):  # one token at a time past the window
        logits, past = r.run([IDS[t]], past=past)
        np.testing.assert_allclose(logits[0, 0], full[0, t], atol=1e-5, rtol=1e-4)
    a, b = IDS[:6], IDS[1:13]
    pad = len(b) - len(a)
    ids = np.array([[0] * pad + a, b], np.int64)
    mask = np.array([[0] * pad + [1] * len(a), [1] * len(b)], np.int64)
    pos = np.clip(np.cumsum(mask, 1) - 1, 0, None)
    logits, past = r.run(ids, mask=mask, pos=pos)
    np.testing.assert_allclose(logits[0, pad:], r.run(a)[0][0], atol=1e-5, rtol=1e-4)
    np.testing.assert_allclose(logits[1], r.run(b)[0][0], atol=1e-5, rtol=1e-4)
    step, _ = r.run(np.array([[9], [8]]), mask=np.concatenate([mask, np.ones((2, 1), np.int64)], 1),
                    pos=pos[:, -1:] + 1, past=past)
    np.testing.assert_allclose(step[0, 0], r.run(a + [9])[0][0, -1], atol=1e-5, rtol=1e-4)
    np.testing.assert_allclose(step[1, 0], r.run(b + [8])[0][0, -1], atol=1e-5, rtol=1e-4)


def test_gemma3_logits_to_keep_and_lora(gemma):
    cfg, w, _, _, r = gemma
    full, _ = r.run(IDS)
    last, _ = r.run(IDS, extra={"logits_to_keep": np.array([2], np.int64)})
    np.testing.assert_allclose(last[0], full[0, -2:], atol=1e-6)
    rng = np.random.default_rng(5)
    mod = "model.layers.1.mlp.down_proj"
    A = (rng.standard_normal((3, 128)) * 0.3).astype(np.float32)
    B = (rng.standard_normal((64, 3)) * 0.3).astype(np.float32)
    feed = {mod + ".lora_A": np.ascontiguousarray(A.T), mod + ".lora_B": np.ascontiguousarray(B.T)}
    logits, _ = r.run(IDS, extra=feed)
    assert rel_err(logits[0], ref_forward(cfg, w, IDS, lora={mod: (A, B, 1.0)})) < 1e-4
    # per-row lora_mask (every module's rank axis as wide as the mask): row 0 adapted, row 1 not
    for m in r.tj["lora"]["modules"]:
        feed.setdefault(m["a"], np.zeros((m["in_features"], 3), np.float32))
        feed.setdefault(m["b"], np.zeros((3, m["out_features"]), np.float32))
    mask = np.array([[[1, 1, 1]], [[0, 0, 0]]], np.float32)
    both, _ = r.run([IDS, IDS], extra=dict(feed, lora_mask=mask))
    np.testing.assert_allclose(both[0], logits[0], atol=1e-5, rtol=1e-4)
    np.testing.assert_allclose(both[1], full[0], atol=1e-5, rtol=1e-4)


def write_gemma3_gguf(path, cfg, w):
    """A gemma3 GGUF as llama.cpp's converter writes one: norms stored as 1 + w, no Q/K permutation,
    a SentencePiece ("llama") vocabulary with scores, layer 0's q in Q8_0 and one FFN matrix in Q5_0."""
    import gguf
    from conftest import gguf_bytes
    L, H = cfg["num_hidden_layers"], cfg["hidden_size"]
    g = gguf.GGUFWriter(path, "gemma3")
    g.add_block_count(L)
    g.add_context_length(cfg["max_position_embeddings"])
    g.add_embedding_length(H)
    g.add_feed_forward_length(cfg["intermediate_size"])
    g.add_head_count(cfg["num_attention_heads"])
    g.add_head_count_kv(cfg["num_key_value_heads"])
    g.add_key_length(cfg["head_dim"])
    g.add_value_length(cfg["head_dim"])
    g.add_rope_freq_base(cfg["rope_theta"])
    g.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    g.add_sliding_window(cfg["sliding_window"])
    g.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
    g.add_rope_scaling_factor(cfg["rope_scaling"]["factor"])
    g.add_uint32("gemma3.attention.sliding_window_pattern", 2)  # layers 0, 2 sliding; 1 global
    pieces = ["<pad>", "<eos>", "<bos>", "<unk>"] + [f"<0x{i:02X}>" for i in range(256)] + \
        ["▁", "t", "h", "e", "▁t", "he", "▁the", "<end_of_turn>"]
    types = [3, 3, 3, 2] + [6] * 256 + [1] * 7 + [3]
    scores = [0.0] * 260 + [-1.0, -2.0, -2.0, -2.0, -3.0, -4.0, -3.5, 0.0]
    while len(pieces) < cfg["vocab_size"]:
        pieces.append(f"<unused{len(pieces)}>")
        types.append(5)
        scores.append(0.0)
    g.add_tokenizer_model("llama")
    g.add_token_list(pieces)
    g.add_token_types(types)
    g.add_token_scores(scores)
    g.add_bos_token_id(2)
    g.add_eos_token_id(1)
    g.add_unk_token_id(3)
    g.add_pad_token_id(0)
    g.add_add_bos_token(True)
    g.add_add_space_prefix(False)
    g.add_tensor("token_embd.weight", w["model.embed_tokens.weight"])
    g.add_tensor("output_norm.weight", w["model.norm.weight"] + 1)
    names = {"input_layernorm": "attn_norm", "self_attn.q_norm": "attn_q_norm", "self_attn.k_norm": "attn_k_norm",
             "post_attention_layernorm": "post_attention_norm", "pre_feedforward_layernorm": "ffn_norm",
             "post_feedforward_layernorm": "post_ffw_norm", "self_attn.q_proj": "attn_q",
             "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
             "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}
    for i in range(L):
        for hf, gg in names.items():
            a = w[f"model.layers.{i}.{hf}.weight"]
            if "norm" in hf:
                g.add_tensor(f"blk.{i}.{gg}.weight", a + 1)
            elif i == 0 and hf == "self_attn.q_proj":
                t = gguf.GGMLQuantizationType.Q8_0
                g.add_tensor(f"blk.{i}.{gg}.weight", gguf.quants.quantize(a, t), raw_dtype=t)
            elif i == 1 and hf == "mlp.gate_proj":
                g.add_tensor(f"blk.{i}.{gg}.weight", **gguf_bytes(a, "Q5_0"))
            else:
                g.add_tensor(f"blk.{i}.{gg}.weight", a)
    g.write_header_to_file()
    g.write_kv_data_to_file()
    g.write_tensors_to_file()
    g.close()


def test_gemma3_gguf_matches_numpy(gemma, tmp_path):
    import gguf
    cfg, w = gemma[0], dict(gemma[1])
    # the reference sees exactly what the GGUF stores (layer 1's gate_proj is Q5_0 there)
    path = str(tmp_path / "tiny-gemma3.gguf")
    write_gemma3_gguf(path, cfg, w)
    t = next(t for t in gguf.GGUFReader(path).tensors if t.name == "blk.1.ffn_gate.weight")
    w["model.layers.1.mlp.gate_proj.weight"] = gguf.quants.dequantize(t.data, t.tensor_type).reshape(128, 64)
    out = str(tmp_path / "onnx")
    export(["--source", path, "--out", out])
    r = Runner(out)
    logits, _ = r.run(IDS)
    # llama.cpp's Gemma 3 (but 27B) scales queries by 1/sqrt(head_dim): GGUF has no query_pre_attn_scalar
    assert rel_err(logits[0], ref_forward(dict(cfg, query_pre_attn_scalar=32), w, IDS)) < 1e-4
    with open(os.path.join(out, "tribute.json")) as f:
        tj = json.load(f)
    assert tj["eos_token_ids"] == [1, 267]  # <eos> and <end_of_turn>
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(os.path.join(out, "tokenizer.json"))
    enc = tok.encode("the the th\n")  # merges by score: ▁t, then he, then ▁the; \n by byte fallback
    assert enc.tokens == ["<bos>", "t", "he", "▁the", "▁t", "h", "<0x0A>"], enc.tokens
    assert tok.decode(enc.ids, skip_special_tokens=True) == "the the th\n"


def test_qwen3_matches_numpy(tmp_path):
    cfg = qwen3_config()
    w = arch_weights(cfg, seed=4)
    hf = write_hf_dir(str(tmp_path / "hf"), cfg, w)
    out = str(tmp_path / "onnx")
    export(["--source", hf, "--out", out])
    r = Runner(out)
    logits, _ = r.run(IDS)
    want = ref_forward(cfg, w, IDS)
    assert rel_err(logits[0], want) < 1e-4
    assert rel_err(ref_forward(dict(cfg, model_type="qwen2"), w, IDS), want) > 1e-3  # the q/k norms matter
    full, _ = r.run(IDS)
    logits, past = r.run(IDS[:5])
    logits, _ = r.run(IDS[5:], past=past)
    np.testing.assert_allclose(logits[0], full[0, 5:], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("shape", ["tiny-gemma3", "tiny-qwen3"])
def test_random_shapes(shape, tmp_path):
    out = str(tmp_path / shape)
    export(["--random", shape, "--out", out, "--quant", "int4", "--block-size", "32"])
    r = Runner(out)
    logits, _ = r.run([1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
    assert np.isfinite(logits).all()


def phi3_config():
    half = 8  # head_dim 16 / 2
    return {"architectures": ["Phi3ForCausalLM"], "model_type": "phi3", "hidden_act": "silu",
            "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
            "num_key_value_heads": 2, "vocab_size": 300, "max_position_embeddings": 512,
            "original_max_position_embeddings": 128, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
            "rope_scaling": {"type": "longrope", "short_factor": [1.0 + 0.3 * j for j in range(half)],
                             "long_factor": [2.0 + j for j in range(half)]},
            "sliding_window": 6, "partial_rotary_factor": 1.0, "tie_word_embeddings": False,
            "bos_token_id": 256, "eos_token_id": 257}


def phi3_weights(cfg, seed):
    """make_weights' tensors with q/k/v and gate/up stored fused, as Phi-3 checkpoints are."""
    w = make_weights(cfg, seed=seed)
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        w[p + "self_attn.qkv_proj.weight"] = np.concatenate(
            [w.pop(p + f"self_attn.{t}_proj.weight") for t in "qkv"])
        w[p + "mlp.gate_up_proj.weight"] = np.concatenate([w.pop(p + "mlp.gate_proj.weight"),
                                                           w.pop(p + "mlp.up_proj.weight")])
    return w


def test_phi3_fused_longrope_matches_numpy(tmp_path):
    cfg = phi3_config()
    w = phi3_weights(cfg, seed=6)
    hf = write_hf_dir(str(tmp_path / "hf"), cfg, w)
    out = str(tmp_path / "onnx")
    # tables within the original context (128): the short factors, exactly as Hugging Face there
    export(["--source", hf, "--out", out, "--context-length", "128"])
    r = Runner(out)
    logits, _ = r.run(IDS)
    want = ref_forward(cfg, w, IDS)
    assert rel_err(logits[0], want) < 1e-4, rel_err(logits[0], want)
    assert rel_err(ref_forward(dict(cfg, sliding_window=None), w, IDS), want) > 1e-3  # the window matters
    assert len(r.tj["lora"]["modules"]) == 2 * 7  # the fused matrices keep per-projection LoRA inputs
    logits, past = r.run(IDS[:5])
    for t in range(5, len(IDS)):
        logits, past = r.run([IDS[t]], past=past)
        np.testing.assert_allclose(logits[0, 0], want[t], atol=1e-4, rtol=1e-3)


def test_gemma3_int8_close_to_fp32(gemma, tmp_path):
    """The quantized path (MatMulNBits linears, GatherBlockQuantized embeddings, then the √hidden scale)."""
    out = str(tmp_path / "int8")
    export(["--source", gemma[2], "--out", out, "--quant", "int8", "--accuracy-level", "0"])
    q, _ = Runner(out).run(IDS)
    f, _ = gemma[4].run(IDS)
    assert rel_err(q[0], f[0]) < 2e-2, rel_err(q[0], f[0])
