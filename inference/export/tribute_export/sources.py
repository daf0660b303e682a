"""Model sources: Hugging Face safetensors directories, GGUF files, random weights.

Every source yields a `Spec` (the architecture numbers) and a `Weights` object that returns
fp32 numpy arrays in Hugging Face layout (`[out_features, in_features]` for linear weights).
"""

from __future__ import annotations

import glob
import json
import os
import struct
import sys
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

import numpy as np

from . import ExportError, archs
from .gguf_quant import TRANSFER_BITS, SourceBlocks, affine_blocks

SUPPORTED_MODEL_TYPES = ("llama", "qwen2", "mistral", "qwen3", "gemma3_text", "phi3")


@dataclass
class Spec:
    model_type: str
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    context_length: int
    rms_norm_eps: float
    rope_theta: float
    rope_scaling: Optional[dict] = None
    tie_word_embeddings: bool = True
    bos_token_id: Optional[int] = None
    eos_token_ids: List[int] = field(default_factory=list)
    name: Optional[str] = None
    pad_token_id: Optional[int] = None
    # llama.cpp's per-frequency rope factors (GGUF `rope_freqs.weight`), if any
    rope_freqs: Optional[np.ndarray] = None
    # what Gemma 3 / Qwen3 add (archs.py fills these)
    hidden_act: str = "silu"  # or "gelu_tanh"
    qk_norm: bool = False  # RMSNorm over each head of q and k, before RoPE
    sandwich_norms: bool = False  # Gemma: norms after attention and after the MLP, and one before the MLP
    norm_offset: float = 0.0  # RMSNorm multiplies by (norm_offset + w)
    embed_scale: Optional[float] = None
    query_scale: Optional[float] = None  # None: 1/sqrt(head_dim)
    sliding_window: Optional[int] = None
    layer_types: Optional[List[str]] = None  # archs.SLIDING / archs.FULL per layer
    rope_local_theta: Optional[float] = None  # RoPE base of the sliding layers (unscaled)

    def check(self):
        if self.num_heads % self.num_kv_heads:
            raise ExportError(
                f"num_attention_heads {self.num_heads} is not a multiple of num_key_value_heads {self.num_kv_heads}")
        if self.head_dim % 2:
            raise ExportError(f"head_dim {self.head_dim} must be even for RoPE")

    def hf_config(self) -> dict:
        arch = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM",
                "mistral": "MistralForCausalLM", "gemma3": "Gemma3ForCausalLM",
                "phi3": "Phi3ForCausalLM"}[self.model_type]
        cfg = {
            "architectures": [arch],
            "model_type": self.model_type,
            "hidden_act": "silu",
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "max_position_embeddings": self.context_length,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "rope_scaling": self.rope_scaling,
            "tie_word_embeddings": self.tie_word_embeddings,
            "vocab_size": self.vocab_size,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_ids[0] if len(self.eos_token_ids) == 1 else self.eos_token_ids,
            "pad_token_id": self.pad_token_id,
            "torch_dtype": "float32",
            "use_cache": True,
        }
        if self.model_type == "llama":
            cfg["attention_bias"] = False
            cfg["mlp_bias"] = False
        cfg.update(archs.hf_config_extras(self))
        return cfg


class Weights:
    """name -> fp32 array in Hugging Face layout; `None` from get() when absent."""

    def __init__(self, names, loader: Callable[[str], np.ndarray],
                 blocks: Optional[Callable[[str], Optional["SourceBlocks"]]] = None):
        self._names = set(names)
        self._loader = loader
        self._blocks = blocks

    def blocks(self, name: str) -> Optional["SourceBlocks"]:
        """The source's own quantized blocks for `name` (GGUF sources), None for float sources."""
        if self._blocks is None or name not in self._names:
            return None
        return self._blocks(name)

    def has(self, name: str) -> bool:
        return name in self._names

    def names(self) -> List[str]:
        return sorted(self._names)

    def get(self, name: str) -> Optional[np.ndarray]:
        if name not in self._names:
            return None
        return np.ascontiguousarray(self._loader(name), dtype=np.float32)

    def require(self, name: str, shape) -> np.ndarray:
        a = self.get(name)
        if a is None:
            raise ExportError(f"weight {name} is missing from the source")
        if tuple(a.shape) != tuple(shape):
            raise ExportError(f"weight {name} has shape {list(a.shape)}, expected {list(shape)}")
        return a


