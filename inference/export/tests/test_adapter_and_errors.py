"""PEFT -> .onnx_adapter conversion, and clear errors for bad inputs."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import PKG_ROOT
from conftest import export, ref_forward, write_hf_dir, tiny_config

IDS = [5, 17, 260, 99, 3, 250, 42, 7]


def write_peft(path, modules, r=4, alpha=8, rank_pattern=None, alpha_pattern=None, rslora=False, seed=0):
    """modules: {module path: (in, out)}; rank_pattern / alpha_pattern as in PEFT."""
    from safetensors.numpy import save_file
    os.makedirs(path, exist_ok=True)
    rng = np.random.default_rng(seed)
    tensors, truth = {}, {}
    for mod, (fin, fout) in modules.items():
        rr = r
        for k, v in (rank_pattern or {}).items():
            if mod.endswith(k):
                rr = v
        al = alpha
        for k, v in (alpha_pattern or {}).items():
            if mod.endswith(k):
                al = v
        A = (rng.standard_normal((rr, fin)) * 0.3).astype(np.float32)
        B = (rng.standard_normal((fout, rr)) * 0.3).astype(np.float32)
        tensors[f"base_model.model.{mod}.lora_A.weight"] = A
        tensors[f"base_model.model.{mod}.lora_B.weight"] = B
        truth[mod] = (A, B, al / math.sqrt(rr) if rslora else al / rr)
    save_file(tensors, os.path.join(path, "adapter_model.safetensors"))
    targets = sorted({m.rsplit(".", 1)[1] for m in modules})
    with open(os.path.join(path, "adapter_config.json"), "w") as f:
        json.dump({"peft_type": "LORA", "r": r, "lora_alpha": alpha, "target_modules": targets,
                   "rank_pattern": rank_pattern or {}, "alpha_pattern": alpha_pattern or {},
                   "use_rslora": rslora, "use_dora": False, "fan_in_fan_out": False, "bias": "none",
                   "modules_to_save": None}, f)
    return truth


PEFT_MODULES = {"model.layers.0.self_attn.q_proj": (64, 64), "model.layers.1.self_attn.q_proj": (64, 64),
                "model.layers.0.self_attn.v_proj": (64, 32), "model.layers.1.self_attn.v_proj": (64, 32),
                "model.layers.1.mlp.down_proj": (128, 64)}


def run_adapter_cli(*args):
    env = dict(os.environ, PYTHONPATH=PKG_ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "tribute_export.adapter", *args], capture_output=True,
                          text=True, env=env, timeout=120)


def run_with_adapter_file(runner, path):
    """The logits of IDS with the .onnx_adapter at `path` active (ONNX Runtime's run options)."""
    import onnxruntime as ort
    adapter = ort.LoraAdapter()
    adapter.Load(path)
    ro = ort.RunOptions()
    ro.add_active_adapter(adapter)
    return runner.run(IDS, run_options=ro)[0]


@pytest.mark.parametrize("rslora", [False, True])
def test_peft_to_onnx_adapter_roundtrip(tiny, tiny_runner, tmp_path, rslora):
    from tribute_export.adapter import load_peft
    cfg, w, _, model_dir = tiny
    peft = str(tmp_path / "peft")
    truth = write_peft(peft, PEFT_MODULES, rank_pattern={"layers.1.mlp.down_proj": 2},
                       alpha_pattern={"layers.0.self_attn.v_proj": 3.0}, rslora=rslora)
    out = str(tmp_path / "a.onnx_adapter")
    res = run_adapter_cli("--peft", peft, "--model", model_dir, "--out", out)
    assert res.returncode == 0, res.stderr
    assert os.path.getsize(out) > 0

    feed = load_peft(peft, model_dir)
    assert feed["model.layers.1.mlp.down_proj.lora_A"].shape == (128, 2)
    assert feed["model.layers.1.mlp.down_proj.lora_B"].shape == (2, 64)
    A, B, s = truth["model.layers.0.self_attn.v_proj"]
    np.testing.assert_allclose(feed["model.layers.0.self_attn.v_proj.lora_B"], (s * B).T, rtol=1e-6)

    direct, _ = tiny_runner.run(IDS, extra=feed)
    np.testing.assert_allclose(run_with_adapter_file(tiny_runner, out), direct, atol=1e-6)
    want = ref_forward(cfg, w, IDS, lora=truth)
    assert float(np.abs(direct[0] - want).max() / np.abs(want).max()) < 1e-4
    base, _ = tiny_runner.run(IDS)
    assert np.abs(base - direct).max() > 1e-2


def test_onnx_adapter_for_an_fp16_compute_model_is_float16(tiny, tmp_path):
    """A `--compute fp16` model takes its LoRA inputs in float16: the adapter file holds float16
    and gives what feeding the same values does."""
    from conftest import Runner, require
    require("onnxconverter_common", "make setup installs the exporter's fp16 extra")
    from tribute_export.adapter import load_peft
    _, _, hf, _ = tiny
    model = str(tmp_path / "half")
    export(["--source", hf, "--out", model, "--compute", "fp16"])
    peft = str(tmp_path / "peft")
    write_peft(peft, PEFT_MODULES)
    out = str(tmp_path / "a.onnx_adapter")
    res = run_adapter_cli("--peft", peft, "--model", model, "--out", out)
    assert res.returncode == 0, res.stderr
    feed = load_peft(peft, model)
    assert feed and all(v.dtype == np.float16 for v in feed.values())
    runner = Runner(model)
    direct, _ = runner.run(IDS, extra=feed)
    np.testing.assert_array_equal(run_with_adapter_file(runner, out), direct)
    assert np.abs(runner.run(IDS)[0] - direct).max() > 1e-2


def test_adapter_refuses_missing_targets(tiny, tmp_path):
    cfg, w, hf, _ = tiny
    model = str(tmp_path / "qonly")
    export(["--source", hf, "--out", model, "--lora-targets", "q_proj"])
    peft = str(tmp_path / "peft")
    write_peft(peft, PEFT_MODULES)
    res = run_adapter_cli("--peft", peft, "--model", model, "--out", str(tmp_path / "x.onnx_adapter"))
    assert res.returncode != 0
    assert "v_proj" in res.stderr and "--lora-targets" in res.stderr and "Traceback" not in res.stderr
    assert not os.path.exists(tmp_path / "x.onnx_adapter")


def test_adapter_refuses_wrong_shapes(tiny, tmp_path):
    peft = str(tmp_path / "peft")
    write_peft(peft, {"model.layers.0.self_attn.q_proj": (96, 64)})
    res = run_adapter_cli("--peft", peft, "--model", tiny[3], "--out", str(tmp_path / "x.onnx_adapter"))
    assert res.returncode != 0 and "do not fit the model" in res.stderr and "Traceback" not in res.stderr


# ---------------------------------------------------------------------------------------------
# bad inputs: clear message, nonzero exit, no partial output

def run_export_cli(*args):
    env = dict(os.environ, PYTHONPATH=PKG_ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "tribute_export", *args], capture_output=True, text=True,
                          env=env, timeout=120)


