#!/usr/bin/env bash
# Smoke test of artifacts/TributeLedger.json on a throwaway anvil chain (127.0.0.1, random free port).
#
# Deploys the committed bytecode with `cast send --create`, then checks: typehashes and domainSeparator against
# values computed independently with cast; deposit; hashReceipt against cast's own EIP-712 implementation
# (`cast wallet sign --data` must equal `cast wallet sign --no-hash <contract digest>`); receiptLeaf; verifyReceipt
# on a hand-built 2-leaf tree; settleBatch with a `cast wallet sign --data` SettleBatch signature, settledAt and the
# BatchSettled log (found by its root topic), replays (same call, re-signed with the next nonce, an older batch) and
# a forged signature; withdraw; the model registry; the reentrancy guard (test/Reentrant). Prints gas used.
#
# Needs `npm ci` (solc, @foundry-rs/anvil, @foundry-rs/cast) and node. Exits non-zero on the first failure.
set -euo pipefail
cd "$(dirname "$0")"

ANVIL=node_modules/.bin/anvil
CAST=node_modules/.bin/cast
[[ -x $ANVIL && -x $CAST ]] || { echo "smoke.sh: anvil/cast missing; run 'npm ci' in attribution/contracts" >&2; exit 1; }
[[ -f artifacts/TributeLedger.json ]] || { echo "smoke.sh: artifacts missing; run 'node compile.js'" >&2; exit 1; }
cast() { "$CAST" "$@"; }

# anvil's well-known dev accounts
PK0=0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80 # deployer / settler
PK1=0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d # payer
PK2=0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a # payee A
PK3=0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6 # payee B
A1=$(cast wallet address --private-key $PK1)
A2=$(cast wallet address --private-key $PK2)
A3=$(cast wallet address --private-key $PK3)

