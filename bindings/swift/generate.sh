#!/usr/bin/env bash
# Regenerates the Swift sources of the Tribute bindings from the compiled tribute-ffi
# library (uniffi library mode):
#   Sources/Tribute/Tribute.swift                the Swift API
#   Sources/TributeFFI/include/TributeFFI.h      the C declarations it calls
#   Sources/TributeFFI/include/module.modulemap  the clang module `TributeFFI`
#
#   bindings/swift/generate.sh           regenerate the checked-in sources
#   bindings/swift/generate.sh --check   fail if the checked-in sources differ (CI)
#
# No Swift toolchain is needed: the generator is Rust (uniffi-bindgen-swift). The
# modulemap uniffi writes says `use "Darwin"`, a module that exists on Apple platforms
# only; the line is removed so that the same package builds on Linux (the header includes
# only <stdbool.h> and <stdint.h>, which the `_Builtin_*` modules cover everywhere).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$repo/target}"
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
"$target/debug/uniffi-bindgen-swift" --swift-sources --headers --modulemap \
  --module-name TributeFFI --modulemap-filename module.modulemap "$lib" "$tmp/gen" >/dev/null \
  || fail "uniffi-bindgen-swift failed"
mkdir -p "$tmp/Sources/Tribute" "$tmp/Sources/TributeFFI/include"
mv "$tmp/gen/Tribute.swift" "$tmp/Sources/Tribute/Tribute.swift"
mv "$tmp/gen/TributeFFI.h" "$tmp/Sources/TributeFFI/include/TributeFFI.h"
sed '/use "Darwin"/d' "$tmp/gen/module.modulemap" > "$tmp/Sources/TributeFFI/include/module.modulemap"

generated=(Sources/Tribute/Tribute.swift Sources/TributeFFI/include/TributeFFI.h
           Sources/TributeFFI/include/module.modulemap)
if (( check )); then
  stale=0
  for f in "${generated[@]}"; do
    if ! diff -u "$here/$f" "$tmp/$f" >"$tmp/diff" 2>&1; then
      head -30 "$tmp/diff" >&2
      stale=1
    fi
  done
  (( stale == 0 )) || fail "the checked-in Swift sources are stale: run bindings/swift/generate.sh and commit the result"
  echo "generate.sh: the Swift sources are up to date"
else
  for f in "${generated[@]}"; do
    mkdir -p "$(dirname "$here/$f")"
    cp "$tmp/$f" "$here/$f"
  done
  echo "generate.sh: wrote ${generated[*]} in $here"
fi
