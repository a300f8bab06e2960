#!/usr/bin/env bash
# The benchmark (see README.md, "Performance"): builds release binaries and
# measures schedlens against no tracing and `perf sched record`, interleaved.
#   scripts/bench.sh            full run, a quarter of an hour; writes bench/results.json
#   scripts/bench.sh --smoke    tiny sizes (CI), writes bench/results-smoke.json
# Runs as root (BPF and perf).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
json=bench/results.json
for a in "$@"; do [ "$a" = --smoke ] && json=bench/results-smoke.json; done
cargo build --release --locked --bin schedlens --example bench
exec target/release/examples/bench --schedlens target/release/schedlens --json "$json" "$@"
