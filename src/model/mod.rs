//! The event model shared by the recorder and the file format: what one
//! recorder event is, independent of how BPF encodes it or how Perfetto
//! stores it.

pub mod event;
