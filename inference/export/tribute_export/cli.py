"""`python -m tribute_export`: writes a Tribute model directory (see docs/MODEL_FORMAT.md)."""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import re
import shutil
import sys
import time
from typing import List, Optional

from . import EXPORTER, ExportError
from . import adapter, archs, half, quant, sources, tokenizer
from .graph import ALL_TARGETS, OPS, build_graph


def _log(msg: str):
    print(f"export: {msg}", file=sys.stderr, flush=True)


def sha256_files(paths: List[str]) -> str:
    h = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def parse_targets(s: Optional[str]) -> List[str]:
    if s is None or s.strip() == "" or s.strip().lower() == "all":
        return list(ALL_TARGETS)
    if s.strip().lower() == "none":
        return []
    out = []
    for t in s.split(","):
        t = t.strip()
        if not t:
            continue
        if t not in ALL_TARGETS:
            raise ExportError(f"unknown LoRA target module {t!r} (known: {', '.join(ALL_TARGETS)}, or 'none')")
        if t not in out:
            out.append(t)
    return [t for t in ALL_TARGETS if t in out]


# onnxruntime-genai's `model.type` per Spec.model_type. Every decoder-only type it knows runs the
# same DecoderOnly_Model (src/models/model_type.h, model.cpp CreateModel); genai's "gemma3" is the
# multimodal model (it will not load a text-only directory), so Gemma 3 is "gemma3_text". Phi-3 stays
# "llama": genai's "phi3" re-prefills the whole sequence at length 4097 (batch 1) to move Microsoft's
# graphs from short to long RoPE factors (generators.cpp, standard_decoding_strategy.cpp), and ours
# fix the factors at export, so that prefill is wasted work.
GENAI_TYPES = {"llama": "llama", "mistral": "mistral", "qwen2": "qwen2", "qwen3": "qwen3",
               "gemma3": "gemma3_text", "phi3": "llama"}


def genai_config(spec, ops: str) -> dict:
    """onnxruntime-genai's config. GroupQueryAttention graphs (fused, static) write each step's
    keys and values into a cache buffer kept at the maximum length (`past_present_share_buffer`);
    the portable graph's Concat returns a longer cache each step, so it cannot share."""
    return {
        "model": {
            "bos_token_id": spec.bos_token_id,
            "context_length": spec.context_length,
            "decoder": {
                "session_options": {"log_id": "onnxruntime-genai", "provider_options": []},
                "filename": "model.onnx",
                "head_size": spec.head_dim,
                "hidden_size": spec.hidden_size,
                "inputs": {
                    "input_ids": "input_ids",
                    "attention_mask": "attention_mask",
                    "position_ids": "position_ids",
                    "past_key_names": "past_key_values.%d.key",
                    "past_value_names": "past_key_values.%d.value",
                },
                "outputs": {
                    "logits": "logits",
                    "present_key_names": "present.%d.key",
                    "present_value_names": "present.%d.value",
                },
                "num_attention_heads": spec.num_heads,
                "num_hidden_layers": spec.num_layers,
                "num_key_value_heads": spec.num_kv_heads,
            },
            "eos_token_id": spec.eos_token_ids[0] if len(spec.eos_token_ids) == 1 else spec.eos_token_ids,
            "pad_token_id": spec.pad_token_id if spec.pad_token_id is not None else (spec.eos_token_ids or [0])[0],
            "type": GENAI_TYPES[spec.model_type],
            "vocab_size": spec.vocab_size,
        },
        "search": {
            "diversity_penalty": 0.0, "do_sample": False, "early_stopping": True, "length_penalty": 1.0,
            "max_length": spec.context_length, "min_length": 0, "no_repeat_ngram_size": 0, "num_beams": 1,
            "num_return_sequences": 1, "past_present_share_buffer": ops != "portable", "repetition_penalty": 1.0,
            "temperature": 1.0, "top_k": 1, "top_p": 1.0,
        },
    }


def check_quant_shapes(spec, q):
    """Every quantized matrix's input size must be a multiple of the block size; checked before writing."""
    if q is None:
        return
    inputs = {"model.layers.0.self_attn.q_proj.weight": spec.hidden_size,
              "model.layers.0.self_attn.o_proj.weight": spec.num_heads * spec.head_dim,
              "model.layers.0.mlp.down_proj.weight": spec.intermediate_size}
    for name, k in inputs.items():
        if k % q.block_size:
            raise ExportError(f"cannot quantize {name}: its input size {k} is not a multiple of the block size "
                              f"{q.block_size} (pick a --block-size that divides it, or --quant none)")


