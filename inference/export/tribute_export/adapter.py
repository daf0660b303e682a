"""PEFT LoRA adapter -> LoRA inputs of an exported model / ONNX Runtime `.onnx_adapter` file.

    python -m tribute_export.adapter --peft DIR --model DIR --out FILE.onnx_adapter

Parameter names are the model's LoRA input names (`{module}.lora_A` / `{module}.lora_B`);
A is stored transposed ([in, r]) and B as (scale * B) transposed ([r, out]),
scale = lora_alpha / r (or lora_alpha / sqrt(r) with use_rslora), per module with rank_pattern/alpha_pattern.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from typing import Dict

import numpy as np

from . import ExportError
from .sources import load_safetensors_tensor, read_safetensors_index


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


def load_peft(peft_dir: str, model_dir: str, weight: float = 1.0) -> Dict[str, np.ndarray]:
    """Returns {LoRA input name: fp32 array} for the exported model in model_dir."""
    cfg_path = os.path.join(peft_dir, "adapter_config.json")
    st_path = os.path.join(peft_dir, "adapter_model.safetensors")
    for p in (cfg_path, st_path):
        if not os.path.isfile(p):
            raise ExportError(f"{peft_dir} is not a PEFT adapter directory: {os.path.basename(p)} is missing")
    tj_path = os.path.join(model_dir, "tribute.json")
    if not os.path.isfile(tj_path):
        raise ExportError(f"{model_dir} is not an exported model directory: tribute.json is missing")
    try:
        with open(cfg_path) as f:
            cfg = json.load(f)
        with open(tj_path) as f:
            tj = json.load(f)
    except (OSError, ValueError) as e:
        raise ExportError(f"cannot read adapter/model config: {e}") from None

    if cfg.get("peft_type", "LORA") != "LORA":
        raise ExportError(f"unsupported peft_type {cfg.get('peft_type')!r} (only LORA)")
    for flag, what in (("use_dora", "DoRA"), ("fan_in_fan_out", "fan_in_fan_out"), ("lora_bias", "lora_bias")):
        if cfg.get(flag):
            raise ExportError(f"adapters with {what} are not supported")
    if cfg.get("modules_to_save"):
        raise ExportError(f"adapters with modules_to_save ({cfg['modules_to_save']}) are not supported: "
                          "they replace whole modules, which LoRA inputs cannot express")

    modules = {m["module"]: m for m in (tj.get("lora") or {}).get("modules", [])}
    if not modules:
        raise ExportError(f"{model_dir} was exported without LoRA inputs (--lora-targets none)")

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
    missing = sorted(m for m in pairs if m not in modules)
    if missing:
        targets = (tj.get("lora") or {}).get("targets", [])
        raise ExportError(
            f"the adapter targets {len(missing)} module(s) the model has no LoRA inputs for, e.g. {missing[0]} "
            f"(model LoRA targets: {', '.join(targets)}); re-export the model with --lora-targets including them")

    out = {}
    for mod, ab in sorted(pairs.items()):
        if set(ab) != {"A", "B"}:
            raise ExportError(f"adapter module {mod} lacks lora_{'B' if 'A' in ab else 'A'}")
        A = load_safetensors_tensor(index[ab["A"]])  # [r, in]
        B = load_safetensors_tensor(index[ab["B"]])  # [out, r]
        info = modules[mod]
        if A.ndim != 2 or B.ndim != 2 or A.shape[0] != B.shape[1]:
            raise ExportError(f"adapter module {mod}: inconsistent shapes A {list(A.shape)} B {list(B.shape)}")
        if A.shape[1] != info["in_features"] or B.shape[0] != info["out_features"]:
            raise ExportError(
                f"adapter module {mod}: shapes A {list(A.shape)} B {list(B.shape)} do not fit the model "
                f"(in_features {info['in_features']}, out_features {info['out_features']}): wrong base model?")
        r = A.shape[0]
        r_cfg = int(_pattern_value(cfg.get("rank_pattern"), mod, r_default))
        if r_cfg != r:
            raise ExportError(f"adapter module {mod}: rank {r} in the weights but {r_cfg} in adapter_config.json")
        alpha = float(_pattern_value(cfg.get("alpha_pattern"), mod, alpha_default))
        scale = alpha / math.sqrt(r) if rslora else alpha / r
        out[info["a"]] = np.ascontiguousarray(A.T, dtype=np.float32)
        out[info["b"]] = np.ascontiguousarray((B * (scale * weight)).T, dtype=np.float32)
    return out


def write_onnx_adapter(params: Dict[str, np.ndarray], path: str):
    try:
        import onnxruntime as ort
    except ImportError:
        raise ExportError("writing .onnx_adapter files needs onnxruntime: pip install 'tribute-export[adapter]'") from None
    arrays = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in params.items()}  # keep alive until export
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
