"""Shared fixtures: the real default models (MiniLM, SmolLM2-135M-Instruct) and the
repository's sample datanet (two contributors). Missing models fail loudly: run
`make setup` (or scripts/setup.sh) first."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import tribute

REPO = Path(__file__).resolve().parents[3]
SAMPLE = REPO / "examples" / "data" / "zephyr"


LORA = Path(os.environ.get("TRIBUTE_LORA_DIR") or REPO / "examples" / "adapters")

# Anvil's first development key (public; never for real funds) and its address.
KEY0 = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
PAYER = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
LEDGER = {"chainId": 31337, "contract": "0x5FbDB2315678afecb367f032d93F642f64180aa3"}
ALICE = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"
BOB = "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359"

PRICING_Q = "How much does a commercial Zephyr fleet license cost?"
GUST_Q = "At what gust speed should Zephyr pilots land?"


def tribute_home() -> Path:
    home = os.environ.get("TRIBUTE_HOME")
    if home:
        return Path(home)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return Path(xdg) / "tribute" if xdg else Path.home() / ".cache" / "tribute"


def require(path: Path, what: str) -> Path:
    if not path.exists():
        pytest.fail(f"{what} is required at {path}; run `make setup` (scripts/setup.sh)", pytrace=False)
    return path


@pytest.fixture(scope="session", autouse=True)
def models_present() -> None:
    require(SAMPLE / "alice.jsonl", "the sample datanet")
    require(tribute_home() / "models" / "all-MiniLM-L6-v2", "the default embedder (MiniLM)")
    require(tribute_home() / "models" / "SmolLM2-135M-Instruct", "the default generator (SmolLM2)")


@pytest.fixture(scope="session")
def generator() -> tribute.Generator:
    return tribute.Generator.load()


@pytest.fixture(scope="session")
def engine_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("engine")


@pytest.fixture(scope="session")
def engine(engine_dir: Path, generator: tribute.Generator) -> tribute.Engine:
    """One engine over the sample datanet, signing receipts with the anvil key."""
    os.environ["TRIBUTE_KEY"] = KEY0
    kb = tribute.Index.open(engine_dir / "kb")
    kb.add_files(SAMPLE)
    engine = tribute.Engine(
        index=kb,
        generator=generator,
        signer=tribute.Signer.from_env("TRIBUTE_KEY"),
        ledger=LEDGER,
        journal=engine_dir / "receipts",
        max_tokens=48,
    )
    yield engine
    engine.close()
