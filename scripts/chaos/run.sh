#!/usr/bin/env bash
# Chaos at scale (docs/RELIABILITY.md, "Chaos"): bounded, loopback-only fault injection.
#
#   scripts/chaos/run.sh [SCENARIO...]     (make chaos; default: all of them)
#
#   journal  ASK_KILLS SIGKILLs of the journal's own kill-test writer (attribution's
#            journal::child_writer: appends and state changes), TRIBUTE_JOURNAL_KILLS
#   asks     ASK_KILLS SIGKILLs of `tribute mcp` answering extractive asks and journaling
#            their receipts (scripts/chaos/asks.py)
#   ingest   INGEST_KILLS SIGKILLs of `tribute ingest` (bindings/cli crash::, 200 docs a round)
#   settle   SETTLE_ROUNDS settle runs with the anvil node restarted / the settler killed at
#            random moments, then a reorg (scripts/chaos/settle.py); SETTLE_KILL_NODE=1 also
#            SIGKILLs the node (losing its last second of blocks)
#   disk     disk full during ingest and journaling on a small tmpfs (scripts/chaos/disk_full.sh)
#
# Counts: ASK_KILLS (1000), INGEST_KILLS (200), SETTLE_ROUNDS (60); CHAOS_SEED replays a run.
# CHAOS_BUILT=1 uses the CLI already in the target folder (copied: a rebuild cannot swap it).
# Scratch goes to CHAOS_DIR (default a fresh directory under /tmp), removed on success.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
CARGO=${CARGO:-cargo}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
FEATURES=(--workspace --features tribute-inference/finetune)
ASK_KILLS=${ASK_KILLS:-1000}
INGEST_KILLS=${INGEST_KILLS:-200}
SETTLE_ROUNDS=${SETTLE_ROUNDS:-60}
SEED=${CHAOS_SEED:-$(date +%s)}
SCENARIOS=("$@")
[ ${#SCENARIOS[@]} -gt 0 ] || SCENARIOS=(journal asks ingest settle disk)
WORK=${CHAOS_DIR:-$(mktemp -d /tmp/tribute-chaos.XXXXXX)}
mkdir -p "$WORK"
# The scenarios run a copy of the CLI, so a rebuild meanwhile cannot swap it under them.
TRIBUTE=$WORK/bin/tribute
# A public anvil development key (funded on every anvil, worthless elsewhere).
DEV_KEY=0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80

say() { printf '\n== %s (load %s)\n' "$*" "$(cut -d' ' -f1-3 /proc/loadavg)"; }

build_cli() {
  [ -x "$TRIBUTE" ] && return
  [ -n "${CHAOS_BUILT:-}" ] || $CARGO build "${FEATURES[@]}" --bin tribute
  mkdir -p "$WORK/bin"
  cp "$TARGET/debug/tribute" "$TRIBUTE"
}

# A knowledge base with the sample datanet and an extractive engine config signing for a
# made-up ledger (receipts are verified off chain here).
prepare_asks() {
  local dir=$1
  mkdir -p "$dir"
  "$TRIBUTE" ingest --kb "$dir/kb" examples/data/zephyr >/dev/null
  echo '{"chainId":31337,"contract":"0x1111111111111111111111111111111111111111"}' >"$dir/ledger.json"
  cat >"$dir/tribute.toml" <<TOML
index = "$dir/kb"
answer_mode = "extractive"
[receipts]
journal = "$dir/journal"
key_env = "TRIBUTE_KEY"
fee_wei = "1000000000000000"
ledger = { chainId = 31337, contract = "0x1111111111111111111111111111111111111111" }
TOML
}

anvil_bin() {
  (cd attribution/contracts && { test -d node_modules/@foundry-rs || npm ci --silent --no-audit --no-fund; })
  local b
  b=$(ls -d attribution/contracts/node_modules/@foundry-rs/anvil-*/bin/anvil 2>/dev/null | head -1)
  [ -x "$b" ] || { echo "chaos: anvil not found (npm ci in attribution/contracts)" >&2; exit 1; }
  echo "$ROOT/$b"
}

cast_bin() {
  local b
  b=$(ls -d attribution/contracts/node_modules/@foundry-rs/cast-*/bin/cast 2>/dev/null | head -1)
  [ -x "$b" ] || { echo "chaos: cast not found (npm ci in attribution/contracts)" >&2; exit 1; }
  echo "$ROOT/$b"
}

for s in "${SCENARIOS[@]}"; do
  case $s in
    journal)
      say "journal: $ASK_KILLS SIGKILLs of the journal writer"
      TRIBUTE_JOURNAL_KILLS=$ASK_KILLS TRIBUTE_JOURNAL_SEED=$SEED \
        $CARGO test "${FEATURES[@]}" --test it -- --exact journal::survives_sigkill_at_random_moments --nocapture
      ;;
    asks)
      build_cli
      say "asks: $ASK_KILLS SIGKILLs of tribute mcp answering and journaling"
      prepare_asks "$WORK/asks"
      TRIBUTE_KEY=$DEV_KEY python3 scripts/chaos/asks.py "$TRIBUTE" "$WORK/asks" "$ASK_KILLS" "$SEED"
      ;;
    ingest)
      say "ingest: $INGEST_KILLS SIGKILLs of tribute ingest"
      TRIBUTE_INGEST_KILLS=$INGEST_KILLS \
        $CARGO test "${FEATURES[@]}" --test it -- --exact crash::killed_ingests_leave_a_consistent_openable_index --nocapture
      ;;
    settle)
      build_cli
      say "settle: $SETTLE_ROUNDS settle runs against a restarted node, then a reorg"
      mkdir -p "$WORK/settle"
      "$TRIBUTE" ingest --kb "$WORK/settle/kb" examples/data/zephyr >/dev/null
      python3 scripts/chaos/settle.py "$TRIBUTE" "$(anvil_bin)" "$(cast_bin)" "$WORK/settle" \
        "$SETTLE_ROUNDS" "$SEED" ${SETTLE_KILL_NODE:+--kill-node}
      ;;
    disk)
      say "disk: disk full during ingest and journaling"
      scripts/chaos/disk_full.sh
      ;;
    *) echo "chaos: unknown scenario $s (journal asks ingest settle disk)" >&2; exit 2 ;;
  esac
done
[ -n "${CHAOS_DIR:-}" ] || rm -rf "$WORK"
say "chaos: all scenarios passed (seed $SEED)"
