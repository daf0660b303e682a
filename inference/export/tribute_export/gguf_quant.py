"""Lossless transfer of a GGUF's quantized blocks into MatMulNBits blocks (no re-rounding).

ggml's quant types store blocks of 32 consecutive values along the innermost axis, which for a
linear weight [N, K] is the input (K) axis, the same axis MatMulNBits blocks run along. Every
type handled here is, per 32-value block, affine in small unsigned codes:

    w = scale · code + offset

- Q4_0: code 0..15, scale d, offset −8·d              (ggml: d·(q − 8))
- Q4_1: code 0..15, scale d, offset m                  (ggml: d·q + m)
- Q8_0: code q + 128 (0..255), scale d, offset −128·d (ggml: d·q, q int8)
- Q4_K: 256-value super-blocks of eight 32-value sub-blocks j with 6-bit sc_j, m_j:
  code 0..15, scale d·sc_j, offset −dmin·m_j           (ggml: d·sc_j·q − dmin·m_j)

MatMulNBits computes w = scale · (code − zero_point) with an integer zero point (uint8 packed;
a float zero point makes ONNX Runtime's CPU kernel dequantize the whole matrix on every call).
So each block takes zero_point = clip(round(−offset / scale)) and the rest of the offset,
residual = offset + scale · zero_point, is exact block arithmetic that the graph adds back as
`sum of x over the block · residual` (one small fp32 MatMul per linear; none when every residual
is 0, as for Q4_0 and Q8_0). Together: w = scale · (code − zero_point) + residual = the GGUF's
own dequantization, up to float rounding.

Q5_0/Q5_1/Q5_K/Q6_K/Q2_K/Q3_K/IQ* blocks are not transferred (5- and 6-bit codes do not fit 4
bits, 16-value sub-blocks do not fit a 32 block): those tensors are dequantized and re-quantized,
with a log line naming the tensor and why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple

import numpy as np

from . import ExportError

GGML_BLOCK = 32
# code width of each transferable ggml type
TRANSFER_BITS = {"Q4_0": 4, "Q4_1": 4, "Q4_K": 4, "Q8_0": 8}
FLOAT_TYPES = ("F32", "F16", "BF16", "F64")


@dataclass
class SourceBlocks:
    """Where a weight's quantized blocks come from: a GGUF tensor and a loader for its affine
    blocks (rows in Hugging Face order), or None with the reason they cannot be used."""

    tensor: str
    qtype: str
    load: Optional[Callable[[], "AffineBlocks"]]
    reason: str = ""


@dataclass
class AffineBlocks:
    """w[n, b·32 + i] = scale[n, b] · codes[n, b, i] + offset[n, b]; `bits` is the code width."""

    codes: np.ndarray   # uint8 [N, K / 32, 32]
    scale: np.ndarray   # float32 [N, K / 32]
    offset: np.ndarray  # float32 [N, K / 32]
    bits: int

    def permute_rows(self, perm: np.ndarray) -> "AffineBlocks":
        return AffineBlocks(self.codes[perm], self.scale[perm], self.offset[perm], self.bits)


@dataclass
class NBitsBlocks:
    """A matrix in MatMulNBits terms, codes unpacked: w = scales · (codes − zero_points) + residual."""

    codes: np.ndarray        # uint8 [N, k_blocks, block_size]
    scales: np.ndarray       # float32 [N, k_blocks]
    zero_points: np.ndarray  # uint8 [N, k_blocks]
    residual: Optional[np.ndarray]  # float32 [N, k_blocks], None when all zero
    bits: int

    @property
    def block_size(self) -> int:
        return self.codes.shape[2]

    def dequantize(self) -> np.ndarray:
        w = (self.codes.astype(np.float32) - self.zero_points[..., None]) * self.scales[..., None]
        if self.residual is not None:
            w = w + self.residual[..., None]
        return w.reshape(self.codes.shape[0], -1).astype(np.float32)


def _f16(raw: np.ndarray) -> np.ndarray:
    """uint8 [..., 2] little-endian halves -> float32 [...]."""
    return np.ascontiguousarray(raw).view(np.float16)[..., 0].astype(np.float32)


def _nibbles_split(qs: np.ndarray) -> np.ndarray:
    """ggml's 16-byte nibble layout (value j in the low nibble of byte j, value j+16 in its high
    nibble) -> codes [..., 32] in value order."""
    return np.concatenate([qs & 0x0F, qs >> 4], axis=-1)


def affine_blocks(qtype: str, raw: np.ndarray, n: int, k: int) -> AffineBlocks:
    """The GGUF tensor's bytes (uint8 [N, row bytes], rows = output features) as affine blocks."""
    if qtype not in TRANSFER_BITS:
        raise ExportError(f"internal error: {qtype} blocks are not transferable")
    raw = np.asarray(raw, np.uint8).reshape(n, -1)
    nb = k // GGML_BLOCK
    if qtype == "Q4_0":
        blk = raw.reshape(n, nb, 18)
        d = _f16(blk[..., 0:2])
        return AffineBlocks(_nibbles_split(blk[..., 2:]), d, (-8 * d).astype(np.float32), 4)
    if qtype == "Q4_1":
        blk = raw.reshape(n, nb, 20)
        return AffineBlocks(_nibbles_split(blk[..., 4:]), _f16(blk[..., 0:2]), _f16(blk[..., 2:4]), 4)
    if qtype == "Q8_0":
        blk = raw.reshape(n, nb, 34)
        d = _f16(blk[..., 0:2])
        codes = (np.ascontiguousarray(blk[..., 2:]).view(np.int8).astype(np.int16) + 128).astype(np.uint8)
        return AffineBlocks(codes, d, (-128 * d).astype(np.float32), 8)
    # Q4_K: d, dmin (fp16), 12 bytes of packed 6-bit scales/mins, 128 bytes of nibbles
    from gguf.quants import Q4_K
    n_super = k // 256
    blk = raw.reshape(n * n_super, 144)
    d = _f16(blk[:, 0:2])[:, None]
    dmin = _f16(blk[:, 2:4])[:, None]
    sc, mins = Q4_K.get_scale_min(np.ascontiguousarray(blk[:, 4:16]))
    # each 32-byte chunk c holds sub-block 2c in its low nibbles and 2c+1 in its high nibbles
    qs = blk[:, 16:].reshape(-1, 4, 1, 32)
    codes = np.concatenate([qs & 0x0F, qs >> 4], axis=2).reshape(n, nb, 32)
    scale = (d * sc.astype(np.float32)).reshape(n, nb).astype(np.float32)
    offset = (-(dmin * mins.astype(np.float32))).reshape(n, nb).astype(np.float32)
    return AffineBlocks(codes, scale, offset, 4)