def tribute_json(spec, fp16: bool, targets, lora_modules, source: dict, q=None, quant_embeddings=True,
                 transfer: Optional[dict] = None, ops: str = "portable", compute: str = "fp32") -> dict:
    d = {
        "format": 1,
        "name": spec.name,
        "architecture": "llama",
        "model_type": spec.model_type,
        "num_layers": spec.num_layers, "num_heads": spec.num_heads, "num_kv_heads": spec.num_kv_heads,
        "head_dim": spec.head_dim, "hidden_size": spec.hidden_size, "intermediate_size": spec.intermediate_size,
        "vocab_size": spec.vocab_size, "context_length": spec.context_length,
        "bos_token_id": spec.bos_token_id, "eos_token_ids": list(spec.eos_token_ids),
        "pad_token_id": spec.pad_token_id,
        "weights_dtype": "float16" if fp16 else "float32",
        "kv_dtype": "float32",
        "inputs": {"input_ids": "input_ids", "attention_mask": "attention_mask", "position_ids": "position_ids",
                   "past_key": "past_key_values.%d.key", "past_value": "past_key_values.%d.value",
                   "logits_to_keep": "logits_to_keep"},
        "outputs": {"logits": "logits", "present_key": "present.%d.key", "present_value": "present.%d.value",
                    **({"next_token": "next_token"} if ops == "static" else {})},
        "source": source,
    }
    if compute == "fp16":
        # arithmetic, weights and the cache inside the graph; the inputs, outputs (logits, present
        # keys and values) and the LoRA inputs stay float32
        d["compute_dtype"] = "float16"
        d["weights_dtype"] = "float16"
        if ops == "static":  # the cache buffer is the kernel's own (half.py)
            d["kv_dtype"] = "float16"
    if ops != "portable":
        # fused: a runtime that scores several rows of more than one token against a cached past in
        # one run (Tribute's masked scoring) must run them one by one on this graph. static: rows are
        # right-padded in a cache buffer the runtime allocates once (tribute_export/fused.py).
        d["ops"] = ops
    if any(archs.layer_is_sliding(spec, i) for i in range(spec.num_layers)):
        # a runtime that drops hidden columns instead of masking them (the static layout's masked
        # scoring) is exact only within the window
        d["sliding_window"] = int(spec.sliding_window)
    if q is not None:
        d["quantization"] = q.record(quant_embeddings)
        if transfer and (transfer["gguf_blocks_copied"] or transfer["gguf_requantized"]):
            d["quantization"].update(transfer)
    if lora_modules:
        d["lora"] = {"targets": list(targets), "modules": lora_modules, "mask": "lora_mask"}
        if compute == "fp16":  # fed as the graph computes them (half.py)
            d["lora"]["dtype"] = "float16"
    return d


