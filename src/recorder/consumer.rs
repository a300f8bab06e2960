//! One consumer thread per shard: drains the shard's ring, decodes records
//! and hands them to the shard's encoder.

use crate::model::event::{Event, Header};
use crate::perfetto::writer::ShardEncoder;
use crate::recorder::abi::{self, N_TYPES};
use anyhow::{Context, bail};
use libbpf_rs::{AsRawLibbpf, MapHandle, RingBufferBuilder, libbpf_sys};
use std::cell::{Cell, RefCell};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a consumer sleeps when BPF does not wake it: BPF wakes it only
/// when a ring fills up, so this bounds the latency of a quiet ring.
const POLL: Duration = Duration::from_millis(50);
/// Records between looks at a ring's fill while it is drained.
const FILL_CHECK_EVERY: u64 = 4096;
/// How often buffered events become a chunk in the file (what a crash loses).
const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// Where decoded events go: the shard's Perfetto encoder, or a test's counter.
pub trait EventSink {
    fn push(&mut self, h: &Header, ev: &Event<'_>) -> anyhow::Result<()>;
    fn flush(&mut self) -> anyhow::Result<()>;
}

impl EventSink for ShardEncoder {
    fn push(&mut self, h: &Header, ev: &Event<'_>) -> anyhow::Result<()> {
        ShardEncoder::push(self, h, ev)
    }
    fn flush(&mut self) -> anyhow::Result<()> {
        ShardEncoder::flush(self)
    }
}

/// A shard's counters, published after every poll for the live line and summary.
#[derive(Debug, Default)]
pub struct ShardCounters {
    /// Records by type (indexed by [`abi::type_index`]).
    pub by_type: [AtomicU64; N_TYPES],
    /// Records that did not decode (counted, skipped).
    pub malformed: AtomicU64,
    /// The ring's size, and the most data it held when the consumer woke
    /// (drops start when it is full): how close a recording came to losing.
    pub ring_bytes: AtomicU64,
    pub ring_peak_bytes: AtomicU64,
}

impl ShardCounters {
    pub fn total(&self) -> u64 {
        self.by_type.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }
}

struct State<S> {
    sink: S,
    by_type: [u64; N_TYPES],
    malformed: u64,
    error: Option<anyhow::Error>,
}

/// Starts the consumer of one shard. `make_sink` runs on the new thread.
/// The thread returns the sink once `stop` is set and the ring is drained
/// (set it only after the programs are detached, so nothing arrives after).
pub fn spawn<S, F>(
    shard: usize,
    ring: MapHandle,
    make_sink: F,
    stop: Arc<AtomicBool>,
    counters: Arc<ShardCounters>,
) -> anyhow::Result<JoinHandle<anyhow::Result<S>>>
where
    S: EventSink + Send + 'static,
    F: FnOnce() -> S + Send + 'static,
{
    std::thread::Builder::new()
        .name(format!("schedlens-shard{shard}"))
        .spawn(move || consume(ring, make_sink(), &stop, &counters))
        .context("starting a consumer thread")
}

fn consume<S: EventSink>(
    ring: MapHandle,
    sink: S,
    stop: &AtomicBool,
    counters: &ShardCounters,
) -> anyhow::Result<S> {
    let state = RefCell::new(State {
        sink,
        by_type: [0; N_TYPES],
        malformed: 0,
        error: None,
    });
    // The ring's fill, also looked at every FILL_CHECK_EVERY records while
    // draining: a sink that stalls mid-drain lets the ring fill behind it,
    // which a look only at wakeups (when the drain has caught up) misses.
    let ring_of: Cell<*mut libbpf_sys::ring> = Cell::new(std::ptr::null_mut());
    let ring_fill = || match ring_of.get() {
        r if r.is_null() => 0,
        // SAFETY: rb's ring, set once rb exists; rb outlives every call
        // (those in its callback run inside rb.consume_raw). Only reads the
        // ring's positions.
        r => unsafe { libbpf_sys::ring__avail_data_size(r) as u64 },
    };
    let peak = Cell::new(0u64);
    let mut drained = 0u64;
    let mut builder = RingBufferBuilder::new();
    builder
        .add(&ring, |data: &[u8]| {
            drained += 1;
            if drained % FILL_CHECK_EVERY == 0 {
                peak.set(peak.get().max(ring_fill()));
            }
            let mut st = state.borrow_mut();
            let st = &mut *st;
            match abi::decode(data) {
                Ok((ty, h, ev)) => {
                    st.by_type[abi::type_index(ty)] += 1;
                    if let Err(e) = st.sink.push(&h, &ev) {
                        st.error = Some(e);
                        // Stops this poll; the loop below reports the error.
                        return -1;
                    }
                }
                Err(_) => st.malformed += 1,
            }
            0
        })
        .context("registering a ring buffer")?;
    let rb = builder.build().context("creating a ring buffer reader")?;
    // SAFETY: rb is a live ring_buffer with the one ring added above; the
    // ring lives as long as rb, which outlives every use below.
    let ring_ptr = unsafe { libbpf_sys::ring_buffer__ring(rb.as_libbpf_object().as_ptr(), 0) };
    if ring_ptr.is_null() {
        bail!("the ring buffer reader has no ring");
    }
    // SAFETY: as above; only reads the ring's header.
    counters.ring_bytes.store(
        unsafe { libbpf_sys::ring__size(ring_ptr) } as u64,
        Ordering::Relaxed,
    );
    ring_of.set(ring_ptr);
    let mut last_flush = Instant::now();
    loop {
        let stopping = stop.load(Ordering::Acquire);
        // Wait, then look at the fill before draining: the moment the ring
        // is fullest (what poll_raw would do, with that look in between).
        if !stopping {
            let mut ev = libc::epoll_event { events: 0, u64: 0 };
            // SAFETY: epoll_fd is rb's epoll instance; ev is one valid slot.
            let n = unsafe { libc::epoll_wait(rb.epoll_fd(), &mut ev, 1, POLL.as_millis() as i32) };
            if n < 0 {
                let err = std::io::Error::last_os_error();
                // A signal (Ctrl-C) interrupts epoll_wait: not an error.
                if err.kind() != std::io::ErrorKind::Interrupted {
                    return Err(anyhow::Error::new(err).context("waiting on a ring buffer"));
                }
            }
        }
        peak.set(peak.get().max(ring_fill()));
        let ret = rb.consume_raw();
        let mut st = state.borrow_mut();
        if let Some(e) = st.error.take() {
            return Err(e);
        }
        // A signal (Ctrl-C) interrupts epoll_wait: not an error.
        if ret < 0 && ret != -libc::EINTR {
            bail!(
                "reading a ring buffer: {}",
                std::io::Error::from_raw_os_error(-ret)
            );
        }
        for (c, &n) in counters.by_type.iter().zip(&st.by_type) {
            c.store(n, Ordering::Relaxed);
        }
        counters.malformed.store(st.malformed, Ordering::Relaxed);
        counters
            .ring_peak_bytes
            .store(peak.get(), Ordering::Relaxed);
        if stopping {
            st.sink.flush()?;
            break;
        }
        if last_flush.elapsed() >= FLUSH_EVERY {
            st.sink.flush()?;
            last_flush = Instant::now();
        }
    }
    drop(rb);
    Ok(state.into_inner().sink)
}
