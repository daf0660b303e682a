"""fp16 compute (`--compute fp16`): the written graph converted to float16 arithmetic and storage,
with its inputs and outputs kept float32, so a runtime feeds and reads it as any other export.

ONNX Runtime's CUDA kernels for GroupQueryAttention take only fp16 or bf16, and fp16 halves the
bytes a GPU reads per token; on a CPU most fp16 kernels convert to fp32 internally and run slower.
The conversion is onnxconverter-common's (`float16.convert_float_to_float16` with
`keep_io_types`): every float initializer and constant becomes fp16 (magnitudes above 1e4 are
clipped to ±1e4, so the mask's -3.4e38 becomes -1e4, still exp() = 0), and a Cast is put after
each float input and before each float output.

The LoRA inputs (every module's A and B, and `lora_mask`) are float16 at the boundary, their
defaults too: a Cast after each would be ~420 operators per step for a 30-layer model, each a
kernel launch on a GPU (`tribute.json`'s `lora.dtype` says so; a runtime feeds float16).

With `fp16_cache` (the `static` layout) the past and present caches are float16 at the graph's
boundary too: the kernel then reads and writes the very buffer the runtime binds to both, which
an fp32 boundary with a Cast on each side would turn into two copies per layer per step.

The weights are rounded to fp16 as the graph builder writes them (`Halver`, the converter's
own rounding), so no fp32 data file is ever written; the converter then rewrites only the graph.
Writing fp32 first and converting it took the model's fp32 size on disk next to the fp16 result
(an 8B model: 32 + 16 GB) and reading it back; loading it whole for the converter took twice the
model's size in memory. An initializer that an operator on the converter's block list reads
stays float32 as the converter leaves it: small ones (norm-sized) are kept in float32 while the
graph is built and written again; a large one is an internal error, never silently fp16."""

from __future__ import annotations

import os
from typing import Dict, Optional, Set

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from . import ExportError
from .graph import ExternalData

# float32 originals up to this size are kept while the graph is built, in case a blocked operator
# reads them (norms, biases, small tables: a few MB for an 8B model)
KEEP_BELOW = 1 << 20


def converter():
    """onnxconverter-common's float16 module, or a clear error naming the package."""
    try:
        from onnxconverter_common import float16
    except ImportError:
        raise ExportError("--compute fp16 needs onnxconverter-common "
                          "(pip install 'tribute-export[fp16]' or onnxconverter-common)") from None
    return float16


class Halver:
    """The external data writer's fp16 rounding for `--compute fp16`: every float32 tensor is
    written as float16, rounded as the converter rounds it."""

    def __init__(self, float16, keep_below: int = KEEP_BELOW):
        self.float16 = float16
        self.keep_below = keep_below
        self.halved: Set[str] = set()
        self.kept: Dict[str, np.ndarray] = {}

    def __call__(self, name: str, arr: np.ndarray) -> np.ndarray:
        if arr.dtype != np.float32:
            return arr
        if arr.nbytes < self.keep_below:
            self.kept[name] = arr.copy()
        self.halved.add(name)
        return fp16_as_converter(arr, self.float16)


def to_fp16_compute(out_dir: str, halver: Halver, log=None, fp16_cache: bool = False) -> int:
    """Rewrites out_dir/model.onnx, whose external weights `halver` rounded as they were written,
    for fp16 compute. Returns the weight bytes."""
    log = log or (lambda msg: None)
    path = os.path.join(out_dir, "model.onnx")
    model = onnx.load(path, load_external_data=False)
    float16 = halver.float16
    rest = onnx.GraphProto()
    rest.CopyFrom(model.graph)
    del rest.initializer[:]
    rest.initializer.extend(t for t in model.graph.initializer if t.name not in halver.halved)
    if float16.check_if_fp16_ready(rest):  # the converter's own guard, on what the builder did not halve
        raise ExportError("internal error: the graph to convert to fp16 compute has float16 in it already")
    restore_blocked(model.graph, out_dir, halver, float16.DEFAULT_OP_BLOCK_LIST)
    convert_graph(model, out_dir, float16, fp16_cache)
    nbytes = sum(int(np.prod(t.dims)) * 2 for t in model.graph.initializer
                 if t.data_type == TensorProto.FLOAT16)
    onnx.save(model, path)  # the weights are in place already
    try:
        onnx.checker.check_model(path)
    except Exception as e:
        raise ExportError(f"internal error: the fp16 graph fails onnx.checker: {e}") from None
    io = ("LoRA inputs and the cache float16, other inputs and outputs float32" if fp16_cache
          else "LoRA inputs float16, other inputs and outputs float32")
    log(f"converted to fp16 compute ({io}): {nbytes / 2**20:.1f} MiB of fp16 tensors")
    return nbytes


