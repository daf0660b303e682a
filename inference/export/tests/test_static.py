"""`--ops static`: GroupQueryAttention over right-padded rows in one cache buffer allocated at its
maximum length, each present output bound to its past input's buffer so that the kernel writes the
new keys and values in place (the layout ONNX Runtime's CUDA kernel and CUDA graphs take). Checked
on ONNX Runtime's CPU kernel against the portable export of the same weights: one-row prefills into
rows of one buffer, decode steps of rows at different lengths, a right-padded batch prefill, a
prefill over a cached prefix, LoRA with lora_mask, Gemma 3's sliding window, fp16 compute with an
fp16 cache."""

import json
import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import cuda_placement
from conftest import Runner, make_weights, require, tiny_config
from test_archs import IDS as LONG_IDS, arch_weights, gemma3_config
from test_fused import pair
from test_tiny import IDS, LORA_SPEC, _random_lora, _stack

CAPACITY = 32  # cache columns per row


class StaticCache:
    """A runner over one [rows, KV, CAPACITY, D] buffer per past input, bound as both the past
    input and the present output of every call (in place, as a GPU runtime would)."""

    def __init__(self, runner: Runner, rows: int, dtype=np.float32):
        self.r = runner
        tj = runner.tj
        self.buf = {f"past_key_values.{i}.{k}": np.zeros((rows, tj["num_kv_heads"], CAPACITY, tj["head_dim"]), dtype)
                    for i in range(tj["num_layers"]) for k in ("key", "value")}
        self.lens = [0] * rows

    def run(self, rows, ids, extra=None):
        """Appends `ids[j]` (all of one length) to row `rows[j]` (contiguous rows of the buffer).
        Returns logits [len(rows), S, V]."""
        ids = np.asarray(ids, np.int64)
        n, S = ids.shape
        assert list(rows) == list(range(rows[0], rows[0] + n))
        after = [self.lens[r] + S for r in rows]
        mask = np.zeros((n, max(after)), np.int64)
        for j, a in enumerate(after):
            mask[j, :a] = 1
        pos = np.array([range(self.lens[r], self.lens[r] + S) for r in rows], np.int64)
        return self.call(rows, ids, mask, pos, after, extra)

    def call(self, rows, ids, mask, pos, after, extra=None):
        sess = self.r.sess
        io = sess.io_binding()
        for name, v in {"input_ids": ids, "attention_mask": mask, "position_ids": pos, **(extra or {})}.items():
            io.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(v)))
        for name, buf in self.buf.items():
            view = ort.OrtValue.ortvalue_from_numpy(buf[rows[0]:rows[-1] + 1])  # shares the memory
            io.bind_ortvalue_input(name, view)
            io.bind_ortvalue_output(name.replace("past_key_values.", "present.", 1), view)
        io.bind_output("logits")
        sess.run_with_iobinding(io)
        for r, a in zip(rows, after):
            self.lens[r] = a
        return io.get_outputs()[-1].numpy()


def export_pair(root, cfg, w, *flags):
    """(portable runner, static runner) for the same weights exported with `flags`."""
    return pair(root, cfg, w, *flags, ops=("portable", "static"))


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    cfg = tiny_config()
    w = make_weights(cfg, seed=1)
    return (cfg, w, *export_pair(str(tmp_path_factory.mktemp("static")), cfg, w))


def check_rows(port, static, a, b, atol=1e-5, dtype=np.float32, extra=None, argmax_only=False):
    """Row 0 takes prompt `a`, row 1 prompt `b`, each prefilled alone into its row of the shared
    buffer; then three decode steps of both rows at their own lengths. Every logit equals the
    portable graph's run of each sequence alone."""
    def close(got, want):
        if argmax_only:
            np.testing.assert_allclose(got, want, atol=atol, rtol=0)
            assert np.argmax(got) == np.argmax(want)
        else:
            np.testing.assert_allclose(got, want, atol=atol, rtol=1e-4)

    nxt = [[30, 31, 32], [40, 41, 42]]
    full = [port.run(list(p) + n, extra=extra)[0][0] for p, n in zip((a, b), nxt)]
    cache = StaticCache(static, 2, dtype)
    for r, p in enumerate((a, b)):
        got = cache.run([r], [p], extra=extra)
        close(got[0, -1], full[r][len(p) - 1])
    for t in range(3):
        got = cache.run([0, 1], [[nxt[0][t]], [nxt[1][t]]], extra=extra)
        for r, p in enumerate((a, b)):
            close(got[r, -1], full[r][len(p) + t])
    return cache


