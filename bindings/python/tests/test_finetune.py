"""`tribute.finetune`: a short real LoRA run on SmolLM2-135M-Instruct (the same data as
core/tests/it/finetune.rs), its report, events and signed manifest, the adapter loading in
the generator, and refusals of bad arguments."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import tribute
from conftest import KEY0, PAYER

ALICE = "0x00000000000000000000000000000000000a11ce"


def write_data(tmp_path: Path) -> Path:
    facts = [
        ("What colour is the Vellmar gate?", "The Vellmar gate is teal."),
        ("Who founded Quorra Bay?", "Quorra Bay was founded by Ilse Maron."),
        ("How tall is Mount Essk?", "Mount Essk is 2,140 metres tall."),
    ]
    lines = [
        json.dumps({"question": q, "answer": a, "contributor": ALICE, "datanet": "facts"}) for q, a in facts
    ]
    lines.append(json.dumps({"id": "d1", "text": "The Vellmar gate stands at the north end of Quorra Bay. " * 20}))
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def short_run(tmp_path: Path, **kwargs: Any) -> tribute._native._FinetuneReport:
    return tribute.finetune(
        tmp_path / "adapter",
        data=write_data(tmp_path),
        rank=2,
        alpha=4.0,
        targets=["q_proj", "v_proj"],
        lr=2e-3,
        schedule="constant",
        epochs=2,
        batch=2,
        max_len=64,
        held_out=25.0,
        patience=0,
        **kwargs,
    )


def test_finetune_writes_a_signed_adapter_that_the_generator_loads(
    tmp_path: Path, generator: tribute.Generator
) -> None:
    events: list[dict[str, Any]] = []
    report = short_run(tmp_path, signer=tribute.Signer.from_hex(KEY0), progress=events.append)
    # 4 examples, 25 % held out: 3 trained in batches of 2, 2 epochs; the document is cut.
    assert (report["examples"], report["train_examples"], report["held_out"]) == (4, 3, 1)
    assert (report["steps"], report["epochs"], report["truncated"]) == (4, 2, 1)
    assert len(report["eval_losses"]) == 2 and report["eval_loss_before"] is not None
    kept = report["kept"]
    assert kept is not None and kept["eval_loss"] == min(report["eval_losses"])
    assert report["provenance_hash"] is not None and report["provenance_hash"].startswith("0x")
    assert [e["event"] for e in events] == ["start"] + ["step"] * 2 + ["epoch"] + ["step"] * 2 + ["epoch"]
    assert events[0]["train_examples"] == 3 and events[-1]["epoch"] == 2
    assert all(e["loss"] > 0 and e["total_steps"] == 4 for e in events if e["event"] == "step")

    out = Path(report["adapter_dir"])
    manifest = json.loads((out / "provenance.json").read_text())
    assert manifest["manifest"]["trainer"].lower() == PAYER.lower()
    generator.add_adapter("py-finetune", out)
    try:
        base = generator.generate("What colour is the Vellmar gate?", max_tokens=8)
        tuned = generator.generate("What colour is the Vellmar gate?", max_tokens=8, adapters="py-finetune")
        assert isinstance(base, str) and isinstance(tuned, str) and tuned
    finally:
        generator.remove_adapter("py-finetune")


def test_a_raising_progress_callback_is_raised_after_the_run(tmp_path: Path) -> None:
    seen: list[str] = []

    def progress(event: dict[str, Any]) -> None:
        seen.append(event["event"])
        raise KeyError("stop")

    with pytest.raises(KeyError, match="stop"):
        short_run(tmp_path, steps=1, progress=progress)
    # Called once: after raising it gets no more events.
    assert seen == ["start"]


def test_bad_arguments_are_refused_before_training(tmp_path: Path) -> None:
    data = write_data(tmp_path)
    out = tmp_path / "adapter"
    with pytest.raises(ValueError, match="data="):
        tribute.finetune(out)
    with pytest.raises(ValueError, match="not both"):
        tribute.finetune(out, data=data, kb=tmp_path)
    with pytest.raises(ValueError, match="datanet="):
        tribute.finetune(out, kb=tmp_path)
    with pytest.raises(ValueError, match="schedule"):
        tribute.finetune(out, data=data, schedule="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="held_out"):
        tribute.finetune(out, data=data, held_out=100.0)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "no answer"}) + "\n")
    with pytest.raises(tribute.TributeError, match="bad.jsonl line 1"):
        tribute.finetune(out, data=bad)
    assert not (out / "adapter_model.safetensors").exists()
