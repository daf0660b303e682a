#!/usr/bin/env bash
# RUSTC_WRAPPER for the fuzz build (run.sh sets it): crates that no fuzz target runs are
# compiled without AFL's coverage instrumentation, at opt-level 0 and without debug info.
#
# cargo-afl puts its flags (opt-level 3, one codegen unit, SanitizerCoverage with
# trace-compares) in RUSTFLAGS, which reach every crate of the graph. The graph is the union
# of all targets' dependencies, and `config_toml` and `mcp_args` need the `tribute` facade, so
# it holds tantivy, ONNX Runtime's bindings, tokenizers, alloy's transaction types, tokio and
# clap although no target calls into them. Instrumenting and optimising those was most of the
# cold build's CPU time; coverage of code that never runs guides nothing, and leaving it out
# also keeps AFL's edge map to the code the targets reach.
#
# Everything else (the Tribute crates, the parsers they call, serde, the hashing and signing
# code) keeps cargo-afl's flags. A crate listed here by mistake still runs correctly, only
# slower and without coverage feedback.
set -euo pipefail

rustc=$1
shift

crate=
previous=
for arg in "$@"; do
  if [[ $previous == --crate-name ]]; then
    crate=$arg
    break
  fi
  previous=$arg
done

case $crate in
  # tantivy (BM25), hnsw_rs and fastembed: the index's search side, not its document loaders.
  tantivy | tantivy_* | bitpacking | census | datasketches | sketches_ddsketch | fastdivide | fs4 | \
    levenshtein_automata | lru | lz4_flex | measure_time | murmurhash32 | oneshot | ownedbytes | \
    zstd | zstd_safe | htmlescape | arc_swap | downcast_rs | typetag | erased_serde | inventory | \
    hnsw_rs | anndists | mmap_rs | cpu_time | rayon | rayon_core | rayon_cond | crossbeam_* | \
    fastembed | ort | ort_sys | ndarray | matrixmultiply | num_complex | rawpointer | libloading | \
    tokenizers | onig | onig_sys | esaxx_rs | spm_precompiled | monostate | macro_rules_attribute | \
    dary_heap | compact_str | unicode_normalization_alignments | unicode_categories | \
    notify | notify_debouncer_mini | notify_types | inotify | inotify_sys | walkdir | same_file | glob | \
    minijinja | minijinja_contrib | memo_map | chrono | iana_time_zone | jiff | env_logger | env_filter | \
    alloy_network | alloy_network_primitives | alloy_consensus | alloy_consensus_any | alloy_eips | \
    alloy_eip2124 | alloy_eip2930 | alloy_eip7702 | alloy_eip7928 | alloy_rpc_types_any | \
    alloy_rpc_types_eth | alloy_serde | alloy_json_rpc | alloy_trie | nybbles | serde_with | \
    eth_keystore | scrypt | salsa20 | pbkdf2 | aes | ctr | cbc | cipher | uuid | \
    tokio | tokio_util | mio | socket2 | signal_hook_registry | futures | futures_* | \
    clap | clap_builder | clap_lex | anstream | anstyle | anstyle_* | colorchoice | strsim)
    ;;
  *) exec "$rustc" "$@" ;;
esac

args=()
while (($#)); do
  if [[ $1 == -C && $# -gt 1 && ($2 == passes=sancov* || $2 == llvm-args=-sanitizer-coverage*) ]]; then
    shift 2
    continue
  fi
  args+=("$1")
  shift
done
# rustc takes the last -C value given: these override cargo-afl's.
exec "$rustc" "${args[@]}" -C opt-level=0 -C debuginfo=0
