//! Writes schedlens traces: per-CPU FtraceEventBundles with CompactSched,
//! chunked compression, preamble and epilogue packets. (See issue 2.)
