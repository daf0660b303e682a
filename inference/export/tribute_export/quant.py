"""Block-wise weight quantization for ONNX Runtime's `com.microsoft.MatMulNBits`.

Layout (ONNX Runtime contrib operator spec, MatMulNBits since version 1), for a linear weight
W [N, K] (out features, in features, i.e. the PyTorch layout) and `Y = A @ W^T`:

- B: uint8 [N, k_blocks, blob_size], k_blocks = K / block_size, blob_size = block_size * bits / 8;
  codes are packed along K inside each block, low bits first (4 bits: element 2j in the low
  nibble of byte j, element 2j+1 in the high nibble).
- scales: float32 [N, k_blocks] (same type as A).
- zero_points: uint8 [N, ceil(k_blocks * bits / 8)], packed along the blocks like B
  (4 bits: two per byte, low nibble first; 8 bits: one per byte).
- dequantized W[n, k] = (code - zero_point) * scale of k's block.

Quantization is round-to-nearest (numpy's round half to even), asymmetric per block: the block's
range [min(w, 0), max(w, 0)] maps onto [0, 2^bits - 1] (zero is always representable, so the zero
point never needs clamping). All arithmetic is float32 numpy, so an export is bit-for-bit
reproducible. Asymmetric beats symmetric (absmax, zero point 2^(bits-1)) on SmolLM2-135M's weights
(see docs/INFERENCE.md), which is why it is the only mode offered.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

from . import ExportError

QUANT_MODES = ("none", "int8", "int4")
BLOCK_SIZES = (32, 64, 128)
# MatMulNBits' accuracy_level: 0 unset, 1 fp32, 2 fp16, 3 bf16, 4 int8 (A is quantized per block
# to int8 at run time, which lets x86 use integer dot products: the fast path for int4 on CPU).
ACCURACY_LEVELS = (0, 1, 2, 3, 4)
# At level 4, how many int8 passes the activations go through: 1 quantizes them once (1/254 of a
# block's range); 2 feeds the int8-rounded activations and their rounding residual as two rows of one
# MatMulNBits (Builder.two_pass_input): within ~2e-5 of fp32 compute at one read of the weights.
ACTIVATION_PASSES = (1, 2)
# Per mode (docs/INFERENCE.md, "int8: two activation passes"): int8 = level 4, two passes (greedy output as
# fp32's on the 12 README continuations, decode 1.4-1.6x fp32; ORT 1.32 has no fast 8-bit kernel at levels
# 0-3); int4 = level 4, one pass (the fastest mode; int8 activations flip some greedy choices).
DEFAULT_ACCURACY_LEVEL = {"int8": 4, "int4": 4}
DEFAULT_ACTIVATION_PASSES = {"int8": 2, "int4": 1}
MS_DOMAIN = "com.microsoft"


@dataclass(frozen=True)
class QuantConfig:
    """How the graph's linear weights are stored: `bits`-bit codes in blocks of `block_size` along K."""

    bits: int
    block_size: int
    accuracy_level: int = 4
    activation_passes: int = 1

    @property
    def dtype(self) -> str:
        return f"int{self.bits}"

    def record(self, quant_embeddings: bool) -> dict:
        """The `quantization` entry of tribute.json."""
        return {"dtype": self.dtype, "bits": self.bits, "block_size": self.block_size,
                "symmetric": False, "rounding": "nearest-even", "accuracy_level": self.accuracy_level,
                "activation_passes": self.activation_passes,
                "op": f"{MS_DOMAIN}.MatMulNBits",
                "modules": ["qkv_proj", "o_proj", "gate_up_proj", "down_proj", "lm_head"],
                "embeddings": f"{MS_DOMAIN}.GatherBlockQuantized" if quant_embeddings else "float"}


def parse_quant(mode: Optional[str], block_size: int = 32, accuracy_level: Optional[int] = None,
                activation_passes: Optional[int] = None) -> Optional[QuantConfig]:
    """None for `none`; an ExportError for a mode, block size, accuracy level or number of activation
    passes MatMulNBits cannot take. None for `accuracy_level` / `activation_passes` takes the mode's
    default (DEFAULT_ACCURACY_LEVEL; DEFAULT_ACTIVATION_PASSES at level 4, else 1)."""
    mode = (mode or "none").strip().lower()
    if mode not in QUANT_MODES:
        raise ExportError(f"unknown quantization {mode!r} (known: {', '.join(QUANT_MODES)})")
    if mode == "none":
        return None
    if block_size not in BLOCK_SIZES:
        raise ExportError(f"quantization block size {block_size} is not supported "
                          f"(one of {', '.join(map(str, BLOCK_SIZES))})")
    if accuracy_level is None:
        accuracy_level = DEFAULT_ACCURACY_LEVEL[mode]
    if accuracy_level not in ACCURACY_LEVELS:
        raise ExportError(f"accuracy level {accuracy_level} is not one of {ACCURACY_LEVELS} "
                          "(0 unset, 1 fp32, 2 fp16, 3 bf16, 4 int8)")
    if activation_passes is None:
        activation_passes = DEFAULT_ACTIVATION_PASSES[mode] if accuracy_level == 4 else 1
    if activation_passes not in ACTIVATION_PASSES:
        raise ExportError(f"{activation_passes} activation passes are not supported (1 or 2)")
    if activation_passes == 2 and accuracy_level != 4:
        raise ExportError(f"two activation passes need accuracy level 4 (int8 activations); at level "
                          f"{accuracy_level} ONNX Runtime computes on float activations already")
    return QuantConfig(bits=8 if mode == "int8" else 4, block_size=block_size, accuracy_level=accuracy_level,
                       activation_passes=activation_passes)


