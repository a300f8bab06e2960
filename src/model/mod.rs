//! The event model shared by the recorder and the file format: what one
//! recorder event is, independent of how BPF encodes it or how Perfetto
//! stores it.

pub mod event;

/// The most CPUs anything in schedlens handles: the BPF programs' per-CPU
/// arrays (SL_MAX_CPUS in bpf/events.h), the encoder's per-CPU state and the
/// importer's CPU numbers. A CPU number at or above it is a corrupt record.
pub const MAX_CPUS: usize = 4096;
