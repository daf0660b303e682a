#!/usr/bin/env bash
# Regenerates the Kotlin sources of the Tribute bindings from the compiled tribute-ffi
# library (uniffi library mode) into src/main/kotlin/tribute/tribute_ffi.kt.
#
#   bindings/kotlin/generate.sh           regenerate the checked-in sources
#   bindings/kotlin/generate.sh --check   fail if the checked-in sources differ (CI)
#
# Builds tribute-ffi and uniffi-bindgen first (debug; $CARGO_TARGET_DIR if set), unless
# TRIBUTE_PREBUILT=1 says the workspace build already made both. The two
# are built in separate cargo calls so that uniffi's `cli` feature never reaches the
# library.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$repo/target}"
out="$here/src/main/kotlin"
fail() { echo "generate.sh: $*" >&2; exit 1; }

check=0
case "${1:-}" in
  "") ;;
  --check) check=1 ;;
  *) fail "unknown argument $1 (use --check)" ;;
esac

cd "$repo"
if [[ "${TRIBUTE_PREBUILT:-}" == 1 ]]; then
  # `make test` has built the whole workspace once (cargo build --workspace --lib --bins
  # --tests); a `-p tribute-ffi` build would resolve features for this crate alone and
  # recompile much of the dependency tree. The generated sources are the same either way.
  :
else
  cargo build --quiet -p tribute-ffi || fail "cargo build -p tribute-ffi failed"
  cargo build --quiet -p uniffi-bindgen || fail "cargo build -p uniffi-bindgen failed"
fi
lib="$target/debug/libtribute_ffi.so"
[[ -f "$lib" ]] || fail "$lib is missing after the build"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"$target/debug/uniffi-bindgen" generate --library "$lib" --language kotlin --no-format \
  --out-dir "$tmp" >/dev/null || fail "uniffi-bindgen failed"

if (( check )); then
  if ! diff -ru "$out" "$tmp" >"$tmp.diff" 2>&1; then
    head -40 "$tmp.diff" >&2
    rm -f "$tmp.diff"
    fail "the checked-in Kotlin sources are stale: run bindings/kotlin/generate.sh and commit the result"
  fi
  rm -f "$tmp.diff"
  echo "generate.sh: the Kotlin sources are up to date"
else
  rm -rf "$out"
  mkdir -p "$out"
  cp -R "$tmp/." "$out/"
  echo "generate.sh: wrote $(cd "$out" && find . -name '*.kt' | sed 's|^\./||' | tr '\n' ' ')into $out"
fi
