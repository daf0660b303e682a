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

The weights are converted here, one tensor at a time from the fp32 data file into a new one, by
the converter's own rule (every float initializer but those its block list keeps), before the
converter sees the graph: it then rewrites only the graph. Loading the whole fp32 model for it
took the model's size twice in memory and ran its twenty numpy passes over every weight (the
Llama-3.2-1B-shaped model: 60 s and 8.5 GB peak for the conversion)."""

from __future__ import annotations

import os

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper
from onnx.external_data_helper import ExternalDataInfo

from . import ExportError
from .graph import ExternalData


def to_fp16_compute(out_dir: str, log=None, fp16_cache: bool = False) -> int:
    """Rewrites out_dir/model.onnx (+ model.onnx.data) for fp16 compute. Returns the weight bytes."""
    log = log or (lambda msg: None)
    try:
        from onnxconverter_common import float16
    except ImportError:
        raise ExportError("--compute fp16 needs onnxconverter-common "
                          "(pip install 'tribute-export[fp16]' or onnxconverter-common)") from None
    path = os.path.join(out_dir, "model.onnx")
    model = onnx.load(path, load_external_data=False)
    if float16.check_if_fp16_ready(model.graph):  # the converter's own guard, before the weights change
        raise ExportError("internal error: the graph to convert to fp16 compute has float16 in it already")
    halve_initializers(model.graph, out_dir, "model.onnx.data", float16)
    model = float16.convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=True,
                                             check_fp16_ready=False)
    rewire_output_readers(model.graph)
    boundary_in_fp16(model.graph, lambda name: is_lora(name) or (fp16_cache and is_cache(name)))
    # overridable initializers are the defaults of their inputs: of the inputs' type
    float_inputs = {i.name for i in model.graph.input if i.type.tensor_type.elem_type == TensorProto.FLOAT}
    for t in model.graph.initializer:
        if t.name in float_inputs and t.data_type == TensorProto.FLOAT16:
            default = numpy_helper.to_array(t, base_dir=out_dir).astype(np.float32)
            t.CopyFrom(numpy_helper.from_array(default, t.name))
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


def halve_initializers(graph: onnx.GraphProto, out_dir: str, location: str, float16) -> None:
    """Converts the external float initializers the converter would convert (all but the inputs of
    the operators on its block list), streaming the data file `location` into a new one: a tensor
    at a time, read through a memory map, so memory holds one weight, not the model. Other
    external tensors are copied unchanged; tensors inside the graph are left to the converter."""
    blocked = {x for n in graph.node if n.op_type in float16.DEFAULT_OP_BLOCK_LIST for x in n.input}
    src = os.path.join(out_dir, location)
    dst = src + ".fp16"
    has_data = os.path.isfile(src) and os.path.getsize(src) > 0
    mapped = np.memmap(src, dtype=np.uint8, mode="r") if has_data else np.zeros(0, np.uint8)
    writer = ExternalData(dst, location)
    done = False
    try:
        for t in graph.initializer:
            if t.data_location != TensorProto.EXTERNAL:
                continue  # small, in the graph: the converter converts it
            convert = t.data_type == TensorProto.FLOAT and t.name not in blocked
            info = ExternalDataInfo(t)
            if info.location != location:
                raise ExportError(f"internal error: {t.name} is stored in {info.location}, not {location}")
            raw = mapped[info.offset:info.offset + info.length]
            if convert:
                half = fp16_as_converter(raw.view(np.float32).reshape(tuple(t.dims)), float16)
                t.CopyFrom(writer.add(t.name, half))
            else:
                copied = writer.add(t.name, raw)
                del t.external_data[:]
                t.external_data.extend(copied.external_data)
        done = True
    finally:
        writer.close()
        del mapped
        if not done:
            os.remove(dst)
    os.chmod(dst, os.stat(os.path.join(out_dir, "model.onnx")).st_mode & 0o777)  # the writer's is owner-only
    os.replace(dst, src)


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
