//! `schedlens trace`: the recorder. (See issue 2.)

pub mod event;