def assert_clean_failure(res, out, *needles):
    assert res.returncode != 0
    assert "Traceback" not in res.stderr, res.stderr
    assert "error:" in res.stderr
    for n in needles:
        assert n in res.stderr, res.stderr
    assert not os.path.exists(out) and not os.path.exists(out + ".tmp")


def test_missing_source(tmp_path):
    out = str(tmp_path / "out")
    res = run_export_cli("--source", str(tmp_path / "nope.gguf"), "--out", out)
    assert_clean_failure(res, out, "does not exist")


def test_non_llama_config(tmp_path):
    hf = str(tmp_path / "gpt2")
    os.makedirs(hf)
    with open(os.path.join(hf, "config.json"), "w") as f:
        json.dump({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "n_embd": 64}, f)
    out = str(tmp_path / "out")
    res = run_export_cli("--source", hf, "--out", out)
    assert_clean_failure(res, out, "unsupported architecture", "gpt2")


def test_garbage_gguf(tmp_path):
    p = tmp_path / "bad.gguf"
    p.write_bytes(b"GGUF" + os.urandom(200))
    out = str(tmp_path / "out")
    res = run_export_cli("--source", str(p), "--out", out)
    assert_clean_failure(res, out, "GGUF")
    p2 = tmp_path / "text.gguf"
    p2.write_text("hello, not a model\n" * 10)
    res = run_export_cli("--source", str(p2), "--out", out)
    assert_clean_failure(res, out, "GGUF")


def test_missing_weights_and_unknown_target(tmp_path):
    hf = str(tmp_path / "hf")
    cfg = tiny_config()
    os.makedirs(hf)
    with open(os.path.join(hf, "config.json"), "w") as f:
        json.dump(cfg, f)
    out = str(tmp_path / "out")
    assert_clean_failure(run_export_cli("--source", hf, "--out", out), out, "safetensors")
    write_hf_dir(hf, cfg, {"model.embed_tokens.weight": np.zeros((300, 64), np.float32)})
    assert_clean_failure(run_export_cli("--source", hf, "--out", out), out, "missing")
    assert_clean_failure(run_export_cli("--source", hf, "--out", out, "--lora-targets", "q_proj,qkv"), out,
                         "unknown LoRA target module 'qkv'")
