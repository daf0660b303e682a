"""Shared fixtures: a tiny random llama written as an HF safetensors dir and as a GGUF file,
an independent numpy forward pass, and ONNX Runtime helpers."""

import json
import math
import os
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
PKG_ROOT = os.path.dirname(HERE)
if PKG_ROOT not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, PKG_ROOT)

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def tiny_config(**kw):
    cfg = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
        "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 300,
        "max_position_embeddings": 256, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
        # llama3 scaling with a small original context so that it changes some frequencies
        "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                         "high_freq_factor": 4.0, "original_max_position_embeddings": 64},
        "tie_word_embeddings": False, "bos_token_id": 256, "eos_token_id": 257, "pad_token_id": 258,
    }
    cfg.update(kw)
    return cfg


def make_weights(cfg, seed=0, biases=False):
    import gguf
    rng = np.random.default_rng(seed)
    H, I, V = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    NH, KV = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    D = cfg.get("head_dim") or H // NH
    n = lambda *s, std=0.1: (rng.standard_normal(s) * std).astype(np.float32)  # noqa: E731
    w = {"model.embed_tokens.weight": n(V, H, std=0.5),
         "model.norm.weight": (1 + n(H)).astype(np.float32)}
    if not cfg.get("tie_word_embeddings"):
        w["lm_head.weight"] = n(V, H, std=0.2)
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        w[p + "input_layernorm.weight"] = (1 + n(H)).astype(np.float32)
        w[p + "post_attention_layernorm.weight"] = (1 + n(H)).astype(np.float32)
        w[p + "self_attn.q_proj.weight"] = n(NH * D, H, std=0.2)
        w[p + "self_attn.k_proj.weight"] = n(KV * D, H, std=0.2)
        w[p + "self_attn.v_proj.weight"] = n(KV * D, H)
        w[p + "self_attn.o_proj.weight"] = n(H, NH * D)
        w[p + "mlp.gate_proj.weight"] = n(I, H)
        w[p + "mlp.up_proj.weight"] = n(I, H)
        w[p + "mlp.down_proj.weight"] = n(H, I)
        if biases:
            w[p + "self_attn.q_proj.bias"] = n(NH * D)
            w[p + "self_attn.k_proj.bias"] = n(KV * D)
            w[p + "self_attn.v_proj.bias"] = n(KV * D)
    # layer 0's q_proj goes through Q8_0 so that the GGUF copy can carry it quantized, bit-exactly
    q = "model.layers.0.self_attn.q_proj.weight"
    t = gguf.GGMLQuantizationType.Q8_0
    w[q] = gguf.quants.dequantize(gguf.quants.quantize(w[q], t), t).astype(np.float32).reshape(w[q].shape)
    return w


def write_hf_dir(path, cfg, weights):
    from safetensors.numpy import save_file
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(cfg, f)
    save_file(weights, os.path.join(path, "model.safetensors"))
    return path


# ---------------------------------------------------------------------------------------------
# GGUF writer, as llama.cpp's convert_hf_to_gguf does it

def byte_vocab():
    from tribute_export.tokenizer import _bytes_to_unicode
    a = _bytes_to_unicode()
    return [a[i] for i in range(256)]


def quantize_q4_k(a):
    """A plain round-to-nearest Q4_K packer (the gguf package has none): w ≈ d·sc·q − dmin·m per
    32-value sub-block, sc and m 6-bit per sub-block, d and dmin fp16 per 256-value super-block."""
    a = np.asarray(a, np.float32)
    rows = a.shape[0]
    sub = a.reshape(-1, 8, 32)
    lo = np.minimum(sub.min(-1), 0)
    sub_scale, sub_min = (sub.max(-1) - lo) / 15, -lo
    d = (sub_scale.max(-1, keepdims=True) / 63).astype(np.float16)
    dmin = (sub_min.max(-1, keepdims=True) / 63).astype(np.float16)
    with np.errstate(divide="ignore", invalid="ignore"):
        sc = np.nan_to_num(np.round(sub_scale / d.astype(np.float32))).clip(0, 63).astype(np.uint8)
        m = np.nan_to_num(np.round(sub_min / dmin.astype(np.float32))).clip(0, 63).astype(np.uint8)
        step = d.astype(np.float32) * sc
        off = dmin.astype(np.float32) * m
        q = np.nan_to_num(np.round((sub + off[..., None]) / step[..., None])).clip(0, 15).astype(np.uint8)
    scales = np.zeros((sub.shape[0], 12), np.uint8)
    scales[:, 0:4] = (sc[:, :4] & 0x3F) | ((sc[:, 4:] >> 4) << 6)
    scales[:, 4:8] = (m[:, :4] & 0x3F) | ((m[:, 4:] >> 4) << 6)
    scales[:, 8:12] = (sc[:, 4:] & 0x0F) | ((m[:, 4:] & 0x0F) << 4)
    q = q.reshape(-1, 4, 2, 32)  # sub-blocks 2c and 2c+1 share 32 bytes: low and high nibbles
    qs = (q[:, :, 0] | (q[:, :, 1] << 4)).reshape(-1, 128)
    blocks = np.concatenate([d.view(np.uint8), dmin.view(np.uint8), scales, qs], axis=1)
    return blocks.reshape(rows, -1)


