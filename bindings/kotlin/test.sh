#!/usr/bin/env bash
# Builds the Tribute library, checks that the generated Kotlin sources are current,
# compiles the bindings with the Kotlin/JVM suite and examples/kotlin/Quickstart.kt, and
# runs both on the real models. Fails loudly: any failing step stops the script with a
# non-zero exit.
#
# The library (default features, which include `onchain`) is copied to
# $CARGO_TARGET_DIR/tribute-ffi-test/ and loaded from there by the JVM, so a concurrent
# cargo build cannot swap it mid-run; the suite settles receipts on a local anvil chain,
# which needs anvil (`npm ci` in attribution/contracts; without it the test is skipped, or
# fails when CI is set) and the debug `tribute` CLI (built here when missing).
#
#   bindings/kotlin/test.sh
#
# Installs what it needs when missing: a JDK and JNA from Debian (`default-jdk-headless`,
# `libjna-java`; needs root and apt), the Kotlin compiler from npm (`kotlin-compiler`,
# into $TRIBUTE_HOME/kotlin). The compiled classes are cached in $TRIBUTE_HOME/kotlin/build,
# keyed by a hash of the sources, so an unchanged run skips kotlinc (15-70 s). The tests need
# the default models (run `make setup` first) and the LoRA adapters of the shared fixtures.
#
# Environment: TRIBUTE_KOTLIN_TESTS=substring runs only the tests whose name contains it.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
home="${TRIBUTE_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/tribute}"
target="${CARGO_TARGET_DIR:-$repo/target}"
kotlin_version=2.4.20
kotlin_home="$home/kotlin/node_modules/kotlin-compiler"
jna=/usr/share/java/jna.jar

fail() { echo "test.sh: $*" >&2; exit 1; }
step() { printf '\n== %s\n' "$*"; }
as_root() { if [[ $(id -u) == 0 ]]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else return 1; fi; }

# --- what the build needs -------------------------------------------------------------
apt_packages=()
command -v java >/dev/null && command -v javac >/dev/null || apt_packages+=(default-jdk-headless)
[[ -f "$jna" ]] || apt_packages+=(libjna-java)
if (( ${#apt_packages[@]} )); then
  step "installing ${apt_packages[*]} (apt)"
  command -v apt-get >/dev/null || fail "${apt_packages[*]} missing and no apt-get: install a JDK and JNA ($jna)"
  as_root apt-get update -qq || fail "apt-get update failed"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${apt_packages[@]}" \
    || fail "apt-get install ${apt_packages[*]} failed"
fi
[[ -f "$jna" ]] || fail "JNA is missing at $jna (Debian: apt-get install libjna-java)"
if [[ ! -x "$kotlin_home/bin/kotlinc" ]]; then
  step "installing kotlin-compiler@$kotlin_version (npm) into $home/kotlin"
  command -v npm >/dev/null || fail "npm is required to install the Kotlin compiler"
  mkdir -p "$home/kotlin"
  npm install --prefix "$home/kotlin" --silent --no-audit --no-fund "kotlin-compiler@$kotlin_version" \
    || fail "npm install kotlin-compiler@$kotlin_version failed"
fi
[[ -x "$kotlin_home/bin/kotlinc" ]] || fail "kotlinc is missing at $kotlin_home/bin/kotlinc"
chmod +x "$kotlin_home"/bin/* 2>/dev/null || true
lib="$kotlin_home/lib"
for jar in kotlin-stdlib.jar kotlinx-coroutines-core-jvm.jar kotlin-test.jar; do
  [[ -f "$lib/$jar" ]] || fail "$lib/$jar is missing (kotlin-compiler@$kotlin_version from npm ships it)"
done

# --- the library and the generated sources ---------------------------------------------
cd "$repo"
step "building tribute-ffi (debug) and checking the generated Kotlin sources"
start=$SECONDS
"$here/generate.sh" --check
echo "build + drift check: $((SECONDS - start)) s"
[[ -f "$target/debug/libtribute_ffi.so" ]] || fail "no $target/debug/libtribute_ffi.so"
libdir="$target/tribute-ffi-test"
mkdir -p "$libdir"
cp "$target/debug/libtribute_ffi.so" "$libdir/libtribute_ffi.so.tmp"
mv "$libdir/libtribute_ffi.so.tmp" "$libdir/libtribute_ffi.so"

if [[ ! -x "$target/debug/tribute" ]]; then
  step "building the tribute CLI (debug; the settle test deploys the ledger with it)"
  cargo build --quiet -p tribute-cli || fail "cargo build -p tribute-cli failed"
fi

# --- compile (cached by the sources' hash) ---------------------------------------------
sources=("$here/src/main/kotlin/tribute/tribute_ffi.kt" "$here/src/test/kotlin/tribute/TributeTest.kt"
         "$repo/examples/kotlin/Quickstart.kt")
key="$( (echo "$kotlin_version"; cat "${sources[@]}") | sha256sum | cut -c1-16)"
build="$home/kotlin/build"
jar="$build/tribute-kotlin-$key.jar"
classpath="$jna:$lib/kotlinx-coroutines-core-jvm.jar:$lib/kotlin-test.jar"
if [[ -f "$jar" ]]; then
  step "kotlinc: unchanged sources, using $jar"
else
  step "kotlinc (15-70 s)"
  mkdir -p "$build"
  start=$SECONDS
  JAVA_OPTS="${JAVA_OPTS:-} -Xss4m" "$kotlin_home/bin/kotlinc" -nowarn -jvm-target 17 -cp "$classpath" \
    -d "$jar.tmp.jar" "${sources[@]}" || fail "kotlinc failed"
  mv "$jar.tmp.jar" "$jar"
  find "$build" -name 'tribute-kotlin-*.jar' ! -name "$(basename "$jar")" -delete
  echo "kotlinc: $((SECONDS - start)) s"
fi

# --- run --------------------------------------------------------------------------------
run_java() {
  java -Djna.library.path="$libdir" -Dtribute.repo="$repo" -Dtribute.target="$target" \
    -cp "$jar:$classpath:$lib/kotlin-stdlib.jar" "$@"
}
step "Kotlin/JVM suite"
start=$SECONDS
run_java tribute.TributeTestKt || fail "the Kotlin suite failed"
echo "suite: $((SECONDS - start)) s"

step "examples/kotlin/Quickstart.kt"
start=$SECONDS
out="$(run_java QuickstartKt "$repo")" || { echo "$out"; fail "the Kotlin quickstart failed"; }
echo "$out"
grep -q "^receipt 0x" <<<"$out" || fail "the quickstart printed no receipt"
echo "quickstart: $((SECONDS - start)) s"

echo
echo "test.sh: all Kotlin checks passed"