PORT=$(node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')
RPC=http://127.0.0.1:$PORT
LOG=$(mktemp)
"$ANVIL" --host 127.0.0.1 --port "$PORT" >"$LOG" 2>&1 &
ANVIL_PID=$!
cleanup() { kill "$ANVIL_PID" 2>/dev/null || true; wait "$ANVIL_PID" 2>/dev/null || true; rm -f "$LOG"; }
trap cleanup EXIT

for _ in $(seq 1 100); do
  cast chain-id --rpc-url "$RPC" >/dev/null 2>&1 && break
  kill -0 "$ANVIL_PID" 2>/dev/null || { cat "$LOG" >&2; echo "smoke.sh: anvil exited" >&2; exit 1; }
  sleep 0.1
done
CHAIN_ID=$(cast chain-id --rpc-url "$RPC")

fail() { echo "FAIL: $*" >&2; exit 1; }
eq() { # eq <what> <got> <want>
  local got want
  got=$(tr '[:upper:]' '[:lower:]' <<<"$2"); want=$(tr '[:upper:]' '[:lower:]' <<<"$3")
  [[ $got == "$want" ]] || fail "$1: got $2, want $3"
  echo "ok   $1"
}
jfield() { node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{const v=JSON.parse(s)[process.argv[1]];console.log(typeof v==="string"&&/^0x[0-9a-f]+$/i.test(v)&&process.argv[1]!=="contractAddress"&&process.argv[1]!=="transactionHash"?BigInt(v).toString():v)})' "$1"; }
GAS_REPORT=()
send() { # send <label> <pk> <cast send args...>; prints nothing, records gas
  local label=$1 pk=$2; shift 2
  local out status gas
  out=$(cast send --json --rpc-url "$RPC" --private-key "$pk" "$@" 2>&1 || true)
  [[ $out == \{* ]] || fail "$label: cast send failed: $out"
  status=$(jfield status <<<"$out")
  [[ $status == 1 || $status == 0x1 ]] || fail "$label: tx status $status"
  gas=$(jfield gasUsed <<<"$out")
  GAS_REPORT+=("$(printf '%-44s %8s' "$label" "$gas")")
  LAST_TX=$out
}
expect_revert() { # expect_revert <label> <error selector> <from address> <cast call args...>
  local label=$1 sel=$2 from=$3; shift 3
  local out
  # cast 1.7.1 may exit 0 on a reverted eth_call: judge by the output, not the exit status.
  out=$(cast call --rpc-url "$RPC" --from "$from" "$@" 2>&1 || true)
  grep -qi "execution reverted" <<<"$out" || fail "$label: call succeeded, expected revert ($sel); got: $out"
  grep -qi "${sel#0x}" <<<"$out" || fail "$label: expected error $sel, got: $out"
  echo "ok   $label reverts ($sel)"
}

# ---- deploy --------------------------------------------------------------------------------------------------------
BYTECODE=$(node -p 'require("./artifacts/TributeLedger.json").bytecode')
send "deploy TributeLedger" $PK0 --create "$BYTECODE"
L=$(jfield contractAddress <<<"$LAST_TX")
echo "ledger at $L (chain $CHAIN_ID, $RPC)"
c() { cast call --rpc-url "$RPC" "$L" "$@"; }

# ---- typehashes + domain separator ---------------------------------------------------------------------------------
T_ADAPTER="AdapterUse(bytes32 adapterId,int32 weightMicros)"
T_CHUNK="CitedChunk(bytes32 contentHash,address contributor,uint16 weightBps)"
T_RECEIPT="UsageReceipt(uint16 version,bytes32 receiptId,address payer,address servingNode,bytes32 modelId,AdapterUse[] adapters,bytes32 queryHash,bytes32 answerHash,CitedChunk[] chunks,uint256 fee,uint64 nonce,uint64 timestamp)$T_ADAPTER$T_CHUNK"
T_SETTLE="SettleBatch(address payer,bytes32 root,uint256 total,bytes32 payoutsHash,uint64 batchNonce)"
T_DOMAIN="EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
eq "ADAPTER_USE_TYPEHASH" "$(c 'ADAPTER_USE_TYPEHASH()(bytes32)')" "$(cast keccak "$T_ADAPTER")"
eq "CITED_CHUNK_TYPEHASH" "$(c 'CITED_CHUNK_TYPEHASH()(bytes32)')" "$(cast keccak "$T_CHUNK")"
eq "USAGE_RECEIPT_TYPEHASH" "$(c 'USAGE_RECEIPT_TYPEHASH()(bytes32)')" "$(cast keccak "$T_RECEIPT")"
eq "SETTLE_BATCH_TYPEHASH" "$(c 'SETTLE_BATCH_TYPEHASH()(bytes32)')" "$(cast keccak "$T_SETTLE")"
DOMSEP=$(cast keccak "$(cast abi-encode 'f(bytes32,bytes32,bytes32,uint256,address)' \
  "$(cast keccak "$T_DOMAIN")" "$(cast keccak 'Tribute Ledger')" "$(cast keccak 1)" "$CHAIN_ID" "$L")")
eq "domainSeparator()" "$(c 'domainSeparator()(bytes32)')" "$DOMSEP"

# ---- deposits ------------------------------------------------------------------------------------------------------
send "deposit() 1 ether (new payer)" $PK1 "$L" 'deposit()' --value 1ether
eq "deposits(payer) after deposit" "$(c 'deposits(address)(uint256)' "$A1" | awk '{print $1}')" 1000000000000000000
send "depositFor(payer) 1 ether (existing)" $PK0 "$L" 'depositFor(address)' "$A1" --value 1ether
eq "deposits(payer) after depositFor" "$(c 'deposits(address)(uint256)' "$A1" | awk '{print $1}')" 2000000000000000000

# ---- hashReceipt vs cast's EIP-712 ---------------------------------------------------------------------------------
H1=$(cast keccak receipt-1); H2=$(cast keccak receipt-2); HQ=$(cast keccak query); HA=$(cast keccak answer)
HM=$(cast keccak model); HAD=$(cast keccak adapter); HC1=$(cast keccak chunk-1); HC2=$(cast keccak chunk-2)
RTYPE='(uint16,bytes32,address,address,bytes32,(bytes32,int32)[],bytes32,bytes32,(bytes32,address,uint16)[],uint256,uint64,uint64)'
receipt_tuple() { # <receiptId>
  echo "(1,$1,$A1,$A2,$HM,[($HAD,-250000)],$HQ,$HA,[($HC1,$A2,7000),($HC2,$A3,3000)],1000000000000000,7,1760000000)"
}
receipt_json() { # <receiptId>
  cat <<EOF
{"types":{"EIP712Domain":[{"name":"name","type":"string"},{"name":"version","type":"string"},{"name":"chainId","type":"uint256"},{"name":"verifyingContract","type":"address"}],
"UsageReceipt":[{"name":"version","type":"uint16"},{"name":"receiptId","type":"bytes32"},{"name":"payer","type":"address"},{"name":"servingNode","type":"address"},{"name":"modelId","type":"bytes32"},{"name":"adapters","type":"AdapterUse[]"},{"name":"queryHash","type":"bytes32"},{"name":"answerHash","type":"bytes32"},{"name":"chunks","type":"CitedChunk[]"},{"name":"fee","type":"uint256"},{"name":"nonce","type":"uint64"},{"name":"timestamp","type":"uint64"}],
"AdapterUse":[{"name":"adapterId","type":"bytes32"},{"name":"weightMicros","type":"int32"}],
"CitedChunk":[{"name":"contentHash","type":"bytes32"},{"name":"contributor","type":"address"},{"name":"weightBps","type":"uint16"}]},
"primaryType":"UsageReceipt","domain":{"name":"Tribute Ledger","version":"1","chainId":$CHAIN_ID,"verifyingContract":"$L"},
"message":{"version":1,"receiptId":"$1","payer":"$A1","servingNode":"$A2","modelId":"$HM","adapters":[{"adapterId":"$HAD","weightMicros":-250000}],"queryHash":"$HQ","answerHash":"$HA","chunks":[{"contentHash":"$HC1","contributor":"$A2","weightBps":7000},{"contentHash":"$HC2","contributor":"$A3","weightBps":3000}],"fee":"1000000000000000","nonce":7,"timestamp":1760000000}}
EOF
}
D1=$(c "hashReceipt($RTYPE)(bytes32)" "$(receipt_tuple "$H1")")
D2=$(c "hashReceipt($RTYPE)(bytes32)" "$(receipt_tuple "$H2")")
SIG_JSON=$(cast wallet sign --private-key $PK2 --data "$(receipt_json "$H1")")
SIG_RAW=$(cast wallet sign --private-key $PK2 --no-hash "$D1")
eq "hashReceipt == cast EIP-712 digest (same signature)" "$SIG_RAW" "$SIG_JSON"
SH1=$(c "receiptStructHash($RTYPE)(bytes32)" "$(receipt_tuple "$H1")")
eq "hashReceipt == keccak(0x1901 ‖ sep ‖ structHash)" "$D1" "$(cast keccak "0x1901${DOMSEP#0x}${SH1#0x}")"

# ---- receiptLeaf + 2-leaf Merkle tree ------------------------------------------------------------------------------
LF1=$(c 'receiptLeaf(bytes32)(bytes32)' "$D1")
LF2=$(c 'receiptLeaf(bytes32)(bytes32)' "$D2")
eq "receiptLeaf == keccak(keccak(abi.encode(d)))" "$LF1" "$(cast keccak "$(cast keccak "$D1")")"
lo=$(tr '[:upper:]' '[:lower:]' <<<"$LF1"); hi=$(tr '[:upper:]' '[:lower:]' <<<"$LF2")
[[ $lo < $hi ]] || { t=$lo; lo=$hi; hi=$t; }
ROOT=$(cast keccak "0x${lo#0x}${hi#0x}")
eq "verifyReceipt(leaf1, [leaf2], root)" "$(c 'verifyReceipt(bytes32,bytes32[],bytes32)(bool)' "$LF1" "[$LF2]" "$ROOT")" true
eq "verifyReceipt(leaf2, [leaf1], root)" "$(c 'verifyReceipt(bytes32,bytes32[],bytes32)(bool)' "$LF2" "[$LF1]" "$ROOT")" true
eq "verifyReceipt(wrong leaf)" "$(c 'verifyReceipt(bytes32,bytes32[],bytes32)(bool)' "$H1" "[$LF2]" "$ROOT")" false

# ---- settleBatch ---------------------------------------------------------------------------------------------------
settle_json() { # <root> <total> <payoutsHash> <batchNonce>
  cat <<EOF
{"types":{"EIP712Domain":[{"name":"name","type":"string"},{"name":"version","type":"string"},{"name":"chainId","type":"uint256"},{"name":"verifyingContract","type":"address"}],
"SettleBatch":[{"name":"payer","type":"address"},{"name":"root","type":"bytes32"},{"name":"total","type":"uint256"},{"name":"payoutsHash","type":"bytes32"},{"name":"batchNonce","type":"uint64"}]},
"primaryType":"SettleBatch","domain":{"name":"Tribute Ledger","version":"1","chainId":$CHAIN_ID,"verifyingContract":"$L"},
"message":{"payer":"$A1","root":"$1","total":"$2","payoutsHash":"$3","batchNonce":$4}}
EOF
}
PAYEES="[$A2,$A3]"; AMOUNTS="[1400000000000000,600000000000000]"; TOTAL=2000000000000000
PH=$(cast keccak "$(cast abi-encode 'f(address[],uint256[])' "$PAYEES" "$AMOUNTS")")
eq "payoutsHash == keccak(abi.encode(payees, amounts))" "$(c 'payoutsHash(address[],uint256[])(bytes32)' "$PAYEES" "$AMOUNTS")" "$PH"
SIG=$(cast wallet sign --private-key $PK1 --data "$(settle_json "$ROOT" $TOTAL "$PH" 0)")
eq "settleBatchDigest signed by cast" "$(cast wallet sign --private-key $PK1 --no-hash \
  "$(c 'settleBatchDigest(address,bytes32,uint256,bytes32,uint64)(bytes32)' "$A1" "$ROOT" $TOTAL "$PH" 0)")" "$SIG"
SETTLE='settleBatch(address,bytes32,address[],uint256[],uint64,bytes)'
FORGED=$(cast wallet sign --private-key $PK2 --data "$(settle_json "$ROOT" $TOTAL "$PH" 0)")
expect_revert "settleBatch with a payee's signature" "$(cast sig 'BadSignature()')" "$A2" "$L" "$SETTLE" "$A1" "$ROOT" "$PAYEES" "$AMOUNTS" 0 "$FORGED"
expect_revert "settleBatch with amounts not signed" "$(cast sig 'BadSignature()')" "$A2" "$L" "$SETTLE" "$A1" "$ROOT" "$PAYEES" "[1400000000000001,600000000000000]" 0 "$SIG"
ZERO32=0x0000000000000000000000000000000000000000000000000000000000000000
EV_SETTLED='BatchSettled(address indexed,bytes32 indexed,uint256,uint64,uint256)'
settled_logs() { # settled_logs <payer> <root>: the transaction hashes of BatchSettled(payer, root) logs, one a line
  cast logs --json --rpc-url "$RPC" --from-block 0 --address "$L" "$EV_SETTLED" "$1" "$2" |
    node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{for(const l of JSON.parse(s))console.log(l.transactionHash)})'
}
eq "settledAt(payer, root) before" "$(c 'settledAt(address,bytes32)(uint256)' "$A1" "$ROOT")" 0
eq "BatchSettled logs of root before" "$(settled_logs "$A1" "$ROOT" | wc -l)" 0
send "settleBatch 2 new payees (first batch)" $PK0 "$L" "$SETTLE" "$A1" "$ROOT" "$PAYEES" "$AMOUNTS" 0 "$SIG"
SETTLE_TX=$(jfield transactionHash <<<"$LAST_TX")
eq "settledAt(payer, root) after: its block" "$(c 'settledAt(address,bytes32)(uint256)' "$A1" "$ROOT")" \
  "$(jfield blockNumber <<<"$LAST_TX")"
eq "settledAt(another payer, root)" "$(c 'settledAt(address,bytes32)(uint256)' "$A2" "$ROOT")" 0
eq "BatchSettled log found by its root topic" "$(settled_logs "$A1" "$ROOT")" "$SETTLE_TX"
SETTLE_LOG=$(cast receipt --json --rpc-url "$RPC" "$SETTLE_TX" |
  node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{const l=JSON.parse(s).logs[0];console.log([...l.topics,l.data].join(" "))})')
read -r EV_T0 EV_T1 EV_T2 EV_DATA <<<"$SETTLE_LOG"
eq "BatchSettled topics (signature, payer, root)" "$EV_T0 $EV_T1 $EV_T2" \
  "$(cast keccak 'BatchSettled(address,bytes32,uint256,uint64,uint256)') 0x000000000000000000000000${A1#0x} $ROOT"
eq "BatchSettled data (total, batchNonce, payeeCount)" \
  "$(cast abi-decode 'f()(uint256,uint64,uint256)' "$EV_DATA" | awk '{print $1}' | tr '\n' ' ' | sed 's/ $//')" "$TOTAL 0 2"
eq "batchNonces(payer)" "$(c 'batchNonces(address)(uint64)' "$A1")" 1
eq "deposits(payer) after settle" "$(c 'deposits(address)(uint256)' "$A1" | awk '{print $1}')" 1998000000000000000
eq "balances(payee A)" "$(c 'balances(address)(uint256)' "$A2" | awk '{print $1}')" 1400000000000000
# The same call again (nonce 0 is spent, but the settled root is checked first), and the same root re-signed for
# the next nonce (a second settler that missed the first settlement): both Replay().
expect_revert "settleBatch replay" "$(cast sig 'Replay()')" "$A2" "$L" "$SETTLE" "$A1" "$ROOT" "$PAYEES" "$AMOUNTS" 0 "$SIG"
SIG_RE=$(cast wallet sign --private-key $PK1 --data "$(settle_json "$ROOT" $TOTAL "$PH" 1)")
expect_revert "settleBatch replay re-signed with the next nonce" "$(cast sig 'Replay()')" "$A2" "$L" "$SETTLE" "$A1" "$ROOT" "$PAYEES" "$AMOUNTS" 1 "$SIG_RE"

# second batch to the same payees (steady state: one new slot, its settledAt)
ROOT2=$(cast keccak batch-2)
SIG2=$(cast wallet sign --private-key $PK1 --data "$(settle_json "$ROOT2" $TOTAL "$PH" 1)")
send "settleBatch 2 existing payees" $PK0 "$L" "$SETTLE" "$A1" "$ROOT2" "$PAYEES" "$AMOUNTS" 1 "$SIG2"
eq "settledAt(payer, first root) after the second batch" "$(c 'settledAt(address,bytes32)(uint256)' "$A1" "$ROOT")" \
  "$(jfield blockNumber <<<"$(cast receipt --json --rpc-url "$RPC" "$SETTLE_TX")")"
# The first batch once more, and its root re-signed for the payer's next nonce (2) although it is no longer the latest:
# both Replay(); a root settles at most once per payer.
expect_revert "settleBatch replay of an older batch" "$(cast sig 'Replay()')" "$A2" "$L" "$SETTLE" "$A1" "$ROOT" "$PAYEES" "$AMOUNTS" 0 "$SIG"
SIG_OLD=$(cast wallet sign --private-key $PK1 --data "$(settle_json "$ROOT" $TOTAL "$PH" 2)")
expect_revert "settleBatch older root re-signed for the next nonce" "$(cast sig 'Replay()')" "$A2" "$L" "$SETTLE" "$A1" "$ROOT" "$PAYEES" "$AMOUNTS" 2 "$SIG_OLD"
# a 10-payee batch: 8 new payees + A2, A3
P10="[$A2,$A3"; A10="[1,1"
for i in $(seq 1 8); do P10+=",$(cast wallet address --private-key "$(cast keccak "payee-$i")")"; A10+=",1"; done
P10+="]"; A10+="]"
PH10=$(cast keccak "$(cast abi-encode 'f(address[],uint256[])' "$P10" "$A10")")
ROOT3=$(cast keccak batch-3)
SIG3=$(cast wallet sign --private-key $PK1 --data "$(settle_json "$ROOT3" 10 "$PH10" 2)")
send "settleBatch 10 payees (8 new)" $PK0 "$L" "$SETTLE" "$A1" "$ROOT3" "$P10" "$A10" 2 "$SIG3"
ROOT4=$(cast keccak batch-4)
SIG4=$(cast wallet sign --private-key $PK1 --data "$(settle_json "$ROOT4" 10 "$PH10" 3)")
send "settleBatch 10 existing payees" $PK0 "$L" "$SETTLE" "$A1" "$ROOT4" "$P10" "$A10" 3 "$SIG4"
ROOT5=$(cast keccak batch-5)
SIG5=$(cast wallet sign --private-key $PK1 --data "$(settle_json "$ROOT5" 3000000000000000000 "$PH" 4)")
expect_revert "settleBatch over the deposit" "$(cast sig 'InsufficientDeposit(uint256,uint256)')" "$A2" "$L" "$SETTLE" "$A1" "$ROOT5" "$PAYEES" "[2000000000000000000,1000000000000000000]" 4 \
  "$(cast wallet sign --private-key $PK1 --data "$(settle_json "$ROOT5" 3000000000000000000 \
     "$(cast keccak "$(cast abi-encode 'f(address[],uint256[])' "$PAYEES" "[2000000000000000000,1000000000000000000]")")" 4)")"
expect_revert "settleBatch stale nonce" "$(cast sig 'InvalidNonce(uint64,uint64)')" "$A2" "$L" "$SETTLE" "$A1" "$ROOT5" "$PAYEES" "$AMOUNTS" 0 "$SIG"
expect_revert "settleBatch length mismatch" "$(cast sig 'LengthMismatch()')" "$A2" "$L" "$SETTLE" "$A1" "$ROOT5" "$PAYEES" "[1]" 4 "$SIG"
expect_revert "settleBatch zero root" "$(cast sig 'EmptyBatch()')" "$A2" "$L" "$SETTLE" "$A1" "$ZERO32" "$PAYEES" "$AMOUNTS" 4 "$SIG"
# A payee word with dirty upper bits is refused by the ABI decoder (empty revert data) before anything else: the
# payouts hash and the credit loop read the payee words raw from calldata.
CLEAN=$(cast calldata "$SETTLE" "$A1" "$ROOT5" "$PAYEES" "$AMOUNTS" 4 "$SIG")
DIRTY=$(node -e 'const s=process.argv[1];const i=2+2*(4+0xe0);console.log(s.slice(0,i)+"01"+s.slice(i+2))' "$CLEAN")
[[ ${CLEAN:0:$((2+2*(4+0xe0)))} == "${DIRTY:0:$((2+2*(4+0xe0)))}" && $CLEAN != "$DIRTY" ]] || fail "dirty calldata not built"
expect_revert "settleBatch as built for the dirty-payee check" "$(cast sig 'BadSignature()')" "$A2" "$L" --data "$CLEAN"
out=$(cast call --rpc-url "$RPC" --from "$A2" "$L" --data "$DIRTY" 2>&1 || true)
grep -qi 'execution reverted' <<<"$out" && grep -q 'data: "0x"' <<<"$out" || fail "settleBatch with a dirty payee word: $out"
echo "ok   settleBatch with a dirty payee word reverts (no data)"

# ---- withdraw ------------------------------------------------------------------------------------------------------
send "withdraw()" $PK2 "$L" 'withdraw()'
eq "balances(payee A) after withdraw" "$(c 'balances(address)(uint256)' "$A2")" 0
expect_revert "second withdraw()" "$(cast sig 'NothingToWithdraw()')" "$A2" "$L" 'withdraw()'
send "withdrawDeposit(1 gwei)" $PK1 "$L" 'withdrawDeposit(uint256)' 1000000000

# ---- registry ------------------------------------------------------------------------------------------------------
send "registerModel" $PK2 "$L" 'registerModel(bytes32,address)' "$HM" "$A2"
eq "modelOwner" "$(c 'modelOwner(bytes32)(address)' "$HM")" "$A2"
expect_revert "registerModel twice" "$(cast sig 'AlreadyRegistered()')" "$A3" "$L" 'registerModel(bytes32,address)' "$HM" "$A3"
expect_revert "transferModel by non-owner" "$(cast sig 'NotOwner()')" "$A3" "$L" 'transferModel(bytes32,address)' "$HM" "$A3"
send "transferModel" $PK2 "$L" 'transferModel(bytes32,address)' "$HM" "$A3"
eq "modelOwner after transfer" "$(c 'modelOwner(bytes32)(address)' "$HM")" "$A3"
send "registerAdapter" $PK3 "$L" 'registerAdapter(bytes32,address)' "$HAD" "$A3"
eq "adapterOwner" "$(c 'adapterOwner(bytes32)(address)' "$HAD")" "$A3"
eq "adapterManifest (registered without one)" "$(c 'adapterManifest(bytes32)(bytes32)' "$HAD")" "$(cast to-bytes32 0x)"
HTA=$(cast keccak trained-adapter); HMAN=$(cast keccak manifest)
expect_revert "registerTrainedAdapter with a zero manifest" "$(cast sig 'ZeroManifest()')" "$A3" "$L" 'registerTrainedAdapter(bytes32,address,bytes32)' "$HTA" "$A3" "$(cast to-bytes32 0x)"
expect_revert "registerTrainedAdapter on a registered id" "$(cast sig 'AlreadyRegistered()')" "$A3" "$L" 'registerTrainedAdapter(bytes32,address,bytes32)' "$HAD" "$A3" "$HMAN"
send "registerTrainedAdapter" $PK3 "$L" 'registerTrainedAdapter(bytes32,address,bytes32)' "$HTA" "$A3" "$HMAN"
eq "adapterManifest" "$(c 'adapterManifest(bytes32)(bytes32)' "$HTA")" "$HMAN"
expect_revert "registerAdapter over a trained adapter" "$(cast sig 'AlreadyRegistered()')" "$A2" "$L" 'registerAdapter(bytes32,address)' "$HTA" "$A2"
send "transferAdapter (trained)" $PK3 "$L" 'transferAdapter(bytes32,address)' "$HTA" "$A2"
eq "adapterOwner after transfer" "$(c 'adapterOwner(bytes32)(address)' "$HTA")" "$A2"
eq "adapterManifest kept by the transfer" "$(c 'adapterManifest(bytes32)(bytes32)' "$HTA")" "$HMAN"

# ---- reentrancy guard ----------------------------------------------------------------------------------------------
RBYTECODE=$(node -p 'require("./artifacts/Reentrant.json").bytecode')
send "deploy Reentrant" $PK0 --create "$RBYTECODE$(cast abi-encode 'f(address)' "$L" | sed 's/^0x//')"
R=$(jfield contractAddress <<<"$LAST_TX")
send "Reentrant.attackDeposit (re-entry caught)" $PK0 "$R" 'attackDeposit()' --value 1000
eq "Reentrant.reentryAttempts" "$(cast call --rpc-url "$RPC" "$R" 'reentryAttempts()(uint256)')" 1
eq "Reentrant.reentered" "$(cast call --rpc-url "$RPC" "$R" 'reentered()(bool)')" false
eq "Reentrant.lastError" "$(cast call --rpc-url "$RPC" "$R" 'lastError()(bytes)')" "$(cast sig 'Reentrancy()')"
PR="[$R]"; AR="[5]"; ROOT6=$(cast keccak batch-6)
PHR=$(cast keccak "$(cast abi-encode 'f(address[],uint256[])' "$PR" "$AR")")
SIG6=$(cast wallet sign --private-key $PK1 --data "$(settle_json "$ROOT6" 5 "$PHR" 4)")
send "settleBatch paying Reentrant" $PK0 "$L" "$SETTLE" "$A1" "$ROOT6" "$PR" "$AR" 4 "$SIG6"
send "Reentrant.attack (withdraw, re-entry caught)" $PK0 "$R" 'attack()'
eq "Reentrant.reentryAttempts after attack" "$(cast call --rpc-url "$RPC" "$R" 'reentryAttempts()(uint256)')" 2
eq "Reentrant.reentered after attack" "$(cast call --rpc-url "$RPC" "$R" 'reentered()(bool)')" false
eq "Reentrant balance drained once" "$(c 'balances(address)(uint256)' "$R")" 0

echo
echo "test vectors (chain $CHAIN_ID, ledger $L, receipt = receipt_tuple(keccak(\"receipt-1\"))):"
echo "  domainSeparator     $DOMSEP"
echo "  receiptStructHash   $SH1"
echo "  hashReceipt         $D1"
echo "  receiptLeaf         $LF1"
echo "  2-leaf root         $ROOT"
echo "  payoutsHash         $PH  (payees $PAYEES, amounts $AMOUNTS)"
echo "  SettleBatch sig     $SIG  (payer $A1, nonce 0, total $TOTAL)"
echo
echo "gas used:"
printf '  %s\n' "${GAS_REPORT[@]}"
echo "smoke test passed"
