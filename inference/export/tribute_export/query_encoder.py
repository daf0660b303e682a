"""Writes the int8 query encoder beside a model: MODEL_DIR/model_query_int8.onnx.

Dynamic int8 quantisation (ONNX Runtime's `quantize_dynamic`, per-channel int8 weights,
activations quantised per call) of the MatMuls that multiply by a weight, except the
feed-forward down-projections (1536 -> 384 in all-MiniLM-L6-v2): their inputs, GELU outputs,
carry the outliers that cost the most accuracy (mean cosine to fp32 0.9977 without them,
0.9948 with them). Attention's activation x activation MatMuls stay fp32 as well.
The graph is first written with ONNX Runtime's basic optimisations (constant folding turns
the model's int8-stored weights into the fp32 tensors they stand for).

`make setup` writes it beside the installed all-MiniLM-L6-v2, and Tribute's embedder runs
queries on it when it is there (`QueryModel::Auto`); documents are still embedded by
`model.onnx`. See docs/RETRIEVAL.md for speed and nDCG@10.

    python -m tribute_export.query_encoder MODEL_DIR     # needs onnxruntime (the `adapter` extra)
"""

import logging
import os
import sys
import tempfile

import onnx
import onnxruntime as ort
from onnxruntime.quantization import QuantType, quantize_dynamic

OUTPUT = "model_query_int8.onnx"


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: python -m tribute_export.query_encoder MODEL_DIR")
    model_dir = sys.argv[1]
    candidates = (os.path.join(model_dir, "model.onnx"), os.path.join(model_dir, "onnx", "model.onnx"))
    src = next((p for p in candidates if os.path.isfile(p)), None)
    if src is None:
        sys.exit(f"no model.onnx (or onnx/model.onnx) in {model_dir}")
    dst = os.path.join(model_dir, OUTPUT)
    # quantize_dynamic logs advice about pre-processing on the root logger: not ours to act on.
    logging.getLogger().setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="tribute-quantize-") as tmp:
        folded = os.path.join(tmp, "folded.onnx")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = folded
        ort.InferenceSession(src, options, providers=["CPUExecutionProvider"])
        graph = onnx.load(folded).graph
        weights = {t.name: tuple(t.dims) for t in graph.initializer}
        matmuls = [n for n in graph.node if n.op_type == "MatMul"]
        hidden = min(weights[n.input[1]][0] for n in matmuls if n.input[1] in weights)
        # Not quantised: MatMuls of two activations, and the down-projections (K > hidden).
        keep_fp32 = [
            n.name
            for n in matmuls
            if n.input[1] not in weights or weights[n.input[1]][0] > hidden
        ]
        partial = dst + ".partial"
        quantize_dynamic(
            folded,
            partial,
            weight_type=QuantType.QInt8,
            per_channel=True,
            op_types_to_quantize=["MatMul"],
            nodes_to_exclude=keep_fp32,
        )
        os.replace(partial, dst)
    print(dst)


if __name__ == "__main__":
    main()
