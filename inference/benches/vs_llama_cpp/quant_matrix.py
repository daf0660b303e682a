"""Quality and decode speed of quantized SmolLM2 exports against the fp32 one (docs/INFERENCE.md,
"Quantized weights"): the numbers behind the defaults.

    python quant_matrix.py FP32_DIR WORK_DIR [ROUNDS]

WORK_DIR must hold `int4`, `int8`, `int4_femb`, `int8_femb` exports (default accuracy level 4;
`_femb` = --float-embeddings). Variants are derived without re-exporting: another
accuracy_level is an attribute rewrite, and "float zero points" folds each 4-bit MatMulNBits'
block residual into a float zero point (zp − residual / scale, the form ONNX Runtime's CPU kernel
can only run by dequantizing B on every call). Each variant hard-links the export's model.onnx.data.
Quality: perplexity and per-token |Δ log p| vs fp32 on a fixed text, greedy agreement (40 tokens)
on the prompts of examples/adapters/*/eval_outputs.json, base and with the adapter. Speed:
bench_tribute.py (2 threads, batch 1), variants interleaved round by round. Prints JSON lines.
"""

import json
import os
import subprocess
import sys

import numpy as np
import onnx
from onnx import helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.normpath(os.path.join(HERE, "..", "..", "export", "tests"))


def variant(src, dst, accuracy_level=None, float_zero_points=False):
    """dst: src's files (hard links: ONNX Runtime refuses external data outside the model's
    directory, symlinks included) with model.onnx rewritten."""
    os.makedirs(dst, exist_ok=True)
    for f in os.listdir(src):
        if f != "model.onnx" and not os.path.exists(os.path.join(dst, f)):
            os.link(os.path.join(src, f), os.path.join(dst, f))
    m = onnx.load(os.path.join(src, "model.onnx"), load_external_data=False)
    g = m.graph
    inits = {t.name: t for t in g.initializer}

    def array(name):
        t = inits[name]
        if t.data_location != onnx.TensorProto.EXTERNAL:
            return numpy_helper.to_array(t)
        ext = {e.key: e.value for e in t.external_data}  # read by hand: onnx refuses hard-linked data
        dtype = helper.tensor_dtype_to_np_dtype(t.data_type)
        with open(os.path.join(src, ext["location"]), "rb") as f:
            f.seek(int(ext.get("offset", 0)))
            raw = f.read(int(ext["length"]))
        return np.frombuffer(raw, dtype).reshape(tuple(t.dims))

    drop = set()
    for node in list(g.node):
        at = {a.name: a for a in node.attribute}
        if node.op_type == "MatMulNBits" and accuracy_level is not None:
            at["accuracy_level"].i = accuracy_level
        if node.op_type != "MatMulNBits" or not float_zero_points or at["bits"].i != 4:
            continue
        add = next((n for n in g.node if n.op_type == "Add" and n.input[0] == node.output[0]), None)
        if add is None:
            continue
        scales, zp = array(node.input[2]), array(node.input[3])
        prefix = node.input[1].rsplit(".weight_q", 1)[0]
        residual = array(prefix + ".weight_block_residual")
        nb = scales.shape[1]
        zp = np.stack([zp & 0xF, zp >> 4], -1).reshape(zp.shape[0], -1)[:, :nb].astype(np.float32)
        safe = np.where(scales != 0, scales, 1).astype(np.float32)
        zpf = np.where(scales != 0, zp - residual / safe, zp).astype(np.float32)
        if (scales == 0).any() and (residual[scales == 0] != 0).any():
            raise SystemExit(f"{prefix}: a zero-scale block with a residual has no float zero point form")
        name = prefix + ".weight_zero_points_float"
        g.initializer.append(numpy_helper.from_array(zpf, name))
        node.input[3] = name
        node.output[0] = add.output[0]
        drop.add(add.name)
    if drop:  # the residual branches (Reshape, ReduceSum, Transpose, MatMul) are now dead
        keep = [n for n in g.node if n.name not in drop]
        used = {i for n in keep for i in n.input} | {o.name for o in g.output}
        while True:
            live = [n for n in keep if any(o in used for o in n.output)]
            if len(live) == len(keep):
                break
            keep = live
            used = {i for n in keep for i in n.input} | {o.name for o in g.output}
        keep = [type(n).FromString(n.SerializeToString()) for n in keep]  # detached copies
        live_inits = [type(t).FromString(t.SerializeToString()) for t in g.initializer if t.name in used]
        del g.node[:]
        g.node.extend(keep)
        del g.initializer[:]
        g.initializer.extend(live_inits)
    onnx.save(m, os.path.join(dst, "model.onnx"))
    return dst


