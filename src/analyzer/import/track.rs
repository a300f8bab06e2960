//! Tracks (trace_processor's track tracker): one timeline per kind of data
//! and CPU (or thread), created when its first event arrives. Slice and counter tracks
//! share one id space, as slice.track_id and counter.track_id both name
//! track rows.

use super::process::Utid;
use crate::analyzer::strings::FastMap;

/// What a CPU's track holds; its `type` in the track table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TrackKind {
    /// IRQ handlers of a CPU (slices).
    Irq,
    /// Softirqs of a CPU (slices).
    Softirq,
    /// A CPU's frequency, kHz (a counter).
    Frequency,
    /// A CPU's idle state: the state entered, 4294967295 when it leaves idle (a counter).
    Idle,
    /// The most a CPU's frequency policy allows, kHz (a counter).
    MaxFrequencyLimit,
    /// The least a CPU's frequency policy allows, kHz (a counter).
    MinFrequencyLimit,
    /// What a thread executes (slices: its work items), not a CPU's.
    Thread,
}

impl TrackKind {
    /// The track's type, as trace_processor's blueprints name it.
    pub fn type_name(self) -> &'static str {
        match self {
            TrackKind::Irq => "cpu_irq",
            TrackKind::Softirq => "cpu_softirq",
            TrackKind::Frequency => "cpu_frequency",
            TrackKind::Idle => "cpu_idle",
            TrackKind::MaxFrequencyLimit => "cpu_max_frequency_limit",
            TrackKind::MinFrequencyLimit => "cpu_min_frequency_limit",
            TrackKind::Thread => "thread_execution",
        }
    }

    /// The name trace_processor gives this kind's track of `cpu`; none for a
    /// thread's.
    pub fn track_name(self, cpu: u32) -> Option<String> {
        Some(match self {
            TrackKind::Irq => format!("Irq Cpu {cpu}"),
            TrackKind::Softirq => format!("SoftIrq Cpu {cpu}"),
            TrackKind::Frequency => "cpufreq".to_string(),
            TrackKind::Idle => "cpuidle".to_string(),
            TrackKind::MaxFrequencyLimit => format!("Cpu {cpu} Max Freq Limit"),
            TrackKind::MinFrequencyLimit => format!("Cpu {cpu} Min Freq Limit"),
            TrackKind::Thread => return None,
        })
    }

    /// Whether it is a counter track (also a counter_track row).
    pub fn is_counter(self) -> bool {
        !matches!(
            self,
            TrackKind::Irq | TrackKind::Softirq | TrackKind::Thread
        )
    }
}

/// One track: its id and what it is.
#[derive(Debug, Clone, Copy)]
pub struct Track {
    pub id: i64,
    pub kind: TrackKind,
    /// The CPU it describes, or for a [`TrackKind::Thread`] track the utid.
    pub of: u32,
}

#[derive(Default)]
pub struct Tracks {
    ids: FastMap<(TrackKind, u32), i64>,
    /// Every track, ids from 0 in creation order.
    all: Vec<Track>,
}

impl Tracks {
    /// The id of `kind`'s track of `cpu`, created on first use.
    pub fn cpu_track(&mut self, kind: TrackKind, cpu: u32) -> i64 {
        self.track(kind, cpu)
    }

    /// The id of the thread's track (trace_processor's thread_execution
    /// track), created on first use.
    pub fn thread_track(&mut self, utid: Utid) -> i64 {
        self.track(TrackKind::Thread, utid)
    }

    fn track(&mut self, kind: TrackKind, of: u32) -> i64 {
        let next_id = self.all.len() as i64;
        let id = *self.ids.entry((kind, of)).or_insert(next_id);
        if id == next_id {
            self.all.push(Track { id, kind, of });
        }
        id
    }

    pub fn all(&self) -> &[Track] {
        &self.all
    }
}
