"""Builds the ONNX decoder graph (opset 17, default domain only), weights in external data."""

from __future__ import annotations

import math
import os
import time
from typing import Dict, List, Optional

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from . import ExportError
from .sources import Spec, Weights

OPSET = 17
NEG = float(np.finfo(np.float32).min)  # additive mask value: finite, no NaN for fully masked rows
ALL_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
_ATTN = ("q_proj", "k_proj", "v_proj", "o_proj")


def module_path(layer: int, target: str) -> str:
    kind = "self_attn" if target in _ATTN else "mlp"
    return f"model.layers.{layer}.{kind}.{target}"


class ExternalData:
    """Appends tensors to one external data file and returns TensorProtos pointing at them."""

    def __init__(self, path: str, location: str):
        self.f = open(path, "wb")
        self.location = location
        self.offset = 0

    def add(self, name: str, arr: np.ndarray) -> TensorProto:
        arr = np.ascontiguousarray(arr)
        align = 65536 if arr.nbytes >= 1 << 20 else 64
        pad = (-self.offset) % align
        if pad:
            self.f.write(b"\0" * pad)
            self.offset += pad
        t = TensorProto()
        t.name = name
        t.data_type = helper.np_dtype_to_tensor_dtype(arr.dtype)
        t.dims.extend(arr.shape)
        t.data_location = TensorProto.EXTERNAL
        for k, v in (("location", self.location), ("offset", str(self.offset)), ("length", str(arr.nbytes))):
            e = t.external_data.add()
            e.key, e.value = k, v
        self.f.write(arr.tobytes())
        self.offset += arr.nbytes
        return t

    def close(self):
        self.f.close()


class Builder:
    def __init__(self, data: ExternalData, fp16: bool):
        self.data = data
        self.fp16 = fp16
        self.nodes: List[onnx.NodeProto] = []
        self.inits: List[TensorProto] = []
        self.inputs: List[onnx.ValueInfoProto] = []
        self.outputs: List[onnx.ValueInfoProto] = []
        self._n = 0
        self._consts: Dict[tuple, str] = {}
        self.weight_bytes = 0

    def op(self, op_type: str, inputs, name: Optional[str] = None, outputs=None, n_out: int = 1, **attrs):
        self._n += 1
        base = name or f"{op_type.lower()}_{self._n}"
        if outputs is None:
            outputs = [base] if n_out == 1 else [f"{base}_{i}" for i in range(n_out)]
        self.nodes.append(helper.make_node(op_type, list(inputs), list(outputs), name=f"n{self._n}_{op_type}", **attrs))
        return outputs[0] if len(outputs) == 1 else outputs

    def const(self, arr, dtype=None) -> str:
        arr = np.asarray(arr, dtype=dtype)
        key = (arr.dtype.str, arr.shape, arr.tobytes())
        if key not in self._consts:
            name = f"const_{len(self._consts)}"
            self.inits.append(numpy_helper.from_array(arr, name))
            self._consts[key] = name
        return self._consts[key]

    def big_const(self, name: str, arr: np.ndarray) -> str:
        """A large fp32/int constant stored in external data (never fp16-converted)."""
        self.inits.append(self.data.add(name, arr))
        self.weight_bytes += arr.nbytes
        return name

    def weight(self, name: str, arr: np.ndarray) -> str:
        """A weight matrix; fp16 storage + in-graph Cast to fp32 when exporting fp16."""
        if self.fp16 and arr.ndim >= 2:
            self.inits.append(self.data.add(name, arr.astype(np.float16)))
            self.weight_bytes += arr.size * 2
            return self.op("Cast", [name], name=name + "_f32", to=TensorProto.FLOAT)
        self.inits.append(self.data.add(name, arr.astype(np.float32)))
        self.weight_bytes += arr.size * 4
        return name

    def inp(self, name, elem, shape):
        self.inputs.append(helper.make_tensor_value_info(name, elem, shape))

    def out(self, name, elem, shape):
        self.outputs.append(helper.make_tensor_value_info(name, elem, shape))


