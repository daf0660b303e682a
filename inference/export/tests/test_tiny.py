"""Exports a tiny random llama and checks the ONNX graph against an independent numpy forward pass."""

import json
import os

import numpy as np
import onnx

from conftest import (TARGETS, Runner, export, make_weights, ref_forward, tiny_config, write_gguf,
                      write_hf_dir)

IDS = [5, 17, 260, 99, 3, 250, 42, 7, 128, 64, 1]


def rel_err(a, b):
    return float(np.abs(a - b).max() / (np.abs(b).max() + 1e-9))


def test_graph_is_opset17_default_domain(tiny):
    m = onnx.load(os.path.join(tiny[3], "model.onnx"), load_external_data=False)
    assert [(o.domain, o.version) for o in m.opset_import] == [("", 17)]
    assert all(n.domain in ("", "ai.onnx") for n in m.graph.node)
    assert not any(n.op_type == "Range" for n in m.graph.node)
    onnx.checker.check_model(os.path.join(tiny[3], "model.onnx"))
    files = set(os.listdir(tiny[3]))
    for f in ("model.onnx", "model.onnx.data", "config.json", "tokenizer.json", "tokenizer_config.json",
              "special_tokens_map.json", "generation_config.json", "genai_config.json", "tribute.json"):
        assert f in files, f
    assert not os.path.exists(tiny[3] + ".tmp")


def test_tribute_json(tiny):
    cfg = tiny[0]
    with open(os.path.join(tiny[3], "tribute.json")) as f:
        tj = json.load(f)
    assert tj["format"] == 1 and tj["architecture"] == "llama"
    assert (tj["num_layers"], tj["num_heads"], tj["num_kv_heads"], tj["head_dim"]) == (2, 4, 2, 16)
    assert tj["vocab_size"] == cfg["vocab_size"] and tj["weights_dtype"] == "float32"
    assert tj["inputs"]["past_key"] == "past_key_values.%d.key"
    assert tj["lora"]["targets"] == TARGETS
    mods = {m["module"]: m for m in tj["lora"]["modules"]}
    assert len(mods) == 2 * 7
    m = mods["model.layers.1.self_attn.k_proj"]
    assert (m["in_features"], m["out_features"]) == (64, 32)
    assert m["a"] == "model.layers.1.self_attn.k_proj.lora_A"
    assert mods["model.layers.0.mlp.down_proj"]["in_features"] == 128
    assert len(tj["source"]["sha256"]) == 64
    r = Runner(tiny[3])
    # overridable initializers are not listed by get_inputs(), but can be fed like inputs
    assert not any("lora" in i.name for i in r.sess.get_inputs())
    ins = {i.name: i for i in r.sess.get_overridable_initializers()}
    assert len(ins) == 2 * 14 + 2  # LoRA A/B per module, lora_mask and logits_to_keep
    assert tj["lora"]["mask"] == "lora_mask" and ins["lora_mask"].shape == ["lora_mask_rows", 1, "lora_mask_rank"]
    assert tj["inputs"]["logits_to_keep"] == "logits_to_keep" and ins["logits_to_keep"].shape == [1]
    a = ins["model.layers.1.self_attn.k_proj.lora_A"]
    assert a.shape == [64, "model.layers.1.self_attn.k_proj.rank"]
    assert ins["model.layers.1.self_attn.k_proj.lora_B"].shape == ["model.layers.1.self_attn.k_proj.rank", 32]


def test_prefill_matches_numpy(tiny, tiny_runner):
    cfg, w = tiny[0], tiny[1]
    logits, present = tiny_runner.run(IDS)
    ref = ref_forward(cfg, w, IDS)
    assert logits.shape == (1, len(IDS), cfg["vocab_size"])
    assert rel_err(logits[0], ref) < 1e-4, rel_err(logits[0], ref)
    assert present["past_key_values.1.value"].shape == (1, 2, len(IDS), 16)


