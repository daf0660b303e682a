#!/usr/bin/env python3
"""Chaos (c): settlement while the chain node is killed and restarted, and a reorg.

Loopback only: a local anvil (npm @foundry-rs/anvil) on a private port, the `tribute` CLI.

Setup: deploy the ledger, deposit for the payer, then journal PER_ROUND signed receipts per
round with `tribute mcp` serving extractive asks (no model), so that every round has two
batches to settle. The first settle run is timed; then, round after round, run
`tribute receipts settle` (batches of 3, at most 2 per run) and, at a random moment within
1.5 times that duration, if the run is still going, one of:
  * restart: anvil is stopped (SIGTERM: it writes its state file) and started again from it,
    so the node is gone for a while but no block is lost;
  * settler: the settler is SIGKILLed;
  * kill (only with --kill-node): anvil is SIGKILLed and restarted from its last periodic
    state dump (every second): the blocks mined since are lost, which is a reorg.
(A run that finished before its moment is counted as unfaulted.) Then a reorg on purpose: more receipts,
`evm_snapshot`, settle (confirmed), `evm_revert` (the settlement is gone from the chain), a
block mined, settle again.

Checks at the end (each reported, exit 1 if any fails):
  * every receipt is confirmed in the journal;
  * every confirmed batch root has exactly one BatchSettled event on chain, and no event names
    a root the journal does not know;
  * the payer's deposit fell by exactly the sum of the fees of all receipts, and the payees'
    balances add up to that sum (nobody paid twice, nobody left unpaid).

Usage: settle.py TRIBUTE_BIN ANVIL_BIN CAST_BIN WORKDIR ROUNDS [SEED] [--kill-node]
"""

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

# anvil's well-known development accounts (public test keys, funded on every anvil).
PAYER_KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
PAYER_ADDRESS = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
TREASURY = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
FEE_WEI = 10**15
PER_ROUND = 6
QUESTIONS = [
    "How often does the Zephyr flight controller correct the attitude?",
    "What gust speed can the Zephyr hold its position in?",
    "How long does the Zephyr battery last?",
    "Which sensors does the Zephyr fuse for navigation?",
]

results = []


def check(ok, what):
    results.append((ok, what))
    print(("ok   " if ok else "FAIL ") + what, flush=True)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def rpc(url, method, params):
    req = urllib.request.Request(
        url,
        data=json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode(),
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        body = json.loads(r.read())
    if "error" in body:
        raise RuntimeError(f"{method}: {body['error']}")
    return body["result"]


class Node:
    def __init__(self, anvil, work):
        self.anvil = anvil
        self.state = os.path.join(work, "anvil-state.json")
        self.log = open(os.path.join(work, "anvil.log"), "ab")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = None
        self.torn = 0

    def keep_good_state(self):
        """Copies the state file aside while it parses: anvil writes it in place, so a
        SIGKILL during a dump leaves it torn."""
        try:
            with open(self.state) as f:
                json.load(f)
        except (OSError, ValueError):
            return
        shutil.copyfile(self.state, self.state + ".good")

    def start(self):
        if os.path.exists(self.state):
            try:
                with open(self.state) as f:
                    json.load(f)
            except ValueError:
                # Torn by a SIGKILL mid-dump: restart from the last whole one (a deeper
                # reorg, as a node that lost its latest blocks).
                self.torn += 1
                if os.path.exists(self.state + ".good"):
                    shutil.copyfile(self.state + ".good", self.state)
                else:
                    os.remove(self.state)
        cmd = [self.anvil, "--port", str(self.port), "--dump-state", self.state,
               "--state-interval", "1", "--preserve-historical-states"]
        if os.path.exists(self.state):
            cmd += ["--load-state", self.state]
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=self.log)
        for _ in range(300):
            try:
                rpc(self.url, "eth_chainId", [])
                return
            except Exception:
                if self.proc.poll() is not None:
                    sys.exit(f"anvil exited ({self.proc.returncode}); see anvil.log")
                time.sleep(0.1)
        sys.exit("anvil did not answer within 30 s")

    def stop(self, sig):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait()

    def block(self):
        return int(rpc(self.url, "eth_blockNumber", []), 16)


def tribute_env():
    env = dict(os.environ)
    env["TRIBUTE_KEY"] = PAYER_KEY
    env.pop("TRIBUTE_RPC", None)
    return env


