"""onnxruntime-genai runs the exported directories as written (their `genai_config.json`): greedy
tokens of a batch of two prompts equal a greedy loop over the portable graph's logits, each prompt
alone, for every layout of a tiny llama, Mistral, Qwen2 (q/k/v biases), Qwen3 (q/k norms), Phi-3
(fused qkv and gate_up, longrope, every layer sliding) and Gemma 3 (sliding windows shorter than the
prompts). Graphs with GroupQueryAttention (`--ops fused|static`) say `past_present_share_buffer:
true`, so the runtime keeps one cache buffer at the maximum length and the kernel writes each step's
keys and values into it in place; the portable graph concatenates its cache and says false (sharing
would fail its first decode step).

genai right-pads a batch and keeps the pad columns inside the shorter row's cache. The portable and
fused layouts measure a sliding window in cache columns (rows left-padded and contiguous, as
Tribute's runtime feeds them), so there the window would count pads instead of keys: sliding-window
models run genai batches of prompts of one length in those two layouts, and prompts of different
lengths only in the static layout, whose rows stay contiguous."""

import json
import os

import numpy as np
import pytest

from conftest import Runner, export, make_weights, require, tiny_config, write_hf_dir
from test_archs import arch_weights, gemma3_config, phi3_config, phi3_weights, qwen3_config

OPS = ("portable", "fused", "static")
RAGGED = ([5, 17, 99, 3, 40, 41], [42, 8, 8, 150, 61, 200, 7, 12, 9, 77])  # after BOS: 7 and 11 tokens
EVEN = ([5, 17, 99, 3, 40, 41, 33, 70, 21, 9], RAGGED[1])
NEW = 12

# name: (HF config, its weights, the genai model.type the export must name). Heads are untied: a tied
# tiny head mostly repeats the last token whatever attention did, and then nothing here could fail.
ARCHS = {
    "llama": (tiny_config(), lambda c: make_weights(c, seed=3), "llama"),
    "mistral": (tiny_config(architectures=["MistralForCausalLM"], model_type="mistral", rope_scaling=None),
                lambda c: make_weights(c, seed=3), "mistral"),
    "qwen2": (tiny_config(architectures=["Qwen2ForCausalLM"], model_type="qwen2", rope_scaling=None),
              lambda c: make_weights(c, seed=3, biases=True), "qwen2"),
    "qwen3": (qwen3_config(), lambda c: arch_weights(c, seed=3), "qwen3"),
    "phi3": (phi3_config(), lambda c: phi3_weights(c, seed=3), "llama"),
    "gemma3": (gemma3_config(tie_word_embeddings=False), lambda c: arch_weights(c, seed=3), "gemma3_text"),
}


def genai():
    return require("onnxruntime_genai", "the Makefile's test target installs it")


def greedy_alone(runner, prompt, new):
    """Greedy continuation of one prompt on the portable graph, its cache carried by hand. End of
    sequence is never picked: genai_greedy's min_length keeps it out of the whole run."""
    eos = runner.tj["eos_token_ids"]
    logits, past = runner.run(prompt)
    out = []
    for _ in range(new):
        step = logits[0, -1].copy()
        step[eos] = -np.inf
        out.append(int(np.argmax(step)))
        logits, past = runner.run([out[-1]], past=past)
    return out


def genai_greedy(og, model_dir, prompts, new):
    model = og.Model(model_dir)
    params = og.GeneratorParams(model)
    width = max(map(len, prompts))
    params.set_search_options(max_length=width + new, min_length=width + new, do_sample=False,
                              batch_size=len(prompts))
    gen = og.Generator(model, params)
    with open(os.path.join(model_dir, "genai_config.json")) as f:
        pad = json.load(f)["model"]["pad_token_id"]
    # right padding, as onnxruntime-genai's own Tokenizer.encode_batch pads
    gen.append_tokens(np.array([p + [pad] * (width - len(p)) for p in prompts], np.int32))
    while not gen.is_done():
        gen.generate_next_token()
    return [[int(t) for t in gen.get_sequence(i)][width:] for i in range(len(prompts))]


@pytest.fixture(scope="module", params=list(ARCHS))
def arch(request, tmp_path_factory):
    """(name, HF config, {ops: exported dir}) for one architecture, every layout of the same weights."""
    cfg, weights, _ = ARCHS[request.param]
    root = str(tmp_path_factory.mktemp(f"genai-{request.param}"))
    hf = write_hf_dir(os.path.join(root, "hf"), cfg, weights(cfg))
    dirs = {}
    for ops in OPS:
        dirs[ops] = os.path.join(root, ops)
        export(["--source", hf, "--out", dirs[ops], "--ops", ops, "--lora-targets", "none"])
    return request.param, cfg, dirs


@pytest.mark.parametrize("ops", OPS)
def test_genai_config_shares_the_cache_buffer_only_for_attention_kernels(arch, ops):
    with open(os.path.join(arch[2][ops], "genai_config.json")) as f:
        search = json.load(f)["search"]
    assert search["past_present_share_buffer"] is (ops != "portable")


def test_genai_loads_each_architecture_as_its_model_type(arch):
    name, _, dirs = arch
    for ops in OPS:
        assert genai().Model(dirs[ops]).type == ARCHS[name][2], ops


def test_reference_tokens_follow_the_context(arch):
    """The comparisons below can fail: changing one early prompt token changes the continuation."""
    bos = arch[1]["bos_token_id"]
    reference = Runner(arch[2]["portable"])
    prompt = [bos] + RAGGED[0]
    assert greedy_alone(reference, prompt, NEW) != greedy_alone(reference, [bos, 123] + prompt[2:], NEW)


@pytest.mark.parametrize("ops", OPS)
def test_genai_runs_the_export_greedy_like_each_prompt_alone(arch, ops):
    og = genai()
    _, cfg, dirs = arch
    reference = Runner(dirs["portable"])
    windowed = reference.tj.get("sliding_window") is not None
    # see the module docstring: a pad gap inside a row breaks these two layouts' sliding windows
    bodies = EVEN if windowed and ops != "static" else RAGGED
    prompts = [[cfg["bos_token_id"]] + p for p in bodies]
    want = [greedy_alone(reference, p, NEW) for p in prompts]
    assert genai_greedy(og, dirs[ops], prompts, NEW) == want
