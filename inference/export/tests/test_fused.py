"""`--ops fused`: ONNX Runtime's GroupQueryAttention per layer and SkipSimplifiedLayerNormalization
per residual add + norm, with the portable graph's inputs, outputs and cache layout. Checked
against conftest's numpy forward and against the portable export of the same weights: prefill,
decode on the cache, left-padded batches, a cached prefix, logits_to_keep, LoRA and lora_mask,
Gemma 3 (sliding window, sandwich norms, q/k norms) and Qwen2 biases, int4 weights."""

import json
import os

import numpy as np
import onnx
import pytest

from conftest import Runner, export, make_weights, ref_forward, tiny_config, write_hf_dir
from test_archs import IDS as LONG_IDS, arch_weights, gemma3_config
from test_tiny import IDS, LORA_SPEC, _random_lora, _stack, rel_err


def pair(root, cfg, w, *flags, ops=("portable", "fused")):
    """A runner per graph variant in `ops` for the same weights exported with `flags`."""
    hf = write_hf_dir(os.path.join(root, "hf"), cfg, w)
    runners = []
    for o in ops:
        out = os.path.join(root, o)
        export(["--source", hf, "--out", out, "--ops", o, *flags])
        runners.append(Runner(out))
    return runners


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    cfg = tiny_config()
    w = make_weights(cfg, seed=1)
    return (cfg, w, *pair(str(tmp_path_factory.mktemp("fused")), cfg, w))


def padded_batch(a, b, pad_id):
    """Two prompts left-padded to a common width: (ids, mask, position ids, padding of a)."""
    T = max(len(a), len(b))
    rows = [[pad_id] * (T - len(x)) + list(x) for x in (a, b)]
    mask = np.array([[0] * (T - len(x)) + [1] * len(x) for x in (a, b)], np.int64)
    pos = np.clip(np.cumsum(mask, 1) - 1, 0, None)
    return np.array(rows, np.int64), mask, pos, T - len(a)


def check_same(port, fused, ids, pad_id, atol=1e-5):
    """Prefill (alone and left-padded next to a longer row), then decode steps on the cache."""
    full, _ = port.run(ids)
    got, past = fused.run(ids[:4])
    np.testing.assert_allclose(got[0], full[0, :4], atol=atol, rtol=1e-4)
    for t in range(4, len(ids)):
        got, past = fused.run([ids[t]], past=past)
        np.testing.assert_allclose(got[0, 0], full[0, t], atol=atol, rtol=1e-4)
    # several new tokens over a cached prefix (one row: what ONNX Runtime's kernel takes)
    _, past = fused.run(ids[:5])
    got, _ = fused.run(ids[5:8], past=past)
    np.testing.assert_allclose(got[0], full[0, 5:8], atol=atol, rtol=1e-4)
    a, b = ids[:5], ids[1:]
    bids, mask, pos, pad = padded_batch(a, b, pad_id)
    want, wpast = port.run(bids, mask=mask, pos=pos)
    got, gpast = fused.run(bids, mask=mask, pos=pos)
    assert np.isfinite(got).all()  # padding queries see no key: finite, not NaN
    np.testing.assert_allclose(got[0, pad:], want[0, pad:], atol=atol, rtol=1e-4)
    np.testing.assert_allclose(got[1], want[1], atol=atol, rtol=1e-4)
    for name in wpast:  # the same cache layout: rows left-padded, [B, KV, T, D]
        np.testing.assert_allclose(gpast[name][1], wpast[name][1], atol=atol, rtol=1e-4)
        np.testing.assert_allclose(gpast[name][0][:, pad:], wpast[name][0][:, pad:], atol=atol, rtol=1e-4)
    nxt = np.array([[11], [12]], np.int64)
    mask2 = np.concatenate([mask, np.ones((2, 1), np.int64)], 1)
    want, _ = port.run(nxt, mask=mask2, pos=pos[:, -1:] + 1, past=wpast)
    got, _ = fused.run(nxt, mask=mask2, pos=pos[:, -1:] + 1, past=gpast)
    np.testing.assert_allclose(got, want, atol=atol, rtol=1e-4)


