#!/usr/bin/env python3
"""Seeds the fuzz corpora (fuzz/corpus/<target>/) from small real traces.

Sources: fixtures/*.pftrace and fixtures/fuzz-regressions/* in this repository
and Perfetto's conformance traces in ../shared/conformance/perfetto/*/ (found
by path, never copied into the repository: fuzz/corpus is git-ignored).

- reader, import_file: each trace as it is, whole-file gzip and zstd, and its
  packets re-wrapped in one compressed_packets (zlib) and one
  zstd_compressed_packets container, so every decoding path starts covered.
- import_packet: every single TracePacket of every trace (that target frames
  the input itself, after its own preamble).

Needs python3 and the zstd command. Safe to run again: files are named by
their content hash.
"""

import glob
import gzip
import hashlib
import os
import subprocess
import sys
import zlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(ROOT, "fuzz", "corpus")


def conformance_dir():
    # The repository's parent, or a worktree's (wt/NAME) grandparent.
    d = ROOT
    while d != os.path.dirname(d):
        d = os.path.dirname(d)
        p = os.path.join(d, "shared", "conformance", "perfetto")
        if os.path.isdir(p):
            return p
    return None


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def read_varint(buf, pos):
    result = shift = 0
    while pos < len(buf):
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return result, pos
    raise ValueError("truncated varint")


def packets(trace):
    """The TracePacket payloads of a plain trace (Trace.packet fields only)."""
    pos, out = 0, []
    while pos < len(trace):
        tag, pos = read_varint(trace, pos)
        if tag & 7 != 2:
            raise ValueError("not a plain trace")
        n, pos = read_varint(trace, pos)
        if tag >> 3 == 1:
            out.append(trace[pos : pos + n])
        pos += n
    return out


def frame(field_tag, payload):
    return varint(field_tag) + varint(len(payload)) + payload


def zstd(data):
    return subprocess.run(
        ["zstd", "-q", "-c", "-19"], input=data, stdout=subprocess.PIPE, check=True
    ).stdout


def plain(data):
    if data[:2] == b"\x1f\x8b":
        return gzip.decompress(data)
    if data[:4] == b"\x28\xb5\x2f\xfd":
        return subprocess.run(
            ["zstd", "-q", "-d", "-c"], input=data, stdout=subprocess.PIPE, check=True
        ).stdout
    return data


def put(target, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    name = hashlib.sha1(data).hexdigest()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def main():
    sources = sorted(glob.glob(os.path.join(ROOT, "fixtures", "*.pftrace")))
    sources += sorted(glob.glob(os.path.join(ROOT, "fixtures", "fuzz-regressions", "*")))
    conf = conformance_dir()
    if conf:
        sources += sorted(glob.glob(os.path.join(conf, "*", "trace.pftrace")))
    else:
        print("fuzz-seeds: no shared/conformance/perfetto found; fixtures only", file=sys.stderr)
    n = 0
    for path in sources:
        with open(path, "rb") as f:
            raw = f.read()
        if len(raw) > 1 << 20:
            continue  # big traces slow every fuzzing run; small ones cover the same paths
        for t in ("reader", "import_file"):
            put(t, raw)
        try:
            trace = plain(raw)
            pkts = packets(trace)
        except (ValueError, OSError, subprocess.CalledProcessError, EOFError):
            continue  # a regression input need not be a valid trace
        inner = b"".join(frame(0x0A, p) for p in pkts)
        variants = [
            trace,
            gzip.compress(trace),
            zstd(trace),
            frame(0x0A, frame(50 << 3 | 2, zlib.compress(inner))),
            frame(0x0A, frame(133 << 3 | 2, zstd(inner))),
        ]
        for v in variants:
            for t in ("reader", "import_file"):
                put(t, v)
        for p in pkts:
            put("import_packet", p)
        n += 1
    print(f"fuzz-seeds: {len(sources)} files ({n} decoded) into {CORPUS}")


if __name__ == "__main__":
    main()
