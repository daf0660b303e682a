"""Numpy reference for the Rust integration tests (`inference/tests/it/tiny/`).

    python reference_logits.py hf --out DIR [--seed N]
        writes the tests' tiny llama as a Hugging Face directory (config.json +
        model.safetensors), with conftest's `tiny_config` / `make_weights`.

    python reference_logits.py logprobs < QUERY.json
        QUERY = {"hf": DIR, "queries": [{"context": [ids], "continuation": [ids],
                                         "adapters": [[PEFT_DIR, weight], ...]}, ...]}
        prints {"log_probs": [[...], ...], "argmax": [[...], ...]}: teacher-forced
        log p(continuation token | prefix), and the most likely token at each of those
        positions, from conftest's independent forward pass `ref_forward` with
        W + sum_i w_i * scale_i * B_i @ A_i on every adapted module.

    python reference_logits.py nan-weights --model DIR
        overwrites every floating-point tensor in an exported model's model.onnx.data with
        NaN (integer tables stay intact), for the non-finite-logits test.

PEFT adapters are read here directly (adapter_config.json + adapter_model.safetensors),
independently of `tribute_export.adapter`.
"""

import argparse
import json
import math
import os
import re
import sys
import types

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
try:  # conftest only needs pytest for its fixtures' decorators
    import pytest  # noqa: F401
except ImportError:
    sys.modules["pytest"] = types.SimpleNamespace(fixture=lambda *a, **k: (lambda f: f))
import conftest  # noqa: E402


def write_hf(out, seed):
    cfg = conftest.tiny_config()
    w = conftest.make_weights(cfg, seed=seed)
    conftest.write_hf_dir(out, cfg, w)


def load_hf(path):
    from safetensors.numpy import load_file
    with open(os.path.join(path, "config.json")) as f:
        cfg = json.load(f)
    return cfg, load_file(os.path.join(path, "model.safetensors"))


def pattern(patterns, module, default):
    for key, val in (patterns or {}).items():
        if module == key or module.endswith("." + key) or re.match(rf"^(.*\.)?(?:{key})$", module):
            return val
    return default


def load_peft(path):
    """{module: (A [r, in], B [out, r], scale)} in float64."""
    from safetensors.numpy import load_file
    with open(os.path.join(path, "adapter_config.json")) as f:
        cfg = json.load(f)
    t = load_file(os.path.join(path, "adapter_model.safetensors"))
    out = {}
    for key, a in t.items():
        m = re.match(r"^base_model\.model\.(.*)\.lora_A\.weight$", key)
        if not m:
            continue
        mod = m.group(1)
        b = t[f"base_model.model.{mod}.lora_B.weight"]
        r = a.shape[0]
        assert r == pattern(cfg.get("rank_pattern"), mod, cfg["r"]), (mod, r)
        alpha = pattern(cfg.get("alpha_pattern"), mod, cfg["lora_alpha"])
        scale = alpha / math.sqrt(r) if cfg.get("use_rslora") else alpha / r
        out[mod] = (a.astype(np.float64), b.astype(np.float64), scale)
    return out


def combined_lora(adapters):
    """sum_i w_i * s_i * B_i A_i per module as one (A, B, 1.0): A's stacked, w*s*B's concatenated."""
    per_mod = {}
    for path, weight in adapters:
        for mod, (a, b, s) in load_peft(path).items():
            per_mod.setdefault(mod, []).append((a, b * (s * weight)))
    return {mod: (np.concatenate([a for a, _ in parts], 0), np.concatenate([b for _, b in parts], 1), 1.0)
            for mod, parts in per_mod.items()}


def log_probs(cfg, w, q):
    ids = list(q["context"]) + list(q["continuation"])
    logits = conftest.ref_forward(cfg, w, ids, lora=combined_lora(q.get("adapters", [])))
    m = logits.max(-1, keepdims=True)
    lsm = logits - (m + np.log(np.exp(logits - m).sum(-1, keepdims=True)))
    start = len(q["context"]) - 1
    lp = [float(lsm[start + j, t]) for j, t in enumerate(q["continuation"])]
    am = [int(lsm[start + j].argmax()) for j in range(len(q["continuation"]))]
    return lp, am


def nan_weights(model_dir):
    import onnx
    m = onnx.load(os.path.join(model_dir, "model.onnx"), load_external_data=False)
    nan = {onnx.TensorProto.FLOAT: np.float32(np.nan).tobytes(), onnx.TensorProto.FLOAT16: np.float16(np.nan).tobytes()}
    n = 0
    with open(os.path.join(model_dir, "model.onnx.data"), "r+b") as f:
        for t in m.graph.initializer:
            if t.data_location != onnx.TensorProto.EXTERNAL or t.data_type not in nan:
                continue
            info = {e.key: e.value for e in t.external_data}
            f.seek(int(info["offset"]))
            length = int(info["length"])
            f.write(nan[t.data_type] * (length // len(nan[t.data_type])))
            n += 1
    assert n > 0, "no floating-point external tensors"


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    h = sub.add_parser("hf")
    h.add_argument("--out", required=True)
    h.add_argument("--seed", type=int, default=1)
    sub.add_parser("logprobs")
    nw = sub.add_parser("nan-weights")
    nw.add_argument("--model", required=True)
    args = p.parse_args()
    if args.cmd == "hf":
        write_hf(args.out, args.seed)
    elif args.cmd == "nan-weights":
        nan_weights(args.model)
    else:
        req = json.load(sys.stdin)
        cfg, w = load_hf(req["hf"])
        res = [log_probs(cfg, w, q) for q in req["queries"]]
        json.dump({"log_probs": [lp for lp, _ in res], "argmax": [am for _, am in res]}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
