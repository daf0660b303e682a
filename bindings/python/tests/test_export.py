"""The `tribute[export]` extra: exporting a model from Python and loading it."""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

import pytest

import tribute
from tribute.export import export_model


def test_the_extra_is_declared() -> None:
    meta = importlib.metadata.metadata("tribute")
    assert "export" in (meta.get_all("Provides-Extra") or [])
    requires = meta.get_all("Requires-Dist") or []
    assert any(re.match(r"tribute-export\b.*extra == ['\"]export['\"]", r) for r in requires), requires


def test_export_a_random_model_and_generate(tmp_path: Path) -> None:
    out = export_model(tmp_path / "tiny", random="tiny", seed=3, lora_targets=["q_proj", "v_proj"])
    assert (out / "model.onnx").is_file() and (out / "tribute.json").is_file()
    gen = tribute.Generator.load(out)
    assert gen.context_length > 0
    # A random model writes noise, but deterministically (greedy).
    first = gen.generate("hello", max_tokens=6)
    assert first == gen.generate("hello", max_tokens=6)


def test_export_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="exactly one"):
        export_model(tmp_path / "x")
    with pytest.raises(ValueError, match="exactly one"):
        export_model(tmp_path / "x", source=tmp_path, random="tiny")
    with pytest.raises(tribute.ModelError, match="export"):
        export_model(tmp_path / "x", source=tmp_path / "missing.gguf")


def test_python_dash_m(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "tribute.export", "--random", "tiny", "--out", str(tmp_path / "m")],
        capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "m" / "model.onnx").is_file()
