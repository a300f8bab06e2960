//! Counter events -> counter rows on their CPU's tracks (frequency, idle
//! state, frequency limits).

use super::Storage;
use super::events::CpuCounter;
use crate::analyzer::tables::CounterRow;

/// A sample of `e.cpu_id`'s `e.track` counter.
pub fn cpu_counter(st: &mut Storage<'_>, ts: i64, e: &CpuCounter) -> anyhow::Result<()> {
    let track_id = st.tracks.cpu_track(e.track, e.cpu_id);
    st.sink.counter(&CounterRow {
        ts,
        track_id,
        value: f64::from(e.value),
    })
}