def gguf_bytes(a, qtype: str):
    """GGUFWriter.add_tensor's keyword arguments for `a` quantized to ggml type `qtype`."""
    import gguf
    t = gguf.GGMLQuantizationType[qtype]
    return {"tensor": quantize_q4_k(a) if qtype == "Q4_K" else gguf.quants.quantize(a, t), "raw_dtype": t}


def write_gguf(path, cfg, weights, qtype=None):
    """A llama GGUF of `weights`; with `qtype` every linear and the embedding table are stored in
    that ggml type (else float, except layer 0's q_proj in Q8_0)."""
    import gguf
    from tribute_export.sources import llama_permute
    L, H, NH, KV = cfg["num_hidden_layers"], cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    D = H // NH
    V = cfg["vocab_size"]
    w = gguf.GGUFWriter(path, "llama")
    w.add_block_count(L)
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(H)
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(NH)
    w.add_head_count_kv(KV)
    w.add_rope_freq_base(cfg["rope_theta"])
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_rope_dimension_count(D)
    w.add_vocab_size(V)
    # tokenizer: 256 byte tokens, 3 merges, 3 control tokens, unused padding
    merges = ["Ġ t", "h e", "Ġt he"]
    tokens = byte_vocab() + ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "Ġt", "he", "Ġthe"]
    types = [1] * 256 + [3, 3, 3, 1, 1, 1]
    while len(tokens) < V:
        tokens.append(f"<unused_{len(tokens)}>")
        types.append(5)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(256)
    w.add_eos_token_id(257)
    w.add_pad_token_id(258)
    w.add_add_bos_token(False)
    w.add_chat_template("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}")
    # llama3 rope scaling becomes a rope_freqs tensor in llama.cpp
    rs = cfg["rope_scaling"]
    base, factor = cfg["rope_theta"], rs["factor"]
    freqs = 1.0 / (base ** (np.arange(0, D, 2, dtype=np.float32) / D))
    low_wl = rs["original_max_position_embeddings"] / rs["low_freq_factor"]
    high_wl = rs["original_max_position_embeddings"] / rs["high_freq_factor"]
    factors = []
    for fr in freqs:
        wl = 2 * math.pi / fr
        if wl < high_wl:
            factors.append(1.0)
        elif wl > low_wl:
            factors.append(factor)
        else:
            smooth = (rs["original_max_position_embeddings"] / wl - rs["low_freq_factor"]) / (
                rs["high_freq_factor"] - rs["low_freq_factor"])
            factors.append(1 / ((1 - smooth) / factor + smooth))
    w.add_tensor("rope_freqs.weight", np.array(factors, dtype=np.float32))
    names = {"input_layernorm.weight": "attn_norm.weight", "post_attention_layernorm.weight": "ffn_norm.weight",
             "self_attn.q_proj.weight": "attn_q.weight", "self_attn.k_proj.weight": "attn_k.weight",
             "self_attn.v_proj.weight": "attn_v.weight", "self_attn.o_proj.weight": "attn_output.weight",
             "mlp.gate_proj.weight": "ffn_gate.weight", "mlp.up_proj.weight": "ffn_up.weight",
             "mlp.down_proj.weight": "ffn_down.weight"}
    if qtype:
        w.add_tensor("token_embd.weight", **gguf_bytes(weights["model.embed_tokens.weight"], qtype))
    else:
        w.add_tensor("token_embd.weight", weights["model.embed_tokens.weight"])
    w.add_tensor("output_norm.weight", weights["model.norm.weight"])
    if "lm_head.weight" in weights:
        if qtype:
            w.add_tensor("output.weight", **gguf_bytes(weights["lm_head.weight"], qtype))
        else:
            w.add_tensor("output.weight", weights["lm_head.weight"].astype(np.float16))  # F16 storage path
    for i in range(L):
        for hf, gg in names.items():
            a = weights[f"model.layers.{i}.{hf}"]
            if hf == "self_attn.q_proj.weight":
                a = llama_permute(a, NH)
            elif hf == "self_attn.k_proj.weight":
                a = llama_permute(a, KV)
            if qtype and not hf.endswith("norm.weight"):
                w.add_tensor(f"blk.{i}.{gg}", **gguf_bytes(a, qtype))
            elif i == 0 and hf == "self_attn.q_proj.weight":
                t = gguf.GGMLQuantizationType.Q8_0
                w.add_tensor(f"blk.{i}.{gg}", gguf.quants.quantize(a, t), raw_dtype=t)
            else:
                w.add_tensor(f"blk.{i}.{gg}", a)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


