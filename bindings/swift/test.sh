#!/usr/bin/env bash
# Builds the Tribute library, checks that the generated Swift sources are current, and
# runs the XCTest suite (`swift test`) and the Swift quickstart where a Swift toolchain
# exists.
#
#   bindings/swift/test.sh
#
# Without `swift` on PATH (as on the Linux build machines) it still builds the static
# library, runs the drift check of the generated sources and links the generated header
# against the static library from C (Tests/link-check), then says that the Swift tests
# were not run and exits 0. It exits non-zero when a step fails: stale generated sources,
# a broken library or link, or — with Swift — a failing test.
#
# The tests need the default models (run `make setup` first; on macOS ONNX Runtime must be
# the macOS build: set ORT_DYLIB_PATH to libonnxruntime.dylib) and the shared LoRA adapters.
# The library's default features include `onchain`: the settle test runs anvil (`npm ci`
# in attribution/contracts) and the debug `tribute` CLI,
# and is skipped without them (it fails when CI is set).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$repo/target}"

fail() { echo "test.sh: $*" >&2; exit 1; }
step() { printf '\n== %s\n' "$*"; }

cd "$repo"
step "building tribute-ffi (debug) and checking the generated Swift sources"
"$here/generate.sh" --check
[[ -f "$target/debug/libtribute_ffi.a" ]] || fail "no static library at $target/debug/libtribute_ffi.a"
# A copy of its own, so that a concurrent cargo build cannot swap it mid-run.
mkdir -p "$target/tribute-ffi-test"
static="$target/tribute-ffi-test/libtribute_ffi.a"
cp "$target/debug/libtribute_ffi.a" "$static.tmp"
mv "$static.tmp" "$static"

# Only the static library goes in lib/: with a shared library next to it, the linker
# would pick that one.
mkdir -p "$here/lib"
ln -sf "$static" "$here/lib/libtribute_ffi.a"

if ! command -v swift >/dev/null; then
  step "no Swift toolchain: linking the generated header and the static library from C instead"
  cc="$(command -v cc || command -v gcc || command -v clang || true)"
  [[ -n "$cc" ]] || fail "no C compiler for the link check"
  out="$(mktemp -d)"
  trap 'rm -rf "$out"' EXIT
  # GCC does not know clang's nullability qualifiers; clang does.
  "$cc" -Wall -D_Nullable= -D_Nonnull= -I "$here/Sources/TributeFFI/include" \
    "$here/Tests/link-check/link_check.c" "$here/lib/libtribute_ffi.a" \
    -ldl -lgcc_s -lutil -lrt -lpthread -lm -lc -o "$out/link_check" || fail "the C link check did not build"
  "$out/link_check" || fail "the C link check failed"
  echo
  echo "test.sh: Swift is not installed here, so the XCTest suite and the Swift quickstart were NOT run"
  echo "test.sh: (the generated sources are current and the static library links); run this script"
  echo "test.sh: on a machine with a Swift 6 toolchain (macOS with Xcode 16, or swift.org for Linux)"
  exit 0
fi

swift --version
if [[ ! -x "$target/debug/tribute" ]]; then
  step "building the tribute CLI (debug; the settle test deploys the ledger with it)"
  cargo build --quiet -p tribute-cli || fail "cargo build -p tribute-cli failed"
fi
step "swift test"
(cd "$here" && TRIBUTE_REPO="$repo" CARGO_TARGET_DIR="$target" swift test -Xlinker -L"$here/lib") || fail "the Swift tests failed"

step "examples/swift (swift run Quickstart)"
out="$(cd "$repo/examples/swift" && swift run -Xlinker -L"$here/lib" Quickstart "$repo")" || { echo "$out"; fail "the Swift quickstart failed"; }
echo "$out"
grep -q "^receipt 0x" <<<"$out" || fail "the Swift quickstart printed no receipt"

echo
echo "test.sh: all Swift checks passed"