def test_fused_graph_structure(llama):
    port, fused = llama[2], llama[3]
    g = onnx.load(os.path.join(fused.dir, "model.onnx"), load_external_data=False).graph
    kinds = [(n.domain, n.op_type) for n in g.node]
    L = fused.tj["num_layers"]
    assert kinds.count(("com.microsoft", "GroupQueryAttention")) == L
    # after each attention, between layers and before the head
    assert kinds.count(("com.microsoft", "SkipSimplifiedLayerNormalization")) == 2 * L
    assert ("", "Concat") not in [k for k, n in zip(kinds, g.node) if any("past_key_values" in i for i in n.input)]
    assert fused.tj["ops"] == "fused" and "ops" not in port.tj
    portable = onnx.load(os.path.join(port.dir, "model.onnx"), load_external_data=False).graph
    assert [i.name for i in g.input] == [i.name for i in portable.input]
    assert [o.name for o in fused.sess.get_outputs()] == port.out_names


def test_fused_matches_numpy_and_portable(llama):
    cfg, w, port, fused = llama
    logits, present = fused.run(IDS)
    assert rel_err(logits[0], ref_forward(cfg, w, IDS)) < 1e-4
    assert present["past_key_values.1.value"].shape == (1, 2, len(IDS), 16)
    check_same(port, fused, IDS, cfg["pad_token_id"])
    k = {"logits_to_keep": np.array([1], np.int64)}
    np.testing.assert_allclose(fused.run(IDS, extra=k)[0][:, 0], logits[:, -1], atol=1e-6, rtol=1e-6)


def check_lora(cfg, w, runner, reference, tol, atol):
    """One adapter fed as LoRA inputs against the numpy forward; two adapters stacked for
    `lora_mask` (rows: the first, the second, the base model) against `reference`'s run."""
    rng = np.random.default_rng(9)
    f1, ref1 = _random_lora(cfg, rng, LORA_SPEC)
    f2, _ = _random_lora(cfg, rng, {"model.layers.0.self_attn.q_proj": 4, "model.layers.1.mlp.down_proj": 1})
    got, _ = runner.run(IDS, extra=f1)
    assert rel_err(got[0], ref_forward(cfg, w, IDS, lora=ref1)) < tol
    feed = _stack([f1, f2], 5, runner.tj["lora"]["modules"])
    mask = np.zeros((3, 1, 10), np.float32)
    mask[0, 0, :5], mask[1, 0, 5:] = 1, 1
    extra = {**feed, "lora_mask": mask}
    ids = np.array([IDS] * 3, np.int64)
    np.testing.assert_allclose(runner.run(ids, extra=extra)[0], reference.run(ids, extra=extra)[0],
                               atol=atol, rtol=1e-4)


def test_fused_lora_and_lora_mask(llama):
    cfg, w, port, fused = llama
    check_lora(cfg, w, fused, port, 1e-4, 1e-5)


def test_fused_gemma3(tmp_path):
    """Sliding-window layers (the window is in the mask bias), sandwich norms (the skip norm
    follows the post-norm), q/k norms and the query scale."""
    cfg = gemma3_config()
    w = arch_weights(cfg, seed=3)
    port, fused = pair(str(tmp_path), cfg, w)
    assert rel_err(fused.run(LONG_IDS)[0][0], ref_forward(cfg, w, LONG_IDS)) < 1e-4
    check_same(port, fused, LONG_IDS, cfg["pad_token_id"])


def test_fused_qwen2_biases(tmp_path):
    cfg = tiny_config(architectures=["Qwen2ForCausalLM"], model_type="qwen2", tie_word_embeddings=True,
                      rope_scaling=None)
    w = make_weights(cfg, seed=4, biases=True)
    port, fused = pair(str(tmp_path), cfg, w)
    assert rel_err(fused.run(IDS)[0][0], ref_forward(cfg, w, IDS)) < 1e-4
    check_same(port, fused, IDS, cfg["pad_token_id"])


def test_fused_int4(tmp_path):
    """Quantized linears and fused attention together (accuracy level 0: fp32 compute on the
    stored weights, so both graphs compute the same function)."""
    cfg = tiny_config()
    w = make_weights(cfg, seed=5)
    port, fused = pair(str(tmp_path), cfg, w, "--quant", "int4", "--accuracy-level", "0")
    check_same(port, fused, IDS, cfg["pad_token_id"], atol=1e-4)
    with open(os.path.join(fused.dir, "tribute.json")) as f:
        tj = json.load(f)
    assert tj["ops"] == "fused" and tj["quantization"]["bits"] == 4


def test_unknown_ops_is_refused(tmp_path):
    from tribute_export import ExportError
    from tribute_export.graph import build_graph
    with pytest.raises(ExportError, match="unknown --ops"):
        build_graph(None, None, str(tmp_path), False, [], ops="flash")
