"""PEFT LoRA adapters: LoRA inputs of an exported model, `.onnx_adapter` files, and merging into base weights.

    python -m tribute_export.adapter --peft DIR --model DIR --out FILE.onnx_adapter

`read_peft` holds the PEFT rules (key names, rank_pattern/alpha_pattern, rslora, refused features);
`load_peft` turns an adapter into an exported model's LoRA inputs, `merge_peft` bakes adapters into
a source's weights (`python -m tribute_export --merge-peft DIR[:WEIGHT]`).

Parameter names are the model's LoRA input names (`{module}.lora_A` / `{module}.lora_B`);
A is stored transposed ([in, r]) and B as (scale * B) transposed ([r, out]),
scale = lora_alpha / r (or lora_alpha / sqrt(r) with use_rslora), per module with rank_pattern/alpha_pattern.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import re
import sys
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import ExportError
from .gguf_quant import SourceBlocks
from .sources import Weights, load_safetensors_tensor, read_safetensors_index


def _pattern_value(pattern: dict, module: str, default):
    """PEFT's get_pattern_key: a key matches when it equals the module path or is a dotted suffix / regex of it."""
    for key, val in (pattern or {}).items():
        if key == module or module.endswith("." + key):
            return val
        try:
            if re.match(rf"(.*\.)?({key})$", module):
                return val
        except re.error:
            continue
    return default


def _module_from_key(key: str):
    """base_model.model.model.layers.3.mlp.down_proj.lora_A.weight -> (model.layers.3.mlp.down_proj, 'A')."""
    k = key
    if k.startswith("base_model.model."):
        k = k[len("base_model.model."):]
    m = re.match(r"^(.*)\.lora_([AB])(?:\.[^.]+)?\.weight$", k)
    if not m:
        return None, None
    return m.group(1), m.group(2)


@dataclass
class PeftModule:
    module: str          # e.g. model.layers.3.self_attn.q_proj
    A: np.ndarray        # [r, in] fp32
    B: np.ndarray        # [out, r] fp32
    scale: float         # alpha / r, or alpha / sqrt(r) with use_rslora

    @property
    def rank(self) -> int:
        return int(self.A.shape[0])

    @property
    def in_features(self) -> int:
        return int(self.A.shape[1])

    @property
    def out_features(self) -> int:
        return int(self.B.shape[0])


@dataclass
class PeftAdapter:
    path: str
    config: dict
    safetensors: str
    modules: List[PeftModule] = field(default_factory=list)

    @property
    def base_model(self) -> Optional[str]:
        return self.config.get("base_model_name_or_path")


def read_peft(peft_dir: str) -> PeftAdapter:
    """Reads and checks a PEFT LoRA adapter directory (adapter_config.json + adapter_model.safetensors)."""
    cfg_path = os.path.join(peft_dir, "adapter_config.json")
    st_path = os.path.join(peft_dir, "adapter_model.safetensors")
    for p in (cfg_path, st_path):
        if not os.path.isfile(p):
            raise ExportError(f"{peft_dir} is not a PEFT adapter directory: {os.path.basename(p)} is missing")
    try:
        with open(cfg_path) as f:
            cfg = json.load(f)
    except (OSError, ValueError) as e:
        raise ExportError(f"cannot read {cfg_path}: {e}") from None
    if not isinstance(cfg, dict):
        raise ExportError(f"{cfg_path} is not a JSON object")

    if cfg.get("peft_type", "LORA") != "LORA":
        raise ExportError(f"unsupported peft_type {cfg.get('peft_type')!r} (only LORA)")
    for flag, what in (("use_dora", "DoRA"), ("fan_in_fan_out", "fan_in_fan_out"), ("lora_bias", "lora_bias")):
        if cfg.get(flag):
            raise ExportError(f"adapters with {what} are not supported")
    if cfg.get("modules_to_save"):
        raise ExportError(f"adapters with modules_to_save ({cfg['modules_to_save']}) are not supported: "
                          "they replace whole modules, which LoRA inputs cannot express")

    index = read_safetensors_index(st_path)
    pairs: Dict[str, dict] = {}
    for key in index:
        mod, ab = _module_from_key(key)
        if mod is None:
            if "lora_embedding" in key or "lora_magnitude" in key:
                raise ExportError(f"unsupported adapter tensor {key}")
            continue
        pairs.setdefault(mod, {})[ab] = key
    if not pairs:
        raise ExportError(f"{st_path} contains no LoRA A/B weights")

    r_default = int(cfg.get("r", 8))
    alpha_default = float(cfg.get("lora_alpha", r_default))
    rslora = bool(cfg.get("use_rslora"))
    adapter = PeftAdapter(path=peft_dir, config=cfg, safetensors=st_path)
    for mod, ab in sorted(pairs.items()):
        if set(ab) != {"A", "B"}:
            raise ExportError(f"adapter module {mod} lacks lora_{'B' if 'A' in ab else 'A'}")
        A = load_safetensors_tensor(index[ab["A"]])  # [r, in]
        B = load_safetensors_tensor(index[ab["B"]])  # [out, r]
        if A.ndim != 2 or B.ndim != 2 or A.shape[0] != B.shape[1]:
            raise ExportError(f"adapter module {mod}: inconsistent shapes A {list(A.shape)} B {list(B.shape)}")
        if not (np.isfinite(A).all() and np.isfinite(B).all()):
            raise ExportError(f"adapter module {mod}: non-finite values in lora_A/lora_B")
        r = A.shape[0]
        r_cfg = int(_pattern_value(cfg.get("rank_pattern"), mod, r_default))
        if r_cfg != r:
            raise ExportError(f"adapter module {mod}: rank {r} in the weights but {r_cfg} in adapter_config.json")
        alpha = float(_pattern_value(cfg.get("alpha_pattern"), mod, alpha_default))
        scale = alpha / math.sqrt(r) if rslora else alpha / r
        adapter.modules.append(PeftModule(mod, A, B, scale))
    return adapter


