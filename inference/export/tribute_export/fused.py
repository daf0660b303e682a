"""Attention as ONNX Runtime's com.microsoft GroupQueryAttention, in two cache layouts.

- `fused`: the portable graph's layout. Rows are left-padded, the cache grows by one column per step
  (present = past + new), and an additive bias [B, 1, S, T] masks padding. Only ONNX Runtime's CPU
  kernel takes that bias.
- `static`: the layout GPU kernels and CUDA graphs want. Rows are right-padded: row b's tokens fill
  columns 0..len_b of a cache buffer allocated once at its maximum length, and `attention_mask` marks
  them (1s then 0s). The kernel reads each row's length from the mask (`seqlens_k`) and writes the
  new keys and values at that row's own next columns; a runtime that binds each present output to
  its past input's buffer gets them written in place (nothing is copied per step). No bias, so the
  CUDA kernel runs it. Several new tokens (a prefill) need one row per call; decode steps take any
  number of rows, each at its own length."""

from __future__ import annotations

from typing import Tuple

import numpy as np
from onnx import TensorProto

from .quant import MS_DOMAIN

#: Graph variants: `--ops` choices, written to tribute.json's "ops".
OPS = ("portable", "fused", "static")


def mask_width_i32(b) -> str:
    """`total_sequence_length` [1], int32: the attention mask's width."""
    return b.op("Cast", [b.op("Shape", ["attention_mask"], start=1, end=2)], name="total_len_i32",
                to=TensorProto.INT32)


def fused_lengths(b) -> Tuple[str, str]:
    """`fused` layout, int32: `seqlens_k` [B] = every row's last cache column (all columns are handed
    to the kernel; the bias masks padding) and `total_sequence_length` [1]."""
    total = mask_width_i32(b)
    last = b.op("Sub", [total, b.const([1], np.int32)], name="last_column_i32")
    rows = b.op("Shape", ["input_ids"], name="rows", start=0, end=1)
    return b.op("Expand", [last, rows], name="seqlens_k"), total


def static_lengths(b) -> Tuple[str, str]:
    """`static` layout, int32: `seqlens_k` [B] = each row's attended columns minus one (its tokens,
    the new ones included, right-padded) and `total_sequence_length` [1] = the mask's width."""
    total = mask_width_i32(b)
    count = b.op("ReduceSum", ["attention_mask", b.const([1], np.int64)], name="row_lengths", keepdims=0)
    last = b.op("Sub", [count, b.const(1, np.int64)], name="row_last_column")
    return b.op("Cast", [last], name="seqlens_k", to=TensorProto.INT32), total


def fused_attention(b, spec, i: int, q: str, k: str, v: str, seqlens_k: str, total: str,
                    bias: str | None = None, window: int | None = None) -> str:
    """One GroupQueryAttention for layer i: appends k, v to the past cache and attends.

    With `bias` (the `fused` layout): the additive mask [B, 1, S, T], sliding windows included.
    Without (the `static` layout): causal over each row's `seqlens_k`, and `window` keys back for a
    sliding-window layer. RoPE stays outside (q, k arrive rotated, q scaled): the kernel's own
    rotary takes positions from `seqlens_k`, which does not know left padding. ONNX Runtime allows
    S > 1 with a past cache only for one row (a prefill from a cached prefix; scoring several masks
    at once must run them one by one)."""
    NH, KV, D = spec.num_heads, spec.num_kv_heads, spec.head_dim
    q3 = b.op("Reshape", [q, b.const([0, 0, NH * D], np.int64)])
    k3 = b.op("Reshape", [k, b.const([0, 0, KV * D], np.int64)])
    past = [f"past_key_values.{i}.key", f"past_key_values.{i}.value"]
    outs = [f"model.layers.{i}.attn_ctx", f"present.{i}.key", f"present.{i}.value"]
    inputs = [q3, k3, v] + past + [seqlens_k, total]
    attrs = dict(num_heads=NH, kv_num_heads=KV, scale=1.0)
    if bias is not None:
        inputs += ["", "", "", bias]
    elif window:
        attrs["local_window_size"] = int(window)
    b.op("GroupQueryAttention", inputs, outputs=outs, domain=MS_DOMAIN, **attrs)
    return outs[0]
