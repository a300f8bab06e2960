//! The flight recorder's ring: the trace's compressed chunks kept in memory,
//! the oldest dropped once they are older than the window or the ring holds
//! more than its byte budget. A snapshot is the chunks it holds, each a
//! complete `Trace.packet` record (a zstd frame of whole bundles), so any
//! suffix of the chunk stream decodes on its own.

use std::collections::VecDeque;
use std::sync::Arc;

/// One chunk as it would have been appended to a file, and when it was.
struct RingChunk {
    /// CLOCK_BOOTTIME when the chunk arrived; its events are all older.
    appended_ns: u64,
    data: Arc<[u8]>,
}

/// The ring's own accounting, for the live line, the summary and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RingStats {
    /// Bytes of the chunks held now.
    pub bytes: u64,
    /// The most bytes it ever held (after eviction).
    pub peak_bytes: u64,
    pub chunks: u64,
    /// Chunks dropped for age or size since the start.
    pub evicted_chunks: u64,
    /// Bytes of every chunk ever appended.
    pub appended_bytes: u64,
    /// When the oldest chunk held arrived (0 when empty).
    pub oldest_ns: u64,
}

/// A bounded ring of compressed chunks.
pub struct FlightRing {
    window_ns: u64,
    max_bytes: u64,
    chunks: VecDeque<RingChunk>,
    stats: RingStats,
}

impl FlightRing {
    /// Keeps chunks that arrived within the last `window_ns`, at most
    /// `max_bytes` of them (the newest chunk always stays).
    pub fn new(window_ns: u64, max_bytes: u64) -> FlightRing {
        FlightRing {
            window_ns,
            max_bytes,
            chunks: VecDeque::new(),
            stats: RingStats::default(),
        }
    }

    /// Adds a chunk that arrived at `now_ns` and drops what fell out.
    pub fn push(&mut self, data: &[u8], now_ns: u64) {
        self.chunks.push_back(RingChunk {
            appended_ns: now_ns,
            data: Arc::from(data),
        });
        self.stats.bytes += data.len() as u64;
        self.stats.appended_bytes += data.len() as u64;
        self.evict(now_ns);
    }

    /// Drops the chunks older than the window or beyond the byte budget.
    pub fn evict(&mut self, now_ns: u64) {
        let oldest_kept = now_ns.saturating_sub(self.window_ns);
        while let Some(front) = self.chunks.front() {
            let too_old = front.appended_ns < oldest_kept;
            let too_big = self.stats.bytes > self.max_bytes && self.chunks.len() > 1;
            if !(too_old || too_big) {
                break;
            }
            self.stats.bytes -= front.data.len() as u64;
            self.stats.evicted_chunks += 1;
            self.chunks.pop_front();
        }
        self.stats.chunks = self.chunks.len() as u64;
        self.stats.peak_bytes = self.stats.peak_bytes.max(self.stats.bytes);
        self.stats.oldest_ns = self.chunks.front().map_or(0, |c| c.appended_ns);
    }

    /// The chunks held now, oldest first (shared, not copied: a snapshot
    /// writes them outside the writer's lock).
    pub fn chunks(&self) -> Vec<Arc<[u8]>> {
        self.chunks.iter().map(|c| Arc::clone(&c.data)).collect()
    }

    pub fn stats(&self) -> RingStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_by_age_and_by_size_keeping_the_newest() {
        let mut ring = FlightRing::new(10, 25);
        ring.push(&[1; 10], 100);
        ring.push(&[2; 10], 105);
        assert_eq!(ring.stats().chunks, 2);
        // The first is now older than the window.
        ring.push(&[3; 10], 111);
        let held: Vec<u8> = ring.chunks().iter().map(|c| c[0]).collect();
        assert_eq!(held, [2, 3]);
        // Over the byte budget: the oldest goes even inside the window.
        ring.push(&[4; 10], 112);
        let held: Vec<u8> = ring.chunks().iter().map(|c| c[0]).collect();
        assert_eq!(held, [3, 4]);
        // A chunk larger than the budget stays alone.
        ring.push(&[5; 40], 113);
        let s = ring.stats();
        assert_eq!((s.chunks, s.bytes, s.evicted_chunks), (1, 40, 4));
        assert_eq!(s.appended_bytes, 80);
        assert_eq!((s.peak_bytes, s.oldest_ns), (40, 113));
        ring.evict(200);
        assert_eq!(ring.stats().chunks, 0);
        assert_eq!(ring.stats().oldest_ns, 0);
    }
}
