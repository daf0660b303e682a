"""The peer for `tribute-inference`'s generation benchmark: a plain Python ONNX Runtime loop.

Runs the same model directory with onnxruntime (same thread count, all graph
optimisations), greedy decoding with the KV cache fed back as numpy arrays:
prefill of the given prompt (repeated `batch` times), then `new` decode steps.
Prints {"prefill_tokens_per_s", "decode_tokens_per_s", "batch", "tokens"} as JSON,
medians over `reps` runs. With `--genai`, runs onnxruntime-genai on the directory instead
(if the package is installed).

    python python_generate_baseline.py MODEL_DIR PROMPT_IDS(comma-separated) NEW BATCH THREADS REPS [--genai]
"""

import json
import statistics
import sys
import time

import numpy as np


def ort_loop(model_dir, ids, new, batch, threads, reps):
    import onnxruntime as ort

    cfg = json.load(open(f"{model_dir}/tribute.json"))
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    sess = ort.InferenceSession(f"{model_dir}/model.onnx", so, providers=["CPUExecutionProvider"])
    L, kvh, hd = cfg["num_layers"], cfg["num_kv_heads"], cfg["head_dim"]
    pre, dec = [], []
    for _ in range(reps):
        x = np.array([ids] * batch, dtype=np.int64)
        s = x.shape[1]
        feed = {
            "input_ids": x,
            "attention_mask": np.ones((batch, s), np.int64),
            "position_ids": np.tile(np.arange(s, dtype=np.int64), (batch, 1)),
        }
        for i in range(L):
            feed[f"past_key_values.{i}.key"] = np.zeros((batch, kvh, 0, hd), np.float32)
            feed[f"past_key_values.{i}.value"] = np.zeros((batch, kvh, 0, hd), np.float32)
        names = [o.name for o in sess.get_outputs()]
        t0 = time.perf_counter()
        out = dict(zip(names, sess.run(None, feed)))
        pre.append(time.perf_counter() - t0)
        tok = out["logits"][:, -1, :].argmax(-1)
        total = s
        t0 = time.perf_counter()
        for step in range(new - 1):
            total += 1
            feed = {
                "input_ids": tok.reshape(batch, 1).astype(np.int64),
                "attention_mask": np.ones((batch, total), np.int64),
                "position_ids": np.full((batch, 1), total - 1, np.int64),
            }
            for i in range(L):
                feed[f"past_key_values.{i}.key"] = out[f"present.{i}.key"]
                feed[f"past_key_values.{i}.value"] = out[f"present.{i}.value"]
            out = dict(zip(names, sess.run(None, feed)))
            tok = out["logits"][:, -1, :].argmax(-1)
        dec.append(time.perf_counter() - t0)
    p, d = statistics.median(pre), statistics.median(dec)
    return {
        "runtime": f"onnxruntime {ort.__version__}",
        "batch": batch,
        "tokens": new,
        "prefill_tokens_per_s": batch * len(ids) / p,
        "decode_tokens_per_s": batch * (new - 1) / d,
    }


def genai_loop(model_dir, ids, new, batch, threads, reps):
    import onnxruntime_genai as og

    config = og.Config(model_dir)
    model = og.Model(config)
    pre, dec = [], []
    for _ in range(reps):
        params = og.GeneratorParams(model)
        params.set_search_options(max_length=len(ids) + new, do_sample=False, batch_size=batch)
        gen = og.Generator(model, params)
        t0 = time.perf_counter()
        gen.append_tokens(np.array([ids] * batch, dtype=np.int32))
        pre.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        n = 0
        while not gen.is_done() and n < new - 1:
            gen.generate_next_token()
            n += 1
        dec.append((time.perf_counter() - t0) / max(n, 1))
    return {
        "runtime": "onnxruntime-genai",
        "batch": batch,
        "tokens": new,
        "prefill_tokens_per_s": batch * len(ids) / statistics.median(pre),
        "decode_tokens_per_s": batch / statistics.median(dec),
    }


def main():
    model_dir = sys.argv[1]
    ids = [int(t) for t in sys.argv[2].split(",")]
    new, batch, threads, reps = (int(a) for a in sys.argv[3:7])
    if "--genai" in sys.argv:
        try:
            import onnxruntime_genai  # noqa: F401
        except ImportError:
            print(json.dumps({"error": "onnxruntime-genai is not installed"}))
            return
        print(json.dumps(genai_loop(model_dir, ids, new, batch, threads, reps)))
    else:
        print(json.dumps(ort_loop(model_dir, ids, new, batch, threads, reps)))


if __name__ == "__main__":
    main()
