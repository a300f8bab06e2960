//! Time arguments and windows: nanoseconds from the trace start or human
//! strings ("1.5s", "200ms"), resolved against the trace's bounds.
//!
//! Everything a user or a model types is relative to the trace start, because
//! absolute CLOCK_BOOTTIME values are meaningless to them and exceed what a
//! JavaScript number holds exactly. Absolute values appear only in output, as
//! strings.

use anyhow::Context as _;
use rusqlite::{Connection, OptionalExtension};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize, Serializer};

/// Largest integer a JSON number carries exactly in JavaScript (2^53).
pub const JS_SAFE_INT: i64 = 1 << 53;

/// A time as typed by a caller: an integer number of nanoseconds, or a string
/// holding either an integer ("1500000") or a duration with a unit ("1.5ms").
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum TimeArg {
    /// Nanoseconds from the trace start.
    Nanos(i64),
    /// "1500000" (ns), "1.5s", "200ms", "3us", "250ns", "2m", "1m30s".
    Text(String),
}

impl TimeArg {
    /// The time in nanoseconds; negative values are rejected.
    pub fn to_ns(&self) -> Result<i64, String> {
        match self {
            TimeArg::Nanos(n) if *n < 0 => Err(format!(
                "time {n} is negative: times count from the trace start"
            )),
            TimeArg::Nanos(n) => Ok(*n),
            TimeArg::Text(s) => parse_time(s),
        }
    }
}

/// A time window as typed by a caller: a range string ("1s..2.5s", "..500ms",
/// "2s..") or an object with optional start and end.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum WindowArg {
    /// "START..END" with either side optional, each side as for `start`/`end`.
    Range(String),
    /// Explicit bounds.
    Bounds {
        /// Start, from the trace start: ns or a duration like "1.5s". Default: trace start.
        start: Option<TimeArg>,
        /// End, from the trace start: ns or a duration like "2s". Default: trace end.
        end: Option<TimeArg>,
    },
}

/// A resolved window, in nanoseconds relative to the trace start, clipped to the
/// trace: 0 <= start <= end <= trace duration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start: i64,
    pub end: i64,
}

/// The first and last timestamp of a trace (absolute, trace clock ns).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceBounds {
    pub start_ts: i64,
    pub end_ts: i64,
}

/// The trace's first and last timestamps.
pub fn trace_bounds(conn: &Connection) -> anyhow::Result<TraceBounds> {
    conn.query_row("SELECT start_ts, end_ts FROM trace_bounds", [], |r| {
        Ok(TraceBounds {
            start_ts: r.get(0)?,
            end_ts: r.get(1)?,
        })
    })
    .optional()?
    .context("the trace_bounds table is empty: the trace holds no events")
}

/// The window a caller's argument names in this trace (the whole trace
/// without one).
pub fn resolve_window(conn: &Connection, arg: Option<&WindowArg>) -> anyhow::Result<Window> {
    trace_bounds(conn)?.window(arg).map_err(anyhow::Error::msg)
}

impl TraceBounds {
    /// Length of the trace in ns.
    pub fn duration(&self) -> i64 {
        self.end_ts.saturating_sub(self.start_ts).max(0)
    }

    /// The whole trace as a window.
    pub fn whole(&self) -> Window {
        Window {
            start: 0,
            end: self.duration(),
        }
    }

    /// Relative ns -> absolute ts.
    pub fn abs(&self, rel: i64) -> i64 {
        self.start_ts.saturating_add(rel)
    }

    /// Absolute ts -> relative ns.
    pub fn rel(&self, ts: i64) -> i64 {
        ts.saturating_sub(self.start_ts)
    }

    /// Resolves an optional window argument against this trace.
    pub fn window(&self, arg: Option<&WindowArg>) -> Result<Window, String> {
        let (start, end) = match arg {
            None => (None, None),
            Some(WindowArg::Range(s)) => parse_range(s)?,
            Some(WindowArg::Bounds { start, end }) => (
                start.as_ref().map(TimeArg::to_ns).transpose()?,
                end.as_ref().map(TimeArg::to_ns).transpose()?,
            ),
        };
        let dur = self.duration();
        let start = start.unwrap_or(0);
        let end = end.unwrap_or(dur);
        if start > dur {
            return Err(format!(
                "window starts at {} but the trace lasts only {}",
                human_ns(start),
                human_ns(dur)
            ));
        }
        if start > end {
            return Err(format!(
                "window start {} is after its end {}",
                human_ns(start),
                human_ns(end)
            ));
        }
        Ok(Window {
            start,
            end: end.min(dur),
        })
    }
}

