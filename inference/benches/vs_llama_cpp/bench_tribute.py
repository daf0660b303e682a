"""One Tribute measurement with Python ONNX Runtime: prefill and greedy decode over an exported model.

    python bench_tribute.py MODEL_DIR TOKENS.json N_DECODE THREADS LABEL [BATCH]

Prefill = every prompt token but the last; decode = N_DECODE one-token steps with the KV cache,
starting from the last prompt token (the same work as bench_llama.mjs). With BATCH > 1 the prompt
is repeated BATCH times and decode tok/s counts every row. Prints one JSON line.
`python bench_tribute.py --summary RESULTS.jsonl` prints the table (medians and ranges).
"""

import json
import os
import statistics
import sys
import time

import numpy as np


def session(model_dir, threads):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    return ort.InferenceSession(os.path.join(model_dir, "model.onnx"), so, providers=["CPUExecutionProvider"])


def run_once(sess, tj, prompt, n_decode, batch):
    kv, d, layers = tj["num_kv_heads"], tj["head_dim"], tj["num_layers"]
    past = {f"past_key_values.{i}.{k}": np.zeros((batch, kv, 0, d), np.float32)
            for i in range(layers) for k in ("key", "value")}
    names = [o.name for o in sess.get_outputs()]

    def step(ids, start):
        nonlocal past
        s = ids.shape[1]
        feed = {"input_ids": ids, "attention_mask": np.ones((batch, start + s), np.int64),
                "position_ids": np.broadcast_to(np.arange(start, start + s, dtype=np.int64), (batch, s)).copy()}
        feed.update(past)
        res = dict(zip(names, sess.run(None, feed)))
        past = {n.replace("present.", "past_key_values.", 1): v for n, v in res.items() if n.startswith("present.")}
        return res["logits"]

    ids = np.tile(np.asarray(prompt[:-1], np.int64), (batch, 1))
    t0 = time.perf_counter()
    step(ids, 0)
    t1 = time.perf_counter()
    nxt = np.full((batch, 1), prompt[-1], np.int64)
    out = []
    for j in range(n_decode):
        logits = step(nxt, len(prompt) - 1 + j)
        nxt = logits[:, -1].argmax(-1).astype(np.int64)[:, None]
        out.append(int(nxt[0, 0]))
    t2 = time.perf_counter()
    return (len(prompt) - 1) / (t1 - t0), batch * n_decode / (t2 - t1), out


def measure(model_dir, tokens_path, n_decode, threads, label, batch=1):
    with open(os.path.join(model_dir, "tribute.json")) as f:
        tj = json.load(f)
    with open(tokens_path) as f:
        prompt = json.load(f)
    sess = session(model_dir, threads)
    run_once(sess, tj, prompt, min(n_decode, 8), batch)  # warm-up
    prefill, decode, out = run_once(sess, tj, prompt, n_decode, batch)
    print(json.dumps({"engine": "tribute (Python ORT)", "variant": label, "batch": batch, "prefill_tps": prefill,
                      "decode_tps": decode, "first_tokens": out[:16]}))


def summary(path):
    rows = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("{"):
                r = json.loads(line)
                rows.setdefault((r["engine"], r["variant"], r["batch"]), []).append(r)

    def cell(rs, key):
        v = sorted(r[key] for r in rs)
        return f"{statistics.median(v):7.1f} ({v[0]:.1f}-{v[-1]:.1f})"

    print(f"| engine | weights | batch | runs | prefill tok/s median (range) | decode tok/s median (range) |")
    print("|---|---|---|---|---|---|")
    for (engine, variant, batch), rs in rows.items():
        pre = cell(rs, "prefill_tps") if batch == 1 else "-"
        print(f"| {engine} | {variant} | {batch} | {len(rs)} | {pre} | {cell(rs, 'decode_tps')} |")
    ref = [r for (e, v, b), rs in rows.items() if b == 1 for r in rs[:1]]
    for r in ref:
        print(f"# {r['engine']} {r['variant']}: first greedy tokens {r['first_tokens']}")


if __name__ == "__main__":
    if sys.argv[1] == "--summary":
        summary(sys.argv[2])
    else:
        a = sys.argv[1:]
        measure(a[0], a[1], int(a[2]), int(a[3]), a[4], int(a[5]) if len(a) > 5 else 1)