def test_static_graph_structure(llama):
    port, static = llama[2], llama[3]
    g = onnx.load(os.path.join(static.dir, "model.onnx"), load_external_data=False).graph
    gqa = [n for n in g.node if n.op_type == "GroupQueryAttention"]
    assert len(gqa) == static.tj["num_layers"]
    assert all(len(n.input) == 7 for n in gqa), "no attention_bias (the CUDA kernel refuses one)"
    assert not [n for n in g.node if n.name.startswith("attn_bias")]
    assert static.tj["ops"] == "static" and static.tj["kv_dtype"] == "float32"
    assert static.tj["outputs"]["next_token"] == "next_token"
    portable = onnx.load(os.path.join(port.dir, "model.onnx"), load_external_data=False).graph
    assert [i.name for i in g.input] == [i.name for i in portable.input]
    # greedy on the device: next_token is the argmax of the kept logits
    ids = np.array([IDS[:5], IDS[3:8]], np.int64)
    res = dict(zip(static.out_names, static.sess.run(None, {
        "input_ids": ids, "attention_mask": np.ones_like(ids), "position_ids": np.array([range(5)] * 2, np.int64),
        "logits_to_keep": np.array([2], np.int64), **static.empty_past(2)})))
    assert res["next_token"].shape == (2, 2) and res["next_token"].dtype == np.int64
    np.testing.assert_array_equal(res["next_token"], res["logits"].argmax(-1))
    assert (res["next_token"] >= 0).all()


def test_static_rows_write_their_own_columns_in_place(llama):
    cfg, w, port, static = llama
    a, b = IDS, IDS[2:6]
    cache = check_rows(port, static, a, b)
    # Written in place: each row holds exactly its tokens' columns, the rest of the buffer is untouched.
    for name, buf in cache.buf.items():
        for r, n in enumerate((len(a) + 3, len(b) + 3)):
            assert np.abs(buf[r, :, :n]).sum(axis=(0, 2)).min() > 0, name
            assert not buf[r, :, n:].any(), name
    # A decode step with the mask at the buffer's full width (fixed shapes, as CUDA graphs need):
    # trailing zeros change nothing.
    lens = [cache.lens[0] + 1, cache.lens[1] + 1]
    mask = np.zeros((2, CAPACITY), np.int64)
    mask[0, :lens[0]], mask[1, :lens[1]] = 1, 1
    pos = np.array([[cache.lens[0]], [cache.lens[1]]], np.int64)
    got = cache.call([0, 1], np.array([[33], [43]], np.int64), mask, pos, lens)
    for r, (p, n) in enumerate(((a, [30, 31, 32, 33]), (b, [40, 41, 42, 43]))):
        want = port.run(list(p) + n)[0][0, -1]
        np.testing.assert_allclose(got[r, -1], want, atol=1e-5, rtol=1e-4)
    # The columns equal the portable graph's cache of the same sequence.
    _, want = port.run(list(b) + [40, 41, 42, 43])
    for name, v in want.items():
        np.testing.assert_allclose(cache.buf[name][1, :, :v.shape[2]], v[0], atol=1e-5, rtol=1e-4)


def test_static_right_padded_batch_prefill_and_a_cached_prefix(llama):
    cfg, w, port, static = llama
    a, b = IDS, IDS[3:7]
    cache = StaticCache(static, 2)
    S = len(a)
    ids = np.array([a, list(b) + [cfg["pad_token_id"]] * (S - len(b))], np.int64)
    mask = np.array([[1] * S, [1] * len(b) + [0] * (S - len(b))], np.int64)
    pos = np.array([range(S), list(range(len(b))) + [0] * (S - len(b))], np.int64)
    got = cache.call([0, 1], ids, mask, pos, [len(a), len(b)])
    fa, fb = port.run(list(a) + [30])[0][0], port.run(list(b) + [40, 41, 42])[0][0]
    np.testing.assert_allclose(got[0, S - 1], fa[S - 1], atol=1e-5, rtol=1e-4)
    np.testing.assert_allclose(got[1, len(b) - 1], fb[len(b) - 1], atol=1e-5, rtol=1e-4)
    got = cache.run([0, 1], [[30], [40]])
    np.testing.assert_allclose(got[0, 0], fa[S], atol=1e-5, rtol=1e-4)
    np.testing.assert_allclose(got[1, 0], fb[len(b)], atol=1e-5, rtol=1e-4)
    # Two new tokens at once over row 1's cache (one row: what the kernel takes with a past).
    got = cache.run([1], [[41, 42]])
    np.testing.assert_allclose(got[0], fb[len(b) + 1:len(b) + 3], atol=1e-5, rtol=1e-4)


