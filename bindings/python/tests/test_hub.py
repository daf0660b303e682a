"""`tribute.pull_model`: hub models, offline behaviour (no network in these tests)."""

from pathlib import Path

import pytest

import tribute

COMMIT = "0123456789abcdef0123456789abcdef01234567"
# A closed local port: any attempt to reach the hub fails at once.
NO_HUB = "http://127.0.0.1:9"


def test_an_export_of_a_commit_resolves_without_the_hub(tmp_path: Path) -> None:
    export = tmp_path / "models" / "hf" / "acme--tiny" / COMMIT
    export.mkdir(parents=True)
    (export / "tribute.json").write_text("{}")
    model = tribute.pull_model(f"hf:acme/tiny@{COMMIT}", home=tmp_path, endpoint=NO_HUB)
    assert model["dir"] == str(export)
    assert model["cached"] is True
    assert (model["repo"], model["revision"], model["commit"]) == ("acme/tiny", COMMIT, COMMIT)
    assert model["file"] is None


def test_export_options_pick_an_export_of_their_own(tmp_path: Path) -> None:
    models = tmp_path / "models" / "hf" / "acme--tiny"
    for leaf in (COMMIT, f"{COMMIT}--int4-static"):
        (models / leaf).mkdir(parents=True)
        (models / leaf / "tribute.json").write_text("{}")
    model = tribute.pull_model(f"acme/tiny@{COMMIT}:static,int4", home=tmp_path, endpoint=NO_HUB)
    assert model["dir"] == str(models / f"{COMMIT}--int4-static")
    plain = tribute.pull_model(f"acme/tiny@{COMMIT}", home=tmp_path, endpoint=NO_HUB)
    assert plain["dir"] == str(models / COMMIT)
    with pytest.raises(tribute.RequestError, match="unknown export option"):
        tribute.pull_model(f"acme/tiny@{COMMIT}:q4_k_m", home=tmp_path, endpoint=NO_HUB)


def test_offline_pull_names_the_cache(tmp_path: Path) -> None:
    with pytest.raises(tribute.ModelError) as e:
        tribute.pull_model("acme/tiny@main", home=tmp_path, endpoint=NO_HUB)
    assert str(tmp_path / "hub") in str(e.value)


def test_a_malformed_spec_is_a_request_error(tmp_path: Path) -> None:
    with pytest.raises(tribute.RequestError, match="invalid model spec"):
        tribute.pull_model("no-slash", home=tmp_path, endpoint=NO_HUB)


def test_answer_mode_is_checked() -> None:
    with pytest.raises(tribute.TributeError, match="both"):
        tribute.Engine(answer_mode="both")  # type: ignore[arg-type]
