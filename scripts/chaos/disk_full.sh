#!/usr/bin/env bash
# Chaos (d): disk full during ingest and journaling. Mounts a small tmpfs (needs root, or
# CAP_SYS_ADMIN), points TRIBUTE_CHAOS_FULL_DIR into it and runs the two ignored
# `disk_full::` tests of the CLI's integration suite (bindings/cli/tests/it/disk_full.rs);
# unmounts on exit. DISK_FULL_MB sets the size (default 32).
set -euo pipefail
cd "$(dirname "$0")/../.."
CARGO=${CARGO:-cargo}
MNT=$(mktemp -d /tmp/tribute-diskfull.XXXXXX)
cleanup() { umount "$MNT" 2>/dev/null || true; rmdir "$MNT" 2>/dev/null || true; }
trap cleanup EXIT
if ! mount -t tmpfs -o "size=${DISK_FULL_MB:-32}m" tmpfs "$MNT" 2>/dev/null; then
  echo "disk_full: cannot mount a tmpfs at $MNT (run as root, or give this user CAP_SYS_ADMIN)" >&2
  exit 1
fi
df -h "$MNT" | tail -1
TRIBUTE_CHAOS_FULL_DIR=$MNT $CARGO test --workspace --features tribute-inference/finetune --test it -- \
  --ignored --exact --test-threads 1 --nocapture \
  disk_full::disk_full_during_ingest disk_full::disk_full_during_journaling