def test_incremental_decode_equals_full_forward(tiny, tiny_runner):
    full, _ = tiny_runner.run(IDS)
    logits, past = tiny_runner.run(IDS[:4])
    np.testing.assert_allclose(logits[0], full[0, :4], atol=1e-5, rtol=1e-4)
    for t in range(4, len(IDS)):
        logits, past = tiny_runner.run([IDS[t]], past=past)
        np.testing.assert_allclose(logits[0, 0], full[0, t], atol=1e-5, rtol=1e-4)
    assert past["past_key_values.0.key"].shape[2] == len(IDS)
    # two tokens at a time on top of the cache
    logits, past = tiny_runner.run(IDS[:5])
    logits, past = tiny_runner.run(IDS[5:7], past=past)
    np.testing.assert_allclose(logits[0], full[0, 5:7], atol=1e-5, rtol=1e-4)


def test_logits_to_keep(tiny, tiny_runner):
    """The head runs on the last k positions only; unfed (default) or 0 means every position."""
    full, _ = tiny_runner.run(IDS)
    for k, want in ((1, full[:, -1:]), (3, full[:, -3:]), (0, full), (len(IDS) + 5, full)):
        got, _ = tiny_runner.run(IDS, extra={"logits_to_keep": np.array([k], np.int64)})
        assert got.shape == want.shape, (k, got.shape)
        np.testing.assert_allclose(got, want, atol=1e-6, rtol=1e-6)
    # a left-padded batch: the last column is every row's latest token
    ids = [[258, 258] + IDS[:5], IDS[:7]]
    mask = [[0, 0] + [1] * 5, [1] * 7]
    pos = [[0, 0] + list(range(5)), list(range(7))]
    full, _ = tiny_runner.run(ids, mask=mask, pos=pos)
    last, _ = tiny_runner.run(ids, mask=mask, pos=pos, extra={"logits_to_keep": np.array([1], np.int64)})
    np.testing.assert_allclose(last[:, 0], full[:, -1], atol=1e-6, rtol=1e-6)


def test_left_padded_batch(tiny, tiny_runner):
    a, b = IDS[:5], IDS[2:10]
    T = len(b)
    pad = T - len(a)
    ids = np.array([[258] * pad + a, b], np.int64)
    mask = np.array([[0] * pad + [1] * len(a), [1] * T], np.int64)
    pos = np.clip(np.cumsum(mask, 1) - 1, 0, None)
    logits, past = tiny_runner.run(ids, mask=mask, pos=pos)
    assert np.isfinite(logits).all()  # padding query rows are fully masked: finite, not NaN
    assert all(np.isfinite(v).all() for v in past.values())
    la, _ = tiny_runner.run(a)
    lb, _ = tiny_runner.run(b)
    np.testing.assert_allclose(logits[0, pad:], la[0], atol=1e-5, rtol=1e-4)
    np.testing.assert_allclose(logits[1], lb[0], atol=1e-5, rtol=1e-4)
    # one decode step for the whole batch
    nxt = np.array([[11], [12]], np.int64)
    mask2 = np.concatenate([mask, np.ones((2, 1), np.int64)], 1)
    pos2 = pos[:, -1:] + 1
    step, _ = tiny_runner.run(nxt, mask=mask2, pos=pos2, past=past)
    sa, _ = tiny_runner.run(a + [11])
    sb, _ = tiny_runner.run(b + [12])
    np.testing.assert_allclose(step[0, 0], sa[0, -1], atol=1e-5, rtol=1e-4)
    np.testing.assert_allclose(step[1, 0], sb[0, -1], atol=1e-5, rtol=1e-4)


def _random_lora(cfg, rng, spec):
    """spec: {module: rank}. Returns (feed dict, ref lora dict)."""
    feed, ref = {}, {}
    dims = {"q_proj": (64, 64), "k_proj": (64, 32), "v_proj": (64, 32), "o_proj": (64, 64),
            "gate_proj": (64, 128), "up_proj": (64, 128), "down_proj": (128, 64)}
    for mod, r in spec.items():
        fin, fout = dims[mod.rsplit(".", 1)[1]]
        A = (rng.standard_normal((r, fin)) * 0.3).astype(np.float32)
        B = (rng.standard_normal((fout, r)) * 0.3).astype(np.float32)
        scale = 2.0 / r
        feed[mod + ".lora_A"] = np.ascontiguousarray(A.T)
        feed[mod + ".lora_B"] = np.ascontiguousarray((scale * B).T)
        ref[mod] = (A, B, scale)
    return feed, ref


