"""Settling receipts on a local chain from Python: anvil (npm, attribution/contracts), the
TributeLedger deployed and funded with the `tribute` CLI, then `Engine.settle`.

Needs `npm ci` in attribution/contracts and the debug CLI (`cargo build -p tribute-cli`);
`make test` provides both. Without them the test is skipped locally and fails in CI."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import tribute
from conftest import ALICE, BOB, GUST_Q, KEY0, PAYER, PRICING_Q, REPO, SAMPLE

# anvil's development accounts 3 and 5: the model owner and the treasury.
MODEL_OWNER = "0x90F79bf6EB2c4f870365E785982E1f101E93b906"
TREASURY = "0x9965507D1a55bcC2695C58ba16FB37d819B0A4dc"


def _missing(what: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{what} is required in CI", pytrace=False)
    pytest.skip(f"{what} not found (make test builds it)")


def _anvil() -> Path:
    found = sorted((REPO / "attribution" / "contracts" / "node_modules" / "@foundry-rs").glob("anvil-*/bin/anvil"))
    if not found:
        _missing("anvil (cd attribution/contracts && npm ci)")
    return found[0]


def _cli() -> Path:
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    cli = target / "debug" / "tribute"
    if not cli.is_file():
        _missing(f"the tribute CLI at {cli}")
    return cli


class Chain:
    def __init__(self, cli: Path, rpc: str, ledger: Path) -> None:
        self.cli, self.rpc, self.ledger = cli, rpc, ledger

    def run(self, *args: str) -> str:
        env = {**os.environ, "TRIBUTE_KEY": KEY0}
        out = subprocess.run(
            [str(self.cli), "chain", *args, "--rpc", self.rpc, "--ledger", str(self.ledger)],
            env=env, capture_output=True, text=True, timeout=120,
        )
        assert out.returncode == 0, out.stderr
        return out.stdout

    def balances(self, *addresses: str) -> dict[str, int]:
        rows = json.loads(self.run("balance", *addresses, "--json"))
        by_address = {r["address"].lower(): int(r["balance"]) for r in rows}
        return {a: by_address[a.lower()] for a in addresses}


@pytest.fixture()
def chain(tmp_path: Path) -> Iterator[tuple[Chain, subprocess.Popen[bytes]]]:
    anvil, cli = _anvil(), _cli()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([str(anvil), "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "anvil did not start"
                time.sleep(0.05)
        rpc = f"http://127.0.0.1:{port}"
        ledger = tmp_path / "ledger.json"
        env = {**os.environ, "TRIBUTE_KEY": KEY0}
        out = subprocess.run(
            [str(cli), "chain", "deploy", "--rpc", rpc, "--out", str(ledger)],
            env=env, capture_output=True, text=True, timeout=120,
        )
        assert out.returncode == 0, out.stderr
        c = Chain(cli, rpc, ledger)
        c.run("register-model", "SmolLM2-135M-Instruct", "--owner", MODEL_OWNER)
        c.run("deposit", "1ether")
        yield c, proc
    finally:
        proc.kill()
        proc.wait()


def test_settle_pays_the_contributors_and_a_down_chain_keeps_receipts_pending(
    chain: tuple[Chain, subprocess.Popen[bytes]], tmp_path: Path, generator: tribute.Generator
) -> None:
    c, anvil = chain
    kb = tribute.Index.open(tmp_path / "kb")
    kb.add_files(SAMPLE)
    engine = tribute.Engine(
        index=kb,
        generator=generator,
        signer=tribute.Signer.from_hex(KEY0),
        ledger=c.ledger,
        journal=tmp_path / "receipts",
        chain={"rpc": c.rpc, "treasury": TREASURY, "timeout_s": 5},
        max_tokens=32,
    )
    with engine:
        assert engine.payer == PAYER
        answers = [engine.ask(PRICING_Q, top_k=3), engine.ask(GUST_Q, top_k=3)]
        assert all(a.receipt is not None for a in answers)
        assert engine.receipt_stats()["pending"] == 2

        async def settle() -> tribute.SettleReport:
            return await engine.settle_async()

        report = asyncio.run(settle())
        assert report.confirmed_receipts == 2 and len(report.batches) == 1, report
        batch = report.batches[0]
        assert batch.receipts == 2 and batch.gas_used == report.gas_used > 0
        assert batch.tx_hash.startswith("0x") and batch.block_number is not None
        # Σ payouts = Σ fees (10^15 wei per answer).
        assert batch.total_wei == 2 * 10**15
        assert report.skipped == [] and report.still_pending == 0
        assert len(engine.receipts("confirmed")) == 2 and engine.receipt_stats()["pending"] == 0

        # The default split: 70 % to the contributors by citation weight, 15 % to the model
        # owner plus the 10 % of adapter authors (no adapter was used), 5 % to the treasury.
        paid = c.balances(ALICE, BOB, MODEL_OWNER, TREASURY)
        assert paid[ALICE] + paid[BOB] == 2 * 7 * 10**14, paid
        assert paid[BOB] > 0
        assert paid[MODEL_OWNER] == 2 * 25 * 10**13 and paid[TREASURY] == 2 * 5 * 10**13
        # Nothing left to settle.
        assert engine.settle().confirmed_receipts == 0

        # The chain goes down: the ask still answers, its receipt stays pending.
        anvil.kill()
        anvil.wait()
        answer = engine.ask(PRICING_Q, top_k=2)
        assert answer.receipt is not None
        with pytest.raises(tribute.ChainError):
            engine.settle()
        assert engine.receipt_stats()["pending"] == 1