# ---------------------------------------------------------------------------------------------
# Hugging Face config.json -> Spec

def spec_from_hf_config(cfg: dict, where: str = "config.json") -> Spec:
    cfg = archs.unwrap_hf_config(cfg)
    mt = cfg.get("model_type")
    arch_names = cfg.get("architectures") or []
    if mt not in SUPPORTED_MODEL_TYPES:
        raise ExportError(
            f"unsupported architecture in {where}: model_type={mt!r} architectures={arch_names} "
            f"(supported: {', '.join(SUPPORTED_MODEL_TYPES)} decoder LMs)")
    if mt != "gemma3_text" and cfg.get("hidden_act", "silu") not in ("silu", "swish"):
        raise ExportError(f"unsupported hidden_act {cfg.get('hidden_act')!r} in {where} (only silu)")
    if mt == "mistral" and cfg.get("sliding_window") not in (None, 0) and \
            cfg["sliding_window"] < cfg.get("max_position_embeddings", 0):
        print(f"export: warning: sliding_window={cfg['sliding_window']} is ignored (full attention)",
              file=sys.stderr)
    if mt == "qwen2" and cfg.get("use_sliding_window"):
        raise ExportError("qwen2 with use_sliding_window=true is not supported")
    try:
        hidden = int(cfg["hidden_size"])
        heads = int(cfg["num_attention_heads"])
        head_dim = int(cfg.get("head_dim") or hidden // heads)
        eos = cfg.get("eos_token_id")
        eos = [] if eos is None else ([eos] if isinstance(eos, int) else list(eos))
        rope_scaling = cfg.get("rope_scaling")
        rope_theta = cfg.get("rope_theta")
        rp = cfg.get("rope_parameters")  # transformers >= 5 style
        if isinstance(rp, dict):
            rope_theta = rope_theta or rp.get("rope_theta")
            if rope_scaling is None and rp.get("rope_type", "default") != "default":
                rope_scaling = rp
        spec = Spec(
            name=cfg.get("_name_or_path") or None,
            model_type="gemma3" if mt == "gemma3_text" else mt,
            hidden_size=hidden,
            intermediate_size=int(cfg["intermediate_size"]),
            num_layers=int(cfg["num_hidden_layers"]),
            num_heads=heads,
            num_kv_heads=int(cfg.get("num_key_value_heads") or heads),
            head_dim=head_dim,
            vocab_size=int(cfg["vocab_size"]),
            context_length=int(cfg.get("max_position_embeddings") or 4096),
            rms_norm_eps=float(cfg.get("rms_norm_eps") or 1e-6),
            rope_theta=float(rope_theta or 10000.0),
            rope_scaling=rope_scaling,
            tie_word_embeddings=bool(cfg.get("tie_word_embeddings", mt != "llama")),
            bos_token_id=cfg.get("bos_token_id"),
            eos_token_ids=[int(e) for e in eos],
            pad_token_id=cfg.get("pad_token_id"),
        )
        archs.apply_hf_config(spec, cfg, where)
    except (KeyError, TypeError, ValueError) as e:
        raise ExportError(f"{where}: missing or invalid field: {e}") from None
    if rope_scaling:
        t = rope_scaling.get("rope_type", rope_scaling.get("type"))
        if t not in ("llama3", "linear", "default", "longrope", "su"):
            raise ExportError(f"unsupported rope_scaling type {t!r} in {where} (supported: llama3, linear, "
                              "longrope/su)")
    spec.check()
    return spec


# ---------------------------------------------------------------------------------------------
# safetensors (own reader: handles BF16 without torch, memory-maps the files)

_ST_DTYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "BF16": np.uint16,
              "I64": np.int64, "I32": np.int32}