LORA_SPEC = {"model.layers.0.self_attn.q_proj": 2, "model.layers.0.self_attn.v_proj": 3,
             "model.layers.1.self_attn.k_proj": 1, "model.layers.1.self_attn.o_proj": 4,
             "model.layers.0.mlp.gate_proj": 5, "model.layers.1.mlp.up_proj": 2,
             "model.layers.1.mlp.down_proj": 3}  # the other modules stay at their zero defaults


def test_lora_inputs_match_numpy(tiny, tiny_runner):
    cfg, w = tiny[0], tiny[1]
    feed, ref = _random_lora(cfg, np.random.default_rng(7), LORA_SPEC)
    logits, _ = tiny_runner.run(IDS, extra=feed)
    want = ref_forward(cfg, w, IDS, lora=ref)
    assert rel_err(logits[0], want) < 1e-4
    base = ref_forward(cfg, w, IDS)
    assert rel_err(want, base) > 1e-2  # the adapter really changes the output


def _stack(feeds, width, modules):
    """Adapters side by side along the rank axis, each in `width` columns (zero-padded): A [in, n*width],
    B [n*width, out] for every LoRA module of the model (a mask as wide as the rank must fit them all)."""
    out = {}
    for m in modules:
        a, b = m["a"], m["b"]
        A = np.zeros((m["in_features"], len(feeds) * width), np.float32)
        B = np.zeros((len(feeds) * width, m["out_features"]), np.float32)
        for i, f in enumerate(feeds):
            if a in f:
                r = f[a].shape[1]
                A[:, i * width:i * width + r] = f[a]
                B[i * width:i * width + r] = f[b]
        out[a], out[b] = A, B
    return out


def test_lora_mask_runs_different_adapters_per_row(tiny, tiny_runner):
    """Two adapters stacked along the rank axis, a per-row mask picking one, the other or neither:
    each row equals its request run alone."""
    cfg, w = tiny[0], tiny[1]
    rng = np.random.default_rng(9)
    f1, ref1 = _random_lora(cfg, rng, LORA_SPEC)
    f2, ref2 = _random_lora(cfg, rng, {"model.layers.0.self_attn.q_proj": 4, "model.layers.1.mlp.down_proj": 1})
    width = 5
    feed = _stack([f1, f2], width, tiny_runner.tj["lora"]["modules"])
    mask = np.zeros((3, 1, 2 * width), np.float32)
    mask[0, 0, :width] = 1  # row 0: adapter 1; row 1: adapter 2; row 2: the base model
    mask[1, 0, width:] = 1
    ids = np.array([IDS, IDS, IDS], np.int64)
    logits, _ = tiny_runner.run(ids, extra={**feed, "lora_mask": mask})
    for row, (f, ref) in enumerate([(f1, ref1), (f2, ref2), ({}, None)]):
        alone, _ = tiny_runner.run(IDS, extra=f)
        np.testing.assert_allclose(logits[row], alone[0], atol=1e-5, rtol=1e-4)
        assert rel_err(logits[row], ref_forward(cfg, w, IDS, lora=ref)) < 1e-4


