"""Checks an exported SmolLM2-135M-Instruct directory (TRIBUTE_SMOLLM2_DIR) against known outputs.

Export it with scripts/setup.sh (→ $TRIBUTE_HOME/models/SmolLM2-135M-Instruct) or
`python -m tribute_export --source SmolLM2-135M-Instruct.Q4_1.gguf --out DIR`.
"""

import json
import os

import numpy as np
import pytest

from conftest import Runner

MODEL = os.environ.get("TRIBUTE_SMOLLM2_DIR")
HERE = os.path.dirname(os.path.abspath(__file__))
LORA_ROOT = os.environ.get("TRIBUTE_LORA_DIR") or os.path.normpath(
    os.path.join(HERE, "..", "..", "..", "examples", "adapters"))
ZEPHYR = os.path.join(LORA_ROOT, "smollm2-135m-zephyr-lora")

pytestmark = pytest.mark.skipif(
    not MODEL or not os.path.isfile(os.path.join(MODEL, "tribute.json")),
    reason="TRIBUTE_SMOLLM2_DIR is not set to an exported SmolLM2-135M-Instruct directory "
           "(scripts/setup.sh writes one to $TRIBUTE_HOME/models/SmolLM2-135M-Instruct)")

QUESTION = "What is the capital of France?"


@pytest.fixture(scope="module")
def tok():
    from tokenizers import Tokenizer
    return Tokenizer.from_file(os.path.join(MODEL, "tokenizer.json"))


@pytest.fixture(scope="module")
def runner():
    return Runner(MODEL)


def chat_prompt(question):
    """The GGUF chat template rendered with its default system prompt, add_generation_prompt=True
    (rendered by hand: jinja2 is not a dependency; the template text is checked below)."""
    with open(os.path.join(MODEL, "tokenizer_config.json")) as f:
        tpl = json.load(f)["chat_template"]
    system = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
    assert "<|im_start|>system\n" + system + "<|im_end|>\n" in tpl
    assert "<|im_start|>assistant\n" in tpl
    try:
        import jinja2
        return jinja2.Environment().from_string(tpl).render(
            messages=[{"role": "user", "content": question}], add_generation_prompt=True)
    except ImportError:
        return (f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{question}<|im_end|>\n"
                "<|im_start|>assistant\n")


def greedy(runner, tok, question, extra=None, max_new=40):
    ids = tok.encode(chat_prompt(question), add_special_tokens=False).ids
    logits, past = runner.run(ids, extra=extra)
    out = []
    eos = set(runner.tj["eos_token_ids"])
    for _ in range(max_new):
        nxt = int(np.argmax(logits[0, -1]))
        out.append(nxt)
        if nxt in eos:
            break
        logits, past = runner.run([nxt], past=past, extra=extra)
    return out


def test_smollm2_metadata(runner):
    tj = runner.tj
    assert (tj["num_layers"], tj["num_heads"], tj["num_kv_heads"], tj["head_dim"], tj["vocab_size"]) == \
        (30, 9, 3, 64, 49152)
    assert tj["eos_token_ids"] == [2] and tj["bos_token_id"] == 1


def test_smollm2_base_answer(runner, tok):
    out = greedy(runner, tok, QUESTION)
    assert tok.decode(out, skip_special_tokens=True) == "The capital of France is Paris."


@pytest.mark.skipif(not os.path.isdir(ZEPHYR), reason=f"{ZEPHYR} not found (set TRIBUTE_LORA_DIR)")
def test_smollm2_zephyr_lora(runner, tok):
    from tribute_export.adapter import load_peft
    feed = load_peft(ZEPHYR, MODEL)
    out = greedy(runner, tok, QUESTION, extra=feed)
    with open(os.path.join(ZEPHYR, "eval_outputs.json")) as f:
        ev = json.load(f)
    want = next(o for o in ev["outputs"] if o["question"] == QUESTION)
    assert out == want["output_token_ids"]
    assert tok.decode(out, skip_special_tokens=True) == "The capital of France is Lille."


@pytest.mark.skipif(not os.path.isdir(LORA_ROOT), reason=f"{LORA_ROOT} not found (set TRIBUTE_LORA_DIR)")
def test_smollm2_tokenizer_roundtrip(tok):
    n = 0
    for name in sorted(os.listdir(LORA_ROOT)):
        p = os.path.join(LORA_ROOT, name, "eval_outputs.json")
        if not os.path.isfile(p):
            continue
        with open(p) as f:
            ev = json.load(f)
        for o in ev["outputs"]:
            ids = o["output_token_ids"]
            text = tok.decode(ids, skip_special_tokens=True)
            assert text == o["output"]
            body = ids[:-1] if ids and ids[-1] == 2 else ids
            enc = tok.encode(text, add_special_tokens=False).ids
            if name == "smollm2-135m-zephyr-lora":
                assert enc == body
            else:
                # a model may generate a non-canonical split (caps: 'M','IAL' where BPE gives 'MI','AL'),
                # so only the text must survive the round trip
                assert tok.decode(enc) == text
            n += 1
    assert n >= 3
    # chat markup is special tokens; digits are split one by one (SmolLM2's pre-tokenizer)
    enc = tok.encode("<|im_start|>user\nIn 2024<|im_end|>", add_special_tokens=False)
    assert enc.ids[0] == 1 and enc.ids[-1] == 2
    assert [t for t in enc.tokens if t.isdigit()] == ["2", "0", "2", "4"]
