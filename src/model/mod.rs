//! The event model shared by the recorder and the file format: what one
//! recorder event is, with no dependency on either. Events the writer treats
//! specially are variants of their own; the others carry their record bytes
//! and a static layout naming Perfetto's FtraceEvent fields, Perfetto's
//! numbering of the kernel's tracepoints ([`event::FtraceLayout`]).

pub mod event;
pub mod ksyms;
pub mod stack;

/// The most CPUs anything in schedlens handles: the BPF programs' per-CPU
/// arrays (SL_MAX_CPUS in bpf/events.h), the encoder's per-CPU state and the
/// importer's CPU numbers. A CPU number at or above it is a corrupt record.
pub const MAX_CPUS: usize = 4096;