# ---------------------------------------------------------------------------------------------
# Independent numpy reference (Hugging Face llama semantics), one unpadded sequence

def ref_inv_freq(cfg, local=False):
    H, NH = cfg["hidden_size"], cfg["num_attention_heads"]
    D = cfg.get("head_dim") or H // NH
    base = cfg["rope_local_base_freq"] if local else cfg["rope_theta"]
    inv = 1.0 / (base ** (np.arange(0, D, 2, dtype=np.float64) / D))
    rs = None if local else cfg.get("rope_scaling")
    if rs and rs.get("rope_type") == "llama3":
        factor, lo, hi, old = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"], rs["original_max_position_embeddings"]
        out = []
        for f in inv:
            wl = 2 * math.pi / f
            if wl < old / hi:
                out.append(f)
            elif wl > old / lo:
                out.append(f / factor)
            else:
                s = (old / wl - lo) / (hi - lo)
                out.append((1 - s) * f / factor + s * f)
        inv = np.array(out)
    elif rs and rs.get("rope_type", rs.get("type")) == "linear":
        inv = inv / rs["factor"]
    elif rs and rs.get("rope_type", rs.get("type")) in ("longrope", "su"):  # Phi-3 within the original context
        inv = inv / np.asarray(rs["short_factor"], np.float64)
    return inv


def ref_rope_attention_factor(cfg):
    rs = cfg.get("rope_scaling") or {}
    if rs.get("rope_type", rs.get("type")) not in ("longrope", "su"):
        return 1.0
    orig = cfg["original_max_position_embeddings"]
    factor = cfg["max_position_embeddings"] / orig
    return math.sqrt(1 + math.log(factor) / math.log(orig)) if factor > 1 else 1.0


def ref_layer_types(cfg):
    """Gemma 3: "sliding_attention" / "full_attention" per layer (every `sliding_window_pattern`-th is full)."""
    if cfg.get("layer_types"):
        return cfg["layer_types"]
    n = cfg.get("sliding_window_pattern", 6)
    return ["full_attention" if (i + 1) % n == 0 else "sliding_attention" for i in range(cfg["num_hidden_layers"])]