impl Window {
    pub fn len(&self) -> i64 {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Parses "A..B" where either side may be empty.
fn parse_range(s: &str) -> Result<(Option<i64>, Option<i64>), String> {
    let s = s.trim();
    if s.is_empty() {
        return Ok((None, None));
    }
    let Some((a, b)) = s.split_once("..") else {
        return Err(format!(
            "bad window {s:?}: write a range START..END such as \"1s..2.5s\", \"..500ms\" or \"2s..\""
        ));
    };
    let side = |x: &str| {
        let x = x.trim();
        if x.is_empty() {
            Ok(None)
        } else {
            parse_time(x).map(Some)
        }
    };
    Ok((side(a)?, side(b)?))
}

/// Parses a time from the trace start: integer ns ("1500000") or a duration
/// with units ("1.5s", "200ms", "3us", "250ns", "1m30s").
pub fn parse_time(s: &str) -> Result<i64, String> {
    let t = s.trim();
    let bad = |why: &str| {
        format!(
            "bad time {s:?}: {why}; use nanoseconds from the trace start (\"1500000\") or a duration \
             such as \"1.5s\", \"200ms\", \"3us\", \"250ns\""
        )
    };
    if t.is_empty() {
        return Err(bad("empty"));
    }
    if t.starts_with('-') {
        return Err(bad("negative; times count from the trace start"));
    }
    if t.bytes().all(|b| b.is_ascii_digit()) {
        return t.parse::<i64>().map_err(|_| bad("too large"));
    }
    // One decimal number with a unit covers nearly every use; humantime takes
    // the compound forms ("1m 30s") that it handles exactly.
    if let Some(ns) = parse_decimal_with_unit(t) {
        return ns.ok_or_else(|| bad("too large"));
    }
    match humantime::parse_duration(t) {
        Ok(d) => i64::try_from(d.as_nanos()).map_err(|_| bad("too large")),
        Err(e) => Err(bad(&e.to_string())),
    }
}

/// "1.5ms" -> Some(Some(1_500_000)); None if the text is not NUMBER UNIT;
/// Some(None) on overflow.
fn parse_decimal_with_unit(t: &str) -> Option<Option<i64>> {
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (num, unit) = t.split_at(split);
    let unit_ns: u128 = match unit.trim() {
        "ns" | "nsec" => 1,
        "us" | "µs" | "usec" => 1_000,
        "ms" | "msec" => 1_000_000,
        "s" | "sec" | "secs" => 1_000_000_000,
        "m" | "min" | "mins" => 60_000_000_000,
        "h" | "hr" | "hours" => 3_600_000_000_000,
        _ => return None,
    };
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    if int.is_empty() && frac.is_empty() || frac.contains('.') {
        return None;
    }
    // Exact decimal arithmetic: digits past nanosecond resolution are dropped.
    let int_part: u128 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let mut total = int_part.checked_mul(unit_ns);
    let mut scale = unit_ns;
    for d in frac.bytes() {
        scale /= 10;
        if scale == 0 {
            break;
        }
        total = total.and_then(|t| t.checked_add(u128::from(d - b'0') * scale));
    }
    Some(total.and_then(|t| i64::try_from(t).ok()))
}

/// A duration or relative time for people: "1.234567s", "12.3ms", "450us", "250ns".
pub fn human_ns(ns: i64) -> String {
    let sign = if ns < 0 { "-" } else { "" };
    let a = ns.unsigned_abs();
    let (div, unit) = match a {
        0..1_000 => return format!("{sign}{a}ns"),
        1_000..1_000_000 => (1_000u64, "us"),
        1_000_000..1_000_000_000 => (1_000_000, "ms"),
        _ => (1_000_000_000, "s"),
    };
    let whole = a / div;
    let frac = a % div;
    if frac == 0 {
        return format!("{sign}{whole}{unit}");
    }
    let digits = div.ilog10() as usize;
    let frac = format!("{frac:0digits$}");
    format!("{sign}{whole}.{}{unit}", frac.trim_end_matches('0'))
}

/// An integer that is a JSON number when JavaScript can hold it exactly and a
/// decimal string otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct SafeInt(pub i64);

impl Serialize for SafeInt {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0.unsigned_abs() <= JS_SAFE_INT as u64 {
            s.serialize_i64(self.0)
        } else {
            s.collect_str(&self.0)
        }
    }
}

impl JsonSchema for SafeInt {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "SafeInt".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "Integer; a decimal string when its magnitude exceeds 2^53.",
            "type": ["integer", "string"]
        })
    }
}