def to_nbits(a: AffineBlocks, bits: int) -> NBitsBlocks:
    """Integer zero points plus the exact per-block residual; codes narrower than `bits` widen as they are."""
    if a.bits > bits:
        raise ExportError(f"internal error: {a.bits}-bit codes do not fit {bits} bits")
    qmax = np.float32((1 << bits) - 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ideal = np.where(a.scale != 0, -a.offset / a.scale, np.float32(0))
    zp = np.clip(np.round(ideal), 0, qmax).astype(np.float32)
    residual = (a.offset + a.scale * zp).astype(np.float32)
    return NBitsBlocks(a.codes, a.scale.astype(np.float32), zp.astype(np.uint8),
                       residual if residual.any() else None, bits)


def from_rounded(packed: np.ndarray, scales: np.ndarray, zero_points: np.ndarray, bits: int) -> NBitsBlocks:
    """quant.quantize's output, unpacked, for concatenation with transferred blocks."""
    from .quant import unpack
    nb = scales.shape[1]
    return NBitsBlocks(unpack(packed, bits), scales, unpack(zero_points, bits)[:, :nb], None, bits)


def concat_rows(parts: List[NBitsBlocks]) -> NBitsBlocks:
    """Fused linears (q, k, v; gate, up): rows stacked, each part's codes widened to the widest."""
    if len(parts) == 1:
        return parts[0]
    bits = max(p.bits for p in parts)
    residual = None
    if any(p.residual is not None for p in parts):
        residual = np.concatenate([p.residual if p.residual is not None else np.zeros_like(p.scales)
                                   for p in parts], axis=0)
    return NBitsBlocks(np.concatenate([p.codes for p in parts], axis=0),
                       np.concatenate([p.scales for p in parts], axis=0),
                       np.concatenate([p.zero_points for p in parts], axis=0), residual, bits)


def transfer_plan(qtype: str, requested_bits: int, block_size: int) -> Tuple[Optional[int], str]:
    """(bits to store the tensor's own codes at, or None to re-quantize; why, for the log).

    A GGUF tensor is never stored coarser than it is: int4 keeps a Q8_0 tensor (llama.cpp's Q4
    files keep their token embeddings at Q8_0) at 8 bits, int8 widens 4-bit codes losslessly."""
    if qtype in FLOAT_TYPES:
        return None, ""
    if qtype not in TRANSFER_BITS:
        return None, f"{qtype} blocks have no lossless MatMulNBits form here (5/6-bit codes or 16-value sub-blocks)"
    if block_size != GGML_BLOCK:
        return None, f"--block-size {block_size} differs from the GGUF's {GGML_BLOCK}-value blocks"
    return max(TRANSFER_BITS[qtype], requested_bits), ""