def test_static_lora_and_lora_mask(llama):
    """Two adapters stacked along the rank axis, rows masked to one each, at different lengths."""
    cfg, w, port, static = llama
    rng = np.random.default_rng(9)
    f1, _ = _random_lora(cfg, rng, LORA_SPEC)
    f2, _ = _random_lora(cfg, rng, {"model.layers.0.self_attn.q_proj": 4, "model.layers.1.mlp.down_proj": 1})
    feed = _stack([f1, f2], 5, static.tj["lora"]["modules"])
    mask = np.zeros((2, 1, 10), np.float32)
    mask[0, 0, :5], mask[1, 0, 5:] = 1, 1
    a, b = IDS, IDS[1:5]
    nxt = [30, 40]
    cache = StaticCache(static, 2)
    for r, p in enumerate((a, b)):
        cache.run([r], [p], extra={**feed, "lora_mask": mask[r:r + 1]})
    got = cache.run([0, 1], [[nxt[0]], [nxt[1]]], extra={**feed, "lora_mask": mask})
    for r, (p, f) in enumerate(((a, f1), (b, f2))):
        want = port.run(list(p) + [nxt[r]], extra=f)[0][0, -1]
        np.testing.assert_allclose(got[r, 0], want, atol=1e-5, rtol=1e-4)


def test_static_gemma3_sliding_window(tmp_path):
    """Sliding-window layers through the kernel's local_window_size (W keys, the query's own
    included, as in HF; W - 1 or W + 1 fail this), past the window in prefill and in decode."""
    cfg = gemma3_config()
    w = arch_weights(cfg, seed=3)
    port, static = export_pair(str(tmp_path), cfg, w)
    g = onnx.load(os.path.join(static.dir, "model.onnx"), load_external_data=False).graph
    windows = [next((a.i for a in n.attribute if a.name == "local_window_size"), None)
               for n in g.node if n.op_type == "GroupQueryAttention"]
    assert windows == [cfg["sliding_window"], None, cfg["sliding_window"]]
    check_rows(port, static, LONG_IDS, LONG_IDS[4:10])


def test_static_fp16_compute_keeps_the_cache_in_fp16(tmp_path):
    """With fp16 compute the cache is fp16 at the boundary too (no Cast between the buffer and the
    kernel, so in place stays in place); logits stay float32 and pick the portable graph's tokens."""
    require("onnxconverter_common", "make setup installs the exporter's fp16 extra")
    cfg = tiny_config()
    w = make_weights(cfg, seed=1)
    port, static = export_pair(str(tmp_path), cfg, w, "--compute", "fp16")
    g = onnx.load(os.path.join(static.dir, "model.onnx"), load_external_data=False).graph
    f16 = onnx.TensorProto.FLOAT16
    for v in list(g.input) + list(g.output):
        cache = v.name.startswith(("past_key_values.", "present."))
        lora = v.name.endswith((".lora_A", ".lora_B")) or v.name == "lora_mask"
        assert (v.type.tensor_type.elem_type == f16) == (cache or lora), v.name
    casts = [n for n in g.node if n.op_type == "Cast"]
    assert not [n for n in casts if n.input[0].startswith("past_key_values.") or n.output[0].startswith("present.")]
    with open(os.path.join(static.dir, "tribute.json")) as f:
        tj = json.load(f)
    assert tj["kv_dtype"] == "float16" and tj["compute_dtype"] == "float16"
    check_rows(port, static, IDS, IDS[2:6], atol=2e-2, dtype=np.float16, argmax_only=True)


@pytest.mark.parametrize("compute", ["fp32", "fp16"])
def test_static_next_token_is_minus_one_where_logits_are_not_finite(tmp_path, compute):
    """A runtime that reads only `next_token` still sees non-finite logits: -1 there."""
    if compute == "fp16":
        require("onnxconverter_common", "make setup installs the exporter's fp16 extra")
    from reference_logits import nan_weights
    cfg = tiny_config()
    _, static = export_pair(str(tmp_path), cfg, make_weights(cfg, seed=1), "--compute", compute)
    nan_weights(static.dir)
    runner = Runner(static.dir)  # a session over the NaN weights
    dtype = np.float16 if compute == "fp16" else np.float32
    ids = np.array([IDS[:4], IDS[2:6]], np.int64)
    past = {k: v.astype(dtype) for k, v in runner.empty_past(2).items()}
    res = dict(zip(runner.out_names, runner.sess.run(None, {
        "input_ids": ids, "attention_mask": np.ones_like(ids), "position_ids": np.array([range(4)] * 2, np.int64),
        "logits_to_keep": np.array([1], np.int64), **past})))
    assert not np.isfinite(res["logits"]).any()
    np.testing.assert_array_equal(res["next_token"], np.full((2, 1), -1))


