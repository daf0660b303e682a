"""--quant int8 / int4 on the real SmolLM2-135M-Instruct, against its fp32 export (TRIBUTE_SMOLLM2_DIR).

The quantized models are exported here from the same GGUF (TRIBUTE_SMOLLM2_GGUF, default
$TRIBUTE_HOME/gguf/SmolLM2-135M-Instruct.Q4_1.gguf), block size 32. The GGUF's Q4_1/Q8_0 blocks
are copied, not rounded again, so at accuracy level 0 (fp32 compute) both exports compute the fp32
export's model; level 4 quantizes the activations to int8: once (int4's default: fast, approximate)
or in two passes, value and rounding residual (int8's default: within ~2e-5 of fp32 compute).
Run with `-s` to see the quality numbers.
"""

import json
import os

import numpy as np
import pytest

from conftest import Runner, export
from test_smollm2 import LORA_ROOT, MODEL, chat_prompt, greedy, tok  # noqa: F401 (fixture)

HOME = os.environ.get("TRIBUTE_HOME") or os.path.expanduser("~/.cache/tribute")
GGUF = os.environ.get("TRIBUTE_SMOLLM2_GGUF") or os.path.join(HOME, "gguf", "SmolLM2-135M-Instruct.Q4_1.gguf")

pytestmark = pytest.mark.skipif(
    not MODEL or not os.path.isfile(os.path.join(MODEL, "tribute.json")) or not os.path.isfile(GGUF),
    reason="TRIBUTE_SMOLLM2_DIR (fp32 export) and the SmolLM2 GGUF (TRIBUTE_SMOLLM2_GGUF) are needed")

TEXT = ("The Eiffel Tower was built for the 1889 World's Fair in Paris. It is 330 metres tall and was the "
        "tallest man-made structure in the world until 1930, when the Chrysler Building in New York was "
        "finished. Gustave Eiffel's company designed and built it, and many artists at first called it an "
        "eyesore. Today it is the most visited monument that charges for entry: about seven million people "
        "climb it every year. The tower is repainted every seven years, which takes sixty tonnes of paint. "
        "Water boils at 100 degrees Celsius at sea level, and the Earth goes around the Sun once a year.")


@pytest.fixture(scope="module")
def runners(tmp_path_factory):
    root = tmp_path_factory.mktemp("smollm2_quant")
    out = {"fp32": Runner(MODEL)}
    for label, argv in (("int8", ["--quant", "int8"]), ("int4", ["--quant", "int4"]),
                        ("int4 level 0", ["--quant", "int4", "--accuracy-level", "0"])):
        d = str(root / label.replace(" ", "_"))
        export(["--source", GGUF, "--out", d] + argv)
        out[label] = Runner(d)
    return out


def questions():
    qs = []
    for name in sorted(os.listdir(LORA_ROOT)) if os.path.isdir(LORA_ROOT) else []:
        p = os.path.join(LORA_ROOT, name, "eval_outputs.json")
        if os.path.isfile(p):
            with open(p) as f:
                qs += [(name, o["question"]) for o in json.load(f)["outputs"]]
    return qs


@pytest.mark.parametrize("mode", ["int8", "int4 level 0", "int4"])
def test_greedy_equals_fp32(runners, tok, mode):  # noqa: F811
    """The READMEs' prompts, base model and with each adapter. Level 0 (the same weights as fp32, fp32
    compute): identical. int8's default (two activation passes): the issue's bar, at least 5 of the 6
    with the adapters and 5 of the 6 without (12/12 measured; the smallest fp32 margin on these
    continuations is 0.012 logits, two passes moved margins by at most 0.003). int4's default (one pass):
    reported only; int8 activations flip fragile greedy choices (8 of 12 differed in 40 tokens)."""
    from tribute_export.adapter import load_peft
    qs = questions()
    assert qs, f"no eval_outputs.json under {LORA_ROOT}"
    diffs, n, same = [], 0, {"base": 0, "adapter": 0}
    for adapter in sorted({a for a, _ in qs}):
        feed = load_peft(os.path.join(LORA_ROOT, adapter), MODEL)
        for q in sorted({q for a, q in qs if a == adapter}):
            for extra, label in ((None, "base"), (feed, adapter)):
                want = greedy(runners["fp32"], tok, q, extra=extra)
                got = greedy(runners[mode], tok, q, extra=extra)
                n += 1
                if got != want:
                    diffs.append(f"{label} / {q!r}: fp32 {tok.decode(want)!r} vs {mode} {tok.decode(got)!r}")
                else:
                    same["base" if extra is None else "adapter"] += 1
    print(f"\n{mode} vs fp32 greedy (40 tokens): {n - len(diffs)}/{n} identical "
          f"({same['adapter']}/6 with the adapter, {same['base']}/6 base)")
    for d in diffs:
        print("  " + d)
    assert n == 12
    if mode == "int4 level 0":
        assert not diffs
    if mode == "int8":
        assert same["adapter"] >= 5 and same["base"] >= 5, diffs


def teacher_forced_log_probs(runner, ids):
    logits, _ = runner.run(ids)
    x = logits[0, :-1].astype(np.float64)
    m = x.max(-1, keepdims=True)
    lsm = x - (m + np.log(np.exp(x - m).sum(-1, keepdims=True)))
    return lsm[np.arange(len(ids) - 1), ids[1:]], lsm.argmax(-1)


def test_log_prob_change_and_perplexity(runners, tok):  # noqa: F811
    ids = [1] + tok.encode(TEXT, add_special_tokens=False).ids
    ref, ref_top = teacher_forced_log_probs(runners["fp32"], ids)
    ppl = {"fp32": float(np.exp(-ref.mean()))}
    print(f"\n{len(ids) - 1} tokens of fixed text; fp32 perplexity {ppl['fp32']:.3f}")
    for mode in ("int8", "int4 level 0", "int4"):
        lp, top = teacher_forced_log_probs(runners[mode], ids)
        ppl[mode] = float(np.exp(-lp.mean()))
        d = lp - ref
        print(f"{mode}: perplexity {ppl[mode]:.3f} ({ppl[mode] / ppl['fp32'] - 1:+.2%}), per-token log-prob change "
              f"mean {d.mean():+.4f}, mean |change| {np.abs(d).mean():.4f}, max |change| {np.abs(d).max():.3f}, "
              f"top-1 agreement {(top == ref_top).mean():.1%}")
        if mode == "int4 level 0":  # the GGUF's own blocks, fp32 compute: the fp32 model
            assert np.abs(d).max() < 1e-3 and (top == ref_top).all()
        if mode == "int8":  # the same blocks, two activation passes: measured max |change| 0.0014
            assert np.abs(d).max() < 5e-3 and np.abs(d).mean() < 1e-3 and (top == ref_top).all()
    # int8 activations: measured -0.9 % perplexity, mean |change| 0.054
    assert abs(ppl["int4"] / ppl["fp32"] - 1) < 0.03
