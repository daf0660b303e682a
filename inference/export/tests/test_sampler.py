"""The device sampler graph (`tribute_export.sampler`): the committed copy the generator embeds is
what the script builds, and it picks as a transcription of the Rust host sampler
(`inference/src/sampling.rs`) does, over temperatures, top-k and top-p cuts, greedy rows and NaN
logits. (The Rust unit test `device_sampler::picks_what_the_host_sampler_picks` checks the same
against the host sampler itself.)"""

import os

import numpy as np
import onnx
import onnxruntime as ort

from tribute_export import sampler

COMMITTED = os.path.join(os.path.dirname(__file__), "..", "..", "src", "generator", "sampler.onnx")


def test_the_committed_graph_is_what_the_script_builds():
    assert onnx.load(COMMITTED).graph == sampler.build().graph


def host_pick(logits, temperature, top_k, top_p, u):
    """`Sampler::pick` without penalty, guard or excluded endings, in the same arithmetic."""
    if not np.all(np.isfinite(logits)):
        return -1
    if temperature == 0 or top_k == 1:
        return int(np.argmax(logits))
    z = (logits * (np.float32(1) / np.float32(temperature))).astype(np.float32)
    order = sorted(range(len(z)), key=lambda i: (-z[i], i))
    if 0 < top_k < len(z):
        order = order[:top_k]
    e = [np.float32(np.exp(np.float32(z[i] - z[order[0]]))) for i in order]
    total = 0.0
    for x in e:
        total += float(x)
    if top_p < 1:
        acc, limit, keep = 0.0, float(top_p) * total, len(order)
        for i, x in enumerate(e):
            acc += float(x)
            if acc >= limit:
                keep = i + 1
                break
        order, e, total = order[:keep], e[:keep], min(acc, total)
    r, acc = u * total, 0.0
    for i, x in zip(order, e):
        acc += float(x)
        if r < acc:
            return i
    return order[-1]


def test_it_picks_what_the_host_sampler_picks():
    sess = ort.InferenceSession(sampler.build().SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    checked = 0
    for trial in range(150):
        vocab, rows = int(rng.integers(2, 300)), 4
        logits = rng.normal(0, 3, (rows, 1, vocab)).astype(np.float32)
        if trial % 50 == 7:
            logits[1, 0, 3] = np.nan
        temperature = rng.choice([0.0, 0.3, 0.7, 1.5], rows).astype(np.float32)
        top_k = rng.choice([0, 1, 3, 10, 1000], rows).astype(np.int64)
        top_p = np.float32(rng.choice([1.0, 0.9, 0.5], rows)).astype(np.float64)
        u = rng.random(rows)
        scale = np.where(temperature > 0, np.float32(1) / np.maximum(temperature, 1e-9), 1).astype(np.float32)
        k = np.where(temperature > 0, top_k, 1)
        got = sess.run(None, {"logits": logits, "scale": scale, "top_k": k, "top_p": top_p, "uniform": u})[0]
        for r in range(rows):
            assert got[r] == host_pick(logits[r, 0], temperature[r], top_k[r], top_p[r], u[r]), (trial, r)
            checked += 1
    assert checked == 600