def convert_graph(model: onnx.ModelProto, out_dir: str, float16, fp16_cache: bool) -> None:
    """The converter on the graph (it converts whatever float initializers are left, in the graph
    or loaded), then the boundary this format wants: LoRA inputs (and the static layout's cache)
    float16, overridable defaults of float32 inputs float32."""
    converted = float16.convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=True,
                                                 check_fp16_ready=False)
    if converted is not model:
        model.CopyFrom(converted)
    rewire_output_readers(model.graph)
    boundary_in_fp16(model.graph, lambda name: is_lora(name) or (fp16_cache and is_cache(name)))
    # overridable initializers are the defaults of their inputs: of the inputs' type
    float_inputs = {i.name for i in model.graph.input if i.type.tensor_type.elem_type == TensorProto.FLOAT}
    for t in model.graph.initializer:
        if t.name in float_inputs and t.data_type == TensorProto.FLOAT16:
            default = numpy_helper.to_array(t, base_dir=out_dir).astype(np.float32)
            t.CopyFrom(numpy_helper.from_array(default, t.name))


def restore_blocked(graph: onnx.GraphProto, out_dir: str, halver: Halver, block_list) -> None:
    """The halved initializers that an operator on the converter's block list reads go back to
    their float32 values, appended to the data file (their fp16 bytes stay behind, unread)."""
    blocked = {x for n in graph.node if n.op_type in block_list for x in n.input} & halver.halved
    if not blocked:
        return
    writer: Optional[ExternalData] = None
    try:
        for t in graph.initializer:
            if t.name not in blocked:
                continue
            if t.name not in halver.kept:
                raise ExportError(f"internal error: {t.name} ({list(t.dims)}) is read by an operator the fp16 "
                                  "converter keeps in float32, but was written as float16")
            writer = writer or ExternalData(os.path.join(out_dir, t.external_data[0].value), t.external_data[0].value,
                                            append=True)
            t.CopyFrom(writer.add(t.name, halver.kept[t.name]))
    finally:
        if writer is not None:
            writer.close()


def fp16_as_converter(a: np.ndarray, float16, chunk: int = 1 << 24) -> np.ndarray:
    """float32 to float16 exactly as the converter's `convert_np_to_float16` does it (|x| below
    1e-7 becomes ±1e-7, finite |x| above 1e4 becomes ±1e4, zeros, NaN and infinities stay), in
    a few passes: only elements near those bounds go through the converter's own function (a
    superset of what it changes, which it leaves as they are). Chunked, so the temporaries stay
    small next to the weight."""
    flat = np.ascontiguousarray(a, dtype=np.float32).reshape(-1)
    out = np.empty(flat.shape, np.float16)
    for start in range(0, flat.size, chunk):
        part = flat[start:start + chunk]
        mag = np.abs(part)
        near = (mag < 1e-6) | (mag > 1e3)
        with np.errstate(over="ignore"):  # beyond fp16's range: the converter's value replaces it below
            out[start:start + chunk] = part
        if near.any():
            out[start:start + chunk][near] = float16.convert_np_to_float16(part[near])
    return out.reshape(a.shape)


def rewire_output_readers(graph: onnx.GraphProto) -> None:
    """Nodes that read a graph output (the portable graph's attention reads `present.*`, which it
    also returns) read the fp16 value the output is cast from, not the fp32 output: the converter
    casts outputs to float32 but leaves their readers on the output's name."""
    outputs = {o.name for o in graph.output}
    cast_from = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "Cast" and n.output[0] in outputs}
    for n in graph.node:
        if n.op_type == "Cast" and n.output[0] in outputs:
            continue
        for i, x in enumerate(n.input):
            if x in cast_from:
                n.input[i] = cast_from[x]


def is_cache(name: str) -> bool:
    return name.startswith("past_key_values.") or name.startswith("present.")


def is_lora(name: str) -> bool:
    return name.endswith((".lora_A", ".lora_B")) or name == "lora_mask"


def boundary_in_fp16(graph: onnx.GraphProto, chosen) -> None:
    """The inputs and outputs `chosen` (a name predicate) become float16 and lose the Casts the
    converter put around them: readers of an input's Cast read the input itself, and the node an
    output's Cast read from writes the output itself."""
    inputs = {i.name for i in graph.input if chosen(i.name)}
    outputs = {o.name for o in graph.output if chosen(o.name)}
    read_as, write_as, drop = {}, {}, []
    for n in graph.node:
        if n.op_type == "Cast" and n.input[0] in inputs:
            read_as[n.output[0]] = n.input[0]
            drop.append(n)
        elif n.op_type == "Cast" and n.output[0] in outputs:
            write_as[n.input[0]] = n.output[0]
            drop.append(n)
    for n in drop:
        graph.node.remove(n)
    for n in graph.node:
        for i, x in enumerate(n.input):
            n.input[i] = read_as.get(x, write_as.get(x, x))  # an output's readers read it too
        for i, x in enumerate(n.output):
            n.output[i] = write_as.get(x, x)
    for v in list(graph.input) + list(graph.output):
        if v.name in inputs or v.name in outputs:
            v.type.tensor_type.elem_type = TensorProto.FLOAT16
