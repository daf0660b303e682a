"""Writes N random PEFT LoRA adapters for an exported model: the adapters gpu.sh's `adapters`
stage serves side by side (32 rows over 32 adapters against 32 rows on one).

Each adapter is a directory with `adapter_config.json` and `adapter_model.safetensors`
(written here without the safetensors package, which the GPU machine lacks: an 8-byte header
length, the JSON header, the tensors' bytes), rank `--rank` on every LoRA module the model
takes (its `tribute.json`), values drawn from N(0, 0.02²) with seed `--seed` + i.

  python inference/benches/random_adapters.py MODEL_DIR OUT_DIR N [--rank 16] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import sys

import numpy as np


def write_safetensors(path: str, tensors: dict) -> None:
    header, chunks, offset = {}, [], 0
    for name, arr in tensors.items():
        data = np.ascontiguousarray(arr, dtype=np.float32).tobytes()
        header[name] = {"dtype": "F32", "shape": list(arr.shape), "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for c in chunks:
            f.write(c)


def write_adapter(out: str, tj: dict, rank: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    modules = tj["lora"]["modules"]
    tensors = {}
    for m in modules:
        key = f"base_model.model.{m['module']}"
        tensors[f"{key}.lora_A.weight"] = rng.normal(0, 0.02, (rank, m["in_features"]))
        tensors[f"{key}.lora_B.weight"] = rng.normal(0, 0.02, (m["out_features"], rank))
    os.makedirs(out, exist_ok=True)
    write_safetensors(os.path.join(out, "adapter_model.safetensors"), tensors)
    config = {
        "peft_type": "LORA",
        "r": rank,
        "lora_alpha": 2 * rank,
        "target_modules": sorted({m["module"].rsplit(".", 1)[-1] for m in modules}),
        "base_model_name_or_path": tj.get("name", ""),
    }
    with open(os.path.join(out, "adapter_config.json"), "w") as f:
        json.dump(config, f, indent=1)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("out")
    p.add_argument("n", type=int)
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    with open(os.path.join(a.model, "tribute.json")) as f:
        tj = json.load(f)
    if not tj.get("lora", {}).get("modules"):
        raise SystemExit(f"{a.model}: the model takes no LoRA inputs")
    for i in range(a.n):
        write_adapter(os.path.join(a.out, f"a{i}"), tj, a.rank, a.seed + i)
    print(f"{a.n} adapters of rank {a.rank} over {len(tj['lora']['modules'])} modules in {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