def export(args) -> str:
    t0 = time.time()
    fp16 = args.dtype == "fp16" and args.compute != "fp16"  # fp16 compute converts everything later
    targets = parse_targets(args.lora_targets)
    q = quant.parse_quant(args.quant, args.block_size, args.accuracy_level, args.activation_passes)
    out = os.path.abspath(args.out)
    tmp = out + ".tmp"

    # ---- open the source (before touching the output)
    src = args.source
    gguf_src = None
    if args.random:
        spec, weights = sources.random_source(args.random, args.seed)
        source = {"path": f"random:{args.random}", "seed": args.seed, "sha256": None, "exporter": EXPORTER}
        _log(f"random {args.random} weights (seed {args.seed})")
    else:
        if not os.path.exists(src):
            raise ExportError(f"source {src} does not exist")
        if os.path.isdir(src):
            spec, weights = sources.load_hf_dir(src)
            files = [os.path.join(src, "config.json")] + sorted(glob.glob(os.path.join(src, "*.safetensors")))
            source = {"path": os.path.basename(os.path.normpath(src)), "sha256": sha256_files(files),
                      "exporter": EXPORTER}
        else:
            gguf_src = sources.GGUFSource(src)
            spec = gguf_src.spec()
            # The file name says which model this is ("SmolLM2-135M-Instruct.Q4_1.gguf");
            # GGUF's general.name often names a training run instead.
            stem = re.sub(r"\.gguf$", "", os.path.basename(src), flags=re.I)
            spec.name = re.sub(r"[.-](I?Q\d\w*|F16|F32|BF16)$", "", stem, flags=re.I) or spec.name
            weights = gguf_src.weights()
            source = {"path": os.path.basename(src), "sha256": sha256_files([src]), "exporter": EXPORTER}
        _log(f"source {src}: {spec.model_type}, {spec.num_layers} layers, hidden {spec.hidden_size}, "
             f"{spec.num_heads} heads / {spec.num_kv_heads} kv heads, head dim {spec.head_dim}, vocab {spec.vocab_size}")
    if args.name:
        spec.name = args.name
    if args.context_length:
        spec.context_length = int(args.context_length)
    check_quant_shapes(spec, q)
    halver = half.Halver(half.converter()) if args.compute == "fp16" else None  # needs the converter
    if args.tokenizer and not os.path.isfile(os.path.join(args.tokenizer, "tokenizer.json")):
        raise ExportError(f"--tokenizer {args.tokenizer} has no tokenizer.json")
    if args.merge_peft:
        # read and check every adapter against the source before writing anything; the base weights
        # stay lazy (each loaded once while the graph is built) with the deltas added on load
        merges = [adapter.parse_merge_arg(m) for m in args.merge_peft]
        weights, merged = adapter.merge_peft(weights, spec, merges, log=_log)
        source["merged_adapters"] = merged

    # ---- write into DIR.tmp
    if os.path.exists(tmp):
        shutil.rmtree(tmp)
    os.makedirs(tmp)
    try:
        # tokenizer first: it may fill in bos/eos/pad ids
        if args.tokenizer:
            tokenizer.copy_dir_files(args.tokenizer, tmp)
            tokenizer.ids_from_dir(tmp, spec)
            _log(f"tokenizer copied from {args.tokenizer}")
        elif gguf_src is not None:
            tokenizer.from_gguf(gguf_src, spec).write(tmp)
            _log("tokenizer rebuilt from GGUF metadata")
        elif not args.random and os.path.isfile(os.path.join(src, "tokenizer.json")):
            tokenizer.copy_dir_files(src, tmp)
            tokenizer.ids_from_dir(tmp, spec)
            _log("tokenizer copied from the source directory")
        else:
            tokenizer.minimal(spec).write(tmp)
            _log("minimal byte-level tokenizer written (no tokenizer in the source)")
        if not os.path.isfile(os.path.join(tmp, "tokenizer_config.json")):
            with open(os.path.join(tmp, "tokenizer_config.json"), "w") as f:
                json.dump({"chat_template": tokenizer.CHATML_TEMPLATE, "add_bos_token": False}, f, indent=2)
        if spec.pad_token_id is None and spec.eos_token_ids:
            spec.pad_token_id = spec.eos_token_ids[0]

        lora_modules, nbytes, transfer = build_graph(spec, weights, tmp, fp16, targets, log=_log,
                                           max_positions=args.context_length, quant=q,
                                           quant_embeddings=not args.float_embeddings, ops=args.ops,
                                           halve=halver)
        if halver is not None:
            nbytes = half.to_fp16_compute(tmp, halver, log=_log, fp16_cache=args.ops == "static")
        _log(f"graph written: {len(lora_modules)} LoRA modules, weights {nbytes / 2**20:.1f} MiB "
             f"({'fp16' if fp16 or args.compute == 'fp16' else 'fp32'}" + (f", linears {q.dtype} blocks of {q.block_size})" if q else ")"))
        if transfer["gguf_blocks_copied"]:
            _log("GGUF blocks copied without re-rounding: " +
                 ", ".join(f"{n} {t}" for t, n in transfer["gguf_blocks_copied"].items()) +
                 (f"; re-quantized: {len(transfer['gguf_requantized'])}" if transfer["gguf_requantized"] else ""))

        def dump(name, obj):
            with open(os.path.join(tmp, name), "w") as f:
                json.dump(obj, f, indent=2, ensure_ascii=False)
                f.write("\n")

        if not args.random and gguf_src is None and os.path.isfile(os.path.join(src, "config.json")):
            shutil.copyfile(os.path.join(src, "config.json"), os.path.join(tmp, "config.json"))
        else:
            dump("config.json", spec.hf_config())
        gen = {"bos_token_id": spec.bos_token_id,
               "eos_token_id": spec.eos_token_ids[0] if len(spec.eos_token_ids) == 1 else spec.eos_token_ids,
               "pad_token_id": spec.pad_token_id, "do_sample": False}
        if not args.random and gguf_src is None and os.path.isfile(os.path.join(src, "generation_config.json")):
            shutil.copyfile(os.path.join(src, "generation_config.json"), os.path.join(tmp, "generation_config.json"))
        else:
            dump("generation_config.json", gen)
        dump("genai_config.json", genai_config(spec, args.ops))
        dump("tribute.json", tribute_json(spec, fp16, targets, lora_modules, source, q,
                                          not args.float_embeddings, transfer, args.ops, args.compute))

        # ---- swap into place
        old = out + ".old"
        if os.path.exists(out):
            if os.path.exists(old):
                shutil.rmtree(old)
            os.rename(out, old)
        os.rename(tmp, out)
        if os.path.exists(old):
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    sizes = {n: os.path.getsize(os.path.join(out, n)) for n in ("model.onnx", "model.onnx.data")}
    _log(f"done in {time.time() - t0:.1f}s: {out} (model.onnx {sizes['model.onnx'] / 2**20:.2f} MiB, "
         f"model.onnx.data {sizes['model.onnx.data'] / 2**20:.1f} MiB)")
    return out


