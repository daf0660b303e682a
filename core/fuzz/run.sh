#!/usr/bin/env bash
# Builds Tribute's fuzz targets with cargo-afl (AFL++ on stable Rust) and runs each for a
# bounded time, then prints execs, execs/s, edges and crashes per target:
#
#   core/fuzz/run.sh SECONDS [TARGET...]      (`make fuzz`, `make fuzz-ci`)
#
# First use installs cargo-afl $AFL_VERSION into $CARGO_HOME/bin and builds AFL++ into
# $TRIBUTE_HOME/afl (both reused afterwards; cache those two for CI). The instrumented
# targets build into $TRIBUTE_HOME/fuzz-target/opt$AFL_OPT_LEVEL (FUZZ_TARGET_DIR), AFL's
# findings go to $TRIBUTE_HOME/fuzz-out/TARGET (FUZZ_OUT). Seeds: <crate>/fuzz/corpus/TARGET.
# Exits 1 when any target saved a crash (the inputs are listed; replay one with
# `$FUZZ_TARGET_DIR/HOST/release/TARGET < FILE`, HOST as `rustc -vV` names it).
set -euo pipefail

seconds=${1:?usage: core/fuzz/run.sh SECONDS [TARGET...]}
shift
root=$(cd "$(dirname "$0")/../.." && pwd)
tribute_home=${TRIBUTE_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/tribute}
AFL_VERSION=0.18.2
# cargo-afl keeps AFL++ under $XDG_DATA_HOME/afl.rs: put it beside the other cached tools.
export XDG_DATA_HOME=$tribute_home/afl
# cargo-afl optimises at AFL_OPT_LEVEL (default 3); `make fuzz-ci` builds at 1 (or 0), which
# costs less than half the CPU time for slower targets. Each level builds into its own folder.
export AFL_OPT_LEVEL=${AFL_OPT_LEVEL:-3}
export CARGO_TARGET_DIR=${FUZZ_TARGET_DIR:-$tribute_home/fuzz-target/opt$AFL_OPT_LEVEL}
out_root=${FUZZ_OUT:-$tribute_home/fuzz-out}
# How long one input may run (ms) before AFL counts it as a hang.
timeout_ms=${FUZZ_TIMEOUT_MS:-2000}

# crate folder : target, in the order they run.
all=(
  index:jsonl index:markdown index:pdf index:html index:docx index:chunker
  attribution:receipt_json attribution:receipt_verify attribution:journal
  inference:peft_adapter inference:onnx_adapter
  core:config_toml bindings/cli:mcp_args
)
selected=()
if (($#)); then
  for want in "$@"; do
    match=
    for t in "${all[@]}"; do [[ ${t#*:} == "$want" ]] && match=$t; done
    [[ -n $match ]] || { echo "run.sh: no fuzz target $want (targets: ${all[*]#*:})" >&2; exit 2; }
    selected+=("$match")
  done
else
  selected=("${all[@]}")
fi

if [[ $(cargo afl --version 2>/dev/null) != *"$AFL_VERSION"* ]]; then
  echo "run.sh: installing cargo-afl $AFL_VERSION"
  cargo install --locked --quiet cargo-afl --version "$AFL_VERSION"
fi
rustc_id=$(rustc -V | awk '{ print $2 "-" substr($3, 2, 7) }')
if [[ ! -x $XDG_DATA_HOME/afl.rs/rustc-$rustc_id/afl.rs-$AFL_VERSION/afl/bin/afl-fuzz ]]; then
  echo "run.sh: building AFL++ into $XDG_DATA_HOME (once)"
  cargo afl config --build --force >/dev/null
fi

# An explicit --target keeps cargo-afl's RUSTFLAGS (opt-level 3, one codegen unit, coverage)
# off build scripts and proc macros, which then build as release's build-override says
# (opt-level 0); rustc-wrapper.sh keeps them off the crates no target runs.
host=$(rustc -vV | sed -n 's/^host: //p')
export RUSTC_WRAPPER=$root/core/fuzz/rustc-wrapper.sh
start=$(date +%s)
echo "run.sh: building the instrumented targets into $CARGO_TARGET_DIR"
(cd "$root/core/fuzz" && cargo afl build --release --locked --workspace --bins --target "$host")
built=$(date +%s)
echo "run.sh: built in $((built - start)) s"

scratch_base=/dev/shm
[[ -d $scratch_base && -w $scratch_base ]] || scratch_base=${TMPDIR:-/tmp}
summary=$out_root/summary.md
mkdir -p "$out_root"
{
  echo "| target | seconds | execs | execs/s | edges | corpus | crashes | hangs |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|"
} >"$summary"
crashed=()
for t in "${selected[@]}"; do
  crate=${t%%:*} target=${t#*:}
  corpus=$root/$crate/fuzz/corpus/$target
  out=$out_root/$target
  bin=$CARGO_TARGET_DIR/$host/release/$target
  rm -rf "$out"
  mkdir -p "$out"
  scratch=$(mktemp -d "$scratch_base/tribute-fuzz-$target.XXXXXX")
  echo "run.sh: $target for $seconds s (seeds $corpus, findings $out)"
  # One seed outside AFL first: a missing prerequisite says so here, not as a failed dry run.
  first=$(find "$corpus" -type f | sort | head -n 1)
  if ! TRIBUTE_FUZZ_SCRATCH=$scratch "$bin" <"$first" >"$out/smoke.log" 2>&1; then
    rm -rf "$scratch"
    echo "run.sh: $target fails on its seed $first:" >&2
    tail -n 30 "$out/smoke.log" >&2
    exit 1
  fi
  # AFL_NO_AFFINITY: shared CI machines have no free core to pin to.
  if ! TRIBUTE_FUZZ_SCRATCH=$scratch AFL_NO_UI=1 AFL_NO_AFFINITY=1 AFL_SKIP_CPUFREQ=1 \
    AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_SUPPRESS_EXCESSIVE_WARNINGS=1 \
    cargo afl fuzz -V "$seconds" -t "$timeout_ms" -i "$corpus" -o "$out" -- "$bin" \
    >"$out/afl.log" 2>&1; then
    rm -rf "$scratch"
    echo "run.sh: afl-fuzz failed on $target; the end of $out/afl.log:" >&2
    tail -n 30 "$out/afl.log" >&2
    exit 1
  fi
  rm -rf "$scratch"
  stats=$out/default/fuzzer_stats
  afl_stat() { awk -F' *: *' -v k="$1" '$1 == k { print $2 }' "$stats"; }
  crashes=$(afl_stat saved_crashes)
  printf '| %s | %s | %s | %s | %s / %s | %s | %s | %s |\n' "$target" "$(afl_stat run_time)" \
    "$(afl_stat execs_done)" "$(afl_stat execs_per_sec)" "$(afl_stat edges_found)" "$(afl_stat total_edges)" \
    "$(afl_stat corpus_count)" "$crashes" "$(afl_stat saved_hangs)" | tee -a "$summary"
  ((crashes == 0)) || crashed+=("$out/default/crashes")
done
echo "run.sh: total $(($(date +%s) - start)) s (build $((built - start)) s); table in $summary"
if ((${#crashed[@]})); then
  echo "run.sh: crashes found; replay with \$FUZZ_TARGET_DIR/$host/release/TARGET < FILE:" >&2
  for d in "${crashed[@]}"; do ls -1 "$d"/id:* >&2; done
  exit 1
fi