def rope_tables(spec: Spec, n_pos: int):
    D = spec.head_dim
    inv_freq = (1.0 / (np.float32(spec.rope_theta) ** (np.arange(0, D, 2, dtype=np.int64).astype(np.float32) / np.float32(D)))).astype(np.float32)
    rs = spec.rope_scaling or {}
    rtype = rs.get("rope_type", rs.get("type", "default"))
    if rtype == "llama3":
        factor = float(rs["factor"])
        low, high = float(rs["low_freq_factor"]), float(rs["high_freq_factor"])
        old = float(rs["original_max_position_embeddings"])
        low_wl, high_wl = old / low, old / high
        wavelen = 2 * math.pi / inv_freq
        inv_l = np.where(wavelen > low_wl, inv_freq / factor, inv_freq)
        smooth = (old / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * inv_l / factor + smooth * inv_l
        medium = ~(wavelen < high_wl) & ~(wavelen > low_wl)
        inv_freq = np.where(medium, smoothed, inv_l).astype(np.float32)
    elif rtype == "linear":
        inv_freq = (inv_freq / np.float32(rs["factor"])).astype(np.float32)
    if spec.rope_freqs is not None:
        inv_freq = (inv_freq / spec.rope_freqs.astype(np.float32)).astype(np.float32)
    pos = np.arange(n_pos, dtype=np.float32)
    freqs = (pos[:, None] * inv_freq[None, :]).astype(np.float32)  # fp32 rounding like HF
    emb = np.concatenate([freqs, freqs], axis=-1).astype(np.float64)
    cos = np.cos(emb).astype(np.float32)
    sin = np.sin(emb).astype(np.float32)
    # rotate_half(x) = [-x2, x1]; we compute swap(x) = [x2, x1] and fold the sign into sin.
    half = D // 2
    sin_signed = sin.copy()
    sin_signed[:, :half] *= -1
    return cos, sin_signed


def build_graph(spec: Spec, weights: Weights, out_dir: str, fp16: bool, lora_targets: List[str],
                log=None, max_positions: Optional[int] = None):
    """Writes out_dir/model.onnx + model.onnx.data. Returns the list of LoRA module dicts."""
    log = log or (lambda msg: None)
    H, D = spec.hidden_size, spec.head_dim
    NH, KV, L, V = spec.num_heads, spec.num_kv_heads, spec.num_layers, spec.vocab_size
    rep = NH // KV
    n_pos = int(max_positions or spec.context_length)
    data = ExternalData(os.path.join(out_dir, "model.onnx.data"), "model.onnx.data")
    b = Builder(data, fp16)
    FLOAT, INT64 = TensorProto.FLOAT, TensorProto.INT64
    t0 = time.time()

    # ---- inputs
    b.inp("input_ids", INT64, ["batch", "sequence_length"])
    b.inp("attention_mask", INT64, ["batch", "total_sequence_length"])
    b.inp("position_ids", INT64, ["batch", "sequence_length"])
    for i in range(L):
        for kv in ("key", "value"):
            b.inp(f"past_key_values.{i}.{kv}", FLOAT, ["batch", KV, "past_sequence_length", D])

    lora_modules = []

    def lora_inputs(layer, target, fin, fout):
        mod = module_path(layer, target)
        a_name, b_name = f"{mod}.lora_A", f"{mod}.lora_B"
        rank = f"{mod}.rank"
        b.inp(a_name, FLOAT, [fin, rank])
        b.inp(b_name, FLOAT, [rank, fout])
        b.inits.append(numpy_helper.from_array(np.zeros((fin, 1), np.float32), a_name))
        b.inits.append(numpy_helper.from_array(np.zeros((1, fout), np.float32), b_name))
        lora_modules.append({"module": mod, "a": a_name, "b": b_name, "in_features": fin, "out_features": fout})
        return a_name, b_name

    # ---- shared per-run tensors: mask bias, rope cos/sin
    S = b.op("Shape", ["input_ids"], name="seq_len", start=1, end=2)
    T = b.op("Shape", ["attention_mask"], name="total_len", start=1, end=2)
    P = b.op("Sub", [T, S], name="past_len")
    n_idx = max(n_pos, spec.context_length)
    arange = b.big_const("positions_table", np.arange(n_idx, dtype=np.int64))
    zero1 = b.const([0], np.int64)
    axis0 = b.const([0], np.int64)
    key_idx = b.op("Slice", [arange, zero1, T, axis0], name="key_idx")
    q_idx = b.op("Slice", [arange, P, T, axis0], name="query_idx")
    q_col = b.op("Unsqueeze", [q_idx, b.const([1], np.int64)], name="query_idx_col")
    causal = b.op("LessOrEqual", [key_idx, q_col], name="causal")  # [S, T]
    pad = b.op("Cast", ["attention_mask"], name="mask_bool", to=TensorProto.BOOL)
    pad4 = b.op("Unsqueeze", [pad, b.const([1, 2], np.int64)], name="mask_b11t")  # [B,1,1,T]
    allowed = b.op("And", [causal, pad4], name="allowed")  # [B,1,S,T]
    attn_bias = b.op("Where", [allowed, b.const(0.0, np.float32), b.const(NEG, np.float32)], name="attn_bias")
    if rep > 1:
        attn_bias = b.op("Tile", [attn_bias, b.const([1, 1, rep, 1], np.int64)], name="attn_bias_rep")  # [B,1,rep*S,T]

    cos, sin = rope_tables(spec, n_pos)
    scale = np.float32(1.0 / math.sqrt(D))
    tabs = {}
    for nm, tab in (("cos", cos), ("sin", sin), ("cos_q", cos * scale), ("sin_q", sin * scale)):
        g = b.op("Gather", [b.big_const(f"rope_{nm}_table", tab.astype(np.float32)), "position_ids"],
                 name=f"rope_{nm}_bsd", axis=0)
        tabs[nm] = b.op("Unsqueeze", [g, b.const([2], np.int64)], name=f"rope_{nm}")  # [B,S,1,D]

    def rope(x, cos_name, sin_name, name):
        x1, x2 = b.op("Split", [x], name=name + "_halves", n_out=2, axis=-1)
        sw = b.op("Concat", [x2, x1], name=name + "_swap", axis=-1)
        return b.op("Add", [b.op("Mul", [x, tabs[cos_name]]), b.op("Mul", [sw, tabs[sin_name]])], name=name)

    def rmsnorm(x, w, name):
        p = b.op("Pow", [x, b.const(2.0, np.float32)])
        m = b.op("ReduceMean", [p], axes=[-1], keepdims=1)
        s = b.op("Sqrt", [b.op("Add", [m, b.const(spec.rms_norm_eps, np.float32)])])
        return b.op("Mul", [b.op("Div", [x, s]), b.big_const(name, w.astype(np.float32))], name=name + "_out")

    def linear_group(x, layer, mods, prefix, fused_name):
        """mods: list of (target, W[out,in], bias|None). One MatMul for the group, then Split."""
        wt = np.concatenate([w.T for _, w, _ in mods], axis=1) if len(mods) > 1 else mods[0][1].T
        y = b.op("MatMul", [x, b.weight(f"{prefix}.{fused_name}.weight_t", wt)], name=f"{prefix}.{fused_name}")
        if any(bb is not None for _, _, bb in mods):
            bias_v = np.concatenate([bb if bb is not None else np.zeros(w.shape[0], np.float32) for _, w, bb in mods])
            y = b.op("Add", [y, b.big_const(f"{prefix}.{fused_name}.bias", bias_v.astype(np.float32))])
        if len(mods) > 1:
            sizes = b.const([w.shape[0] for _, w, _ in mods], np.int64)
            outs = b.op("Split", [y, sizes], name=f"{prefix}.{fused_name}_split", n_out=len(mods), axis=-1)
        else:
            outs = [y]
        res = []
        for (target, w, _), o in zip(mods, outs):
            if target in lora_targets:
                a_name, b_name = lora_inputs(layer, target, w.shape[1], w.shape[0])
                xa = b.op("MatMul", [x, a_name])
                o = b.op("Add", [o, b.op("MatMul", [xa, b_name])], name=f"{module_path(layer, target)}_out")
            res.append(o)
        return res

    # ---- embeddings
    emb = weights.require("model.embed_tokens.weight", (V, H))
    emb_name = b.weight("model.embed_tokens.weight", emb)
    x = b.op("Gather", [emb_name, "input_ids"], name="embeddings", axis=0)
    if spec.tie_word_embeddings:
        lm = None
    else:
        lm = weights.require("lm_head.weight", (V, H))
    del emb
    log(f"embeddings {V}x{H}")

    for i in range(L):
        p = f"model.layers.{i}"
        w = lambda n, shp: weights.require(f"{p}.{n}", shp)  # noqa: E731
        bias = lambda n: weights.get(f"{p}.{n}")  # noqa: E731
        h = rmsnorm(x, w("input_layernorm.weight", (H,)), f"{p}.input_layernorm.weight")
        q, k, v = linear_group(h, i, [
            ("q_proj", w("self_attn.q_proj.weight", (NH * D, H)), bias("self_attn.q_proj.bias")),
            ("k_proj", w("self_attn.k_proj.weight", (KV * D, H)), bias("self_attn.k_proj.bias")),
            ("v_proj", w("self_attn.v_proj.weight", (KV * D, H)), bias("self_attn.v_proj.bias")),
        ], p, "self_attn.qkv_proj")
        q = b.op("Reshape", [q, b.const([0, 0, NH, D], np.int64)])
        k = b.op("Reshape", [k, b.const([0, 0, KV, D], np.int64)])
        v = b.op("Reshape", [v, b.const([0, 0, KV, D], np.int64)])
        q = rope(q, "cos_q", "sin_q", f"{p}.q_rot")  # includes 1/sqrt(D)
        k = rope(k, "cos", "sin", f"{p}.k_rot")
        q = b.op("Transpose", [q], perm=[0, 2, 1, 3])  # [B,NH,S,D]
        q = b.op("Reshape", [q, b.const([0, KV, -1, D], np.int64)])  # [B,KV,rep*S,D] (GQA without repeating K/V)
        k = b.op("Transpose", [k], perm=[0, 2, 1, 3])  # [B,KV,S,D]
        v = b.op("Transpose", [v], perm=[0, 2, 1, 3])
        pk = b.op("Concat", [f"past_key_values.{i}.key", k], outputs=[f"present.{i}.key"], axis=2)
        pv = b.op("Concat", [f"past_key_values.{i}.value", v], outputs=[f"present.{i}.value"], axis=2)
        kt = b.op("Transpose", [pk], perm=[0, 1, 3, 2])
        scores = b.op("Add", [b.op("MatMul", [q, kt]), attn_bias], name=f"{p}.scores")
        probs = b.op("Softmax", [scores], axis=-1)
        ctx = b.op("MatMul", [probs, pv])  # [B,KV,rep*S,D]
        ctx = b.op("Reshape", [ctx, b.const([0, NH, -1, D], np.int64)])
        ctx = b.op("Transpose", [ctx], perm=[0, 2, 1, 3])
        ctx = b.op("Reshape", [ctx, b.const([0, 0, NH * D], np.int64)])
        (o,) = linear_group(ctx, i, [("o_proj", w("self_attn.o_proj.weight", (H, NH * D)),
                                       bias("self_attn.o_proj.bias"))], p, "self_attn.o_proj")
        x = b.op("Add", [x, o], name=f"{p}.attn_residual")
        h = rmsnorm(x, w("post_attention_layernorm.weight", (H,)), f"{p}.post_attention_layernorm.weight")
        I = spec.intermediate_size
        gate, up = linear_group(h, i, [
            ("gate_proj", w("mlp.gate_proj.weight", (I, H)), bias("mlp.gate_proj.bias")),
            ("up_proj", w("mlp.up_proj.weight", (I, H)), bias("mlp.up_proj.bias")),
        ], p, "mlp.gate_up_proj")
        act = b.op("Mul", [b.op("Mul", [gate, b.op("Sigmoid", [gate])]), up])
        (down,) = linear_group(act, i, [("down_proj", w("mlp.down_proj.weight", (H, I)),
                                          bias("mlp.down_proj.bias"))], p, "mlp.down_proj")
        x = b.op("Add", [x, down], name=f"{p}.mlp_residual")
        log(f"layer {i + 1}/{L} written ({b.weight_bytes / 2**20:.1f} MiB so far, {time.time() - t0:.1f}s)")

    x = rmsnorm(x, weights.require("model.norm.weight", (H,)), "model.norm.weight")
    if lm is None:
        # tied: Gemm with transB=1 against the embedding table itself (no transposed copy)
        x2 = b.op("Reshape", [x, b.const([-1, H], np.int64)])
        y = b.op("Gemm", [x2, emb_name], transB=1)
        shp = b.op("Concat", [b.op("Shape", ["input_ids"]), b.const([V], np.int64)], axis=0)
        b.op("Reshape", [y, shp], outputs=["logits"])
    else:
        b.op("MatMul", [x, b.weight("lm_head.weight_t", lm.T)], outputs=["logits"])
        del lm
    log(f"lm_head {'tied' if spec.tie_word_embeddings else 'separate'}")

    b.out("logits", FLOAT, ["batch", "sequence_length", V])
    for i in range(L):
        for kv in ("key", "value"):
            b.out(f"present.{i}.{kv}", FLOAT, ["batch", KV, "total_sequence_length", D])

    graph = helper.make_graph(b.nodes, "tribute_decoder", b.inputs, b.outputs, initializer=b.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="tribute_export", ir_version=8)
    data.close()
    with open(os.path.join(out_dir, "model.onnx"), "wb") as f:
        f.write(model.SerializeToString())
    try:
        onnx.checker.check_model(os.path.join(out_dir, "model.onnx"))
    except Exception as e:
        raise ExportError(f"internal error: the written graph fails onnx.checker: {e}") from None
    return lora_modules, b.weight_bytes
