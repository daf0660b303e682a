#!/usr/bin/env python3
"""Chaos (a): SIGKILL a process that answers questions and journals their receipts.

`tribute mcp` (the stdio MCP server) serves extractive asks (no model: the engine retrieves,
picks the answer sentences, signs the receipt and journals it before the tool result is
written: the same Engine::ask → journal code a generative ask runs) to this driver, which
sends asks back to back and kills the server with SIGKILL at a random moment: one round in
five during start-up or journal recovery, the others 10-400 ms into serving. A receipt is
*acknowledged* when its tool result reached the driver as a whole line.

After every kill: the journal opens (`tribute receipts export`), every acknowledged receipt
is in it, and no receipt id appears twice. Every 100 kills and at the end, every journaled
receipt verifies (`tribute receipts verify --ledger`). Exits 1 on the first violation.

Usage: asks.py TRIBUTE_BIN WORKDIR KILLS [SEED]
"""

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time

QUESTIONS = [
    "How often does the Zephyr flight controller correct the attitude?",
    "What gust speed can the Zephyr hold its position in?",
    "How long does the Zephyr battery last?",
    "Which sensors does the Zephyr fuse for navigation?",
    "How do I install the Zephyr SDK?",
]


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def fail(msg):
    print(f"FAIL: {msg}", flush=True)
    sys.exit(1)


def export_ids(tribute, journal):
    o = run([tribute, "receipts", "export", "--journal", journal])
    if o.returncode != 0:
        fail(f"the journal does not open after a kill: {o.stderr.strip()}")
    ids = []
    for line in o.stdout.splitlines():
        if line.strip():
            ids.append(json.loads(line)["receiptId"].lower())
    return ids, o.stdout


def verify_all(tribute, ledger, exported):
    o = run([tribute, "receipts", "verify", "-", "--ledger", ledger, "--json"], input=exported)
    if o.returncode != 0:
        fail(f"journaled receipts do not verify: {o.stdout[-2000:]} {o.stderr[-2000:]}")
    return sum(1 for l in o.stdout.splitlines() if l.strip())


def one_round(tribute, config, rng, n_round, stderr_path, acked):
    proc = subprocess.Popen(
        [tribute, "mcp", "--config", config],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=open(stderr_path, "wb"),
    )
    ready = threading.Event()
    answered = threading.Semaphore(0)
    got = []

    def reader():
        for raw in proc.stdout:
            if not raw.endswith(b"\n"):
                break  # a line cut by the kill is not an acknowledgment
            try:
                msg = json.loads(raw)
            except ValueError:
                continue
            if msg.get("id") == 0:
                ready.set()
                continue
            sc = (msg.get("result") or {}).get("structuredContent") or {}
            r = sc.get("receipt")
            if r:
                got.append(r["receiptId"].lower())
            answered.release()

    t = threading.Thread(target=reader, daemon=True)
    t.start()

    def send(obj):
        proc.stdin.write((json.dumps(obj) + "\n").encode())
        proc.stdin.flush()

    early = rng.randrange(5) == 0
    try:
        send({"jsonrpc": "2.0", "id": 0, "method": "initialize",
              "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                         "clientInfo": {"name": "chaos-asks", "version": "1"}}})
        if early:
            time.sleep(rng.uniform(0, 0.4))
        else:
            if not ready.wait(60):
                fail(f"round {n_round}: the server never answered initialize: "
                     + open(stderr_path, errors="replace").read()[-2000:])
            send({"jsonrpc": "2.0", "method": "notifications/initialized"})
            deadline = time.monotonic() + rng.uniform(0.01, 0.4)
            i = 1
            in_flight = 0
            # Keep two asks in flight until the kill time.
            while time.monotonic() < deadline:
                while in_flight < 2:
                    q = QUESTIONS[(n_round + i) % len(QUESTIONS)]
                    send({"jsonrpc": "2.0", "id": i, "method": "tools/call",
                          "params": {"name": "ask", "arguments": {"question": q}}})
                    i += 1
                    in_flight += 1
                if answered.acquire(timeout=max(0.0, deadline - time.monotonic())):
                    in_flight -= 1
    except BrokenPipeError:
        pass
    status = proc.poll()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    t.join(5)
    if status is not None:
        fail(f"round {n_round}: the server exited on its own ({status}): "
             + open(stderr_path, errors="replace").read()[-2000:])
    acked.extend(got)
    return early, len(got)


def main():
    tribute, work, kills = sys.argv[1], sys.argv[2], int(sys.argv[3])
    seed = int(sys.argv[4]) if len(sys.argv) > 4 else int(time.time())
    print(f"asks: {kills} kills, seed {seed}", flush=True)
    rng = random.Random(seed)
    config = os.path.join(work, "tribute.toml")
    journal = os.path.join(work, "journal")
    ledger = os.path.join(work, "ledger.json")
    acked = []
    early = 0
    verified = 0
    started = time.monotonic()
    for n in range(kills):
        e, _ = one_round(tribute, config, rng, n, os.path.join(work, "mcp.stderr"), acked)
        early += e
        ids, exported = export_ids(tribute, journal)
        if len(ids) != len(set(ids)):
            fail(f"round {n}: a receipt id is journaled twice")
        missing = set(acked) - set(ids)
        if missing:
            fail(f"round {n}: {len(missing)} acknowledged receipts lost, e.g. {sorted(missing)[0]}")
        if len(acked) != len(set(acked)):
            fail(f"round {n}: the server acknowledged one receipt id twice")
        if (n + 1) % 100 == 0 or n + 1 == kills:
            verified = verify_all(tribute, ledger, exported)
            print(f"  {n + 1} kills: {len(acked)} acknowledged, {len(ids)} journaled, "
                  f"{verified} verified, {time.monotonic() - started:.0f} s", flush=True)
    ids, _ = export_ids(tribute, journal)
    print(f"asks: survived {kills} SIGKILLs ({early} during start-up); {len(acked)} receipts "
          f"acknowledged, 0 lost, 0 duplicated; {len(ids)} journaled "
          f"({len(ids) - len(acked)} written but not acknowledged); {verified} verify; "
          f"{time.monotonic() - started:.0f} s", flush=True)


if __name__ == "__main__":
    main()
