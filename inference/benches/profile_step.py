"""Where a decode step goes: ONNX Runtime's profiler over a prefill and N one-token steps of each
model directory, printing the operators run per decode step, the step time and the operator types
that take the most of it (docs/INFERENCE.md, "A decode step, operator by operator").

    python profile_step.py MODEL_DIR [MODEL_DIR ...] [--steps 8] [--prompt 100] [--threads 2] [--cuda]

Needs onnxruntime (onnxruntime-gpu for --cuda). The profiler adds its own overhead: compare the
step times with each other, not with the generation bench.
"""

import argparse
import collections
import json
import os
import tempfile

import numpy as np
import onnxruntime as ort


def profile(model_dir, steps, prompt, threads, cuda):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.log_severity_level = 3
    so.enable_profiling = True
    so.profile_file_prefix = os.path.join(tempfile.gettempdir(), "tribute_profile")
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if cuda else ["CPUExecutionProvider"]
    sess = ort.InferenceSession(os.path.join(model_dir, "model.onnx"), so, providers=providers)
    with open(os.path.join(model_dir, "tribute.json")) as f:
        tj = json.load(f)
    layers, kv, dim = tj["num_layers"], tj["num_kv_heads"], tj["head_dim"]
    names = [o.name for o in sess.get_outputs()]
    fed = {i.name for i in sess.get_inputs()}
    kv_type = np.float16 if tj.get("kv_dtype") == "float16" else np.float32
    past = {f"past_key_values.{i}.{k}": np.zeros((1, kv, 0, dim), kv_type)
            for i in range(layers) for k in ("key", "value")}
    ids, start = np.arange(100, 100 + prompt, dtype=np.int64)[None], 0
    for _ in range(steps + 1):
        s = ids.shape[1]
        feed = {"input_ids": ids, "attention_mask": np.ones((1, start + s), np.int64),
                "position_ids": np.arange(start, start + s, dtype=np.int64)[None]}
        if "logits_to_keep" in tj["inputs"]:
            feed["logits_to_keep"] = np.array([1], np.int64)
        feed = {k: v for k, v in feed.items() if k in fed or k == "logits_to_keep"}
        feed.update(past)
        out = dict(zip(names, sess.run(None, feed)))
        past = {k.replace("present.", "past_key_values.", 1): v for k, v in out.items() if k.startswith("present.")}
        start += s
        ids = np.array([[int(out["logits"][0, -1].argmax())]], np.int64)
    trace = sess.end_profiling()
    with open(trace) as f:
        events = json.load(f)
    os.remove(trace)
    runs = sorted((e for e in events if e.get("name") == "model_run"), key=lambda e: e["ts"])[-steps:]
    nodes = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    count, time = collections.Counter(), collections.Counter()
    per_step = []
    for r in runs:
        inside = [n for n in nodes if r["ts"] <= n["ts"] <= r["ts"] + r["dur"]]
        per_step.append(len(inside))
        for n in inside:
            count[n["args"]["op_name"]] += 1
            time[n["args"]["op_name"]] += n["dur"]
    total = sum(time.values()) or 1
    top = ", ".join(f"{op} {count[op] / steps:.0f} ({100 * t / total:.0f} %)" for op, t in time.most_common(6))
    step_ms = np.mean([r["dur"] for r in runs]) / 1000
    print(f"{os.path.basename(os.path.normpath(model_dir))}: {np.mean(per_step):.0f} operators per decode step, "
          f"{step_ms:.1f} ms; most time: {top}")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("models", nargs="+")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--prompt", type=int, default=100)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cuda", action="store_true")
    a = p.parse_args()
    for m in a.models:
        profile(m, a.steps, a.prompt, a.threads, a.cuda)


if __name__ == "__main__":
    main()
