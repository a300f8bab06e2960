#!/usr/bin/env bash
# Installs the Debian/Ubuntu packages schedlens needs to build and test, if any are missing.
# clang + libelf + zlib + pkg-config build the BPF recorder; linux-perf is the
# benchmark's baseline. Safe to run again: it installs only what is missing.
set -euo pipefail

packages=(clang libelf-dev zlib1g-dev pkg-config make)
# linux-perf (Debian) / linux-tools-common (Ubuntu) give `perf` for the benchmark baseline.
if [ "${SCHEDLENS_WITH_PERF:-1}" = 1 ] && ! command -v perf >/dev/null 2>&1; then
  if apt-cache show linux-perf >/dev/null 2>&1; then packages+=(linux-perf); fi
fi

# The duckdb Python package: tests/export.rs reads the exported Parquet with it
# (SCHEDLENS_WITH_DUCKDB=0 skips; that test then fails under CI=true).
if [ "${SCHEDLENS_WITH_DUCKDB:-1}" = 1 ] && ! python3 -c 'import duckdb' >/dev/null 2>&1; then
  echo "schedlens: installing the duckdb Python package" >&2
  python3 -m pip install -q duckdb==2.0.0 >&2 || python3 -m pip install -q --break-system-packages duckdb==2.0.0 >&2
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=()
[ "$(id -u)" -eq 0 ] || sudo=(sudo)
echo "schedlens: installing ${missing[*]}" >&2
"${sudo[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2

