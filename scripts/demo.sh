#!/usr/bin/env bash
# The whole Tribute loop on a fresh machine (run by `make demo`, after `make setup build`):
#   ingest the sample datanet (two contributors) → start a local anvil → deploy the
#   TributeLedger, register the model and the adapter, deposit → ask with and without a
#   LoRA adapter (cited answers, signed receipts in a journal) → settle the receipts on
#   chain → show every payee's balance.
# The key is anvil's first development key: public, for this local chain only.
set -euo pipefail

TRIBUTE=${TRIBUTE:?set TRIBUTE to the tribute binary}
DEMO=${DEMO_DIR:-target/demo}
PORT=${DEMO_PORT:-18545}
LORA=${LORA:-examples/adapters}
ADAPTER=$LORA/smollm2-135m-zephyr-lora
RPC=http://127.0.0.1:$PORT
export TRIBUTE_KEY=0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80
# anvil's development accounts 3, 4 and 5 own the model, own the adapter, keep the treasury.
MODEL_OWNER=0x90F79bf6EB2c4f870365E785982E1f101E93b906
ADAPTER_OWNER=0x15d34AAf54267DB7D7c367839AAf71A00a2C6A65
TREASURY=0x9965507D1a55bcC2695C58ba16FB37d819B0A4dc
ALICE=0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed
BOB=0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "installing anvil and solc from npm (cached)"
(cd attribution/contracts && npm ci --silent --no-audit --no-fund)
ANVIL=$(ls attribution/contracts/node_modules/@foundry-rs/anvil-*/bin/anvil 2>/dev/null | head -n1)
[ -x "$ANVIL" ] || { echo "demo: anvil not found after npm ci" >&2; exit 1; }

rm -rf "$DEMO" && mkdir -p "$DEMO"
step "ingesting the sample datanet (alice: zephyr-docs, bob: pilot-notes)"
"$TRIBUTE" ingest --kb "$DEMO/kb" examples/data/zephyr

step "starting a local chain (anvil on $RPC)"
"$ANVIL" --port "$PORT" >"$DEMO/anvil.log" 2>&1 &
ANVIL_PID=$!
trap 'kill $ANVIL_PID 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break
  sleep 0.1
done

step "deploying the TributeLedger, registering the model and the adapter, depositing 1 ether"
"$TRIBUTE" chain deploy --rpc "$RPC" --out "$DEMO/ledger.json"
L=(--rpc "$RPC" --ledger "$DEMO/ledger.json")
"$TRIBUTE" chain register-model SmolLM2-135M-Instruct --owner $MODEL_OWNER "${L[@]}"
"$TRIBUTE" chain register-adapter smollm2-135m-zephyr-lora --owner $ADAPTER_OWNER "${L[@]}"
"$TRIBUTE" chain deposit 1ether "${L[@]}"

ASK=(--kb "$DEMO/kb" --ledger "$DEMO/ledger.json" --journal "$DEMO/receipts" --top-k 3 --max-tokens 48)
step "asking (base model)"
"$TRIBUTE" ask "${ASK[@]}" "How many times per second does the Zephyr flight controller correct the attitude?"
step "asking (base model)"
"$TRIBUTE" ask "${ASK[@]}" "At what gust speed should Zephyr pilots land?"
if [ -d "$ADAPTER" ]; then
  step "asking with the zephyr LoRA adapter"
  "$TRIBUTE" ask "${ASK[@]}" --adapter "$ADAPTER" "How much does a commercial Zephyr fleet license cost?"
else
  echo "demo: $ADAPTER not found; skipping the adapter question"
fi
step "asking something the knowledge base does not cover (no sources: no receipt)"
"$TRIBUTE" ask "${ASK[@]}" "Who won the football world cup in 2014?"

step "the receipt journal"
"$TRIBUTE" receipts list --journal "$DEMO/receipts"

step "settling the receipts on chain (one Merkle batch)"
"$TRIBUTE" receipts settle --journal "$DEMO/receipts" "${L[@]}" --treasury $TREASURY

step "balances: contributors alice and bob, the model owner, the adapter owner, the treasury"
"$TRIBUTE" chain balance $ALICE $BOB $MODEL_OWNER $ADAPTER_OWNER $TREASURY "${L[@]}"