def tribute(bin_, *args, check_ok=True):
    o = subprocess.run([bin_, *args], capture_output=True, text=True, env=tribute_env())
    if check_ok and o.returncode != 0:
        sys.exit(f"tribute {' '.join(args)} failed: {o.stderr}")
    return o


def journal_asks(bin_, config, n, offset):
    """n extractive asks through `tribute mcp`: n signed, journaled receipts."""
    p = subprocess.Popen([bin_, "mcp", "--config", config], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=tribute_env())

    def call(obj):
        p.stdin.write((json.dumps(obj) + "\n").encode())
        p.stdin.flush()
        if "id" in obj:
            return json.loads(p.stdout.readline())
        return None

    call({"jsonrpc": "2.0", "id": 0, "method": "initialize",
          "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                     "clientInfo": {"name": "chaos-settle", "version": "1"}}})
    call({"jsonrpc": "2.0", "method": "notifications/initialized"})
    ids = []
    for i in range(n):
        q = f"{QUESTIONS[(offset + i) % len(QUESTIONS)]} ({offset + i})"
        r = call({"jsonrpc": "2.0", "id": i + 1, "method": "tools/call",
                  "params": {"name": "ask", "arguments": {"question": q}}})
        rec = r["result"]["structuredContent"]["receipt"]
        ids.append(rec["receiptId"])
    p.stdin.close()
    p.wait()
    return ids


def journal_rows(bin_, journal):
    o = tribute(bin_, "receipts", "list", "--json", "--journal", journal)
    rows = [json.loads(l) for l in o.stdout.splitlines() if l.strip()]
    return [r for r in rows if "receiptId" in r]


def settle_cmd(bin_, journal, ledger, url, extra=()):
    return [bin_, "receipts", "settle", "--journal", journal, "--ledger", ledger, "--rpc", url,
            "--treasury", TREASURY, "--batch", "3", "--timeout", "5", *extra]


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    kill_node = "--kill-node" in sys.argv
    bin_, anvil, cast, work, rounds = args[0], args[1], args[2], args[3], int(args[4])
    seed = int(args[5]) if len(args) > 5 else int(time.time())
    rng = random.Random(seed)
    print(f"settle: {rounds} rounds, seed {seed}, node kills {'on' if kill_node else 'off'}",
          flush=True)
    node = Node(anvil, work)
    node.start()
    ledger = os.path.join(work, "ledger.json")
    tribute(bin_, "chain", "deploy", "--rpc", node.url, "--out", ledger)
    # Enough for every receipt of the run (rounds + 1 of them, and the reorg's 3).
    deposit = FEE_WEI * (PER_ROUND * (rounds + 1) + 3)
    tribute(bin_, "chain", "deposit", f"{deposit}wei", "--rpc", node.url, "--ledger", ledger)
    journal = os.path.join(work, "journal")
    config = os.path.join(work, "settle.toml")
    led = json.load(open(ledger))
    with open(config, "w") as f:
        f.write(
            f'index = "{os.path.join(work, "kb")}"\nanswer_mode = "extractive"\n'
            f'[receipts]\njournal = "{journal}"\nkey_env = "TRIBUTE_KEY"\n'
            f'fee_wei = "{FEE_WEI}"\n'
            f'ledger = {{ chainId = {led["chainId"]}, contract = "{led["contract"]}" }}\n'
        )
    receipts = PER_ROUND * (rounds + 1)
    ids = journal_asks(bin_, config, receipts, 0)
    print(f"settle: {receipts} receipts journaled", flush=True)
    # Persist the deployment before any node restart.
    node.stop(signal.SIGTERM)
    node.start()

    # How long an unfaulted run of two batches takes: faults are aimed inside that time.
    t0 = time.monotonic()
    tribute(bin_, *settle_cmd(bin_, journal, ledger, node.url, ["--max-batches", "2"])[1:])
    typical = time.monotonic() - t0
    print(f"settle: an unfaulted run of 2 batches takes {typical:.2f} s", flush=True)

    counts = {"restart": 0, "settler": 0, "kill": 0, "runs": 0, "unfaulted": 0}
    started = time.monotonic()
    for n in range(rounds):
        counts["runs"] += 1
        node.keep_good_state()
        p = subprocess.Popen(settle_cmd(bin_, journal, ledger, node.url, ["--max-batches", "2"]),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             env=tribute_env())
        deadline = time.monotonic() + rng.uniform(0.0, 1.5 * typical)
        while time.monotonic() < deadline and p.poll() is None:
            time.sleep(0.005)
        if p.poll() is not None:
            counts["unfaulted"] += 1
        else:
            what = rng.choice(["restart", "restart", "settler"] + (["kill"] if kill_node else []))
            counts[what] += 1
            if what == "settler":
                p.send_signal(signal.SIGKILL)
            else:
                node.stop(signal.SIGTERM if what == "restart" else signal.SIGKILL)
                time.sleep(rng.uniform(0.0, 0.5))
                node.start()
        try:
            p.wait(timeout=90)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            check(False, f"round {n}: a settler hung for 90 s")
    # Let a last run finish with the node up.
    o = subprocess.run(settle_cmd(bin_, journal, ledger, node.url, ["--json"]),
                       capture_output=True, text=True, env=tribute_env())
    check(o.returncode == 0, f"a settle with the node up after the chaos succeeds "
                             f"({o.stdout.strip()[-300:]} {o.stderr.strip()[-300:]})")
    print(f"settle: {counts['runs']} settle runs; node restarted {counts['restart']} times, "
          f"node SIGKILLed {counts['kill']} times, settler SIGKILLed {counts['settler']} times, "
          f"{counts['unfaulted']} runs finished before their fault; "
          f"{node.torn} torn state files restarted from the last whole one; "
          f"{time.monotonic() - started:.0f} s", flush=True)

    # A reorg on purpose: a confirmed batch whose block the chain then forgets.
    ids += journal_asks(bin_, config, 3, receipts)
    snap = rpc(node.url, "evm_snapshot", [])
    o = subprocess.run(settle_cmd(bin_, journal, ledger, node.url), capture_output=True,
                       text=True, env=tribute_env())
    before = journal_rows(bin_, journal)
    reorged = [r for r in before if r["receiptId"] in ids[-3:]]
    check(o.returncode == 0 and all(r["state"] == "confirmed" for r in reorged),
          "the reorg batch was confirmed before the reorg")
    rpc(node.url, "evm_revert", [snap])
    rpc(node.url, "evm_mine", [])
    o = subprocess.run(settle_cmd(bin_, journal, ledger, node.url, ["--json"]),
                       capture_output=True, text=True, env=tribute_env())
    print(f"settle after the reorg: rc {o.returncode} {o.stdout.strip()[-400:]}", flush=True)
    try:
        last = json.loads(o.stdout)
    except ValueError:
        last = {}
    # Batches the ledger holds settled (settledAt) but whose BatchSettled event the node lost:
    # an anvil SIGKILLed between state dumps can keep a block's state and not the block. Only
    # --kill-node can make them; each must really be settled in the state.
    unresolved = {u["root"].lower() for u in last.get("unresolved", [])}
    check(kill_node or not unresolved,
          f"no unresolved batch without node kills ({len(unresolved)})")
    contract = json.load(open(ledger))["contract"]
    settled_at_sig = subprocess.run([cast, "sig", "settledAt(address,bytes32)"],
                                    capture_output=True, text=True).stdout.strip()

    def settled_at(root):
        data = settled_at_sig + PAYER_ADDRESS[2:].lower().rjust(64, "0") + root[2:]
        return int(rpc(node.url, "eth_call", [{"to": contract, "data": data}, "latest"]), 16)

    for root in sorted(unresolved):
        check(settled_at(root) != 0, f"unresolved batch {root[:10]}… is settled in the ledger's "
                                     f"state (settledAt), only its event is lost")

    # The checks.
    rows = journal_rows(bin_, journal)
    total_fees = sum(int(r["fee"]) for r in rows)
    check(len(rows) == len(ids) and set(r["receiptId"] for r in rows) == set(ids),
          f"the journal holds exactly the {len(ids)} receipts")
    not_confirmed = [r for r in rows if r["state"] != "confirmed"
                     and (r.get("batchId") or "").lower() not in unresolved]
    check(not not_confirmed, f"every receipt is confirmed in the journal, but those of the "
                             f"{len(unresolved)} unresolved batches ({len(not_confirmed)} are not)")
    topic = subprocess.run(
        [cast, "keccak", "BatchSettled(address,bytes32,uint256,uint64,uint256)"],
        capture_output=True, text=True).stdout.strip()
    logs = rpc(node.url, "eth_getLogs", [{"address": contract, "fromBlock": "0x0",
                                          "toBlock": "latest", "topics": [topic]}])
    on_chain = [l["topics"][2].lower() for l in logs]
    roots = {r["batchId"].lower() for r in rows if r.get("batchId")}
    unsettled = sorted(r for r in roots if settled_at(r) == 0)
    twice = sorted({x for x in on_chain if on_chain.count(x) > 1})
    unknown = sorted(set(on_chain) - roots)
    check(not unsettled, f"every journaled batch root is settled in the ledger's state "
                         f"({len(roots)} roots, {len(unsettled)} not settled)")
    check(not twice, f"no root has two BatchSettled events ({len(twice)})")
    # The payer's batch nonce counts its settlements; each should have its event. A node that
    # kept a block's state but lost the block (an anvil SIGKILLed between dumps) breaks that:
    # a fault of the node, reported here but not failed on with --kill-node. What must hold
    # whatever the node does is checked below with balances: nobody is paid twice or not at
    # all (the ledger refuses any settled root, so a settler that cannot see an event cannot
    # pay its batch again).
    nonce = subprocess.run([cast, "call", "--rpc-url", node.url, contract,
                            "batchNonces(address)(uint64)", PAYER_ADDRESS],
                           capture_output=True, text=True).stdout.strip()
    event_nonces = {int(l["data"][2 + 64:2 + 128], 16) for l in logs}
    lost = sorted(set(range(int(nonce or 0))) - event_nonces)
    events_whole = not lost
    if kill_node and lost:
        print(f"the node lost the events of {len(lost)} settlements it kept in its state "
              f"(batch nonces {lost[:5]}): not Tribute's fault, and paid once each (see below)",
              flush=True)
    else:
        check(not lost, f"every settlement in the ledger's state has its BatchSettled event "
                        f"(batch nonce {nonce}, {len(logs)} events; nonces without one: {lost[:5]})")
    check(int(nonce or 0) == len(roots),
          f"the payer's batch nonce counts exactly the journal's batches: {nonce} settlements, "
          f"{len(roots)} roots")
    event_total = sum(int(l["data"][2:2 + 64], 16) for l in logs)
    check(not unknown, f"no settlement the journal does not know ({len(unknown)})")
    payer = subprocess.run([bin_, "chain", "balance", "--deposit", "--json", "--rpc", node.url,
                            "--ledger", ledger], capture_output=True, text=True,
                           env=tribute_env())
    print(f"payer: {payer.stdout.strip()} {payer.stderr.strip()[-300:]}", flush=True)
    try:
        bal = json.loads(payer.stdout)
        entry = bal[0] if isinstance(bal, list) else bal
        left = int(entry.get("deposit", entry.get("depositWei", -1)))
    except Exception as e:  # noqa: BLE001 - report, do not crash
        left = -1
        print(f"could not read the deposit: {e}")
    if events_whole:
        check(left == deposit - event_total,
              f"the deposit fell by exactly the events' totals ({(deposit - left - event_total) // FEE_WEI:+d} "
              f"receipts' worth paid without an event)")
        confirmed_fees = sum(int(r["fee"]) for r in rows if r["state"] == "confirmed")
        check(event_total == confirmed_fees,
              f"the events pay exactly the confirmed receipts' fees "
              f"({(event_total - confirmed_fees) // FEE_WEI:+d} receipts' worth)")
    check(left == deposit - total_fees,
          f"the payer's deposit fell by exactly the fees: {deposit - left} wei paid, "
          f"{total_fees} wei of fees journaled ({(deposit - left - total_fees) // FEE_WEI:+d} receipts' worth)")
    exported = tribute(bin_, "receipts", "export", "--journal", journal).stdout
    payees = {TREASURY.lower()}
    for line in exported.splitlines():
        if line.strip():
            payees |= {c["contributor"].lower() for c in json.loads(line)["chunks"]}
    bal = subprocess.run([bin_, "chain", "balance", "--json", "--rpc", node.url, "--ledger",
                          ledger, *sorted(payees)], capture_output=True, text=True,
                         env=tribute_env())
    try:
        paid = sum(int(e["balance"]) for e in json.loads(bal.stdout))
    except Exception as e:  # noqa: BLE001 - report, do not crash
        paid = -1
        print(f"could not read the balances: {e} {bal.stderr.strip()[-300:]}")
    check(paid == total_fees,
          f"the {len(payees)} payees' balances add up to the fees: {paid} of {total_fees} wei")
    node.stop(signal.SIGTERM)
    failed = [w for ok, w in results if not ok]
    print(f"settle: {len(results) - len(failed)} checks passed, {len(failed)} failed", flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