def test_static_decode_bench_runs_greedy_like_the_portable_graph(llama, capsys):
    """inference/benches/static_decode.py (the GPU script's static stage) on the CPU: the in-place
    greedy loop with device-side argmax gives the portable graph's tokens."""
    import importlib.util
    here = os.path.dirname(os.path.abspath(__file__))
    path = os.path.join(here, "..", "..", "benches", "static_decode.py")
    spec = importlib.util.spec_from_file_location("static_decode", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    port, static = llama[2], llama[3]
    assert mod.main([static.dir, "--check", port.dir, "--batches", "1,3", "--new", "12", "--prompt", "6",
                     "--reps", "1", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "first 12 of 12 tokens equal" in out, out
    assert "batch 3: decode" in out


@pytest.mark.parametrize("arch", ["llama", "gemma3", "llama-int4"])
def test_static_fp16_graph_needs_no_copy_between_host_and_device(tmp_path, arch):
    """What CUDA graphs need of the graph: ONNX Runtime refuses to capture a session whose CUDA
    partition has a host/device copy node. The host-side values (the mask's width for
    total_sequence_length, the kept positions' Slice start) come from a `Shape` and stay on the
    host; the rest is the device's (`cuda_placement.py` works out ONNX Runtime's placement)."""
    require("onnxconverter_common", "make setup installs the exporter's fp16 extra")
    gemma = arch == "gemma3"
    cfg = gemma3_config() if gemma else tiny_config()
    w = arch_weights(cfg, seed=3) if gemma else make_weights(cfg, seed=1)
    quant = ["--quant", "int4"] if arch.endswith("int4") else []
    port, static = export_pair(str(tmp_path), cfg, w, "--compute", "fp16", *quant)
    model = onnx.load(os.path.join(static.dir, "model.onnx"), load_external_data=False)
    assert cuda_placement.copies(model) == []
    where = cuda_placement.placement(model)
    on_host = {n.op_type for n in model.graph.node if where[n.name] == "cpu"}
    assert {"Min", "Neg"} <= on_host <= {"Cast", "Concat", "Min", "Neg"}, on_host  # shape arithmetic only
    assert all(where[n.name] == "cuda" for n in model.graph.node
               if n.op_type in ("GroupQueryAttention", "MatMul", "MatMulNBits", "Gemm", "ArgMax"))
    if not quant:  # (int4's level-4 activation rounding differs between the layouts' kernels)
        check_rows(port, static, IDS, IDS[2:6], atol=2e-2, dtype=np.float16, argmax_only=True)


def test_placement_finds_a_device_value_read_on_the_host():
    """The check above can fail: a Slice start computed by a device node from the input alone
    (the graph's earlier form) needs a copy to the host."""
    from onnx import TensorProto, helper
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT16, [1, 4, 8])
    keep = helper.make_tensor_value_info("keep", TensorProto.INT64, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT16, None)
    consts = [onnx.numpy_helper.from_array(np.array([2**62], np.int64), "end"),
              onnx.numpy_helper.from_array(np.array([1], np.int64), "axis")]
    earlier = helper.make_graph([helper.make_node("Neg", ["keep"], ["start"], name="neg"),
                                 helper.make_node("Slice", ["x", "start", "end", "axis"], ["y"], name="slice")],
                                "g", [x, keep], [y], consts)
    assert cuda_placement.copies(helper.make_model(earlier)) == ["neg -> slice (start)"]
    now = helper.make_graph([helper.make_node("Shape", ["x"], ["s"], name="shape", start=1, end=2),
                             helper.make_node("Min", ["keep", "s"], ["k"], name="min"),
                             helper.make_node("Neg", ["k"], ["start"], name="neg"),
                             helper.make_node("Slice", ["x", "start", "end", "axis"], ["y"], name="slice")],
                            "g", [x, keep], [y], consts)
    assert cuda_placement.copies(helper.make_model(now)) == []
    assert cuda_placement.placement(helper.make_model(now)) == {"shape": "cuda", "min": "cpu", "neg": "cpu",
                                                                "slice": "cuda"}
