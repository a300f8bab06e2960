//! Puts tokenized events in timestamp order, the way trace_processor's
//! TraceSorter does, with bounded memory.
//!
//! Events go into queues: one for non-ftrace packets, and per CPU one each for
//! full ftrace events, compact switches and compact wakings, created in the
//! order trace_processor creates its streams (all CPUs up to a new one at
//! once). Each queue is kept sorted by timestamp (stable, so ties keep file
//! order). Extraction repeats: take the queue whose first event is earliest
//! (the lowest queue on ties) and drain it while its events are no later than
//! the next queue's first event. That tie rule decides the row order of
//! simultaneous events, which Perfetto's expected outputs depend on.
//!
//! Memory: trace_processor sorts the whole trace; we hold at most
//! [`WINDOW_HIGH`] events and, past it, extract down to [`WINDOW_LOW`]. Within
//! a window the result is exactly a full sort, so small traces (all the
//! conformance traces) are sorted fully. Our own traces write each CPU's
//! events in order and interleave CPUs closely, far inside the window. An
//! event that arrives after later events were already extracted is dropped
//! and counted (`sorter_push_event_out_of_order`), as trace_processor does.

use super::events::Event;
use std::collections::{BTreeSet, VecDeque};

/// Buffered events above which extraction starts (about 48 bytes each).
pub const WINDOW_HIGH: usize = 2 << 20;
/// Buffered events left after an extraction.
pub const WINDOW_LOW: usize = 1 << 20;

/// Which stream an event belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Packet,
    Ftrace(u32),
    CompactSwitch(u32),
    CompactWaking(u32),
}

#[derive(Default)]
struct Queue {
    events: VecDeque<(i64, Event)>,
    min_ts: i64,
    max_ts: i64,
    sorted: bool,
}

#[derive(Default)]
pub struct Sorter {
    queues: Vec<Queue>,
    ftrace: Vec<usize>,
    compact_switch: Vec<usize>,
    compact_waking: Vec<usize>,
    /// (min_ts, queue index) of every non-empty queue.
    order: BTreeSet<(i64, usize)>,
    len: usize,
    /// Largest timestamp appended (for packets without a timestamp).
    pub max_ts: i64,
    latest_extracted: i64,
    /// Events dropped because they arrived after later ones were extracted.
    pub out_of_order: u64,
}

impl Sorter {
    pub fn new() -> Sorter {
        let mut s = Sorter {
            latest_extracted: i64::MIN,
            ..Default::default()
        };
        s.queues.push(Queue::default());
        s
    }

    fn queue_index(&mut self, stream: Stream) -> usize {
        let (list, cpu) = match stream {
            Stream::Packet => return 0,
            Stream::Ftrace(c) => (&mut self.ftrace, c),
            Stream::CompactSwitch(c) => (&mut self.compact_switch, c),
            Stream::CompactWaking(c) => (&mut self.compact_waking, c),
        };
        let cpu = cpu as usize;
        while list.len() <= cpu {
            list.push(self.queues.len());
            self.queues.push(Queue::default());
        }
        list[cpu]
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn push(&mut self, stream: Stream, ts: i64, event: Event) {
        let idx = self.queue_index(stream);
        let q = &mut self.queues[idx];
        if q.events.is_empty() {
            q.min_ts = ts;
            q.max_ts = ts;
            q.sorted = true;
            self.order.insert((ts, idx));
        } else {
            if ts < q.max_ts {
                q.sorted = false;
            } else {
                q.max_ts = ts;
            }
            if ts < q.min_ts {
                self.order.remove(&(q.min_ts, idx));
                q.min_ts = ts;
                self.order.insert((ts, idx));
            }
        }
        q.events.push_back((ts, event));
        self.len += 1;
        self.max_ts = self.max_ts.max(ts);
    }

    /// Extracts in order until at most `keep` events remain buffered.
    pub fn extract(
        &mut self,
        keep: usize,
        mut sink: impl FnMut(i64, Event) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        while self.len > keep {
            let Some(&(min_ts, idx)) = self.order.first() else {
                break;
            };
            self.order.remove(&(min_ts, idx));
            let second = self.order.first().map_or(i64::MAX, |&(ts, _)| ts);
            let q = &mut self.queues[idx];
            if !q.sorted {
                q.events.make_contiguous().sort_by_key(|(ts, _)| *ts);
                q.sorted = true;
            }
            while let Some(&(ts, _)) = q.events.front() {
                if ts > second {
                    break;
                }
                let (ts, event) = q.events.pop_front().expect("front checked");
                self.len -= 1;
                if ts < self.latest_extracted {
                    self.out_of_order += 1;
                    continue;
                }
                self.latest_extracted = ts;
                sink(ts, event)?;
            }
            if let Some(&(ts, _)) = q.events.front() {
                q.min_ts = ts;
                self.order.insert((ts, idx));
            } else {
                // Give the memory of a drained burst back.
                q.events.shrink_to(1024);
            }
        }
        Ok(())
    }
}
