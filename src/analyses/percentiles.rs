//! Wakeup-latency percentiles of a window: exact from the wakeup rows while
//! they are few, else from the per-bucket histograms of the aggregates.

use anyhow::Result;
use rusqlite::{Connection, params};
use schemars::JsonSchema;
use serde::Serialize;

use crate::analyzer::aggregate::{Hist, WindowSplit};

/// Wakeups in a window up to which percentiles are exact (sorted rows);
/// above, they come from the aggregates' histograms.
pub(crate) const EXACT_MAX_WAKEUPS: i64 = 100_000;

/// How percentiles were computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PercentileMethod {
    /// From every latency in the window.
    Exact,
    /// From a histogram of the latencies: each percentile is within
    /// percentile_error_pct of the exact value (max and worst stay exact).
    Histogram,
}

/// (wakeup id, latency) of the wakeups of `utids` (all if empty) in [lo, hi).
pub(crate) fn latencies(
    conn: &Connection,
    lo: i64,
    hi: i64,
    utids: &[i64],
) -> Result<Vec<(i64, i64)>> {
    let mut out = Vec::new();
    if utids.is_empty() {
        let mut st = conn.prepare_cached(
            "SELECT id, latency FROM wakeup WHERE ts >= ?1 AND ts < ?2 AND latency IS NOT NULL",
        )?;
        for row in st.query_map(params![lo, hi], |r| Ok((r.get(0)?, r.get(1)?)))? {
            out.push(row?);
        }
    } else {
        let mut st = conn.prepare_cached(
            "SELECT id, latency FROM wakeup
             WHERE utid = ?3 AND ts >= ?1 AND ts < ?2 AND latency IS NOT NULL",
        )?;
        for &u in utids {
            for row in st.query_map(params![lo, hi, u], |r| Ok((r.get(0)?, r.get(1)?)))? {
                out.push(row?);
            }
        }
    }
    Ok(out)
}

/// The latency histogram of a window (of `utids` only, if given): whole
/// buckets from agg_thread, partial ones from wakeup rows.
pub(crate) fn histogram(
    conn: &Connection,
    split: &WindowSplit,
    utids: Option<&[i64]>,
) -> Result<Hist> {
    let mut hist = Hist::default();
    if let Some((f0, f1)) = split.full {
        match utids {
            None => {
                let mut st = conn.prepare_cached(
                    "SELECT latency_hist FROM agg_thread
                     WHERE ts >= ?1 AND ts < ?2 AND latency_hist IS NOT NULL",
                )?;
                let mut rows = st.query(params![f0, f1])?;
                while let Some(r) = rows.next()? {
                    hist.add_blob(r.get_ref(0)?.as_blob()?);
                }
            }
            Some(utids) => {
                let mut st = conn.prepare_cached(
                    "SELECT latency_hist FROM agg_thread
                     WHERE utid = ?3 AND ts >= ?1 AND ts < ?2 AND latency_hist IS NOT NULL",
                )?;
                for &u in utids {
                    let mut rows = st.query(params![f0, f1, u])?;
                    while let Some(r) = rows.next()? {
                        hist.add_blob(r.get_ref(0)?.as_blob()?);
                    }
                }
            }
        }
    }
    for &(lo, hi) in &split.edges {
        for (_, l) in latencies(conn, lo, hi, utids.unwrap_or(&[]))? {
            hist.add(l);
        }
    }
    Ok(hist)
}

/// Nearest-rank percentile of the latencies (second field).
pub(crate) fn percentile(v: &[(i64, i64)], p: f64) -> Option<i64> {
    let mut lat: Vec<i64> = v.iter().map(|x| x.1).collect();
    percentile_in_place(&mut lat, p)
}

/// Nearest-rank percentile, reordering `lat`.
pub(crate) fn percentile_in_place(lat: &mut [i64], p: f64) -> Option<i64> {
    if lat.is_empty() {
        return None;
    }
    // The epsilon keeps 99.9% of 1000 at rank 999 despite binary rounding.
    let rank = ((p / 100.0) * lat.len() as f64 - 1e-9).ceil() as usize;
    let idx = rank.clamp(1, lat.len()) - 1;
    Some(*lat.select_nth_unstable(idx).1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let mut v: Vec<i64> = (1..=1000).collect();
        assert_eq!(percentile_in_place(&mut v, 50.0), Some(500));
        assert_eq!(percentile_in_place(&mut v, 99.9), Some(999));
        assert_eq!(percentile_in_place(&mut v, 100.0), Some(1000));
        assert_eq!(percentile_in_place(&mut [], 50.0), None);
    }
}
