#!/usr/bin/env bash
# The first command of the README: on a fresh Debian/Ubuntu machine with Rust,
# install what the build needs, build schedlens, record 5 seconds of this
# machine and show what it found.
#   scripts/demo.sh [OUTPUT.pftrace]
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
cargo build --release --locked

out=${1:-schedlens-demo.pftrace}
bin=target/release/schedlens
if [ "$(id -u)" -eq 0 ]; then
  "$bin" trace -d 5s -o "$out"
else
  echo "schedlens: recording needs root (or CAP_BPF+CAP_PERFMON); asking sudo" >&2
  sudo "$bin" trace -d 5s -o "$out"
fi
"$bin" summary "$out"
echo
echo "Open $out in https://ui.perfetto.dev, query it with '$bin query $out \"SELECT ...\"'," >&2
echo "or serve it to an AI assistant with '$bin analyze $out' (see README.md)." >&2
