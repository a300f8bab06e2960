#!/usr/bin/env bash
# The second command of the README: install what the build needs, then build
# and run every test. Recording tests load BPF for real, so the tests run as
# root (through sudo when started by a user); with CI=true a recording test
# that cannot load BPF fails instead of skipping.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh

run=()
if [ "$(id -u)" -ne 0 ]; then
  echo "schedlens: the recording tests need root; running cargo through sudo" >&2
  run=(sudo env "PATH=$PATH" "CARGO_HOME=${CARGO_HOME:-$HOME/.cargo}" "RUSTUP_HOME=${RUSTUP_HOME:-$HOME/.rustup}" "CI=${CI:-}")
fi

# The analyzing commands must build on machines without clang or libelf.
"${run[@]}" cargo build --locked --no-default-features

# The fuzz targets are their own crate: checked here so they keep building.
"${run[@]}" cargo check --locked --manifest-path fuzz/Cargo.toml

# The benchmark at tiny sizes, so it never rots (its figures mean nothing here).
"${run[@]}" cargo build --locked --bin schedlens --example bench
"${run[@]}" target/debug/examples/bench --smoke --schedlens target/debug/schedlens \
  --json target/bench-smoke.json --work-dir target/bench-smoke

"${run[@]}" cargo test --locked --no-fail-fast

# Perfetto's stdlib diff tests are read from a Perfetto source tree, which is
# not part of ../shared: run them where one is (PERFETTO_SRC, or the mirror
# fetched beside the repository), and say so where none is.
perfetto_src="${PERFETTO_SRC:-$(cd .. && pwd)/.mirror/google+perfetto/repo}"
if [ -d "$perfetto_src" ]; then
  "${run[@]}" env "PERFETTO_SRC=$perfetto_src" cargo test --locked --test conformance -- --ignored perfetto_stdlib_diff_tests
else
  echo "schedlens: NOT RUN: Perfetto's stdlib diff tests (no Perfetto source tree: set PERFETTO_SRC to a checkout)" >&2
fi