def load_peft(peft_dir: str, model_dir: str, weight: float = 1.0) -> Dict[str, np.ndarray]:
    """Returns {LoRA input name: array} for the exported model in model_dir, of the type its LoRA
    inputs take (`lora.dtype`: float32, or float16 for `--compute fp16` exports)."""
    tj_path = os.path.join(model_dir, "tribute.json")
    if not os.path.isfile(tj_path):
        raise ExportError(f"{model_dir} is not an exported model directory: tribute.json is missing")
    adapter = read_peft(peft_dir)
    try:
        with open(tj_path) as f:
            tj = json.load(f)
    except (OSError, ValueError) as e:
        raise ExportError(f"cannot read {tj_path}: {e}") from None

    modules = {m["module"]: m for m in (tj.get("lora") or {}).get("modules", [])}
    if not modules:
        raise ExportError(f"{model_dir} was exported without LoRA inputs (--lora-targets none)")
    missing = sorted(m.module for m in adapter.modules if m.module not in modules)
    if missing:
        targets = (tj.get("lora") or {}).get("targets", [])
        raise ExportError(
            f"the adapter targets {len(missing)} module(s) the model has no LoRA inputs for, e.g. {missing[0]} "
            f"(model LoRA targets: {', '.join(targets)}); re-export the model with --lora-targets including them")

    dtype = np.float16 if (tj.get("lora") or {}).get("dtype") == "float16" else np.float32
    out = {}
    for m in adapter.modules:
        info = modules[m.module]
        if m.in_features != info["in_features"] or m.out_features != info["out_features"]:
            raise ExportError(
                f"adapter module {m.module}: shapes A {list(m.A.shape)} B {list(m.B.shape)} do not fit the model "
                f"(in_features {info['in_features']}, out_features {info['out_features']}): wrong base model?")
        out[info["a"]] = np.ascontiguousarray(m.A.T.astype(np.float32), dtype=dtype)
        out[info["b"]] = np.ascontiguousarray((m.B * (m.scale * weight)).T.astype(np.float32), dtype=dtype)
    return out


# ---------------------------------------------------------------------------------------------
# Merging adapters into a source's base weights (`python -m tribute_export --merge-peft DIR[:WEIGHT]`)

_MERGE_MODULE = re.compile(r"^model\.layers\.(\d+)\.(self_attn|mlp)\.([a-z_]+)$")
_ATTN_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")
_MLP_TARGETS = ("gate_proj", "up_proj", "down_proj")


def parse_merge_arg(s: str) -> Tuple[str, float]:
    """`DIR[:WEIGHT]` -> (DIR, WEIGHT); the weight defaults to 1."""
    path, weight = s, 1.0
    head, sep, tail = s.rpartition(":")
    if sep and head and not os.path.isdir(s):
        try:
            weight = float(tail)
            path = head
        except ValueError:
            pass
    if not path:
        raise ExportError(f"--merge-peft {s!r}: expected DIR[:WEIGHT]")
    if not math.isfinite(weight):
        raise ExportError(f"--merge-peft {s!r}: the weight must be a finite number")
    return path, weight


def linear_shapes(spec) -> Dict[str, Tuple[int, int]]:
    """target -> (out_features, in_features) of the source model's linear layers (Hugging Face layout)."""
    H, I, D = spec.hidden_size, spec.intermediate_size, spec.head_dim
    return {"q_proj": (spec.num_heads * D, H), "k_proj": (spec.num_kv_heads * D, H),
            "v_proj": (spec.num_kv_heads * D, H), "o_proj": (H, spec.num_heads * D),
            "gate_proj": (I, H), "up_proj": (I, H), "down_proj": (H, I)}