def read_safetensors_index(path: str) -> Dict[str, tuple]:
    """name -> (path, dtype str, shape, begin, end) for one file."""
    try:
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) != 8:
                raise ValueError("file too short")
            (n,) = struct.unpack("<Q", raw)
            if n > 100_000_000:
                raise ValueError("header length out of range")
            header = json.loads(f.read(n))
    except (OSError, ValueError) as e:
        raise ExportError(f"cannot read safetensors file {path}: {e}") from None
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        out[name] = (path, info["dtype"], tuple(info["shape"]), base + b, base + e)
    return out


def load_safetensors_tensor(entry) -> np.ndarray:
    path, dtype, shape, b, e = entry
    if dtype not in _ST_DTYPES:
        raise ExportError(f"unsupported safetensors dtype {dtype} in {path}")
    mm = np.memmap(path, dtype=np.uint8, mode="r", offset=b, shape=(e - b,)) if e > b else np.zeros(0, np.uint8)
    a = mm.view(_ST_DTYPES[dtype]).reshape(shape)
    if dtype == "BF16":
        return (a.astype(np.uint32) << 16).view(np.float32)
    return a.astype(np.float32)


def load_hf_dir(path: str):
    cfg_path = os.path.join(path, "config.json")
    if not os.path.isfile(cfg_path):
        raise ExportError(f"{path} has no config.json (expected a Hugging Face model directory)")
    try:
        with open(cfg_path) as f:
            cfg = json.load(f)
    except (OSError, ValueError) as e:
        raise ExportError(f"cannot read {cfg_path}: {e}") from None
    spec = spec_from_hf_config(cfg, cfg_path)
    if not spec.name:
        spec.name = os.path.basename(os.path.normpath(path))
    gen_path = os.path.join(path, "generation_config.json")
    if os.path.isfile(gen_path):
        try:
            with open(gen_path) as f:
                gen = json.load(f)
            eos = gen.get("eos_token_id")
            if eos is not None:
                spec.eos_token_ids = [eos] if isinstance(eos, int) else [int(e) for e in eos]
            if spec.bos_token_id is None and gen.get("bos_token_id") is not None:
                spec.bos_token_id = int(gen["bos_token_id"])
            if spec.pad_token_id is None and gen.get("pad_token_id") is not None:
                spec.pad_token_id = int(gen["pad_token_id"])
        except (OSError, ValueError) as e:
            raise ExportError(f"cannot read {gen_path}: {e}") from None
    files = sorted(glob.glob(os.path.join(path, "*.safetensors")))
    if not files:
        raise ExportError(f"{path} has no *.safetensors weight files")
    index = {}
    for fpath in files:
        index.update(read_safetensors_index(fpath))
    names, load = list(index), lambda n: load_safetensors_tensor(index[n])
    if spec.model_type == "phi3":
        names, load = archs.split_fused(spec, names, load)
    return spec, Weights(names, load)


# ---------------------------------------------------------------------------------------------
# GGUF

# ggml tensor types the exporter reads (gguf-py dequantizes them; each one is covered by a test)
GGUF_TENSOR_TYPES = ("F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0",
                     "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K")
GGUF_ARCHS = {"llama": "llama", "qwen2": "qwen2", "mistral": "llama", "qwen3": "qwen3", "gemma3": "gemma3"}


def reverse_llama_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """Undo llama.cpp's convert_hf_to_gguf `permute` of Q/K rows (as transformers' GGUF loader does)."""
    dim = w.shape[0] // n_head // 2
    return w.reshape(n_head, dim, 2, *w.shape[1:]).swapaxes(2, 1).reshape(w.shape)


def llama_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's convert_hf_to_gguf `permute` (HF layout -> GGUF layout)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


