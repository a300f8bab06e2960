//! Durations: the part of an interval inside a window, and durations as the
//! analyses report them.

use schemars::JsonSchema;
use serde::Serialize;

use super::timespec::{SafeInt, human_ns};

/// A duration for output.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Dur {
    /// Nanoseconds.
    pub ns: SafeInt,
    /// The same, for people ("1.5ms").
    pub human: String,
}

impl Dur {
    pub fn new(ns: i64) -> Dur {
        Dur {
            ns: SafeInt(ns),
            human: human_ns(ns),
        }
    }
}

/// Length of the part of [ts, ts+dur) inside [lo, hi); dur -1 (still running)
/// lasts to `trace_end`.
pub(crate) fn clip(ts: i64, dur: i64, lo: i64, hi: i64, trace_end: i64) -> i64 {
    let end = if dur < 0 {
        trace_end
    } else {
        ts.saturating_add(dur)
    };
    (end.min(hi) - ts.max(lo)).max(0)
}

/// SQL for the same clipped length, with ?1 = window start, ?2 = window end,
/// ?3 = trace end (all absolute).
pub(crate) const CLIPPED_DUR: &str =
    "MAX(MIN(CASE WHEN dur < 0 THEN ?3 ELSE ts + dur END, ?2) - MAX(ts, ?1), 0)";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clipping() {
        assert_eq!(clip(10, 5, 0, 100, 1000), 5);
        assert_eq!(clip(10, 5, 12, 100, 1000), 3);
        assert_eq!(clip(10, -1, 0, 100, 1000), 90);
        assert_eq!(clip(10, 5, 20, 100, 1000), 0);
    }
}
