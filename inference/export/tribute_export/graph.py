"""Builds the ONNX decoder graph (opset 17; default domain only unless the linears are quantized,
which adds com.microsoft MatMulNBits), weights in external data."""

from __future__ import annotations

import math
import os
import time
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from . import ExportError, archs
from .fused import OPS, fused_attention, fused_lengths, static_lengths
from .gguf_quant import NBitsBlocks, concat_rows, from_rounded, to_nbits, transfer_plan
from .quant import MS_DOMAIN, QuantConfig, pack, pack_zero_points, quantize
from .sources import Spec, Weights

OPSET = 17
NEG = float(np.finfo(np.float32).min)  # additive mask value: finite, no NaN for fully masked rows
ALL_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
_ATTN = ("q_proj", "k_proj", "v_proj", "o_proj")


def module_path(layer: int, target: str) -> str:
    kind = "self_attn" if target in _ATTN else "mlp"
    return f"model.layers.{layer}.{kind}.{target}"


class ExternalData:
    """Appends tensors to one external data file and returns TensorProtos pointing at them.
    `halve(name, arr)`, if given, chooses what each tensor is stored as (`--compute fp16` rounds
    float32 to float16 here, so no float32 copy of the weights is written); `append` continues an
    existing file."""

    def __init__(self, path: str, location: str, halve: Optional[Callable[[str, np.ndarray], np.ndarray]] = None,
                 append: bool = False):
        self.f = open(path, "ab" if append else "wb")
        self.location = location
        self.offset = self.f.tell()
        self.halve = halve

    def add(self, name: str, arr: np.ndarray) -> TensorProto:
        arr = np.ascontiguousarray(arr)
        if self.halve is not None:
            arr = self.halve(name, arr)
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


@dataclass
class QuantizedWeight:
    """The initializers of one MatMulNBits weight: [B, scales, zero_points], and the per-block
    residual [N, k_blocks] (GGUF blocks whose offset is not a whole zero point), if any."""

    names: List[str]
    bits: int
    block_size: int
    residual: Optional[str] = None