def _normalize_name(name: str) -> str:
    return re.split(r"[/\\]", name.strip().rstrip("/\\"))[-1].lower()


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def merge_deltas(adapters: Sequence[Tuple[PeftAdapter, float]], spec,
                 has_weight: Callable[[str], bool]) -> Dict[str, np.ndarray]:
    """{base weight name: ΔW [out, in] float64} = Σ weight · scale · B @ A over the adapters, after checking
    every module against the source model (a linear layer that exists, with the right shapes)."""
    shapes = linear_shapes(spec)
    deltas: Dict[str, np.ndarray] = {}
    for adapter, weight in adapters:
        where = f"--merge-peft {adapter.path}"
        for m in adapter.modules:
            mm = _MERGE_MODULE.match(m.module)
            target = mm.group(3) if mm else None
            ok = (mm is not None and int(mm.group(1)) < spec.num_layers and
                  target in (_ATTN_TARGETS if mm.group(2) == "self_attn" else _MLP_TARGETS))
            if not ok or not has_weight(m.module + ".weight"):
                raise ExportError(
                    f"{where}: the adapter targets {m.module}, which is not a linear layer of the source model "
                    f"({spec.num_layers} layers; mergeable: model.layers.N.self_attn.{{q,k,v,o}}_proj, "
                    f"model.layers.N.mlp.{{gate,up,down}}_proj): wrong base model?")
            fout, fin = shapes[target]
            if m.in_features != fin or m.out_features != fout:
                raise ExportError(
                    f"{where}: module {m.module}: shapes A {list(m.A.shape)} B {list(m.B.shape)} do not fit the "
                    f"source model (in_features {fin}, out_features {fout}): wrong base model?")
            d = (weight * m.scale) * (m.B.astype(np.float64) @ m.A.astype(np.float64))
            name = m.module + ".weight"
            if name in deltas:
                deltas[name] += d
            else:
                deltas[name] = d
    return deltas


def merge_peft(weights: Weights, spec, merges: Sequence[Tuple[str, float]], log=None):
    """Bakes the weighted PEFT adapters into `weights`: W[out, in] += Σ weight · scale · B @ A.

    Returns (merged Weights, records for tribute.json's source.merged_adapters). Every adapter is read
    and checked before anything is merged; the base weights are loaded lazily, once, as before."""
    log = log or (lambda msg: None)
    adapters, records = [], []
    for path, weight in merges:
        a = read_peft(path)
        base = a.base_model
        if base and spec.name and _normalize_name(base) != _normalize_name(spec.name):
            log(f"warning: --merge-peft {path} was trained for {base!r}, the source model is {spec.name!r}")
        adapters.append((a, float(weight)))
        records.append({"path": os.path.basename(os.path.normpath(path)), "weight": float(weight),
                        "sha256": sha256_file(a.safetensors)})
    deltas = merge_deltas(adapters, spec, weights.has)
    for a, w in adapters:
        ranks = sorted({m.rank for m in a.modules})
        log(f"merging {a.path} (weight {w:g}): {len(a.modules)} modules, rank(s) {ranks}")

    def load(name):
        arr = weights.get(name)
        d = deltas.get(name)
        if d is None:
            return arr
        return (arr.astype(np.float64) + d).astype(np.float32)

    def blocks(name):
        src = weights.blocks(name)
        if src is not None and name in deltas:
            return SourceBlocks(src.tensor, src.qtype, None, "an adapter is merged into it")
        return src

    return Weights(weights.names(), load, blocks), records


def write_onnx_adapter(params: Dict[str, np.ndarray], path: str):
    try:
        import onnxruntime as ort
    except ImportError:
        raise ExportError("writing .onnx_adapter files needs onnxruntime: pip install 'tribute-export[adapter]'") from None
    # float16 for a model whose LoRA inputs take it (load_peft), else float32; kept alive until export
    arrays = {k: np.ascontiguousarray(v, dtype=np.float16 if v.dtype == np.float16 else np.float32)
              for k, v in params.items()}
    values = {k: ort.OrtValue.ortvalue_from_numpy(v) for k, v in arrays.items()}
    fmt = ort.AdapterFormat()
    fmt.set_adapter_version(1)
    fmt.set_model_version(1)
    fmt.set_parameters(values)
    tmp = path + ".tmp"
    fmt.export_adapter(tmp)
    os.replace(tmp, path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tribute_export.adapter",
                                description="Convert a PEFT LoRA adapter to an ONNX Runtime .onnx_adapter file "
                                            "for a model exported by tribute_export.")
    p.add_argument("--peft", required=True, help="PEFT adapter dir (adapter_config.json + adapter_model.safetensors)")
    p.add_argument("--model", required=True, help="exported model dir (with tribute.json)")
    p.add_argument("--out", required=True, help="output .onnx_adapter file")
    p.add_argument("--weight", type=float, default=1.0, help="multiply the adapter's effect by this factor")
    args = p.parse_args(argv)
    try:
        params = load_peft(args.peft, args.model, args.weight)
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        write_onnx_adapter(params, args.out)
    except ExportError as e:
        print(f"adapter: error: {e}", file=sys.stderr)
        return 1
    n = len(params) // 2
    ranks = sorted({v.shape[1] for k, v in params.items() if k.endswith(".lora_A")})
    print(f"adapter: wrote {args.out}: {n} modules, rank(s) {ranks}, "
          f"{os.path.getsize(args.out) / 2**20:.2f} MiB", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
