"""onnxruntime-genai runs the exported directories as written (their `genai_config.json`): greedy
tokens of a batch of two prompts of different lengths equal a greedy loop over the portable
graph's logits, each prompt alone. Graphs with GroupQueryAttention (`--ops fused|static`) say
`past_present_share_buffer: true`, so the runtime keeps one cache buffer at the maximum length
and the kernel writes each step's keys and values into it in place; the portable graph
concatenates its cache and says false (sharing would fail its first decode step). The tiny
llama and a tiny Gemma 3 (sliding windows shorter than the prompts), every layout."""

import json
import os

import numpy as np
import pytest

from conftest import Runner, export, make_weights, tiny_config, write_hf_dir
from test_archs import arch_weights, gemma3_config

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
    with open(os.path.join(model_dir, "genai_config.json")) as f:
        pad = json.load(f)["model"]["pad_token_id"]
    # right padding, as onnxruntime-genai's own Tokenizer.encode_batch pads
    gen.append_tokens(np.array([p + [pad] * (width - len(p)) for p in prompts], np.int32))
    while not gen.is_done():
        gen.generate_next_token()
    return [[int(t) for t in gen.get_sequence(i)][width:] for i in range(len(prompts))]


def export_layouts(root, cfg, weights):
    hf = write_hf_dir(os.path.join(root, "hf"), cfg, weights)
    out = {}
    for ops in ("portable", "fused", "static"):
        out[ops] = os.path.join(root, ops)
        export(["--source", hf, "--out", out[ops], "--ops", ops, "--lora-targets", "none"])
    return out


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    cfg = tiny_config()
    return export_layouts(str(tmp_path_factory.mktemp("genai")), cfg, make_weights(cfg, seed=3))


@pytest.fixture(scope="module")
def gemma3(tmp_path_factory):
    """Gemma 3: sliding-window layers (a window of 4, shorter than the prompts), sandwich
    norms, q/k norms, a tied head."""
    cfg = gemma3_config()
    return export_layouts(str(tmp_path_factory.mktemp("genai-gemma3")), cfg, arch_weights(cfg, seed=3))


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


@pytest.mark.parametrize("ops", ["portable", "fused", "static"])
def test_genai_runs_gemma3_exports_greedy_like_each_prompt_alone(gemma3, ops):
    og = genai()
    reference = Runner(gemma3["portable"])
    prompts = [[2, 5, 17, 99, 3, 40, 41], [2, 42, 8, 8, 150, 61, 200, 7, 12, 9, 77]]
    want = [greedy_alone(reference, p, NEW) for p in prompts]
    assert genai_greedy(og, gemma3[ops], prompts, NEW) == want