class Builder:
    def __init__(self, data: ExternalData, fp16: bool, quant: Optional[QuantConfig] = None,
                 weights: Optional[Weights] = None, log=None):
        self.data = data
        self.fp16 = fp16
        self.quant = quant
        self.weights = weights
        self.log = log or (lambda msg: None)
        self.transferred: Counter = Counter()  # GGUF type -> tensors whose blocks were copied
        self.requantized: List[str] = []  # quantized GGUF tensors that were rounded again
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

    def linear(self, x: str, name: str, members: Sequence[Tuple[str, np.ndarray]], outputs=None) -> str:
        """x @ W^T for W [out, in] = the members' (source name, W) rows stacked: MatMul against a
        stored W^T, or MatMulNBits when quantizing."""
        w = np.concatenate([m for _, m in members], axis=0) if len(members) > 1 else members[0][1]
        if self.quant is None:
            return self.op("MatMul", [x, self.weight(name + ".weight_t", w.T)], name=name, outputs=outputs)
        return self.matmul_nbits(x, self.quantized(name, members), w.shape, outputs or [name])

    def member_blocks(self, name: str, source: str, w: np.ndarray) -> NBitsBlocks:
        """One source matrix in MatMulNBits terms: the GGUF's own blocks when they transfer
        losslessly, else rounded here (with a log line when the source was quantized already)."""
        q = self.quant
        src = self.weights.blocks(source) if self.weights is not None else None
        if src is not None:
            bits, why = transfer_plan(src.qtype, q.bits, q.block_size)
            why = src.reason or why
            if bits is not None and src.load is not None and not src.reason:
                self.transferred[src.qtype] += 1
                return to_nbits(src.load(), bits)
            if why:
                self.log(f"{src.tensor} ({src.qtype}): {why}; dequantized and re-quantized to {q.bits} bits")
                self.requantized.append(src.tensor)
        return from_rounded(*quantize(w, q.bits, q.block_size, name=source), q.bits)

    def quantized(self, name: str, members: Sequence[Tuple[str, np.ndarray]]) -> QuantizedWeight:
        """Stores the members' rows as one MatMulNBits weight (B [N, k_blocks, blob], scales,
        zero_points, and a residual when the GGUF blocks need one)."""
        blocks = concat_rows([self.member_blocks(name, source, w) for source, w in members])
        arrays = [("weight_q", pack(blocks.codes, blocks.bits)), ("weight_scales", blocks.scales),
                  ("weight_zero_points", pack_zero_points(blocks.zero_points, blocks.bits))]
        names = [self.big_const(f"{name}.{suffix}", arr) for suffix, arr in arrays]
        residual = None
        if blocks.residual is not None:
            residual = self.big_const(f"{name}.weight_block_residual", blocks.residual)
        return QuantizedWeight(names, blocks.bits, blocks.block_size, residual)

    def matmul_nbits(self, x: str, qw: QuantizedWeight, shape, outputs) -> str:
        """Y = x @ dequantized(W)^T; with a residual r [N, k_blocks], + (x summed per block) @ r^T."""
        n, k = int(shape[0]), int(shape[1])
        y = outputs[0] if qw.residual is None else f"{outputs[0]}_codes"
        two_pass = self.quant.activation_passes == 2
        self._n += 1
        self.nodes.append(helper.make_node(
            "MatMulNBits", [self.two_pass_input(x, k, qw.block_size) if two_pass else x] + list(qw.names),
            [f"{y}_passes" if two_pass else y], name=f"n{self._n}_MatMulNBits", domain=MS_DOMAIN,
            K=k, N=n, bits=qw.bits, block_size=qw.block_size, accuracy_level=self.quant.accuracy_level))
        if two_pass:  # W·x1 + W·(x − x1): the two halves of the batch axis added
            halves = self.op("Split", [f"{y}_passes"], name=f"{y}_pass", n_out=2, axis=0)
            self.op("Add", halves, outputs=[y])
        if qw.residual is None:
            return y
        nb = k // qw.block_size
        xb = self.op("Reshape", [x, self.const([0, 0, nb, qw.block_size], np.int64)])
        xsum = self.op("ReduceSum", [xb, self.const([-1], np.int64)], keepdims=0)
        rt = self.op("Transpose", [qw.residual], perm=[1, 0])  # constant-folded by ORT
        return self.op("Add", [y, self.op("MatMul", [xsum, rt])], outputs=outputs)

    def two_pass_input(self, x: str, k: int, block_size: int) -> str:
        """[x1; x − x1] stacked on the batch axis, for one MatMulNBits at accuracy level 4 to compute
        W·x with about 16-bit activations at one read of W. x1 is x rounded to int8 per block the way
        ONNX Runtime's kernel rounds (step = block absmax / 127), so the kernel re-quantizes x1 without
        loss and the residual (at most half a step) with 1/254 of its own range: ~2e-5 relative error
        instead of ~5e-3 for x alone."""
        xb = self.op("Reshape", [x, self.const([0, 0, k // block_size, block_size], np.int64)])
        amax = self.op("ReduceMax", [self.op("Abs", [xb])], axes=[-1], keepdims=1)
        tiny = self.const(np.finfo(np.float32).tiny, np.float32)  # an all-zero block: 0 / tiny = 0
        step = self.op("Max", [self.op("Mul", [amax, self.const(1.0 / 127.0, np.float32)]), tiny])
        x1b = self.op("Mul", [self.op("Round", [self.op("Div", [xb, step])]), step])
        x1 = self.op("Reshape", [x1b, self.const([0, 0, k], np.int64)])
        return self.op("Concat", [x1, self.op("Sub", [x, x1])], axis=0)

    def alias(self, name: str, of: str, shape) -> str:
        """A second initializer over the same external bytes as `of`, with another shape (no copy on disk)."""
        src = next(t for t in self.inits if t.name == of)
        t = TensorProto()
        t.CopyFrom(src)
        t.name = name
        del t.dims[:]
        t.dims.extend(shape)
        self.inits.append(t)
        return name

    def inp(self, name, elem, shape):
        self.inputs.append(helper.make_tensor_value_info(name, elem, shape))

    def out(self, name, elem, shape):
        self.outputs.append(helper.make_tensor_value_info(name, elem, shape))


def rope_tables(spec: Spec, n_pos: int, local: bool = False):
    """cos and sign-folded sin tables [n_pos, head_dim]; `local`: the sliding layers' own base,
    unscaled (Gemma 3)."""
    D = spec.head_dim
    theta = spec.rope_local_theta if local else spec.rope_theta
    inv_freq = (1.0 / (np.float32(theta) ** (np.arange(0, D, 2, dtype=np.int64).astype(np.float32) / np.float32(D)))).astype(np.float32)
    rs = {} if local else (spec.rope_scaling or {})
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
    attention = 1.0
    if rtype == "longrope":
        inv_freq, attention = archs.longrope_inv_freq(spec, inv_freq, n_pos)
    if spec.rope_freqs is not None and not local:
        inv_freq = (inv_freq / spec.rope_freqs.astype(np.float32)).astype(np.float32)
    pos = np.arange(n_pos, dtype=np.float32)
    freqs = (pos[:, None] * inv_freq[None, :]).astype(np.float32)  # fp32 rounding like HF
    emb = np.concatenate([freqs, freqs], axis=-1).astype(np.float64)
    cos = (np.cos(emb) * attention).astype(np.float32)
    sin = (np.sin(emb) * attention).astype(np.float32)
    # rotate_half(x) = [-x2, x1]; we compute swap(x) = [x2, x1] and fold the sign into sin.
    half = D // 2
    sin_signed = sin.copy()
    sin_signed[:, :half] *= -1
    return cos, sin_signed


LOGITS_TO_KEEP = "logits_to_keep"
LORA_MASK = "lora_mask"
_ALL = np.iinfo(np.int64).max


def keep_last_positions(b: Builder, x: str) -> str:
    """The final hidden states [B, S, H] of the last `logits_to_keep` positions only, so that the
    head (hidden x vocab, most of a prefill's work in a small model) runs where logits are read:
    1 while generating (rows are left-padded, so the last column is every row's latest token), the
    answer's positions when scoring. An overridable initializer [1], default INT64_MAX: callers that
    do not feed it (older Tribute, onnxruntime-genai, plain ORT) get every position, as before;
    0 also means every position (Hugging Face's `logits_to_keep` convention).

    The start, −min(logits_to_keep, S), is computed from the sequence length's `Shape` so that
    ONNX Runtime's CUDA provider places it on the host, where `Slice` reads it: a `Neg` of the
    input alone would run on the device and need a copy to the host, and a graph with a copy
    node cannot be captured as a CUDA graph (`tests/cuda_placement.py`)."""
    b.inp(LOGITS_TO_KEEP, TensorProto.INT64, [1])
    b.inits.append(numpy_helper.from_array(np.array([_ALL], np.int64), LOGITS_TO_KEEP))
    seq = b.op("Shape", [x], name="kept_seq_len", start=1, end=2)
    kept = b.op("Min", [LOGITS_TO_KEEP, seq], name="kept_positions")
    start = b.op("Neg", [kept], name="logits_from")
    return b.op("Slice", [x, start, b.const([_ALL], np.int64), b.const([1], np.int64)], name="kept_hidden")


def build_graph(spec: Spec, weights: Weights, out_dir: str, fp16: bool, lora_targets: List[str],
                log=None, max_positions: Optional[int] = None, quant: Optional[QuantConfig] = None,
                quant_embeddings: bool = True, ops: str = "portable",
                halve: Optional[Callable[[str, np.ndarray], np.ndarray]] = None):
    """Writes out_dir/model.onnx + model.onnx.data. Returns the list of LoRA module dicts.

    With `quant`, every linear (fused qkv, o_proj, fused gate_up, down_proj, lm_head) is a
    MatMulNBits; with `quant_embeddings` the embedding lookup is a GatherBlockQuantized over the same
    kind of blocks (shared with the head when tied), else a float Gather. Norms and LoRA stay float.

    `ops="fused"` computes attention with ONNX Runtime's com.microsoft GroupQueryAttention (one
    kernel per layer for the cache append, scores, mask and softmax) and each residual add with the
    norm after it as SkipSimplifiedLayerNormalization. Inputs, outputs and the cache layout are the
    portable graph's (see `fused_attention`), so a runtime feeds both alike.

    `halve` rounds the weights as they are written (`half.Halver`, for `--compute fp16`): the
    graph written is then only a step towards the fp16 one that `half.to_fp16_compute` makes."""
    if ops not in OPS:
        raise ExportError(f"unknown --ops {ops!r} (choose from {', '.join(OPS)})")
    fused = ops != "portable"  # GroupQueryAttention and SkipSimplifiedLayerNormalization
    static = ops == "static"  # right-padded rows, no mask bias (tribute_export/fused.py)
    log = log or (lambda msg: None)
    H, D = spec.hidden_size, spec.head_dim
    NH, KV, L, V = spec.num_heads, spec.num_kv_heads, spec.num_layers, spec.vocab_size
    rep = NH // KV
    n_pos = int(max_positions or spec.context_length)
    data = ExternalData(os.path.join(out_dir, "model.onnx.data"), "model.onnx.data", halve)
    b = Builder(data, fp16, quant, weights, log)
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
    if lora_targets:
        # Which LoRA rank columns each row uses: rows of one batch can then run different adapters
        # stacked along the rank axis (A [in, Σr], B [Σr, out]). Default 1: every row uses every
        # column, which is what feeding one adapter always meant.
        b.inp(LORA_MASK, FLOAT, ["lora_mask_rows", 1, "lora_mask_rank"])
        b.inits.append(numpy_helper.from_array(np.ones((1, 1, 1), np.float32), LORA_MASK))

    def lora_inputs(layer, target, fin, fout):
        mod = module_path(layer, target)
        a_name, b_name = f"{mod}.lora_A", f"{mod}.lora_B"
        rank = f"{mod}.rank"
        b.inp(a_name, FLOAT, [fin, rank])
        b.inp(b_name, FLOAT, [rank, fout])
        # Rank-0 defaults: with no adapter fed, x·A is empty and ·B a zero fill, cheaper than
        # rank-1 zeros (210 modules run these branches every step; docs/INFERENCE.md).
        b.inits.append(numpy_helper.from_array(np.zeros((fin, 0), np.float32), a_name))
        b.inits.append(numpy_helper.from_array(np.zeros((0, fout), np.float32), b_name))
        lora_modules.append({"module": mod, "a": a_name, "b": b_name, "in_features": fin, "out_features": fout})
        return a_name, b_name

    # ---- shared per-run tensors: mask bias, rope cos/sin
    biases = {}
    if not static:  # the static layout masks by each row's length, not by a bias
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
        biases[False] = allowed
        if any(archs.layer_is_sliding(spec, i) for i in range(L)):
            # Sliding-window layers (Gemma 3) see only the keys less than `sliding_window` cache slots
            # back. The cache keeps every key (the Rust generator's contract is unchanged); rows are
            # left-padded and contiguous, so slot distance equals position distance for real tokens.
            dist = b.op("Sub", [q_col, key_idx], name="query_key_distance")  # [S, T]
            near = b.op("Less", [dist, b.const(int(spec.sliding_window), np.int64)], name="in_window")
            biases[True] = b.op("And", [allowed, near], name="allowed_sliding")
        for sliding, ok in list(biases.items()):
            suffix = "_sliding" if sliding else ""
            bias = b.op("Where", [ok, b.const(0.0, np.float32), b.const(NEG, np.float32)], name="attn_bias" + suffix)
            # [B,1,S,T]; GroupQueryAttention broadcasts it over heads, the portable graph's
            # query rows are [B,KV,rep*S,D]
            if rep > 1 and not fused:  # [B,1,rep*S,T]
                bias = b.op("Tile", [bias, b.const([1, 1, rep, 1], np.int64)], name="attn_bias_rep" + suffix)
            biases[sliding] = bias

    scale = np.float32(spec.query_scale if spec.query_scale is not None else 1.0 / math.sqrt(D))
    tabs = {}
    for local in sorted({bool(spec.rope_local_theta) and archs.layer_is_sliding(spec, i) for i in range(L)}):
        cos, sin = rope_tables(spec, n_pos, local)
        pre = "local_" if local else ""
        for nm, tab in (("cos", cos), ("sin", sin), ("cos_q", cos * scale), ("sin_q", sin * scale)):
            g = b.op("Gather", [b.big_const(f"rope_{pre}{nm}_table", tab.astype(np.float32)), "position_ids"],
                     name=f"rope_{pre}{nm}_bsd", axis=0)
            tabs[pre + nm] = b.op("Unsqueeze", [g, b.const([2], np.int64)], name=f"rope_{pre}{nm}")  # [B,S,1,D]

    def rope(x, cos_name, sin_name, name):
        x1, x2 = b.op("Split", [x], name=name + "_halves", n_out=2, axis=-1)
        sw = b.op("Concat", [x2, x1], name=name + "_swap", axis=-1)
        return b.op("Add", [b.op("Mul", [x, tabs[cos_name]]), b.op("Mul", [sw, tabs[sin_name]])], name=name)

    def norm_gain(w, name):
        """A norm's stored gain (Gemma stores w with the gain 1 + w)."""
        return b.big_const(name, (w.astype(np.float32) + np.float32(spec.norm_offset)).astype(np.float32))

    def rmsnorm(x, w, name):
        p = b.op("Pow", [x, b.const(2.0, np.float32)])
        m = b.op("ReduceMean", [p], axes=[-1], keepdims=1)
        s = b.op("Sqrt", [b.op("Add", [m, b.const(spec.rms_norm_eps, np.float32)])])
        return b.op("Mul", [b.op("Div", [x, s]), norm_gain(w, name)], name=name + "_out")

    def activation(gate):
        if spec.hidden_act != "gelu_tanh":
            return b.op("Mul", [gate, b.op("Sigmoid", [gate])])
        # 0.5·g·(1 + tanh(√(2/π)·(g + 0.044715·g³))), Gemma's gelu_pytorch_tanh (opset 17 has no Gelu)
        cube = b.op("Mul", [b.op("Mul", [gate, gate]), gate])
        inner = b.op("Add", [gate, b.op("Mul", [cube, b.const(0.044715, np.float32)])])
        t = b.op("Tanh", [b.op("Mul", [inner, b.const(math.sqrt(2.0 / math.pi), np.float32)])])
        half = b.op("Mul", [gate, b.const(0.5, np.float32)])
        return b.op("Mul", [half, b.op("Add", [t, b.const(1.0, np.float32)])])

    def linear_group(x, layer, mods, prefix, fused_name):
        """mods: list of (target, W[out,in], bias|None). One MatMul for the group, then Split."""
        y = b.linear(x, f"{prefix}.{fused_name}", [(f"{module_path(layer, t)}.weight", w) for t, w, _ in mods])
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
                xa = b.op("Mul", [b.op("MatMul", [x, a_name]), LORA_MASK])
                o = b.op("Add", [o, b.op("MatMul", [xa, b_name])], name=f"{module_path(layer, target)}_out")
            res.append(o)
        return res

    # ---- embeddings
    emb = weights.require("model.embed_tokens.weight", (V, H))
    emb_q = None
    if quant is not None and quant_embeddings:
        # GatherBlockQuantized reads the same blocks as MatMulNBits, as [V, H * bits / 8] rows
        emb_q = b.quantized("model.embed_tokens", [("model.embed_tokens.weight", emb)])
        table = b.alias("model.embed_tokens.weight_rows", emb_q.names[0], [V, H * emb_q.bits // 8])
        x = b.op("GatherBlockQuantized", [table, "input_ids", emb_q.names[1], emb_q.names[2]],
                 name="embeddings_codes" if emb_q.residual else "embeddings", domain=MS_DOMAIN, gather_axis=0,
                 quantize_axis=1, block_size=emb_q.block_size, bits=emb_q.bits)
        if emb_q.residual is not None:  # + each block's residual, broadcast over the block's values
            r = b.op("Unsqueeze", [b.op("Gather", [emb_q.residual, "input_ids"], axis=0), b.const([-1], np.int64)])
            xb = b.op("Reshape", [x, b.const([0, 0, H // emb_q.block_size, emb_q.block_size], np.int64)])
            x = b.op("Reshape", [b.op("Add", [xb, r]), b.const([0, 0, H], np.int64)], name="embeddings")
    else:
        emb_name = b.weight("model.embed_tokens.weight", emb)
        x = b.op("Gather", [emb_name, "input_ids"], name="embeddings", axis=0)
    if spec.embed_scale is not None:  # Gemma: embeddings times sqrt(hidden); the tied head is not scaled
        x = b.op("Mul", [x, b.const(np.float32(spec.embed_scale))], name="embeddings_scaled")
    if spec.tie_word_embeddings:
        lm = None
    else:
        lm = weights.require("lm_head.weight", (V, H))
    del emb
    log(f"embeddings {V}x{H}")

    def portable_attention(q, k, v, i, bias):
        """Attention in opset-17 ops: the cache grows by Concat, scores against a mask bias."""
        q = b.op("Transpose", [q], perm=[0, 2, 1, 3])  # [B,NH,S,D]
        q = b.op("Reshape", [q, b.const([0, KV, -1, D], np.int64)])  # [B,KV,rep*S,D] (GQA without repeating K/V)
        k = b.op("Transpose", [k], perm=[0, 2, 1, 3])  # [B,KV,S,D]
        v = b.op("Transpose", [v], perm=[0, 2, 1, 3])
        pk = b.op("Concat", [f"past_key_values.{i}.key", k], outputs=[f"present.{i}.key"], axis=2)
        pv = b.op("Concat", [f"past_key_values.{i}.value", v], outputs=[f"present.{i}.value"], axis=2)
        kt = b.op("Transpose", [pk], perm=[0, 1, 3, 2])
        scores = b.op("Add", [b.op("MatMul", [q, kt]), bias], name=f"model.layers.{i}.scores")
        probs = b.op("Softmax", [scores], axis=-1)
        ctx = b.op("MatMul", [probs, pv])  # [B,KV,rep*S,D]
        ctx = b.op("Reshape", [ctx, b.const([0, NH, -1, D], np.int64)])
        ctx = b.op("Transpose", [ctx], perm=[0, 2, 1, 3])
        return b.op("Reshape", [ctx, b.const([0, 0, NH * D], np.int64)])

    if fused:
        seqlens_k, total_i32 = (static_lengths if static else fused_lengths)(b)

    def add_norm(x, y, gain_w, name, residual):
        """(x + y, rmsnorm(x + y)): one SkipSimplifiedLayerNormalization when fused."""
        if not fused:
            s = b.op("Add", [x, y], name=residual)
            return s, rmsnorm(s, gain_w, name)
        normed, s = f"{name}_out", residual
        b.op("SkipSimplifiedLayerNormalization", [x, y, norm_gain(gain_w, name)], outputs=[normed, f"{name}_mean", f"{name}_inv_std", s], domain=MS_DOMAIN,
             epsilon=float(spec.rms_norm_eps))
        return s, normed

    pending = None  # the MLP output of the layer before, added to x by the next norm
    for i in range(L):
        p = f"model.layers.{i}"
        w = lambda n, shp: weights.require(f"{p}.{n}", shp)  # noqa: E731
        bias = lambda n: weights.get(f"{p}.{n}")  # noqa: E731
        if pending is None:
            h = rmsnorm(x, w("input_layernorm.weight", (H,)), f"{p}.input_layernorm.weight")
        else:
            x, h = add_norm(x, pending, w("input_layernorm.weight", (H,)), f"{p}.input_layernorm.weight",
                            f"model.layers.{i - 1}.mlp_residual")
        q, k, v = linear_group(h, i, [
            ("q_proj", w("self_attn.q_proj.weight", (NH * D, H)), bias("self_attn.q_proj.bias")),
            ("k_proj", w("self_attn.k_proj.weight", (KV * D, H)), bias("self_attn.k_proj.bias")),
            ("v_proj", w("self_attn.v_proj.weight", (KV * D, H)), bias("self_attn.v_proj.bias")),
        ], p, "self_attn.qkv_proj")
        q = b.op("Reshape", [q, b.const([0, 0, NH, D], np.int64)])
        k = b.op("Reshape", [k, b.const([0, 0, KV, D], np.int64)])
        if spec.qk_norm:  # per head, before RoPE (Qwen3, Gemma 3)
            q = rmsnorm(q, w("self_attn.q_norm.weight", (D,)), f"{p}.self_attn.q_norm.weight")
            k = rmsnorm(k, w("self_attn.k_norm.weight", (D,)), f"{p}.self_attn.k_norm.weight")
        sliding = archs.layer_is_sliding(spec, i)
        rt = "local_" if sliding and spec.rope_local_theta else ""
        q = rope(q, rt + "cos_q", rt + "sin_q", f"{p}.q_rot")  # includes the query scale
        k = rope(k, rt + "cos", rt + "sin", f"{p}.k_rot")
        if fused:
            ctx = fused_attention(b, spec, i, q, k, v, seqlens_k, total_i32, bias=biases.get(sliding),
                                  window=int(spec.sliding_window) if sliding else None)
        else:
            v = b.op("Reshape", [v, b.const([0, 0, KV, D], np.int64)])
            ctx = portable_attention(q, k, v, i, biases[sliding])
        (o,) = linear_group(ctx, i, [("o_proj", w("self_attn.o_proj.weight", (H, NH * D)),
                                       bias("self_attn.o_proj.bias"))], p, "self_attn.o_proj")
        if spec.sandwich_norms:  # Gemma: the attention output is normed before the residual add
            o = rmsnorm(o, w("post_attention_layernorm.weight", (H,)), f"{p}.post_attention_layernorm.weight")
        pre_mlp = "pre_feedforward_layernorm.weight" if spec.sandwich_norms else "post_attention_layernorm.weight"
        x, h = add_norm(x, o, w(pre_mlp, (H,)), f"{p}.{pre_mlp}", f"{p}.attn_residual")
        I = spec.intermediate_size
        gate, up = linear_group(h, i, [
            ("gate_proj", w("mlp.gate_proj.weight", (I, H)), bias("mlp.gate_proj.bias")),
            ("up_proj", w("mlp.up_proj.weight", (I, H)), bias("mlp.up_proj.bias")),
        ], p, "mlp.gate_up_proj")
        act = b.op("Mul", [activation(gate), up])
        (down,) = linear_group(act, i, [("down_proj", w("mlp.down_proj.weight", (H, I)),
                                          bias("mlp.down_proj.bias"))], p, "mlp.down_proj")
        if spec.sandwich_norms:
            down = rmsnorm(down, w("post_feedforward_layernorm.weight", (H,)), f"{p}.post_feedforward_layernorm.weight")
        pending = down
        log(f"layer {i + 1}/{L} written ({b.weight_bytes / 2**20:.1f} MiB so far, {time.time() - t0:.1f}s)")

    _, x = add_norm(x, pending, weights.require("model.norm.weight", (H,)), "model.norm.weight",
                    f"model.layers.{L - 1}.mlp_residual")
    x = keep_last_positions(b, x)
    if lm is None and emb_q is not None:
        b.matmul_nbits(x, emb_q, (V, H), ["logits"])  # tied: the head shares the embedding's blocks
    elif lm is None and quant is not None:
        # tied, float Gather: a quantized copy of the table for the head
        b.linear(x, "lm_head", [("model.embed_tokens.weight", weights.require("model.embed_tokens.weight", (V, H)))],
                 outputs=["logits"])
    elif lm is None:
        # tied: Gemm with transB=1 against the embedding table itself (no transposed copy)
        x2 = b.op("Reshape", [x, b.const([-1, H], np.int64)])
        y = b.op("Gemm", [x2, emb_name], transB=1)
        shp = b.op("Concat", [b.op("Shape", [x], start=0, end=2), b.const([V], np.int64)], axis=0)
        b.op("Reshape", [y, shp], outputs=["logits"])
    else:
        b.linear(x, "lm_head", [("lm_head.weight", lm)], outputs=["logits"])
        del lm
    log(f"lm_head {'tied' if spec.tie_word_embeddings else 'separate'}")

    b.out("logits", FLOAT, ["batch", "logits_length", V])
    if static:  # greedy on the device: a runtime reads B token ids, not B x V logits
        # -1 where a position's logits are not all finite (a runtime reading only token ids must
        # still see them): x * 0 is NaN for NaN and ±inf, so their sum equals itself only when
        # every logit is finite.
        best = b.op("ArgMax", ["logits"], axis=-1, keepdims=0)
        zeros = b.op("ReduceSum", [b.op("Mul", ["logits", b.const(np.float32(0))]), b.const([-1], np.int64)],
                     keepdims=0)
        finite = b.op("Equal", [zeros, zeros])
        b.op("Where", [finite, best, b.const(np.int64(-1))], outputs=["next_token"])
        b.out("next_token", INT64, ["batch", "logits_length"])
    for i in range(L):
        for kv in ("key", "value"):
            b.out(f"present.{i}.{kv}", FLOAT, ["batch", KV, "total_sequence_length", D])

    graph = helper.make_graph(b.nodes, "tribute_decoder", b.inputs, b.outputs, initializer=b.inits)
    opsets = [helper.make_opsetid("", OPSET)] + ([helper.make_opsetid(MS_DOMAIN, 1)] if quant or fused else [])
    model = helper.make_model(graph, opset_imports=opsets,
                              producer_name="tribute_export", ir_version=8)
    data.close()
    with open(os.path.join(out_dir, "model.onnx"), "wb") as f:
        f.write(model.SerializeToString())
    try:
        onnx.checker.check_model(os.path.join(out_dir, "model.onnx"))
    except Exception as e:
        raise ExportError(f"internal error: the written graph fails onnx.checker: {e}") from None
    transfer = {"gguf_blocks_copied": dict(sorted(b.transferred.items())), "gguf_requantized": b.requantized}
    return lora_modules, b.weight_bytes, transfer
