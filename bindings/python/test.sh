#!/usr/bin/env bash
# Builds the Python package in develop mode and runs its tests, the stub check and a type
# check of the stubs. Fails loudly: any failing step stops the script with its exit code.
#
#   bindings/python/test.sh [pytest args…]
#
# The virtualenv lives in $TRIBUTE_HOME/pyvenv (default ~/.cache/tribute/pyvenv) and is
# created on first use (maturin, pytest, mypy, the integrations' frameworks,
# langchain-core and llama-index-core, and their conformance suites and clients,
# langchain-tests and mcp, and ray[data,serve] for tribute.ray, from PyPI). The tests
# get a throwaway PostgreSQL (index/tests/pg/pg.sh) unless TRIBUTE_TEST_PG_URL names one.
# The extension is a debug build
# through cargo, so it shares the workspace's target directory ($CARGO_TARGET_DIR if set)
# and its cache. The tests need the default models: run `make setup` first.
# TRIBUTE_PREBUILT=1 (what `make test` uses after `cargo build --workspace --lib --bins
# --tests`) takes the extension from that build instead and puts this checkout on the
# venv's path.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$repo/target}"
home="${TRIBUTE_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/tribute}"
venv="$home/pyvenv"
py="$venv/bin/python"

fail() { echo "test.sh: $*" >&2; exit 1; }
step() { printf '\n== %s\n' "$*"; }

if [[ ! -x "$py" ]]; then
  step "creating the virtualenv $venv"
  python3 -m venv "$venv" || fail "python3 -m venv failed (Debian: apt-get install python3-venv)"
fi
if ! "$py" -c "import maturin, pytest, mypy" 2>/dev/null; then
  step "installing maturin, pytest and mypy from PyPI"
  "$py" -m pip install --quiet --disable-pip-version-check "maturin>=1.9.4,<2" pytest mypy \
    || fail "pip install failed"
fi
# The integrations' frameworks (the optional extras langchain and llama-index), so that
# tests/test_integrations.py and the type check see them.
if ! "$py" -c "import langchain_core, llama_index.core" 2>/dev/null; then
  step "installing langchain-core and llama-index-core from PyPI"
  "$py" -m pip install --quiet --disable-pip-version-check "langchain-core>=0.3" "llama-index-core>=0.12" \
    || fail "pip install failed"
fi

# The conformance suites and clients the integrations are checked with, pinned (their
# contracts change between releases): LangChain's standard tests (langchain-tests, which
# brings pytest-asyncio) and the official MCP Python SDK (tests/test_mcp.py).
if ! "$py" -c "import langchain_tests, mcp, pytest_asyncio" 2>/dev/null; then
  step "installing langchain-tests and mcp from PyPI"
  "$py" -m pip install --quiet --disable-pip-version-check "langchain-tests==1.1.9" "mcp==2.3.0" \
    || fail "pip install failed"
fi

# Ray, pinned (tests/test_ray.py: the `tribute[ray]` extra, `ray[data,serve]`).
if ! "$py" -c "import ray.data, ray.serve" 2>/dev/null; then
  step "installing ray[data,serve] from PyPI"
  "$py" -m pip install --quiet --disable-pip-version-check "ray[data,serve]==2.60.0" \
    || fail "pip install failed"
fi

# The exporter, editable (tests/test_export.py: the `tribute[export]` extra).
if ! "$py" -c "import tribute_export" 2>/dev/null; then
  step "installing the exporter (inference/export, editable) and its dependencies from PyPI"
  "$py" -m pip install --quiet --disable-pip-version-check -e "$here/../../inference/export" \
    || fail "pip install of the exporter failed"
fi

export VIRTUAL_ENV="$venv"
export PATH="$venv/bin:$PATH"
cd "$here"

if [[ "${TRIBUTE_PREBUILT:-}" == 1 ]]; then
  # maturin builds this package alone, so cargo would resolve features for it alone and
  # recompile much of the dependency tree a second way; the workspace build (with
  # PYO3_BUILD_EXTENSION_MODULE=1, as maturin sets it: no libpython link) already made it.
  step "tribute._native from the workspace build"
  cp "$target/debug/lib_native.so" "$here/python/tribute/_native.abi3.so" || fail "no $target/debug/lib_native.so"
  site="$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  echo "$here/python" > "$site/tribute.pth"
  # The package's metadata (version, extras) as maturin writes it for an install, without
  # compiling anything (the PEP 517 metadata hook).
  rm -rf "$site"/tribute-*.dist-info
  maturin pep517 write-dist-info --metadata-directory "$site" >/dev/null \
    || fail "maturin could not write the package metadata"
  found="$("$py" -c 'import tribute; print(tribute.__file__)')" || fail "import tribute failed"
  [[ "$found" == "$here/python/tribute/__init__.py" ]] || fail "import tribute found $found, not this checkout"
else
  step "building tribute._native (maturin develop, debug)"
  # Once the package is installed in editable mode, rebuilding the extension in place is enough.
  installed="$("$py" -c 'import importlib.util as u; s = u.find_spec("tribute"); print(s.origin if s else "")' 2>/dev/null || true)"
  # A changed pyproject.toml (extras, metadata) needs the full install again.
  meta="$(ls -d "$venv"/lib/python*/site-packages/tribute-*.dist-info 2>/dev/null | head -n1 || true)"
  if [[ "$installed" == "$here/python/tribute/__init__.py" && -n "$meta" && "$meta" -nt "$here/pyproject.toml" ]]; then
    maturin develop --skip-install || fail "maturin develop failed"
  else
    # A dist-info written by a TRIBUTE_PREBUILT run has no RECORD, without which pip cannot
    # replace it.
    for d in "$venv"/lib/python*/site-packages/tribute-*.dist-info; do
      if [[ -d "$d" && ! -e "$d/RECORD" ]]; then rm -rf "$d"; fi
    done
    maturin develop || fail "maturin develop failed"
  fi
fi

# tests/test_ray.py writes to a PostgreSQL knowledge base and journal: without one named by
# TRIBUTE_TEST_PG_URL, start a throwaway server (as scripts/with-postgres.sh does), stopped on exit.
if [[ -z "${TRIBUTE_TEST_PG_URL:-}" ]]; then
  step "starting a throwaway PostgreSQL (index/tests/pg/pg.sh)"
  pgdir="$(mktemp -d -t tribute-pypg.XXXXXX)"
  trap '"$repo/index/tests/pg/pg.sh" stop "$pgdir"; rm -rf "$pgdir"' EXIT
  TRIBUTE_TEST_PG_URL="$("$repo/index/tests/pg/pg.sh" start "$pgdir")" || fail "PostgreSQL did not start"
  export TRIBUTE_TEST_PG_URL
fi

step "pytest"
"$py" -m pytest -q -p no:cacheprovider tests "$@"

step "stubs: mypy.stubtest and mypy"
(cd /tmp && "$py" -m mypy.stubtest --ignore-unused-allowlist --allowlist "$here/stubtest-allowlist.txt" tribute) || fail "the stubs (python/tribute/_native.pyi) disagree with the module"
"$py" -m mypy --strict --cache-dir /dev/null -p tribute || fail "mypy found errors in the package"

echo
echo "test.sh: all Python checks passed"