_GGUF_TENSOR_MAP = {
    "attn_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "attn_q.bias": "self_attn.q_proj.bias",
    "attn_k.bias": "self_attn.k_proj.bias",
    "attn_v.bias": "self_attn.v_proj.bias",
    "attn_output.bias": "self_attn.o_proj.bias",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}


class GGUFSource:
    def __init__(self, path: str):
        try:
            import gguf
        except ImportError:
            raise ExportError("the `gguf` package is required for GGUF sources: pip install gguf") from None
        self.gguf = gguf
        self.path = path
        try:
            self.reader = gguf.GGUFReader(path, "r")
        except Exception as e:  # the reader raises ValueError/struct errors/IndexError on garbage
            raise ExportError(f"{path} is not a readable GGUF file: {type(e).__name__}: {e}") from None
        self.fields = self.reader.fields
        self.arch = self.value("general.architecture")
        if self.arch not in GGUF_ARCHS:
            raise ExportError(f"unsupported GGUF architecture {self.arch!r} in {path} "
                              f"(supported: {', '.join(sorted(GGUF_ARCHS))})")
        self.tensors = {t.name: t for t in self.reader.tensors}
        for t in self.reader.tensors:
            if t.tensor_type.name not in GGUF_TENSOR_TYPES:
                raise ExportError(f"{path}: tensor {t.name} has ggml type {t.tensor_type.name}, which the exporter "
                                  f"does not read (supported: {', '.join(GGUF_TENSOR_TYPES)})")

    def value(self, key, default=None):
        f = self.fields.get(key)
        if f is None:
            return default
        try:
            return f.contents()
        except Exception:
            return default

    def token_id(self, text: str) -> Optional[int]:
        toks = self.value("tokenizer.ggml.tokens") or []
        try:
            return toks.index(text)
        except ValueError:
            return None

    def token_types(self):
        f = self.fields.get("tokenizer.ggml.token_type")
        if f is None:
            return None
        return [int(f.parts[i][0]) for i in f.data]

    def spec(self) -> Spec:
        a = self.arch
        v = self.value
        try:
            hidden = int(v(f"{a}.embedding_length"))
            heads = int(v(f"{a}.attention.head_count"))
            kv = int(v(f"{a}.attention.head_count_kv", heads))
            layers = int(v(f"{a}.block_count"))
            inter = int(v(f"{a}.feed_forward_length"))
        except (TypeError, ValueError):
            raise ExportError(f"{self.path}: GGUF metadata lacks {a}.* architecture keys") from None
        head_dim = int(v(f"{a}.attention.key_length") or v(f"{a}.rope.dimension_count") or hidden // heads)
        if v(f"{a}.rope.dimension_count") not in (None, head_dim):
            raise ExportError("partial rotary embeddings (rope.dimension_count != head_dim) are not supported")
        emb = self.tensors.get("token_embd.weight")
        if emb is None:
            raise ExportError(f"{self.path}: no token_embd.weight tensor")
        vocab = int(v(f"{a}.vocab_size") or emb.shape[-1])
        toks = self.fields.get("tokenizer.ggml.tokens")
        if toks is not None and not v(f"{a}.vocab_size"):
            vocab = len(toks.data)
        eos = []
        for key in ("tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"):
            x = v(key)
            if x is not None and int(x) not in eos:
                eos.append(int(x))
        rope_scaling = None
        st = v(f"{a}.rope.scaling.type")
        if st == "linear":
            rope_scaling = {"rope_type": "linear", "factor": float(v(f"{a}.rope.scaling.factor"))}
        elif st not in (None, "none"):
            raise ExportError(f"unsupported GGUF rope scaling type {st!r}")
        bos = v("tokenizer.ggml.bos_token_id")
        pad = v("tokenizer.ggml.padding_token_id")
        spec = Spec(
            name=v("general.name"),
            model_type=GGUF_ARCHS[a],
            hidden_size=hidden, intermediate_size=inter, num_layers=layers, num_heads=heads,
            num_kv_heads=kv, head_dim=head_dim, vocab_size=vocab,
            context_length=int(v(f"{a}.context_length") or 4096),
            rms_norm_eps=float(v(f"{a}.attention.layer_norm_rms_epsilon") or 1e-6),
            rope_theta=float(v(f"{a}.rope.freq_base") or 10000.0),
            rope_scaling=rope_scaling,
            tie_word_embeddings="output.weight" not in self.tensors,
            bos_token_id=None if bos is None else int(bos),
            eos_token_ids=eos,
            pad_token_id=None if pad is None else int(pad),
        )
        if "rope_freqs.weight" in self.tensors:
            spec.rope_freqs = self._load("rope_freqs.weight").reshape(-1)
        archs.apply_gguf(spec, self)
        spec.check()
        self._spec = spec
        return spec

    def _load(self, gname: str) -> np.ndarray:
        t = self.tensors[gname]
        try:
            a = self.gguf.quants.dequantize(t.data, t.tensor_type)
        except Exception as e:
            raise ExportError(f"cannot dequantize {gname} ({t.tensor_type.name}): {e}") from None
        shape = tuple(int(x) for x in reversed(t.shape))
        return np.asarray(a, dtype=np.float32).reshape(shape)

    def weights(self) -> Weights:
        spec = self._spec
        names = {}
        layer_map = dict(_GGUF_TENSOR_MAP, **archs.GGUF_EXTRA_TENSORS.get(self.arch, {}))
        for g in self.tensors:
            if g == "token_embd.weight":
                names["model.embed_tokens.weight"] = g
            elif g == "output_norm.weight":
                names["model.norm.weight"] = g
            elif g == "output.weight":
                names["lm_head.weight"] = g
            elif g.startswith("blk."):
                _, i, rest = g.split(".", 2)
                if rest in layer_map:
                    names[f"model.layers.{i}.{layer_map[rest]}"] = g
        permute = self.arch == "llama"

        def load(name):
            g = names[name]
            a = self._load(g)
            if permute and (g.endswith("attn_q.weight") or g.endswith("attn_q.bias")):
                a = reverse_llama_permute(a, spec.num_heads)
            elif permute and (g.endswith("attn_k.weight") or g.endswith("attn_k.bias")):
                a = reverse_llama_permute(a, spec.num_kv_heads)
            return a

        def blocks(name):
            g = names[name]
            t = self.tensors[g]
            qtype = t.tensor_type.name
            if qtype not in TRANSFER_BITS:
                return SourceBlocks(g, qtype, None)
            n, k = (int(x) for x in reversed(t.shape))
            heads = {"attn_q": spec.num_heads, "attn_k": spec.num_kv_heads}.get(g.split(".")[-2])

            def load_blocks():
                a = affine_blocks(qtype, t.data, n, k)
                if permute and heads:  # the rows' permutation, undone on whole blocks
                    a = a.permute_rows(reverse_llama_permute(np.arange(n), heads))
                return a
            return SourceBlocks(g, qtype, load_blocks)

        return Weights(names.keys(), load, blocks)


# ---------------------------------------------------------------------------------------------
# Random weights

RANDOM_SHAPES = {
    "tiny": dict(model_type="llama", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, vocab_size=320, max_position_embeddings=512,
                 rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=True),
    "tiny-gemma3": dict(model_type="gemma3_text", hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                        num_attention_heads=4, num_key_value_heads=1, head_dim=32, vocab_size=320,
                        max_position_embeddings=512, rms_norm_eps=1e-6, rope_theta=1000000.0,
                        rope_local_base_freq=10000.0, query_pre_attn_scalar=32, sliding_window=8,
                        sliding_window_pattern=3, hidden_activation="gelu_pytorch_tanh", tie_word_embeddings=True),
    "tiny-qwen3": dict(model_type="qwen3", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, head_dim=32, vocab_size=320,
                       max_position_embeddings=512, rms_norm_eps=1e-6, rope_theta=1000000.0,
                       tie_word_embeddings=True),
    "smollm2-135m": dict(model_type="llama", hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                         num_attention_heads=9, num_key_value_heads=3, vocab_size=49152,
                         max_position_embeddings=8192, rms_norm_eps=1e-5, rope_theta=100000.0,
                         tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=2),
    "llama-3.2-1b": dict(model_type="llama", hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                         num_attention_heads=32, num_key_value_heads=8, head_dim=64, vocab_size=128256,
                         max_position_embeddings=131072, rms_norm_eps=1e-5, rope_theta=500000.0,
                         rope_scaling={"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                                       "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
                         tie_word_embeddings=True, bos_token_id=128000, eos_token_id=[128001, 128008, 128009]),
    "qwen2.5-0.5b": dict(model_type="qwen2", hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                         num_attention_heads=14, num_key_value_heads=2, vocab_size=151936,
                         max_position_embeddings=32768, rms_norm_eps=1e-6, rope_theta=1000000.0,
                         tie_word_embeddings=True, bos_token_id=151643, eos_token_id=151645,
                         pad_token_id=151643),
}


def random_source(shape: str, seed: int):
    if shape in RANDOM_SHAPES:
        cfg = dict(RANDOM_SHAPES[shape])
    else:
        if not os.path.isfile(shape):
            raise ExportError(f"--random: {shape!r} is neither a known shape "
                              f"({', '.join(RANDOM_SHAPES)}) nor a config.json file")
        try:
            with open(shape) as f:
                cfg = json.load(f)
        except (OSError, ValueError) as e:
            raise ExportError(f"cannot read {shape}: {e}") from None
    spec = spec_from_hf_config(cfg, shape)
    spec.name = f"random-{shape if shape in RANDOM_SHAPES else os.path.basename(shape)}"
    has_bias = spec.model_type == "qwen2" or bool(cfg.get("attention_bias"))
    rng = np.random.default_rng(seed)
    H, I, D = spec.hidden_size, spec.intermediate_size, spec.head_dim
    shapes = {"model.embed_tokens.weight": (spec.vocab_size, H), "model.norm.weight": (H,)}
    if not spec.tie_word_embeddings:
        shapes["lm_head.weight"] = (spec.vocab_size, H)
    for i in range(spec.num_layers):
        p = f"model.layers.{i}."
        shapes[p + "input_layernorm.weight"] = (H,)
        shapes[p + "post_attention_layernorm.weight"] = (H,)
        shapes[p + "self_attn.q_proj.weight"] = (spec.num_heads * D, H)
        shapes[p + "self_attn.k_proj.weight"] = (spec.num_kv_heads * D, H)
        shapes[p + "self_attn.v_proj.weight"] = (spec.num_kv_heads * D, H)
        shapes[p + "self_attn.o_proj.weight"] = (H, spec.num_heads * D)
        if has_bias:
            shapes[p + "self_attn.q_proj.bias"] = (spec.num_heads * D,)
            shapes[p + "self_attn.k_proj.bias"] = (spec.num_kv_heads * D,)
            shapes[p + "self_attn.v_proj.bias"] = (spec.num_kv_heads * D,)
        shapes[p + "mlp.gate_proj.weight"] = (I, H)
        shapes[p + "mlp.up_proj.weight"] = (I, H)
        shapes[p + "mlp.down_proj.weight"] = (H, I)
        for n in archs.extra_layer_norms(spec):
            shapes[p + n] = (archs.norm_shape(spec, n),)

    def load(name):
        shp = shapes[name]
        if name.endswith("norm.weight"):  # an identity norm, whichever convention the model uses
            return np.full(shp, 1.0 - spec.norm_offset, np.float32)
        a = rng.standard_normal(shp, dtype=np.float32)
        a *= 0.02
        return a

    return spec, Weights(shapes.keys(), load)