def ref_forward(cfg, w, ids, lora=None, dtype=np.float64):
    """ids: list[int] -> logits [S, V] (float64). lora: {module: (A [r,in], B [out,r], scale)}.

    Hugging Face semantics for llama/qwen2 and, by `model_type`, qwen3 (q/k norms) and gemma3_text
    (scaled embeddings, (1 + w) norms unless cfg["_norm_offset"] says otherwise, q/k norms, sandwich
    norms, GELU-tanh, query_pre_attn_scalar, sliding-window layers with their own RoPE base)."""
    H, NH, KV = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    D = cfg.get("head_dim") or H // NH
    eps = cfg["rms_norm_eps"]
    gemma = cfg["model_type"] == "gemma3_text"
    qk_norm = gemma or cfg["model_type"] == "qwen3"
    offset = cfg.get("_norm_offset", 1.0 if gemma else 0.0)
    scale = cfg.get("query_pre_attn_scalar", D) ** -0.5 if gemma else 1 / math.sqrt(D)
    types = ref_layer_types(cfg) if gemma else ["full_attention"] * cfg["num_hidden_layers"]
    if cfg["model_type"] == "phi3":  # fused q/k/v and gate/up; every layer sliding when a window is set
        w = dict(w)
        I, q_rows, kv_rows = cfg["intermediate_size"], NH * D, KV * D
        for i in range(cfg["num_hidden_layers"]):
            p = f"model.layers.{i}."
            qkv, gu = w.pop(p + "self_attn.qkv_proj.weight"), w.pop(p + "mlp.gate_up_proj.weight")
            w[p + "self_attn.q_proj.weight"] = qkv[:q_rows]
            w[p + "self_attn.k_proj.weight"] = qkv[q_rows:q_rows + kv_rows]
            w[p + "self_attn.v_proj.weight"] = qkv[q_rows + kv_rows:]
            w[p + "mlp.gate_proj.weight"], w[p + "mlp.up_proj.weight"] = gu[:I], gu[I:]
        if cfg.get("sliding_window"):
            types = ["sliding_attention"] * cfg["num_hidden_layers"]
    lora = lora or {}
    g = lambda n: np.asarray(w[n], dtype)  # noqa: E731

    def lin(x, mod):
        W = g(mod + ".weight")
        if mod in lora:
            A, B, s = lora[mod]
            W = W + s * (B.astype(np.float64) @ A.astype(np.float64))
        y = x @ W.T
        if mod + ".bias" in w:
            y = y + g(mod + ".bias")
        return y

    def norm(x, n):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * (g(n) + offset)

    S = len(ids)
    pos = np.arange(S)
    tables = {}
    for local in (False, True) if gemma else (False,):
        ang = pos[:, None] * ref_inv_freq(cfg, local)[None, :]
        af = 1.0 if local else ref_rope_attention_factor(cfg)
        tables[local] = ((np.cos(np.concatenate([ang, ang], -1)) * af).astype(dtype),
                         (np.sin(np.concatenate([ang, ang], -1)) * af).astype(dtype))

    def rope(x, local):  # [heads, S, D]
        cos, sin = tables[local]
        x1, x2 = x[..., : D // 2], x[..., D // 2:]
        return x * cos + np.concatenate([-x2, x1], -1) * sin

    x = g("model.embed_tokens.weight")[ids]
    if gemma:
        x = x * math.sqrt(H)
    # every table in `dtype`: a float64 one would promote the activations, and then each weight
    # they meet is copied to float64 (Gemma 3's 262k x 640 head: seconds per call)
    causal = np.triu(np.full((S, S), -np.inf, dtype), 1)
    # sliding layers: query i sees keys j with i - window < j <= i
    window = cfg.get("sliding_window") or S + 1
    far = np.arange(S)[:, None] - np.arange(S)[None, :] >= window
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        sliding = types[i] == "sliding_attention"
        local_rope = sliding and gemma
        h = norm(x, p + "input_layernorm.weight")
        q = lin(h, p + "self_attn.q_proj").reshape(S, NH, D).transpose(1, 0, 2)
        k = lin(h, p + "self_attn.k_proj").reshape(S, KV, D).transpose(1, 0, 2)
        v = lin(h, p + "self_attn.v_proj").reshape(S, KV, D).transpose(1, 0, 2)
        if qk_norm:
            q, k = norm(q, p + "self_attn.q_norm.weight"), norm(k, p + "self_attn.k_norm.weight")
        q, k = rope(q, local_rope), rope(k, local_rope)
        k = np.repeat(k, NH // KV, axis=0)
        v = np.repeat(v, NH // KV, axis=0)
        mask = np.where(far, -np.inf, causal) if sliding else causal
        sc = q @ k.transpose(0, 2, 1) * scale + mask
        sc = np.exp(sc - sc.max(-1, keepdims=True))
        sc /= sc.sum(-1, keepdims=True)
        o = (sc @ v).transpose(1, 0, 2).reshape(S, NH * D)
        o = lin(o, p + "self_attn.o_proj")
        if gemma:
            o = norm(o, p + "post_attention_layernorm.weight")
        x = x + o
        h = norm(x, p + ("pre_feedforward_layernorm.weight" if gemma else "post_attention_layernorm.weight"))
        gt = lin(h, p + "mlp.gate_proj")
        if gemma:  # gelu_pytorch_tanh
            act = 0.5 * gt * (1 + np.tanh(math.sqrt(2 / math.pi) * (gt + 0.044715 * gt ** 3)))
        else:
            act = gt / (1 + np.exp(-gt))
        m = lin(act * lin(h, p + "mlp.up_proj"), p + "mlp.down_proj")
        if gemma:
            m = norm(m, p + "post_feedforward_layernorm.weight")
        x = x + m
    x = norm(x, "model.norm.weight")
    head = g("lm_head.weight") if "lm_head.weight" in w else g("model.embed_tokens.weight")
    return x @ head.T


# ---------------------------------------------------------------------------------------------
# ONNX Runtime helpers

class Runner:
    def __init__(self, model_dir):
        import onnxruntime as ort
        self.dir = model_dir
        with open(os.path.join(model_dir, "tribute.json")) as f:
            self.tj = json.load(f)
        so = ort.SessionOptions()
        so.log_severity_level = 3
        so.intra_op_num_threads = 1
        self.sess = ort.InferenceSession(os.path.join(model_dir, "model.onnx"), so,
                                         providers=["CPUExecutionProvider"])
        self.out_names = [o.name for o in self.sess.get_outputs()]
        types = {"tensor(float)": np.float32, "tensor(float16)": np.float16}
        takes = list(self.sess.get_inputs()) + list(self.sess.get_overridable_initializers())  # LoRA inputs
        self.float_inputs = {i.name: types[i.type] for i in takes if i.type in types}

    def as_input(self, name, value):
        """`value` in the float type input `name` takes (float16 LoRA inputs and caches of
        `--compute fp16` exports are fed from the tests' float32 arrays)."""
        want = self.float_inputs.get(name)
        v = np.asarray(value)
        return v.astype(want) if want is not None and v.dtype != want else value

    def empty_past(self, batch):
        KV, D = self.tj["num_kv_heads"], self.tj["head_dim"]
        return {f"past_key_values.{i}.{k}": np.zeros((batch, KV, 0, D), np.float32)
                for i in range(self.tj["num_layers"]) for k in ("key", "value")}

    def run(self, ids, mask=None, pos=None, past=None, extra=None, run_options=None):
        ids = np.asarray(ids, np.int64)
        if ids.ndim == 1:
            ids = ids[None]
        B, S = ids.shape
        past = past if past is not None else self.empty_past(B)
        P = next(iter(past.values())).shape[2]
        if mask is None:
            mask = np.ones((B, P + S), np.int64)
        if pos is None:
            pos = np.broadcast_to(np.arange(P, P + S, dtype=np.int64), (B, S)).copy()
        feed = {"input_ids": ids, "attention_mask": np.asarray(mask, np.int64),
                "position_ids": np.asarray(pos, np.int64)}
        feed.update(past)
        feed.update(extra or {})
        feed = {k: self.as_input(k, v) for k, v in feed.items()}
        res = dict(zip(self.out_names, self.sess.run(None, feed, run_options)))
        present = {n.replace("present.", "past_key_values.", 1): v for n, v in res.items() if n.startswith("present.")}
        return res["logits"], present


def require(module: str, why: str):
    """The module, or a skip where it is not installed; under CI a failure (`make test` installs it)."""
    import importlib
    try:
        return importlib.import_module(module)
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail(f"{module} is not installed ({why})")
        pytest.skip(f"{module} is not installed")


def export(argv):
    from tribute_export.cli import main
    rc = main(argv)
    assert rc == 0, f"export failed: {argv}"


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """(cfg, weights, hf_dir, exported_dir) for the tiny llama, fp32, all LoRA targets."""
    root = tmp_path_factory.mktemp("tiny")
    cfg = tiny_config()
    w = make_weights(cfg, seed=1)
    hf = write_hf_dir(str(root / "hf"), cfg, w)
    out = str(root / "onnx")
    export(["--source", hf, "--out", out])
    return cfg, w, hf, out


@pytest.fixture(scope="session")
def tiny_runner(tiny):
    return Runner(tiny[3])
