//! The Perfetto trace file format: generated protobuf types, reader and writer.

pub mod proto;
pub mod reader;
pub mod wire;
pub mod writer;
