"""Where ONNX Runtime's CUDA execution provider would put a graph's nodes, and which edges would need
a copy between host and device, worked out without a GPU.

ONNX Runtime refuses a session with `enable_cuda_graph` when the partitioned graph has a
`MemcpyFromHost`/`MemcpyToHost` node ("all compute graph nodes have not been partitioned to the
CUDA EP", `inference_session.cc`: nodes on the CPU provider are allowed, copies are not). So the
static layout's graph must keep its host-side arithmetic (shapes, `total_sequence_length`, a
`Slice`'s start) on the host and everything else on the device.

This follows ONNX Runtime's placement (`fallback_cpu_capability.cc`, `GetCpuPreferredNodes`):
every node is tentatively the CUDA provider's; the consumers of host outputs (`Shape`, `Size`) are
candidates, and a candidate runs on the host when each input is a small initializer (<= 100
elements), a graph input or a host tensor that its CUDA kernel does not take on the host anyway,
and none is float16; its consumers become candidates in turn. Then an edge needs a copy where the
producer's side (host for host nodes and host outputs) differs from the consumer's (host for host
nodes and for the inputs a CUDA kernel declares `OrtMemTypeCPUInput`). The kernel facts below are
ONNX Runtime's CUDA registrations for the opsets the exporter writes; an operator missing from
`CUDA_OPS` is an error, so a new one gets looked up before it is trusted."""

from __future__ import annotations

import heapq
from collections import defaultdict
from typing import Dict, List, Set

import numpy as np
import onnx
from onnx import TensorProto

# Inputs CUDA kernels take in host memory (InputMemoryType<OrtMemTypeCPUInput>), by operator.
HOST_INPUTS: Dict[str, Set[int]] = {
    "Reshape": {1}, "Slice": {1, 2, 3, 4}, "Expand": {1}, "Tile": {1}, "Unsqueeze": {1}, "Squeeze": {1},
    "Split": {1}, "ReduceSum": {1}, "ConstantOfShape": {0}, "Range": {0, 1, 2}, "TopK": {1},
    "CumSum": {1}, "Trilu": {1}, "Pad": {1, 2, 3}, "Clip": {1, 2},
    "GroupQueryAttention": {6},  # total_sequence_length
}
# Outputs CUDA kernels leave in host memory.
HOST_OUTPUTS: Dict[str, Set[int]] = {"Shape": {0}, "Size": {0}}
# Operators with CUDA kernels for the types these graphs use (checked against ONNX Runtime's
# registrations; MatMulNBits, GatherBlockQuantized (uint8 data, float or float16 scales, int64
# indices) and the fused operators are com.microsoft contrib kernels).
CUDA_OPS = {
    "Add", "And", "ArgMax", "Cast", "Concat", "Div", "Equal", "Gather", "GatherBlockQuantized", "Gemm",
    "GroupQueryAttention",
    "IsInf", "IsNaN", "Less", "LessOrEqual", "MatMul", "MatMulNBits", "Max", "Min", "Mul", "Neg",
    "Not", "Or", "Pow", "ReduceMax", "ReduceMean", "ReduceSum", "Reshape", "Shape", "Sigmoid",
    "SimplifiedLayerNormalization", "SkipSimplifiedLayerNormalization", "Slice", "Softmax", "Split",
    "Sqrt", "Sub", "Tanh", "Tile", "Transpose", "Unsqueeze", "Where", "Expand", "Erf",
}
SMALL = 100


def placement(model: onnx.ModelProto) -> Dict[str, str]:
    """{node name: "cpu" | "cuda"} as ONNX Runtime's CPU fallback would decide it."""
    g = model.graph
    unknown = sorted({n.op_type for n in g.node} - CUDA_OPS)
    if unknown:
        raise ValueError(f"operators without known CUDA placement facts: {unknown}")
    types = _value_types(model)
    inits = {t.name: int(np.prod(t.dims)) for t in g.initializer}
    graph_inputs = {i.name for i in g.input} - set(inits)
    consumers = defaultdict(list)
    for n in g.node:
        for i in n.input:
            consumers[i].append(n)
    order = {n.name: k for k, n in enumerate(g.node)}
    host: Set[str] = set()  # tensors in host memory
    candidates: List[tuple] = []  # (graph order, node): ONNX Runtime visits them in that order

    def push(nodes):
        for n in nodes:
            heapq.heappush(candidates, (order[n.name], n.name, n))

    for n in g.node:
        for k, out in enumerate(n.output):
            if k in HOST_OUTPUTS.get(n.op_type, ()):
                host.add(out)
                push(consumers[out])
    on_cpu: Set[str] = set()
    seen: Set[str] = set()
    while candidates:
        n = heapq.heappop(candidates)[2]
        if n.name in seen:
            continue
        seen.add(n.name)
        ok = True
        for k, x in enumerate(n.input):
            if not x:
                continue
            if types.get(x) in (TensorProto.FLOAT16, TensorProto.BFLOAT16):
                ok = False
            elif (x in inits and inits[x] <= SMALL) or x in graph_inputs:
                continue
            elif x not in host or k in HOST_INPUTS.get(n.op_type, ()):
                ok = False
            if not ok:
                break
        if ok:
            on_cpu.add(n.name)
            host.update(n.output)
            for out in n.output:
                push(consumers[out])
    return {n.name: "cpu" if n.name in on_cpu else "cuda" for n in g.node}


def copies(model: onnx.ModelProto) -> List[str]:
    """The edges that would need a host/device copy node, as 'producer -> consumer (tensor)'."""
    g = model.graph
    where = placement(model)
    inits = {t.name for t in g.initializer}
    graph_inputs = {i.name for i in g.input} - inits
    produced = {}
    for n in g.node:
        for k, out in enumerate(n.output):
            side = "cpu" if where[n.name] == "cpu" or k in HOST_OUTPUTS.get(n.op_type, ()) else "cuda"
            produced[out] = (n.name, side)
    found, input_sides = [], defaultdict(set)
    for n in g.node:
        for k, x in enumerate(n.input):
            if not x or x in inits:
                continue  # initializers are placed where each consumer wants them
            need = "cpu" if where[n.name] == "cpu" or k in HOST_INPUTS.get(n.op_type, ()) else "cuda"
            if x in graph_inputs:
                input_sides[x].add(need)
            elif x in produced and produced[x][1] != need:
                found.append(f"{produced[x][0]} -> {n.name} ({x})")
    found += [f"graph input {x} read on both sides" for x, sides in input_sides.items() if len(sides) > 1]
    return found


def _value_types(model: onnx.ModelProto) -> Dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {t.name: t.data_type for t in model.graph.initializer}
    for v in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        types[v.name] = v.type.tensor_type.elem_type
    return types
