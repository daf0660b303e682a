"""Writes the inference fuzz targets' seeds (checked in; run again only to change them):

    python3 inference/fuzz/make_seeds.py            # PEFT seeds (standard library only)
    ~/.cache/tribute/venv/bin/python inference/fuzz/make_seeds.py --onnx   # also .onnx_adapter seeds

PEFT seeds are `adapter_config.json`, a NUL byte, then a small `adapter_model.safetensors`
whose LoRA matrices fit the targets' model (layer 0 q_proj 8 -> 8, v_proj 8 -> 4, see
inference/fuzz/src/lib.rs). The configs are the vendored adapters' own.
"""

import json
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
MODULES = {"q_proj": (8, 8), "v_proj": (8, 4)}


def safetensors(tensors):
    """tensors: name -> (dtype, shape, raw bytes)."""
    header, data = {"__metadata__": {"format": "pt"}}, b""
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


def values(n, dtype, seed):
    xs = [((i * 7 + seed) % 13 - 6) / 16 for i in range(n)]
    if dtype == "F32":
        return struct.pack(f"<{n}f", *xs)
    if dtype == "F16":
        return struct.pack(f"<{n}e", *xs)
    return b"".join(struct.pack("<f", x)[2:] for x in xs)  # BF16: the high half of f32


def lora(rank, dtype, modules=MODULES, suffix="weight"):
    t = {}
    for k, (name, (i, o)) in enumerate(modules.items()):
        base = f"base_model.model.model.layers.0.self_attn.{name}"
        t[f"{base}.lora_A.{suffix}"] = (dtype, [rank, i], values(rank * i, dtype, k))
        t[f"{base}.lora_B.{suffix}"] = (dtype, [o, rank], values(o * rank, dtype, k + 5))
    return safetensors(t)


def write(folder, name, data):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, name), "wb") as f:
        f.write(data)


def main():
    peft = os.path.join(HERE, "corpus", "peft_adapter")
    config = json.load(open(os.path.join(ROOT, "examples/adapters/smollm2-135m-zephyr-lora/adapter_config.json")))
    config["r"] = 2
    small = json.dumps(config, indent=2).encode()
    write(peft, "zephyr-f32", small + b"\0" + lora(2, "F32"))
    rs = dict(config, r=4, use_rslora=True, rank_pattern={"q_proj": 2, "v_proj": 2}, alpha_pattern={"q_proj": 8})
    write(peft, "rslora-patterns-f16", json.dumps(rs).encode() + b"\0" + lora(2, "F16"))
    minimal = {"peft_type": "LORA", "r": 1, "lora_alpha": 2, "target_modules": "all-linear"}
    write(peft, "minimal-bf16-default", json.dumps(minimal).encode() + b"\0" + lora(1, "BF16", suffix="default.weight"))
    write(peft, "config-only", small)
    if "--onnx" in sys.argv:
        import numpy as np
        import onnxruntime as ort

        folder = os.path.join(HERE, "corpus", "onnx_adapter")
        os.makedirs(folder, exist_ok=True)
        for rank in (1, 2):
            params = {}
            for name, (i, o) in MODULES.items():
                params[f"lora_a.{name}"] = np.full((i, rank), 0.25, dtype=np.float32)
                params[f"lora_b.{name}"] = np.full((rank, o), -0.5, dtype=np.float32)
            values_ = {k: ort.OrtValue.ortvalue_from_numpy(v) for k, v in params.items()}
            fmt = ort.AdapterFormat()
            fmt.set_adapter_version(1)
            fmt.set_model_version(1)
            fmt.set_parameters(values_)
            fmt.export_adapter(os.path.join(folder, f"rank{rank}.onnx_adapter"))


if __name__ == "__main__":
    main()