/// A point in the trace, relative to its start, for output.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct RelTime {
    /// Nanoseconds from the trace start.
    pub ns: SafeInt,
    /// The same, for people ("1.5s").
    pub human: String,
}

impl RelTime {
    pub fn new(ns: i64) -> RelTime {
        RelTime {
            ns: SafeInt(ns),
            human: human_ns(ns),
        }
    }
}

/// A window for output: relative bounds, with the absolute trace-clock values
/// as strings.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct WindowOut {
    /// Start, relative to the trace start.
    pub start: RelTime,
    /// End, relative to the trace start.
    pub end: RelTime,
    /// Length of the window.
    pub duration: RelTime,
    /// Absolute start on the trace clock (CLOCK_BOOTTIME ns), as a string.
    pub start_ts: String,
    /// Absolute end on the trace clock, as a string.
    pub end_ts: String,
}

impl WindowOut {
    pub fn new(w: Window, b: &TraceBounds) -> WindowOut {
        WindowOut {
            start: RelTime::new(w.start),
            end: RelTime::new(w.end),
            duration: RelTime::new(w.len()),
            start_ts: b.abs(w.start).to_string(),
            end_ts: b.abs(w.end).to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_exactly() {
        assert_eq!(parse_time("1.5s"), Ok(1_500_000_000));
        assert_eq!(parse_time("200ms"), Ok(200_000_000));
        assert_eq!(parse_time("3us"), Ok(3_000));
        assert_eq!(parse_time("250ns"), Ok(250));
        assert_eq!(parse_time(" 1500000 "), Ok(1_500_000));
        assert_eq!(parse_time("0.000000001s"), Ok(1));
        assert_eq!(parse_time(".5ms"), Ok(500_000));
        assert_eq!(parse_time("1m 30s"), Ok(90_000_000_000));
        assert_eq!(parse_time("2 ms"), Ok(2_000_000));
    }

    #[test]
    fn rejects_bad_times() {
        for s in [
            "",
            "-1s",
            "abc",
            "1.2.3s",
            "5 parsecs",
            "99999999999999999999",
            "1e9",
            ".",
        ] {
            let e = parse_time(s).unwrap_err();
            assert!(e.contains("bad time"), "{s}: {e}");
        }
        assert!(TimeArg::Nanos(-5).to_ns().is_err());
    }

    #[test]
    fn windows_resolve_and_clip() {
        let b = TraceBounds {
            start_ts: 1_000,
            end_ts: 3_000_001_000,
        };
        let w = |s: &str| b.window(Some(&WindowArg::Range(s.into())));
        assert_eq!(
            w("1s..2.5s"),
            Ok(Window {
                start: 1_000_000_000,
                end: 2_500_000_000
            })
        );
        assert_eq!(
            w("..500ms"),
            Ok(Window {
                start: 0,
                end: 500_000_000
            })
        );
        assert_eq!(
            w("2s.."),
            Ok(Window {
                start: 2_000_000_000,
                end: 3_000_000_000
            })
        );
        assert_eq!(w("1s..1h").unwrap().end, 3_000_000_000);
        assert!(w("2s..1s").is_err());
        assert!(w("4s..5s").is_err());
        assert!(w("1s").is_err());
        assert_eq!(b.window(None), Ok(b.whole()));
        let obj = WindowArg::Bounds {
            start: Some(TimeArg::Nanos(5)),
            end: Some(TimeArg::Text("1us".into())),
        };
        assert_eq!(
            b.window(Some(&obj)),
            Ok(Window {
                start: 5,
                end: 1_000
            })
        );
        assert_eq!(b.abs(5), 1_005);
    }

    #[test]
    fn human_strings() {
        assert_eq!(human_ns(250), "250ns");
        assert_eq!(human_ns(1_500_000_000), "1.5s");
        assert_eq!(human_ns(200_000_000), "200ms");
        assert_eq!(human_ns(12_345), "12.345us");
        assert_eq!(human_ns(-3_000), "-3us");
    }

    #[test]
    fn safe_int_switches_to_string() {
        assert_eq!(
            serde_json::to_string(&SafeInt(JS_SAFE_INT)).unwrap(),
            "9007199254740992"
        );
        assert_eq!(
            serde_json::to_string(&SafeInt(JS_SAFE_INT + 1)).unwrap(),
            "\"9007199254740993\""
        );
        assert_eq!(
            serde_json::to_string(&SafeInt(i64::MIN)).unwrap(),
            "\"-9223372036854775808\""
        );
    }
}