def variants(work):
    out = {}
    for mode in ("int4", "int8"):
        for acc in (0, 1, 4):
            out[f"{mode} acc{acc}"] = variant(os.path.join(work, mode), os.path.join(work, f"v_{mode}_acc{acc}"), acc)
        out[f"{mode} acc4 float-emb"] = os.path.join(work, f"{mode}_femb")
        out[f"{mode} acc0 float-emb"] = variant(os.path.join(work, f"{mode}_femb"),
                                                os.path.join(work, f"v_{mode}_femb_acc0"), 0)
    out["int4 float-zp"] = variant(os.path.join(work, "int4"), os.path.join(work, "v_int4_fzp"), 4, True)
    return out


TEXT = ("The Eiffel Tower was built for the 1889 World's Fair in Paris. It is 330 metres tall and was the "
        "tallest man-made structure in the world until 1930, when the Chrysler Building in New York was "
        "finished. Gustave Eiffel's company designed and built it, and many artists at first called it an "
        "eyesore. Today it is the most visited monument that charges for entry: about seven million people "
        "climb it every year. The tower is repainted every seven years, which takes sixty tonnes of paint. "
        "Water boils at 100 degrees Celsius at sea level, and the Earth goes around the Sun once a year.")


def quality(fp32, models):
    sys.path.insert(0, TESTS)
    os.environ.setdefault("TRIBUTE_SMOLLM2_DIR", fp32)
    from conftest import Runner
    import test_smollm2
    from test_smollm2_quant import questions, teacher_forced_log_probs
    from tokenizers import Tokenizer
    from tribute_export.adapter import load_peft
    test_smollm2.MODEL = fp32
    tok = Tokenizer.from_file(os.path.join(fp32, "tokenizer.json"))
    ids = [1] + tok.encode(TEXT, add_special_tokens=False).ids
    ref_runner = Runner(fp32)
    ref, ref_top = teacher_forced_log_probs(ref_runner, ids)
    qs = questions()
    feeds = {a: load_peft(os.path.join(test_smollm2.LORA_ROOT, a), fp32) for a in sorted({a for a, _ in qs})}
    cases = [(a, q, extra) for a in sorted(feeds) for q in sorted({q for b, q in qs if b == a})
             for extra in (None, feeds[a])]
    want = [test_smollm2.greedy(ref_runner, tok, q, extra=e) for _, q, e in cases]
    print(json.dumps({"variant": "fp32", "ppl": float(np.exp(-ref.mean()))}), flush=True)
    for label, d in models.items():
        r = Runner(d)
        lp, top = teacher_forced_log_probs(r, ids)
        got = [test_smollm2.greedy(r, tok, q, extra=e) for _, q, e in cases]
        same = [g == w for g, w in zip(got, want)]
        print(json.dumps({"variant": label, "ppl": float(np.exp(-lp.mean())),
                          "mean_abs_dlogp": float(np.abs(lp - ref).mean()), "top1": float((top == ref_top).mean()),
                          "greedy_same": sum(same), "greedy_n": len(same),
                          "base_same": sum(s for s, (_, _, e) in zip(same, cases) if e is None),
                          "adapter_same": sum(s for s, (_, _, e) in zip(same, cases) if e is not None)}), flush=True)


def speed(fp32, models, rounds, tokens):
    bench = os.path.join(HERE, "bench_tribute.py")
    for _ in range(rounds):
        for label, d in [("fp32", fp32)] + list(models.items()):
            if label in ("int8 acc1", "int8 acc4 float-emb"):  # same kernels as measured elsewhere
                continue
            subprocess.run([sys.executable, bench, d, tokens, "64", "2", label], check=True)
            sys.stdout.flush()


if __name__ == "__main__":
    fp32, work = sys.argv[1], sys.argv[2]
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    models = variants(work)
    what = os.environ.get("WHAT", "quality,speed")
    if "quality" in what:
        quality(fp32, models)
    if "speed" in what:
        from tokenizers import Tokenizer
        tokens = os.path.join(work, "prompt_tokens.json")
        text = ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
                "<|im_start|>user\n" + TEXT + " Summarise this paragraph in two sentences.<|im_end|>\n"
                "<|im_start|>assistant\n")
        with open(tokens, "w") as f:
            json.dump(Tokenizer.from_file(os.path.join(fp32, "tokenizer.json")).encode(
                text, add_special_tokens=False).ids, f)
        speed(fp32, models, rounds, tokens)
