"""What Gemma 3 and Qwen3 add to the llama decoder, read from a Hugging Face config or GGUF metadata.

The graph stays one llama-shaped decoder with the same inputs and outputs; these settings switch on
the pieces that differ (see `Spec`): q/k RMSNorms, Gemma's sandwich norms and scaled embeddings,
GELU-tanh, a query scale other than 1/sqrt(head_dim), and sliding-window layers with their own
RoPE base.
"""

from __future__ import annotations

import math
from typing import List, Optional

from . import ExportError

SLIDING, FULL = "sliding_attention", "full_attention"

# llama.cpp's Gemma 3 defaults when the GGUF does not say: every 6th layer is global, local RoPE base 10k
GEMMA3_SWA_PATTERN = 6
GEMMA3_LOCAL_ROPE_BASE = 10000.0

# GGUF tensor names (after `blk.N.`) that differ from llama's meaning, per architecture
GGUF_EXTRA_TENSORS = {
    "qwen3": {
        "attn_q_norm.weight": "self_attn.q_norm.weight",
        "attn_k_norm.weight": "self_attn.k_norm.weight",
    },
    "gemma3": {
        "attn_q_norm.weight": "self_attn.q_norm.weight",
        "attn_k_norm.weight": "self_attn.k_norm.weight",
        "post_attention_norm.weight": "post_attention_layernorm.weight",
        "ffn_norm.weight": "pre_feedforward_layernorm.weight",
        "post_ffw_norm.weight": "post_feedforward_layernorm.weight",
    },
}


def gemma3_layer_types(num_layers: int, pattern: int) -> List[str]:
    """Gemma 3's interleaving: layers i with (i + 1) % pattern == 0 are global, the rest sliding."""
    return [FULL if (i + 1) % pattern == 0 else SLIDING for i in range(num_layers)]


def unwrap_hf_config(cfg: dict) -> dict:
    """A multimodal Gemma 3 config keeps the language model's settings under `text_config`."""
    if cfg.get("model_type") == "gemma3" and isinstance(cfg.get("text_config"), dict):
        inner = dict(cfg["text_config"])
        inner["model_type"] = "gemma3_text"
        for k in ("bos_token_id", "eos_token_id", "pad_token_id", "_name_or_path"):
            inner.setdefault(k, cfg.get(k))
        return inner
    return cfg


def apply_hf_config(spec, cfg: dict, where: str):
    """Fills the Gemma 3 / Qwen3 / Phi-3 fields of `spec` from a Hugging Face config."""
    mt = cfg.get("model_type")
    if mt == "phi3":
        _phi3_rope(spec, cfg, where)
        window = cfg.get("sliding_window")
        if window and window < spec.context_length:  # Phi-3 mini: every layer sees 2047 keys back
            spec.sliding_window = int(window)
            spec.layer_types = [SLIDING] * spec.num_layers
        return
    if mt == "qwen3":
        spec.qk_norm = True
        if cfg.get("use_sliding_window"):
            raise ExportError(f"qwen3 with use_sliding_window=true is not supported ({where})")
        return
    if mt != "gemma3_text":
        return
    for key in ("final_logit_softcapping", "attn_logit_softcapping"):
        if cfg.get(key) is not None:
            raise ExportError(f"{where}: {key}={cfg[key]} is not supported (Gemma 3 has none; Gemma 2 does)")
    act = cfg.get("hidden_activation") or cfg.get("hidden_act") or "gelu_pytorch_tanh"
    if act not in ("gelu_pytorch_tanh", "gelu_tanh"):
        raise ExportError(f"unsupported hidden_activation {act!r} in {where} (Gemma 3: gelu_pytorch_tanh)")
    spec.hidden_act = "gelu_tanh"
    spec.qk_norm = True
    spec.sandwich_norms = True
    spec.norm_offset = 1.0  # Gemma's RMSNorm multiplies by (1 + w); llama.cpp's GGUFs store 1 + w already
    spec.embed_scale = math.sqrt(spec.hidden_size)
    spec.query_scale = float(cfg.get("query_pre_attn_scalar") or spec.head_dim) ** -0.5
    spec.sliding_window = cfg.get("sliding_window")
    types = cfg.get("layer_types")
    if types is None:
        types = gemma3_layer_types(spec.num_layers, int(cfg.get("sliding_window_pattern") or GEMMA3_SWA_PATTERN))
    if len(types) != spec.num_layers or any(t not in (SLIDING, FULL) for t in types):
        raise ExportError(f"{where}: layer_types must list {spec.num_layers} of {SLIDING!r}/{FULL!r}")
    spec.layer_types = list(types)
    spec.rope_local_theta = float(cfg.get("rope_local_base_freq") or GEMMA3_LOCAL_ROPE_BASE)
    spec.tie_word_embeddings = bool(cfg.get("tie_word_embeddings", True))


def apply_gguf(spec, src):
    """Fills the Gemma 3 / Qwen3 fields of `spec` from GGUF metadata (llama.cpp's conventions)."""
    a = src.arch
    if a == "qwen3":
        spec.qk_norm = True
        return
    if a != "gemma3":
        return
    spec.hidden_act = "gelu_tanh"
    spec.qk_norm = True
    spec.sandwich_norms = True
    spec.embed_scale = math.sqrt(spec.hidden_size)
    # llama.cpp: 1/sqrt(head_dim), except the 27B model which uses 1/sqrt(hidden / heads)
    per_head = spec.hidden_size / spec.num_heads
    spec.query_scale = (per_head if spec.num_layers == 62 else spec.head_dim) ** -0.5
    window = src.value("gemma3.attention.sliding_window")
    spec.sliding_window = None if window is None else int(window)
    pattern = src.value("gemma3.attention.sliding_window_pattern")
    if isinstance(pattern, list):  # newer llama.cpp writes one flag per layer (true = sliding)
        spec.layer_types = [SLIDING if p else FULL for p in pattern]
    else:
        spec.layer_types = gemma3_layer_types(spec.num_layers, int(pattern or GEMMA3_SWA_PATTERN))
    spec.rope_local_theta = GEMMA3_LOCAL_ROPE_BASE
    end_of_turn = src.token_id("<end_of_turn>")
    if end_of_turn is not None and end_of_turn not in spec.eos_token_ids:
        spec.eos_token_ids.append(end_of_turn)


