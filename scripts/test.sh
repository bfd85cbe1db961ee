#!/usr/bin/env bash
# Runs every test Sextant has, on a fresh machine: installs what it needs first
# (Debian packages if missing, a Python venv with the pinned test packages), then
# format + lint checks, Rust unit/integration tests, and the end-to-end Python suite
# (official qdrant-client against a real `sextant` process).
#
# Usage: scripts/test.sh            # everything (what CI runs)
#        SKIP_LINT=1 scripts/test.sh  # skip fmt/clippy while iterating
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

log() { printf '\n==> %s\n' "$*"; }

# --- system packages -------------------------------------------------------------
need_apt=()
command -v python3 >/dev/null || need_apt+=(python3)
python3 -c 'import venv, ensurepip' 2>/dev/null || need_apt+=(python3-venv)
command -v cc >/dev/null || need_apt+=(build-essential)
command -v openssl >/dev/null || need_apt+=(openssl)   # test certificates (tests/python/test_auth.py)
if [ ${#need_apt[@]} -gt 0 ]; then
  log "installing Debian packages: ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq "${need_apt[@]}"
fi
command -v cargo >/dev/null || { echo "cargo not found: install the Rust toolchain (rustup)" >&2; exit 1; }

# --- python venv -----------------------------------------------------------------
VENV="$ROOT/.venv"
if [ ! -x "$VENV/bin/python" ]; then
  log "creating Python venv at .venv"
  python3 -m venv "$VENV"
fi
req_hash=$(sha256sum tests/python/requirements.txt | cut -c1-16)
if [ ! -f "$VENV/.req-$req_hash" ]; then
  log "installing Python test packages"
  "$VENV/bin/pip" install -q --disable-pip-version-check -r tests/python/requirements.txt
  touch "$VENV/.req-$req_hash"
fi

# --- Rust ------------------------------------------------------------------------
if [ -z "${SKIP_LINT:-}" ]; then
  log "cargo fmt --check"
  cargo fmt --all -- --check
  log "cargo clippy --all-targets -- -D warnings"
  cargo clippy --workspace --all-targets -q -- -D warnings
fi

log "cargo build (sextant, sextant-bench)"
cargo build -q --bins

log "cargo test"
cargo test -q --workspace 2>&1 | tee "$ROOT/target/cargo-test.log"

# --- benchmark smoke (the full benchmark is bench/run.py, see docs/benchmarks.md) ---
log "benchmark smoke (bench/run.py --smoke, Sextant engines, debug build)"
"$VENV/bin/python" bench/run.py --smoke --engines sextant,rest --bin-dir target/debug > target/bench-smoke.log 2>&1 \
  || { tail -40 target/bench-smoke.log; echo "benchmark smoke failed" >&2; exit 1; }
tail -3 target/bench-smoke.log

log "cluster benchmark smoke (bench/cluster.py --smoke, debug build; the full run is documented in docs/benchmarks-cluster.md)"
"$VENV/bin/python" bench/cluster.py --smoke --bin target/debug/sextant > target/cluster-bench-smoke.log 2>&1 \
  || { tail -40 target/cluster-bench-smoke.log; echo "cluster benchmark smoke failed" >&2; exit 1; }
tail -3 target/cluster-bench-smoke.log

log "anti-entropy cost smoke (bench/anti_entropy.py --smoke, debug build; the full run is in docs/reliability.md)"
SEXTANT_BIN="$ROOT/target/debug/sextant" "$VENV/bin/python" bench/anti_entropy.py --smoke > target/anti-entropy-smoke.log 2>&1 \
  || { tail -40 target/anti-entropy-smoke.log; echo "anti-entropy smoke failed" >&2; exit 1; }
tail -3 target/anti-entropy-smoke.log

log "snapshot cost smoke (bench/snapshot.py --smoke, debug build; the full run is in docs/benchmarks.md)"
SEXTANT_BIN="$ROOT/target/debug/sextant" "$VENV/bin/python" bench/snapshot.py --smoke > target/snapshot-smoke.log 2>&1 \
  || { tail -40 target/snapshot-smoke.log; echo "snapshot smoke failed" >&2; exit 1; }
tail -3 target/snapshot-smoke.log

log "graph-build contention smoke (bench/build_contention.py --smoke, debug build; the full run is in docs/benchmarks.md)"
"$VENV/bin/python" bench/build_contention.py --smoke > target/build-contention-smoke.log 2>&1 \
  || { tail -40 target/build-contention-smoke.log; echo "build contention smoke failed" >&2; exit 1; }
tail -3 target/build-contention-smoke.log

# --- end-to-end ------------------------------------------------------------------
log "pytest tests/python (qdrant-client against sextant)"
export SEXTANT_BIN="$ROOT/target/debug/sextant"
"$VENV/bin/python" -m pytest tests/python -q -p no:cacheprovider --durations=30 "$@"
