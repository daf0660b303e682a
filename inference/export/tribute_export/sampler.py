"""The device sampler: a small ONNX graph that picks each row's next token from its logits where
they were computed (a GPU), so that only token ids come back, the way the Rust generator's host
sampler (`inference/src/sampling.rs`, `Sampler::pick`) picks them without a repetition penalty,
guard or excluded endings.

The host sampler, per row: scaled logits `z = logits · (1/temperature)` (float32), sorted
descending (ties: lower index first), cut to `top_k`, `e = exp(z − max)` (float32), accumulated in
float64; with `top_p < 1` cut after the first position where the running sum reaches
`top_p · total`; then one uniform draw `u` in [0, 1): the first position whose running sum exceeds
`u · total` (the last kept if none does). This graph does the same with `TopK` over the whole
vocabulary (the same tie order), `CumSum` in float64 and counts instead of a walk. Inputs per row:
`scale` (1/temperature, float32), `top_k` (int64, 0 = all), `top_p` (float64, 1 = off) and `uniform`
(float64, drawn by the host from the row's own generator, so the draws stay the host's). A greedy
row is `top_k` 1. Output `token` (int64), −1 where the row's logits are not all finite.

The generator embeds the graph (`inference/src/generator/sampler.onnx`):

  python -m tribute_export.sampler inference/src/generator/sampler.onnx
"""

from __future__ import annotations

import sys

import onnx
from onnx import TensorProto, helper

OPSET = 17


def build() -> onnx.ModelProto:
    nodes, inits = [], []

    def const(name, values, dtype=TensorProto.INT64):
        inits.append(helper.make_tensor(name, dtype, [len(values)], values))
        return name

    def node(op, inputs, output, **attrs):
        nodes.append(helper.make_node(op, inputs, [output], name=output, **attrs))
        return output

    one, zero = const("c_one", [1]), const("c_zero", [0])
    axis1 = const("c_axis1", [1])
    # logits [rows, 1, vocab] -> [rows, vocab]
    x = node("Squeeze", ["logits", axis1], "x")
    z = node("Mul", [x, node("Unsqueeze", ["scale", axis1], "scale_col")], "z")
    vocab = node("Gather", [node("Shape", [x], "x_shape"), one], "vocab")  # [1]
    nodes.append(helper.make_node("TopK", [z, vocab], ["sorted", "order"], name="topk", axis=-1, largest=1,
                                  sorted=1))
    top = node("Slice", ["sorted", zero, one, axis1], "top")  # [rows, 1]: the largest
    e = node("Exp", [node("Sub", ["sorted", top], "shifted")], "e")
    running = node("CumSum", [node("Cast", [e], "e64", to=TensorProto.DOUBLE),
                              const("c_cum_axis", [1])], "running")  # [rows, vocab], float64
    # kept by top_k: k in 1..=vocab (0 or more than the vocabulary: all)
    k_in = "top_k"
    k_all = node("Or", [node("LessOrEqual", [k_in, zero], "k_none"),
                       node("Greater", [k_in, vocab], "k_over")], "k_all")
    k = node("Where", [k_all, node("Expand", [vocab, node("Shape", [k_in], "k_shape")], "vocab_rows"), k_in], "k")
    k_col = node("Unsqueeze", [k, axis1], "k_col")
    last_k = node("Sub", [k_col, one], "last_k")
    total_k = node("GatherElements", [running, last_k], "total_k", axis=1)  # [rows, 1]
    # top_p: kept through the first position whose running sum reaches top_p · total
    p_col = node("Unsqueeze", ["top_p", axis1], "p_col")
    limit = node("Mul", [p_col, total_k], "limit")
    below = node("ReduceSum", [node("Cast", [node("Less", [running, limit], "under")], "under_i",
                                    to=TensorProto.INT64), axis1], "below", keepdims=1)
    keep_p = node("Add", [below, one], "keep_p")
    cut = node("Less", [p_col, helper_double_one(inits)], "p_cut")
    keep = node("Where", [cut, node("Min", [keep_p, k_col], "keep_p_k"), k_col], "keep")  # [rows, 1]
    last = node("Sub", [keep, one], "last")
    total = node("GatherElements", [running, last], "total", axis=1)
    r = node("Mul", [node("Unsqueeze", ["uniform", axis1], "u_col"), total], "r")
    # the first position whose running sum exceeds r: how many do not; the last kept if none does
    passed = node("ReduceSum", [node("Cast", [node("LessOrEqual", [running, r], "not_yet")], "not_yet_i",
                                     to=TensorProto.INT64), axis1], "passed", keepdims=1)
    pos = node("Min", [passed, last], "pos")
    picked = node("Squeeze", [node("GatherElements", ["order", pos], "picked_col", axis=1), axis1], "picked")
    # -1 where a logit is not finite: x · 0 is NaN for NaN and ±inf
    s = node("ReduceSum", [node("Mul", [x, helper_float_zero(inits)], "x0"), axis1], "x0_sum", keepdims=0)
    finite = node("Equal", [s, s], "finite")
    nodes.append(helper.make_node("Where", [finite, picked, const("c_minus_one", [-1])], ["token"], name="token"))

    inputs = [
        helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["rows", 1, "vocab"]),
        helper.make_tensor_value_info("scale", TensorProto.FLOAT, ["rows"]),
        helper.make_tensor_value_info("top_k", TensorProto.INT64, ["rows"]),
        helper.make_tensor_value_info("top_p", TensorProto.DOUBLE, ["rows"]),
        helper.make_tensor_value_info("uniform", TensorProto.DOUBLE, ["rows"]),
    ]
    outputs = [helper.make_tensor_value_info("token", TensorProto.INT64, ["rows"])]
    graph = helper.make_graph(nodes, "tribute_sampler", inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="tribute_export.sampler", ir_version=8)
    onnx.checker.check_model(model)
    return model


def helper_double_one(inits) -> str:
    inits.append(helper.make_tensor("c_one_f64", TensorProto.DOUBLE, [1], [1.0]))
    return "c_one_f64"


def helper_float_zero(inits) -> str:
    inits.append(helper.make_tensor("c_zero_f32", TensorProto.FLOAT, [1], [0.0]))
    return "c_zero_f32"


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    onnx.save(build(), argv[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
