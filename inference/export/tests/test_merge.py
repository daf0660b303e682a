"""`--merge-peft DIR[:WEIGHT]`: adapters baked into the base weights equal the same adapters fed as LoRA inputs."""

import hashlib
import json
import os

import numpy as np
import pytest

from conftest import Runner, export, write_gguf
from test_adapter_and_errors import assert_clean_failure, run_export_cli, write_peft

IDS = [5, 17, 260, 99, 3, 250, 42, 7, 1, 200]

# two adapters with different targets and ranks; they overlap on layer 0's q_proj
A_MODULES = {"model.layers.0.self_attn.q_proj": (64, 64), "model.layers.1.self_attn.v_proj": (64, 32),
             "model.layers.1.mlp.down_proj": (128, 64)}
B_MODULES = {"model.layers.0.self_attn.q_proj": (64, 64), "model.layers.1.self_attn.k_proj": (64, 32),
             "model.layers.0.self_attn.o_proj": (64, 64), "model.layers.1.mlp.gate_proj": (64, 128),
             "model.layers.0.mlp.up_proj": (64, 128)}


def lora_feed(model_dir, adapters):
    """The run-time merge of weighted adapters as LoRA inputs: A's concatenated along rank, w·B's stacked."""
    from tribute_export.adapter import load_peft
    parts = {}
    for path, weight in adapters:
        for name, arr in load_peft(path, model_dir, weight).items():
            parts.setdefault(name, []).append(arr)
    return {n: np.concatenate(v, axis=1 if n.endswith(".lora_A") else 0) for n, v in parts.items()}


@pytest.mark.parametrize("kind", ["hf", "gguf"])
def test_merged_export_equals_lora_inputs(tiny, tiny_runner, tmp_path, kind):
    cfg, w, source, model_dir = tiny
    if kind == "gguf":  # q/k come out of llama.cpp's permuted layout before the merge
        source = write_gguf(str(tmp_path / "tiny.gguf"), cfg, w)
        model_dir = str(tmp_path / "base")
        export(["--source", source, "--out", model_dir])
        tiny_runner = Runner(model_dir)
    pa, pb = str(tmp_path / "peft_a"), str(tmp_path / "peft_b")
    write_peft(pa, A_MODULES, r=4, alpha=8, rank_pattern={"layers.1.mlp.down_proj": 2}, seed=1)
    write_peft(pb, B_MODULES, r=3, alpha=5, alpha_pattern={"layers.0.self_attn.o_proj": 2.0}, rslora=True,
               seed=2)
    merged = str(tmp_path / "merged")
    export(["--source", source, "--out", merged, "--merge-peft", f"{pa}:0.7", "--merge-peft", f"{pb}:-0.4"])

    runner = Runner(merged)
    got, _ = runner.run(IDS)
    want, _ = tiny_runner.run(IDS, extra=lora_feed(model_dir, [(pa, 0.7), (pb, -0.4)]))
    base, _ = tiny_runner.run(IDS)
    assert np.abs(want - base).max() > 0.1, "the adapters should change the logits"
    err = float(np.abs(got - want).max())
    assert err < 1e-5 * max(1.0, float(np.abs(want).max())), err

    # still a model with LoRA inputs: feeding the same adapter on top of the merged one works
    extra = lora_feed(merged, [(pa, 0.5)])
    on_top, _ = runner.run(IDS, extra=extra)
    want2, _ = tiny_runner.run(IDS, extra=lora_feed(model_dir, [(pa, 1.2), (pb, -0.4)]))
    assert float(np.abs(on_top - want2).max()) < 1e-5 * max(1.0, float(np.abs(want2).max()))

    src = runner.tj["source"]
    recs = src["merged_adapters"]
    assert [(r["path"], r["weight"]) for r in recs] == [("peft_a", 0.7), ("peft_b", -0.4)]
    for r, p in zip(recs, (pa, pb)):
        with open(os.path.join(p, "adapter_model.safetensors"), "rb") as f:
            assert r["sha256"] == hashlib.sha256(f.read()).hexdigest()
    with open(os.path.join(model_dir, "tribute.json")) as f:
        assert "merged_adapters" not in json.load(f)["source"]


def test_merge_default_weight_and_no_lora_inputs(tiny, tiny_runner, tmp_path):
    _, _, hf, model_dir = tiny
    pa = str(tmp_path / "peft_a")
    write_peft(pa, A_MODULES, r=4, alpha=8, seed=3)
    merged = str(tmp_path / "merged")
    export(["--source", hf, "--out", merged, "--merge-peft", pa, "--lora-targets", "none"])
    runner = Runner(merged)
    assert "lora" not in runner.tj and not any(i.name.endswith(".lora_A") for i in runner.sess.get_inputs())
    assert runner.tj["source"]["merged_adapters"][0]["weight"] == 1.0
    got, _ = runner.run(IDS)
    want, _ = tiny_runner.run(IDS, extra=lora_feed(model_dir, [(pa, 1.0)]))
    assert float(np.abs(got - want).max()) < 1e-5 * max(1.0, float(np.abs(want).max()))


def test_merge_refuses_mismatching_adapters(tiny, tmp_path):
    hf = tiny[2]
    out = str(tmp_path / "out")
    good = str(tmp_path / "good")
    write_peft(good, A_MODULES)

    wrong_shape = str(tmp_path / "wrong_shape")  # q_proj of a model with hidden size 96
    write_peft(wrong_shape, {"model.layers.0.self_attn.q_proj": (96, 64)})
    res = run_export_cli("--source", hf, "--out", out, "--merge-peft", good, "--merge-peft", f"{wrong_shape}:0.5")
    assert_clean_failure(res, out, "wrong_shape", "model.layers.0.self_attn.q_proj", "do not fit the source model",
                         "in_features 64")

    no_layer = str(tmp_path / "no_layer")  # the tiny model has 2 layers
    write_peft(no_layer, {"model.layers.5.self_attn.q_proj": (64, 64)})
    res = run_export_cli("--source", hf, "--out", out, "--merge-peft", no_layer)
    assert_clean_failure(res, out, "model.layers.5.self_attn.q_proj", "not a linear layer of the source model")

    res = run_export_cli("--source", hf, "--out", out, "--merge-peft", str(tmp_path / "nope") + ":0.5")
    assert_clean_failure(res, out, "nope", "not a PEFT adapter directory")