def build_parser():
    p = argparse.ArgumentParser(prog="python -m tribute_export",
                                description="Export a llama-family decoder LM to a Tribute model directory.")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--source", help="GGUF file, or Hugging Face directory (config.json + *.safetensors)")
    g.add_argument("--random", metavar="SHAPE",
                   help=f"random weights of a shape: {', '.join(sources.RANDOM_SHAPES)}, or a config.json path")
    p.add_argument("--out", required=True, help="output directory (written as DIR.tmp, then renamed)")
    p.add_argument("--dtype", choices=["fp32", "fp16"], default="fp32", help="weight storage dtype (compute is fp32)")
    p.add_argument("--quant", choices=list(quant.QUANT_MODES), default="none",
                   help="store every linear (qkv, o_proj, gate_up, down_proj, lm_head) and the embedding table as "
                        "block-quantized int8 or int4 weights for ONNX Runtime's com.microsoft.MatMulNBits "
                        "(asymmetric, zero points); a quantized GGUF's Q4_0/Q4_1/Q4_K/Q8_0 blocks are copied "
                        "as they are, anything else is rounded to nearest; norms and LoRA stay float (default: none)")
    p.add_argument("--block-size", type=int, choices=list(quant.BLOCK_SIZES), default=32,
                   help="weights per quantization block along the input dimension (default 32)")
    p.add_argument("--accuracy-level", type=int, choices=list(quant.ACCURACY_LEVELS), default=None,
                   help="MatMulNBits accuracy_level: 0 computes in fp32 on the stored weights (exact to them, "
                        "slow on CPU), 4 lets ONNX Runtime quantize activations to int8 per block and use "
                        "integer dot products (fast on CPU; the default)")
    p.add_argument("--activation-passes", type=int, choices=list(quant.ACTIVATION_PASSES), default=None,
                   help="at accuracy level 4: 1 quantizes activations to int8 once (fastest; changes some "
                        "greedy choices; default for int4), 2 adds a pass over their int8 rounding residual "
                        "in the same MatMulNBits call (within ~2e-5 of fp32 compute; default for int8)")
    p.add_argument("--compute", choices=["fp32", "fp16"], default="fp32",
                   help="arithmetic dtype inside the graph: fp16 converts every float weight and operation "
                        "(for GPUs: ONNX Runtime's CUDA GroupQueryAttention needs it; slow on CPUs) and keeps the "
                        "inputs and outputs float32 (needs onnxconverter-common; default: fp32)")
    p.add_argument("--ops", choices=list(OPS), default="portable",
                   help="portable: attention and norms in standard opset-17 operators (any ONNX runtime, "
                        "mobile builds); fused: ONNX Runtime's com.microsoft GroupQueryAttention per layer and "
                        "SkipSimplifiedLayerNormalization for each residual add + norm (same inputs, outputs "
                        "and cache layout; ONNX Runtime's CPU kernels: the CUDA attention kernel refuses the "
                        "mask bias); static: the fused operators over right-padded rows in a cache buffer "
                        "allocated at its maximum length and written in place (the layout CUDA kernels and "
                        "CUDA graphs take; not run by the Rust generator yet); default: portable")
    p.add_argument("--float-embeddings", action="store_true",
                   help="with --quant, keep the embedding table float (--dtype) for the token lookup instead "
                        "of a GatherBlockQuantized over quantized rows (a tied head is then a quantized copy)")
    p.add_argument("--lora-targets", default=None,
                   help="comma-separated LoRA target modules (default: all of " + ",".join(ALL_TARGETS) +
                        "); 'none' for no LoRA inputs")
    p.add_argument("--name", default=None,
                   help="model name recorded in tribute.json (adapters' base_model is checked against it)")
    p.add_argument("--seed", type=int, default=0, help="seed for --random")
    p.add_argument("--tokenizer", metavar="DIR", help="copy tokenizer.json/tokenizer_config.json from DIR")
    p.add_argument("--context-length", type=int, default=None,
                   help="override context length (size of the RoPE tables)")
    p.add_argument("--merge-peft", action="append", default=[], metavar="DIR[:WEIGHT]",
                   help="bake a PEFT LoRA adapter (adapter_config.json + adapter_model.safetensors) into the "
                        "base weights, scaled by WEIGHT (default 1); repeatable, the weighted deltas add up. "
                        "The output is a plain model (with LoRA inputs per --lora-targets)")
    p.add_argument("--version", action="version", version=EXPORTER)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        export(args)
    except ExportError as e:
        print(f"export: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("export: interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        print("export: error: out of memory", file=sys.stderr)
        return 1
    return 0
