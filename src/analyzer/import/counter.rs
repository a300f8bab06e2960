//! Counter events -> counter and counter_track: one track per series (a
//! CPU's frequency), created when its first sample arrives.

use super::Storage;
use super::events::CpuFrequency;
use crate::analyzer::strings::FastMap;
use crate::analyzer::tables::CounterRow;

#[derive(Default)]
pub struct CounterTracker {
    cpufreq: FastMap<u32, i64>,
    /// counter_track rows: (id, cpu), ids from 0 in creation order.
    tracks: Vec<(i64, u32)>,
}

impl CounterTracker {
    /// cpu_frequency: a sample of `cpu_id`'s frequency track.
    pub fn cpu_frequency(
        &mut self,
        st: &mut Storage<'_>,
        ts: i64,
        e: &CpuFrequency,
    ) -> anyhow::Result<()> {
        let next_id = self.tracks.len() as i64;
        let track_id = *self.cpufreq.entry(e.cpu_id).or_insert(next_id);
        if track_id == next_id {
            self.tracks.push((track_id, e.cpu_id));
        }
        st.sink.counter(&CounterRow {
            ts,
            track_id,
            value: f64::from(e.state),
        })
    }

    /// (id, cpu) of every cpufreq track.
    pub fn tracks(&self) -> &[(i64, u32)] {
        &self.tracks
    }
}
