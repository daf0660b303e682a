"""Greedy decode on a `--ops static` export, the cache written in place, optionally as CUDA graphs.

The graph the GPU path needs (docs/INFERENCE.md, "What the GPU path needs instead"), driven the way
that path will drive it, to measure what it reaches before the Rust generator runs it:

- one cache buffer per past input, [rows, kv_heads, capacity, head_dim], allocated once on the
  device and bound as both the past input and the present output (the kernel appends in place);
- rows right-padded; the prompt is one right-padded batch prefill;
- greedy on the device: the graph's `next_token` (argmax of the logits) is the only output read;
- decode steps feed inputs of fixed shapes at fixed addresses (the attention mask at the buffer's
  full width), which is what ONNX Runtime's CUDA graphs (`enable_cuda_graph`) need: the first
  step captures, later steps replay. A capture that fails falls back to plain runs with one
  warning (printed) and the numbers say which ran.

Prints decode tokens/s per batch size and, with --bandwidth, the weight bytes read per step against
the card's bandwidth (the floor of a batch-1 step). --check PORTABLE_DIR also runs the same greedy
decode on a portable export on the CPU and reports how many tokens agree.

  python inference/benches/static_decode.py MODEL_DIR [--device cuda] [--cuda-graph]
      [--batches 1,8,32] [--new 64] [--prompt 16] [--check PORTABLE_DIR] [--bandwidth 3.35e12]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import onnxruntime as ort

DTYPES = {"float32": np.float32, "float16": np.float16}


class StaticDecoder:
    def __init__(self, model_dir: str, device: str, cuda_graph: bool, threads: int):
        with open(os.path.join(model_dir, "tribute.json")) as f:
            self.tj = json.load(f)
        if self.tj.get("ops") != "static":
            raise SystemExit(f"{model_dir}: not a --ops static export (ops: {self.tj.get('ops', 'portable')})")
        self.device = device
        self.kv_dtype = DTYPES[self.tj.get("kv_dtype", "float32")]
        so = ort.SessionOptions()
        so.log_severity_level = 3
        so.intra_op_num_threads = threads
        if device == "cuda":
            providers = [("CUDAExecutionProvider", {"enable_cuda_graph": "1" if cuda_graph else "0"}),
                         "CPUExecutionProvider"]
        else:
            providers = ["CPUExecutionProvider"]
        self.path = os.path.join(model_dir, "model.onnx")
        self.sess = ort.InferenceSession(self.path, so, providers=providers)
        self.cuda_graph = cuda_graph
        self.graph_ids = 0  # one captured graph per decode loop: its buffers are the loop's own
        self.names = [f"past_key_values.{i}.{k}" for i in range(self.tj["num_layers"]) for k in ("key", "value")]

    def value(self, arr: np.ndarray) -> ort.OrtValue:
        return ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(arr), self.device, 0)

    def generate(self, prompt: list, rows: int, new: int, capacity: int):
        """Greedy: `rows` copies of `prompt`, `new` tokens each. Returns (tokens of row 0, prefill s,
        decode s, whether CUDA graphs ran)."""
        tj = self.tj
        shape = [rows, tj["num_kv_heads"], capacity, tj["head_dim"]]
        cache = {n: ort.OrtValue.ortvalue_from_shape_and_type(shape, self.kv_dtype, self.device, 0)
                 for n in self.names}
        P = len(prompt)
        t0 = time.perf_counter()
        io = self.sess.io_binding()
        feeds = {"input_ids": np.array([prompt] * rows, np.int64),
                 "attention_mask": np.ones((rows, P), np.int64),
                 "position_ids": np.array([range(P)] * rows, np.int64),
                 "logits_to_keep": np.array([1], np.int64)}
        for name, arr in feeds.items():
            io.bind_ortvalue_input(name, self.value(arr))
        self.bind_cache(io, cache)
        io.bind_output("logits", self.device)
        io.bind_output("next_token")
        self.sess.run_with_iobinding(io, self.run_options(-1))  # prefill shapes: never captured
        nxt = io.get_outputs()[-1].numpy()[:, -1]
        prefill = time.perf_counter() - t0
        out = [int(nxt[0])]

        # Decode: fixed shapes and addresses; the mask spans the whole buffer.
        mask = np.zeros((rows, capacity), np.int64)
        mask[:, :P + 1] = 1
        ids = self.value(nxt.reshape(rows, 1).astype(np.int64))
        pos = self.value(np.full((rows, 1), P, np.int64))
        mask_v = self.value(mask)
        logits = ort.OrtValue.ortvalue_from_shape_and_type([rows, 1, tj["vocab_size"]], np.float32, self.device, 0)
        token = ort.OrtValue.ortvalue_from_shape_and_type([rows, 1], np.int64, self.device, 0)
        io = self.sess.io_binding()
        # logits_to_keep unbound: its default keeps every position (here the one), and the graph
        # reads it on the host, where a fed value would be copied inside the captured run.
        for name, v in (("input_ids", ids), ("position_ids", pos), ("attention_mask", mask_v)):
            io.bind_ortvalue_input(name, v)
        self.bind_cache(io, cache)
        io.bind_ortvalue_output("logits", logits)  # stays on the device: the graph's argmax is read
        io.bind_ortvalue_output("next_token", token)
        graphs = self.cuda_graph
        self.graph_ids += 1
        ro = self.run_options(self.graph_ids)
        t0 = time.perf_counter()
        for step in range(new - 1):
            try:
                self.sess.run_with_iobinding(io, ro)
            except Exception as e:  # a failed capture: plain runs from here on
                if not graphs:
                    raise
                print(f"warning: CUDA graph capture failed ({str(e).splitlines()[0][:160]}); running without",
                      file=sys.stderr)
                graphs, self.cuda_graph = False, False
                self.sess = self.reload_without_graphs()
                return self.generate(prompt, rows, new, capacity)
            nxt = token.numpy()[:, -1]
            out.append(int(nxt[0]))
            ids.update_inplace(nxt.reshape(rows, 1).astype(np.int64))
            pos.update_inplace(np.full((rows, 1), P + 1 + step, np.int64))
            mask[:, P + 1 + step] = 1
            mask_v.update_inplace(mask)
        return out, prefill, time.perf_counter() - t0, graphs

    def run_options(self, graph_id: int):
        """ONNX Runtime captures a CUDA graph per `gpu_graph_id` (-1: run uncaptured)."""
        ro = ort.RunOptions()
        if self.cuda_graph:
            ro.add_run_config_entry("gpu_graph_id", str(graph_id))
        return ro

    def bind_cache(self, io, cache):
        for n, v in cache.items():
            io.bind_ortvalue_input(n, v)
            io.bind_ortvalue_output(n.replace("past_key_values.", "present.", 1), v)

    def reload_without_graphs(self):
        so = ort.SessionOptions()
        so.log_severity_level = 3
        return ort.InferenceSession(self.path, so, providers=["CUDAExecutionProvider", "CPUExecutionProvider"])


def portable_greedy(model_dir: str, prompt: list, new: int) -> list:
    """The same greedy decode on a portable export, on the CPU (the growing-cache loop)."""
    with open(os.path.join(model_dir, "tribute.json")) as f:
        tj = json.load(f)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(os.path.join(model_dir, "model.onnx"), so, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    past = {f"past_key_values.{i}.{k}": np.zeros((1, tj["num_kv_heads"], 0, tj["head_dim"]), np.float32)
            for i in range(tj["num_layers"]) for k in ("key", "value")}
    ids, out = list(prompt), []
    step = list(prompt)
    for _ in range(new):
        P = next(iter(past.values())).shape[2]
        feed = {"input_ids": np.array([step], np.int64), "attention_mask": np.ones((1, P + len(step)), np.int64),
                "position_ids": np.array([range(P, P + len(step))], np.int64), **past}
        res = dict(zip(names, sess.run(None, feed)))
        tok = int(res["logits"][0, -1].argmax())
        out.append(tok)
        ids.append(tok)
        step = [tok]
        past = {n.replace("present.", "past_key_values.", 1): v for n, v in res.items() if n.startswith("present.")}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--cuda-graph", action="store_true")
    p.add_argument("--batches", default="1,8,32")
    p.add_argument("--new", type=int, default=64)
    p.add_argument("--prompt", type=int, default=16, help="prompt tokens")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--check", metavar="PORTABLE_DIR")
    p.add_argument("--bandwidth", type=float, default=None, help="the card's memory bandwidth, bytes/s")
    a = p.parse_args(argv)
    dec = StaticDecoder(a.model, a.device, a.cuda_graph, a.threads)
    rng = np.random.default_rng(0)
    prompt = [int(t) for t in rng.integers(10, min(dec.tj["vocab_size"], 30000), a.prompt)]
    capacity = a.prompt + a.new + 1
    name = os.path.basename(os.path.normpath(a.model))
    if a.check:
        got, *_ = dec.generate(prompt, 1, a.new, capacity)
        want = portable_greedy(a.check, prompt, a.new)
        agree = next((i for i, (x, y) in enumerate(zip(got, want)) if x != y), len(want))
        print(f"{name} ({a.device}) greedy vs portable on the CPU: first {agree} of {len(want)} tokens equal"
              + ("" if agree == len(want) else f"\n  static   {got}\n  portable {want}"))
    weights = os.path.getsize(os.path.join(a.model, "model.onnx.data"))
    for rows in [int(x) for x in a.batches.split(",")]:
        best = None
        for _ in range(a.reps):
            _, prefill, decode, graphs = dec.generate(prompt, rows, a.new, capacity)
            best = decode if best is None else min(best, decode)
        steps = a.new - 1
        line = (f"{name} {a.device}{' cuda-graph' if graphs else ''} batch {rows}: decode "
                f"{rows * steps / best:,.1f} tok/s ({best / steps * 1e3:.2f} ms/step), prefill {prefill * 1e3:.1f} ms")
        if a.bandwidth and rows == 1:
            floor = weights / a.bandwidth
            line += (f"; weights {weights / 2**30:.2f} GiB, floor {floor * 1e3:.2f} ms/step "
                     f"({floor / (best / steps) * 100:.0f} % of the bandwidth limit)")
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
