"""onnxruntime-genai runs the exported directories as written (their `genai_config.json`): greedy
tokens of a batch of two prompts of different lengths equal a greedy loop over the portable
graph's logits, each prompt alone. Graphs with GroupQueryAttention (`--ops fused|static`) say
`past_present_share_buffer: true`, so the runtime keeps one cache buffer at the maximum length
and the kernel writes each step's keys and values into it in place; the portable graph
concatenates its cache and says false (sharing would fail its first decode step)."""

import json
import os

import numpy as np
import pytest

from conftest import Runner, export, make_weights, tiny_config, write_hf_dir

PROMPTS = ([256, 5, 17, 99, 3], [256, 42, 8, 8, 150, 61, 200, 7, 12])
NEW = 12


def genai():
    try:
        import onnxruntime_genai
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("onnxruntime-genai is not installed (the Makefile's test target installs it)")
        pytest.skip("onnxruntime-genai is not installed")
    return onnxruntime_genai


def greedy_alone(runner, prompt, new):
    """Greedy continuation of one prompt on the portable graph, its cache carried by hand."""
    logits, past = runner.run(prompt)
    out = []
    for _ in range(new):
        out.append(int(np.argmax(logits[0, -1])))
        logits, past = runner.run([out[-1]], past=past)
    return out


def genai_greedy(og, model_dir, prompts, new):
    model = og.Model(model_dir)
    params = og.GeneratorParams(model)
    width = max(map(len, prompts))
    params.set_search_options(max_length=width + new, min_length=width + new, do_sample=False,
                              batch_size=len(prompts))
    gen = og.Generator(model, params)
    pad = 258  # tiny_config's pad_token_id, which genai_config.json names
    # right padding, as onnxruntime-genai's own Tokenizer.encode_batch pads
    gen.append_tokens(np.array([p + [pad] * (width - len(p)) for p in prompts], np.int32))
    while not gen.is_done():
        gen.generate_next_token()
    return [[int(t) for t in gen.get_sequence(i)][width:] for i in range(len(prompts))]


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("genai"))
    cfg = tiny_config()
    hf = write_hf_dir(os.path.join(root, "hf"), cfg, make_weights(cfg, seed=3))
    out = {}
    for ops in ("portable", "fused", "static"):
        out[ops] = os.path.join(root, ops)
        export(["--source", hf, "--out", out[ops], "--ops", ops, "--lora-targets", "none"])
    return out


@pytest.mark.parametrize("ops", ["portable", "fused", "static"])
def test_genai_config_shares_the_cache_buffer_only_for_attention_kernels(exports, ops):
    with open(os.path.join(exports[ops], "genai_config.json")) as f:
        search = json.load(f)["search"]
    assert search["past_present_share_buffer"] is (ops != "portable")


@pytest.mark.parametrize("ops", ["portable", "fused", "static"])
def test_genai_runs_the_export_greedy_like_each_prompt_alone(exports, ops):
    og = genai()
    reference = Runner(exports["portable"])
    want = [greedy_alone(reference, p, NEW) for p in PROMPTS]
    assert genai_greedy(og, exports[ops], list(PROMPTS), NEW) == want
