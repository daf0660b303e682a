"""Exporting models for `tribute.Generator`: a llama-family checkpoint (a GGUF file or a
Hugging Face safetensors directory) becomes a Tribute model directory (ONNX with LoRA
inputs, tokenizer, `tribute.json`, `genai_config.json`).

This is the optional extra `tribute[export]`, the project's exporter package
`tribute-export` (numpy, onnx, safetensors, gguf, tokenizers — no torch), which also
installs and runs on its own (`python -m tribute_export`). `python -m tribute.export`
takes the same arguments.

>>> from tribute.export import export_model
>>> export_model(random="tiny", out="models/tiny", seed=3)        # doctest: +SKIP
>>> tribute.Generator.load("models/tiny")                         # doctest: +SKIP
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal, Optional, Union

from ._native import ModelError

_StrPath = Union[str, "os.PathLike[str]"]

__all__ = ["export_model", "main"]


def _exporter() -> Any:
    try:
        from tribute_export import cli  # type: ignore[import-untyped,import-not-found,unused-ignore]
    except ImportError as e:  # the extra is not installed
        raise ImportError(
            "the model exporter is the optional extra tribute[export]: "
            "pip install 'tribute[export]' (or pip install ./inference/export)"
        ) from e
    return cli


def export_model(
    out: _StrPath,
    *,
    source: Optional[_StrPath] = None,
    random: Optional[str] = None,
    dtype: Literal["fp32", "fp16"] = "fp32",
    lora_targets: Union[Iterable[str], str, None] = None,
    name: Optional[str] = None,
    seed: int = 0,
    tokenizer: Optional[_StrPath] = None,
    context_length: Optional[int] = None,
    merge_peft: Sequence[Union[_StrPath, tuple[_StrPath, float]]] = (),
) -> Path:
    """Exports `source` (a GGUF file or a Hugging Face directory), or random weights of a
    known shape (`random="tiny"`, `"smollm2-135m"`, `"llama-3.2-1b"`, … or a config.json
    path), into the model directory `out`, and returns its path.

    `lora_targets` are the modules given LoRA inputs (default all of q, k, v, o, gate, up,
    down; `"none"` or an empty list for none); `merge_peft` bakes PEFT adapters into the
    weights (`dir` or `(dir, weight)`). Progress goes to stderr. Raises `ModelError` when
    the checkpoint cannot be exported, `ImportError` without the `tribute[export]` extra.
    """
    if (source is None) == (random is None):
        raise ValueError("give exactly one of source= and random=")
    argv = ["--out", os.fspath(out), "--dtype", dtype, "--seed", str(seed)]
    if source is not None:
        argv += ["--source", os.fspath(source)]
    if random is not None:
        argv += ["--random", random]
    if lora_targets is not None:
        targets = [lora_targets] if isinstance(lora_targets, str) else list(lora_targets)
        argv += ["--lora-targets", ",".join(targets) or "none"]
    if name is not None:
        argv += ["--name", name]
    if tokenizer is not None:
        argv += ["--tokenizer", os.fspath(tokenizer)]
    if context_length is not None:
        argv += ["--context-length", str(context_length)]
    for adapter in merge_peft:
        if isinstance(adapter, tuple):
            path, weight = adapter
            argv += ["--merge-peft", f"{os.fspath(path)}:{weight}"]
        else:
            argv += ["--merge-peft", os.fspath(adapter)]
    cli = _exporter()
    args = cli.build_parser().parse_args(argv)
    try:
        cli.export(args)
    except cli.ExportError as e:
        raise ModelError(f"export: {e}") from e
    return Path(out)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """`python -m tribute.export …`: the exporter's command line."""
    return int(_exporter().main(list(argv) if argv is not None else None))


if __name__ == "__main__":
    sys.exit(main())