def check_shape(name: str, w: np.ndarray, block_size: int):
    if w.ndim != 2:
        raise ExportError(f"cannot quantize {name}: expected a matrix, got shape {tuple(w.shape)}")
    k = w.shape[1]
    if k % block_size:
        raise ExportError(f"cannot quantize {name}: its input size {k} is not a multiple of the block size "
                          f"{block_size} (pick a --block-size that divides it, or --quant none)")


def quantize(w: np.ndarray, bits: int, block_size: int, name: str = "weight"
             ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """W [N, K] -> (B uint8 [N, k_blocks, blob], scales float32 [N, k_blocks], zero_points uint8 [N, zp_cols])."""
    check_shape(name, w, block_size)
    if bits not in (4, 8):
        raise ExportError(f"cannot quantize {name} to {bits} bits (4 or 8)")
    n, k = w.shape
    nb = k // block_size
    qmax = np.float32((1 << bits) - 1)
    blocks = np.asarray(w, np.float32).reshape(n, nb, block_size)
    if not np.isfinite(blocks).all():
        raise ExportError(f"cannot quantize {name}: it holds NaN or infinite values")
    lo = np.minimum(blocks.min(axis=-1), np.float32(0))
    hi = np.maximum(blocks.max(axis=-1), np.float32(0))
    scale = ((hi - lo) / qmax).astype(np.float32)
    scale[scale == 0] = np.float32(1)  # an all-zero block: any scale decodes to zeros
    zp = np.clip(np.round(-lo / scale), 0, qmax).astype(np.float32)
    codes = np.clip(np.round(blocks / scale[..., None]) + zp[..., None], 0, qmax).astype(np.uint8)
    return pack(codes, bits), scale, pack_zero_points(zp.astype(np.uint8), bits)


def pack(codes: np.ndarray, bits: int) -> np.ndarray:
    """codes uint8 [N, k_blocks, block_size] -> B [N, k_blocks, block_size * bits / 8], low bits first."""
    if bits == 8:
        return np.ascontiguousarray(codes, np.uint8)
    return np.ascontiguousarray(codes[..., 0::2] | (codes[..., 1::2] << 4), np.uint8)


def pack_zero_points(zp: np.ndarray, bits: int) -> np.ndarray:
    """zp uint8 [N, k_blocks] -> [N, ceil(k_blocks * bits / 8)]; an odd last nibble pads with 0."""
    if bits == 8:
        return np.ascontiguousarray(zp, np.uint8)
    if zp.shape[1] % 2:
        zp = np.concatenate([zp, np.zeros((zp.shape[0], 1), np.uint8)], axis=1)
    return np.ascontiguousarray(zp[:, 0::2] | (zp[:, 1::2] << 4), np.uint8)


def unpack(packed: np.ndarray, bits: int) -> np.ndarray:
    """Inverse of `pack` (last axis doubles for 4 bits)."""
    if bits == 8:
        return packed.astype(np.uint8)
    out = np.empty(packed.shape[:-1] + (packed.shape[-1] * 2,), np.uint8)
    out[..., 0::2] = packed & 0x0F
    out[..., 1::2] = packed >> 4
    return out


def dequantize(packed: np.ndarray, scales: np.ndarray, zero_points: np.ndarray, bits: int) -> np.ndarray:
    """(B, scales, zero_points) -> W float32 [N, K], as MatMulNBits defines it."""
    codes = unpack(packed, bits).astype(np.float32)  # [N, nb, bs]
    nb = codes.shape[1]
    zp = unpack(zero_points, bits)[:, :nb].astype(np.float32)
    w = (codes - zp[..., None]) * scales[..., None]
    return w.reshape(codes.shape[0], -1).astype(np.float32)


def roundtrip(w: np.ndarray, bits: int, block_size: int) -> np.ndarray:
    """W as the quantized graph sees it."""
    return dequantize(*quantize(w, bits, block_size), bits)
