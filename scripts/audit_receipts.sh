#!/usr/bin/env bash
# Receipts anyone can recompute, at scale (issue 22): answers PER_METHOD questions about the
# sample knowledge base (examples/data/zephyr) with each of loo, shapley, ablation and
# retrieval (greedy, signed and journaled: 4 x 25 = 100 receipts by default; one `tribute
# chat` process per method, `/reset` before every question, so each is a fresh ask), then audits
# every journaled receipt with `tribute receipts audit --json` and prints how many match
# exactly, within tolerance, mismatch or cannot be decided, per method. Exits non-zero when
# any receipt does not match (the audit's own exit status).
#
#   scripts/audit_receipts.sh [OUT_DIR]
#
# Environment: TRIBUTE (the CLI binary; default $CARGO_TARGET_DIR/debug/tribute, built with
# `cargo build --workspace --features tribute-inference/finetune --bin tribute`),
# PER_METHOD (default 25, at most 25), METHODS (default "loo shapley ablation retrieval"),
# MAX_TOKENS (default 32). Needs the default models (`make setup`).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
target="${CARGO_TARGET_DIR:-$repo/target}"
tribute="${TRIBUTE:-$target/debug/tribute}"
per_method="${PER_METHOD:-25}"
methods="${METHODS:-loo shapley ablation retrieval}"
max_tokens="${MAX_TOKENS:-32}"
out="${1:-$(mktemp -d)}"
fail() { echo "audit_receipts.sh: $*" >&2; exit 1; }

[[ -x "$tribute" ]] || fail "no CLI at $tribute (set TRIBUTE or build the tribute binary)"
(( per_method >= 1 && per_method <= 25 )) || fail "PER_METHOD must be 1-25"
command -v python3 >/dev/null || fail "python3 is needed for the summary"

questions=(
  "How many times per second does the Zephyr flight controller correct the attitude?"
  "Who released the Zephyr SDK?"
  "In which year was the Zephyr SDK first released?"
  "What does a Zephyr flight controller read wind gusts from?"
  "What is the Zephyr SDK for?"
  "How do I install the Zephyr SDK?"
  "How much free disk space does the Zephyr installer need?"
  "Where does the installer place the Zephyr toolchain?"
  "Which command checks that the anemometer driver is loaded?"
  "What kind of battery cells do Zephyr drones use?"
  "At what charge should Zephyr cells be stored?"
  "How long does a full charge take on the standard dock?"
  "When should the cells be stored at partial charge?"
  "What gusts did the Zephyr autopilot hold a hover in?"
  "When should pilots land a Zephyr drone?"
  "Why should pilots land when gusts exceed 60 km/h?"
  "What reduced drift by half in the field tests?"
  "How strong can the wind be before landing the drone?"
  "Is the Zephyr SDK free?"
  "How much does a commercial Zephyr license cost?"
  "Who collects the Zephyr license fee?"
  "How many drones make a fleet pay a license?"
  "What should I do before each flight to reduce drift?"
  "What happens to the rotors in strong gusts?"
  "What does zephyr doctor check?"
)

mkdir -p "$out"
kb="$out/kb" journal="$out/receipts"
rm -rf "$kb" "$journal"
echo "== $out: ingesting examples/data/zephyr"
"$tribute" ingest --kb "$kb" "$repo/examples/data/zephyr" >/dev/null
# A ledger domain to sign for (no chain is needed to sign or audit).
echo '{"chainId":31337,"contract":"0x5FbDB2315678afecb367f032d93F642f64180aa3"}' >"$out/ledger.json"
# Anvil's public dev key 0: a test key, never a real one.
export TRIBUTE_KEY=0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80

start=$SECONDS
for method in $methods; do
  echo "== asking $per_method questions with $method"
  # One process per method (the model loads once): `tribute chat` with `/reset` before
  # every question, so each turn is an ask without history, signed and journaled.
  for ((i = 0; i < per_method; i++)); do
    printf '/reset\n%s\n' "${questions[$i]}"
  done | "$tribute" chat --kb "$kb" --ledger "$out/ledger.json" --journal "$journal" \
    --rewrite off --top-k 3 --max-tokens "$max_tokens" --temperature 0 --method "$method" \
    --json >"$out/ask-$method.jsonl" || fail "chat with $method failed (see $out/ask-$method.jsonl)"
  n=$(grep -c '"receipt":{' "$out/ask-$method.jsonl" || true)
  (( n == per_method )) || fail "$method: $n signed answers for $per_method questions"
done
ask_s=$((SECONDS - start))

"$tribute" receipts export --journal "$journal" >"$out/receipts.jsonl"
echo "== auditing $(wc -l <"$out/receipts.jsonl") receipts"
start=$SECONDS
status=0
"$tribute" receipts audit "$out/receipts.jsonl" --journal "$journal" --kb "$kb" --json \
  >"$out/audit.jsonl" || status=$?
audit_s=$((SECONDS - start))

python3 - "$out/audit.jsonl" "$ask_s" "$audit_s" <<'EOF'
import collections, json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
summary = next(r["summary"] for r in rows if "summary" in r)
per = collections.defaultdict(collections.Counter)
for r in rows:
    if "summary" in r:
        continue
    method = r.get("method", "?")
    per[method]["error" if "error" in r else r.get("verdict", "?")] += 1
print(json.dumps({"summary": summary, "per_method": per,
                  "ask_seconds": int(sys.argv[2]), "audit_seconds": int(sys.argv[3])}, indent=1))
EOF
exit "$status"