def _phi3_rope(spec, cfg: dict, where: str):
    """Phi-3's "longrope" (alias "su") scaling: per-frequency factors, short ones within the original
    context and long ones past it, and cos/sin scaled by an attention factor."""
    if float(cfg.get("partial_rotary_factor") or 1.0) != 1.0:
        raise ExportError(f"{where}: partial_rotary_factor={cfg['partial_rotary_factor']} (partial RoPE) "
                          "is not supported")
    rs = spec.rope_scaling
    if not rs:
        return
    if rs.get("rope_type", rs.get("type")) not in ("longrope", "su"):
        return
    orig = int(rs.get("original_max_position_embeddings") or cfg.get("original_max_position_embeddings")
               or spec.context_length)
    half = spec.head_dim // 2
    for key in ("short_factor", "long_factor"):
        if len(rs.get(key) or []) != half:
            raise ExportError(f"{where}: rope_scaling.{key} must list head_dim/2 = {half} factors")
    factor = spec.context_length / orig
    attention = rs.get("attention_factor")
    if attention is None:
        attention = math.sqrt(1 + math.log(factor) / math.log(orig)) if factor > 1 else 1.0
    spec.rope_scaling = dict(rs, rope_type="longrope", original_max_position_embeddings=orig,
                             attention_factor=float(attention))


def longrope_inv_freq(spec, inv_freq, n_pos: int):
    """(inv_freq divided by the short or long factors, the cos/sin scale) for a table of n_pos rows:
    short factors when the table fits the original context (exact there), long ones otherwise (exact
    for sequences past it, as Hugging Face switches per sequence)."""
    import numpy as np
    rs = spec.rope_scaling
    ext = rs["long_factor"] if n_pos > rs["original_max_position_embeddings"] else rs["short_factor"]
    return (inv_freq / np.asarray(ext, np.float32)).astype(np.float32), float(rs["attention_factor"])


# Phi-3 fuses q/k/v and gate/up; they are split at load so the graph's LoRA modules stay per projection
PHI3_FUSED = {"self_attn.qkv_proj.weight": ("self_attn.q_proj.weight", "self_attn.k_proj.weight",
                                            "self_attn.v_proj.weight"),
              "mlp.gate_up_proj.weight": ("mlp.gate_proj.weight", "mlp.up_proj.weight")}


def split_fused(spec, names, load):
    """(names, loader) with Phi-3's fused matrices replaced by their parts (rows of the fused one)."""
    q, kv, inter = spec.num_heads * spec.head_dim, spec.num_kv_heads * spec.head_dim, spec.intermediate_size
    rows = {"self_attn.q_proj.weight": (0, q), "self_attn.k_proj.weight": (q, q + kv),
            "self_attn.v_proj.weight": (q + kv, q + 2 * kv),
            "mlp.gate_proj.weight": (0, inter), "mlp.up_proj.weight": (inter, 2 * inter)}
    parts = {}
    for name in names:
        for fused, split in PHI3_FUSED.items():
            if name.endswith("." + fused):
                prefix = name[: -len(fused)]
                parts.update({prefix + part: (name, rows[part]) for part in split})
    out = [n for n in names if not any(n.endswith("." + f) for f in PHI3_FUSED)] + list(parts)

    def loader(name):
        if name not in parts:
            return load(name)
        fused, (begin, end) = parts[name]
        a = load(fused)
        if a.shape[0] != (q + 2 * kv if "qkv" in fused else 2 * inter):
            raise ExportError(f"{fused} has {a.shape[0]} rows, which do not split into the config's parts")
        return a[begin:end]
    return out, loader


def hf_config_extras(spec) -> dict:
    """The Gemma 3 / Qwen3 keys of the config.json written next to the model."""
    if spec.model_type == "qwen3":
        return {"architectures": ["Qwen3ForCausalLM"], "attention_bias": False}
    if spec.model_type == "phi3":
        return {"architectures": ["Phi3ForCausalLM"]}
    if spec.model_type != "gemma3":
        return {}
    return {"architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text",
            "hidden_act": "gelu_pytorch_tanh", "hidden_activation": "gelu_pytorch_tanh",
            "query_pre_attn_scalar": spec.query_scale ** -2, "sliding_window": spec.sliding_window,
            "layer_types": spec.layer_types, "rope_local_base_freq": spec.rope_local_theta,
            "final_logit_softcapping": None, "attn_logit_softcapping": None}


def layer_is_sliding(spec, layer: int) -> bool:
    return bool(spec.sliding_window and spec.layer_types and spec.layer_types[layer] == SLIDING)


def extra_layer_norms(spec) -> List[str]:
    """Per-layer norm weights beyond llama's two, as (HF name) for random weights and checks."""
    names: List[str] = []
    if spec.qk_norm:
        names += ["self_attn.q_norm.weight", "self_attn.k_norm.weight"]
    if spec.sandwich_norms:
        names += ["pre_feedforward_layernorm.weight", "post_feedforward_layernorm.weight"]
    return names


def norm_shape(spec, name: str) -> Optional[int]:
    return spec.head_dim if name.endswith(("q_norm.weight", "k_norm.weight")) else spec.hidden_size
