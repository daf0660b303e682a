"""The README's code samples, run as written: every ```python block, in order, in one
namespace, from a scratch directory holding the repository's `examples/` and the zephyr
LoRA adapter in `adapters/zephyr`. A ```toml file=NAME block is written to NAME first; a
```python skip block (it needs a running chain) is only compiled."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import KEY0, LORA, REPO

README = REPO / "bindings" / "python" / "README.md"
FENCE = re.compile(r"^```(\w+)([^\n]*)\n(.*?)^```\s*$", re.S | re.M)


def blocks(path: Path) -> list[tuple[int, str, str, str]]:
    text = path.read_text()
    return [
        (text.count("\n", 0, m.start()) + 1, m.group(1), m.group(2).strip(), m.group(3))
        for m in FENCE.finditer(text)
    ]


def test_the_readme_has_samples() -> None:
    kinds = [(lang, info) for _, lang, info, _ in blocks(README)]
    assert sum(1 for lang, info in kinds if lang == "python" and info != "skip") >= 5, kinds


def test_readme_samples_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    adapter = LORA / "smollm2-135m-zephyr-lora"
    if not adapter.is_dir():
        pytest.fail(f"the zephyr adapter is required at {adapter}", pytrace=False)
    (tmp_path / "examples").symlink_to(REPO / "examples")
    (tmp_path / "adapters").mkdir()
    (tmp_path / "adapters" / "zephyr").symlink_to(adapter)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TRIBUTE_KEY", KEY0)
    namespace: dict[str, object] = {"__name__": "__readme__"}
    ran = 0
    for line, lang, info, source in blocks(README):
        where = f"{README.name}:{line}"
        if lang == "toml" and info.startswith("file="):
            (tmp_path / info[len("file="):]).write_text(source)
        elif lang == "python":
            code = compile(source, where, "exec")
            if info == "skip":
                continue
            try:
                exec(code, namespace)
            except Exception as e:
                raise AssertionError(f"the sample at {where} failed: {e!r}") from e
            ran += 1
    assert ran >= 5
    # What the samples claim happened did: receipts journaled, a model exported.
    assert any((tmp_path / "receipts").iterdir())
    assert (tmp_path / "models" / "tiny" / "model.onnx").is_file()
    namespace["engine"].close()  # type: ignore[attr-defined]