def test_random_tiny_export(tmp_path):
    out = str(tmp_path / "rnd")
    export(["--random", "tiny", "--seed", "3", "--out", out, "--lora-targets", "q_proj,v_proj"])
    r = Runner(out)
    logits, _ = r.run([1, 2, 3, 256])
    assert np.isfinite(logits).all() and logits.shape == (1, 4, 320)
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(os.path.join(out, "tokenizer.json"))
    enc = tok.encode("<|im_start|>user\nhé<|im_end|>", add_special_tokens=False).ids
    assert enc == [256] + list("user\nhé".encode()) + [257]  # token id = byte value
    assert tok.decode(enc, skip_special_tokens=True) == "user\nhé"
    with open(os.path.join(out, "tokenizer_config.json")) as f:
        assert "<|im_start|>" in json.load(f)["chat_template"]
    with open(os.path.join(out, "tribute.json")) as f:
        tj = json.load(f)
    assert tj["lora"]["targets"] == ["q_proj", "v_proj"] and len(tj["lora"]["modules"]) == 4
    assert tj["source"]["path"] == "random:tiny"


def test_fp16_close_to_fp32(tiny, tiny_runner, tmp_path):
    out = str(tmp_path / "fp16")
    export(["--source", tiny[2], "--out", out, "--dtype", "fp16"])
    m = onnx.load(os.path.join(out, "model.onnx"), load_external_data=False)
    dtypes = {t.name: t.data_type for t in m.graph.initializer}
    assert dtypes["model.embed_tokens.weight"] == onnx.TensorProto.FLOAT16
    assert dtypes["model.layers.0.mlp.down_proj.weight_t"] == onnx.TensorProto.FLOAT16
    size16 = os.path.getsize(os.path.join(out, "model.onnx.data"))
    size32 = os.path.getsize(os.path.join(tiny[3], "model.onnx.data"))
    assert size16 < 0.75 * size32
    r = Runner(out)
    assert r.tj["weights_dtype"] == "float16"
    assert r.sess.get_outputs()[0].type == "tensor(float)"
    l16, _ = r.run(IDS)
    l32, _ = tiny_runner.run(IDS)
    assert rel_err(l16, l32) < 5e-3
    assert 0 < np.abs(l16 - l32).max()


def test_lora_targets_none(tiny, tmp_path):
    out = str(tmp_path / "nolora")
    export(["--source", tiny[2], "--out", out, "--lora-targets", "none"])
    r = Runner(out)
    assert [i.name for i in r.sess.get_overridable_initializers()] == ["logits_to_keep"]
    m = onnx.load(os.path.join(out, "model.onnx"), load_external_data=False)
    assert not any("lora" in i.name for i in m.graph.input)
    assert "lora" not in r.tj
    logits, _ = r.run(IDS)
    assert rel_err(logits[0], ref_forward(tiny[0], tiny[1], IDS)) < 1e-4


def test_qwen2_biases_tied(tmp_path):
    cfg = tiny_config(model_type="qwen2", architectures=["Qwen2ForCausalLM"], tie_word_embeddings=True,
                      rope_scaling=None, rope_theta=1000000.0, rms_norm_eps=1e-6)
    w = make_weights(cfg, seed=2, biases=True)
    assert "lm_head.weight" not in w
    hf = write_hf_dir(str(tmp_path / "hf"), cfg, w)
    out = str(tmp_path / "onnx")
    export(["--source", hf, "--out", out, "--lora-targets", "q_proj,k_proj"])
    r = Runner(out)
    logits, _ = r.run(IDS)
    ref = ref_forward(cfg, w, IDS)
    assert rel_err(logits[0], ref) < 1e-4
    w_nobias = {k: v for k, v in w.items() if not k.endswith(".bias")}
    assert rel_err(ref_forward(cfg, w_nobias, IDS), ref) > 1e-3  # biases matter
    feed, lref = _random_lora(cfg, np.random.default_rng(3), {"model.layers.1.self_attn.q_proj": 3})
    logits, _ = r.run(IDS, extra=feed)
    assert rel_err(logits[0], ref_forward(cfg, w, IDS, lora=lref)) < 1e-4
    m = onnx.load(os.path.join(out, "model.onnx"), load_external_data=False)
    assert not any(t.name == "lm_head.weight_t" for t in m.graph.initializer)  # tied: no transposed copy


def test_gguf_matches_safetensors(tiny, tiny_runner, tmp_path):
    cfg, w = tiny[0], tiny[1]
    path = write_gguf(str(tmp_path / "tiny.gguf"), cfg, w)
    out = str(tmp_path / "from_gguf")
    export(["--source", path, "--out", out])
    r = Runner(out)
    lg, _ = r.run(IDS)
    ls, _ = tiny_runner.run(IDS)
    # lm_head went through F16 in the GGUF; everything else is exact (incl. the Q8_0 q_proj)
    w16 = dict(w)
    w16["lm_head.weight"] = w["lm_head.weight"].astype(np.float16).astype(np.float32)
    assert rel_err(lg[0], ref_forward(cfg, w16, IDS)) < 1e-4  # llama3 rope via rope_freqs, Q/K un-permuted
    assert rel_err(lg, ls) < 5e-3
    assert r.tj["lora"]["modules"] == tiny_runner.tj["lora"]["modules"]
    assert r.tj["source"]["path"] == "tiny.gguf"
    # tokenizer rebuilt from the GGUF vocab/merges/types
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(os.path.join(out, "tokenizer.json"))
    enc = tok.encode("<|im_start|>the the 42<|im_end|>", add_special_tokens=False)
    assert enc.tokens == ["<|im_start|>", "t", "he", "Ġthe", "Ġ", "4", "2", "<|im_end|>"]
    assert enc.ids[0] == 256 and enc.ids[3] == 261
    assert tok.decode(enc.ids, skip_special_tokens=True) == "the the 42"
    with open(os.path.join(out, "tokenizer_config.json")) as f:
        tc = json.load(f)
    assert tc["eos_token"] == "<|im_end|>" and tc["bos_token"] == "<|im_start|>" and tc["add_bos_token"] is False
    assert tc["chat_template"].startswith("{% for m in messages %}")
    with open(os.path.join(out, "genai_config.json")) as f:
        gc = json.load(f)
    assert gc["model"]["decoder"]["num_key_value_heads"] == 2 and gc["model"]["eos_token_id"] == 257
    with open(os.path.join(out, "config.json")) as f:
        hc = json.load(f)
    assert hc["num_key_value_heads"] == 2 and hc["tie_word_embeddings"] is False


def test_export_replaces_existing_dir(tiny, tmp_path):
    out = str(tmp_path / "again")
    os.makedirs(out)
    with open(os.path.join(out, "stale.txt"), "w") as f:
        f.write("x")
    export(["--source", tiny[2], "--out", out, "--lora-targets", "none"])
    assert not os.path.exists(os.path.join(out, "stale.txt"))
    assert os.path.exists(os.path.join(out, "model.onnx"))
    assert not os.path.exists(out + ".tmp") and not os.path.exists(out + ".old")


def test_hf_dir_tokenizer_files_are_copied(tiny, tmp_path):
    import shutil
    cfg, w = tiny[0], tiny[1]
    hf = write_hf_dir(str(tmp_path / "hf"), dict(cfg, eos_token_id=None, pad_token_id=None), w)
    shutil.copyfile(os.path.join(tiny[3], "tokenizer.json"), os.path.join(hf, "tokenizer.json"))
    with open(os.path.join(hf, "tokenizer_config.json"), "w") as f:
        json.dump({"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "chat_template": "X"}, f)
    with open(os.path.join(hf, "generation_config.json"), "w") as f:
        json.dump({"eos_token_id": [257, 258], "bos_token_id": 256}, f)
    out = str(tmp_path / "onnx")
    export(["--source", hf, "--out", out, "--lora-targets", "none"])
    with open(os.path.join(out, "tokenizer.json")) as f, open(os.path.join(hf, "tokenizer.json")) as g:
        assert f.read() == g.read()
    with open(os.path.join(out, "tokenizer_config.json")) as f:
        assert json.load(f)["chat_template"] == "X"
    with open(os.path.join(out, "tribute.json")) as f:
        tj = json.load(f)
    assert tj["eos_token_ids"] == [257, 258] and tj["bos_token_id"] == 256 and tj["pad_token_id"] == 258
    with open(os.path.join(out, "genai_config.json")) as f:
        assert json.load(f)["model"]["eos_token_id"] == [257, 258]
