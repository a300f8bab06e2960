//! Stack samples on disk from their event to the end of the recording, when
//! their frames are named and they are written into the trace (after the
//! interned callstacks they refer to, which only exist then). Kept in
//! memory, a 30 s system-wide `--stacks all` recording held hundreds of MiB
//! of them.
//!
//! Each shard spools into an unnamed temporary file in the trace's
//! directory (same filesystem, mode 0600: no more readable than the trace),
//! as sorted runs: samples gather in a buffer of `run` samples, which is
//! handed to a writer thread that sorts it by time and writes it as one
//! run of fixed-size records (one write per run, no allocation per
//! sample); while the disk is slower than the samples come, runs wait in
//! memory rather than hold up the consumer. At the end [`Spooled::samples`]
//! merges every run of every shard by time, reading each run a block at a
//! time; it can be read as often as needed.
//!
//! A failed write (a full disk) stops the recording as a failed trace write
//! does: the trace keeps its events up to its last complete chunk, without
//! stacks, and the one-line error names the spool. A spool that cannot be
//! read back at the end (cut short, a bad record) leaves the trace complete
//! but without stacks: it is read whole once before any sample is written.

use crate::model::stack::{StackKind, StackSample};
use anyhow::Context;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::fs::File;
use std::io::ErrorKind;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::thread::JoinHandle;

/// Samples per run without `--stack-spool-run`: 768 KiB of records.
pub const DEFAULT_RUN: usize = 32 * 1024;
/// A record: ts u64, tid i32, tgid i32, kernel and user stack ids in 24
/// bits each, cpu in the low 14 bits of a u16 whose top 2 are the kind
/// (its index in [`StackKind::ALL`]); little-endian.
pub const RECORD_BYTES: usize = 24;
/// A stack id's 24 bits when there is no stack.
const NO_STACK: u32 = 0xff_ffff;
/// Ids from here on are written as this one: the stack map has far fewer
/// entries (`record::STACK_MAP_ENTRIES`), so no such id is readable anyway.
pub const MAX_STACK_ID: u32 = NO_STACK - 1;
const CPU_BITS: u32 = 14;
const CPU_MASK: u16 = (1 << CPU_BITS) - 1;
/// Records each run's cursor reads at once while merging (12 KiB).
const READ_RECORDS: usize = 512;
/// Runs queued for a shard's writer (each `run` samples: 20 MiB at the
/// default run size); past them, runs wait in the spool's backlog.
const WRITES_QUEUED: usize = 16;
/// Names tried for a named spool before giving up.
const NAME_ATTEMPTS: usize = 8;

/// One shard's spool while recording.
pub struct Spool {
    file: Arc<SpoolFile>,
    /// The run being gathered, and its capacity.
    pending: Vec<StackSample>,
    run: usize,
    runs: Vec<Run>,
    /// Where the next run starts.
    end: u64,
    /// To the writer: runs and where they go; from it, the run buffers
    /// it wrote, for reuse.
    to_writer: Option<SyncSender<(u64, Vec<StackSample>)>>,
    /// Runs the writer's queue had no room for, oldest first. The consumer
    /// never waits for a slow disk (its ring would fill and drop events):
    /// while writes lag, runs are held in memory instead.
    backlog: VecDeque<(u64, Vec<StackSample>)>,
    written: Receiver<Vec<StackSample>>,
    writer: Option<JoinHandle<anyhow::Result<()>>>,
}

/// The file and what its errors name.
struct SpoolFile {
    file: File,
    shard: usize,
    dir: PathBuf,
}

impl SpoolFile {
    fn describe(&self) -> String {
        format!(
            "the stack spool of shard {} (an unnamed temporary file in {})",
            self.shard,
            self.dir.display()
        )
    }
}

/// A run: its first byte and its samples.
#[derive(Clone, Copy, Debug)]
struct Run {
    start: u64,
    len: u64,
}

impl Spool {
    /// An empty spool for `shard` in `dir`, sorting `run` samples at a time.
    pub fn create(dir: &Path, shard: usize, run: usize) -> anyhow::Result<Spool> {
        let file = SpoolFile {
            file: create_unnamed(dir)
                .with_context(|| format!("cannot create a stack spool in {}", dir.display()))?,
            shard,
            dir: dir.to_path_buf(),
        };
        Spool::on(file, run)
    }

    /// Runs are sorted and written by a thread of their own, so the
    /// consumer only hands them over: a write to a busy disk can wait on
    /// the filesystem long enough for the consumer's ring to fill.
    fn on(file: SpoolFile, run: usize) -> anyhow::Result<Spool> {
        let run = run.max(1);
        let file = Arc::new(file);
        let (to_writer, runs) =
            std::sync::mpsc::sync_channel::<(u64, Vec<StackSample>)>(WRITES_QUEUED);
        let (give_back, written) = std::sync::mpsc::channel();
        let out = Arc::clone(&file);
        let writer = std::thread::Builder::new()
            .name(format!("sl-spool-{}", file.shard))
            .spawn(move || {
                let mut bytes = Vec::with_capacity(run * RECORD_BYTES);
                for (at, mut samples) in runs {
                    samples.sort_unstable_by_key(|s| s.ts);
                    bytes.clear();
                    for s in &samples {
                        bytes.extend_from_slice(&encode(s));
                    }
                    out.file
                        .write_all_at(&bytes, at)
                        .with_context(|| format!("cannot write {}", out.describe()))?;
                    samples.clear();
                    // The spool may be gone already; the buffer goes with it.
                    let _ = give_back.send(samples);
                }
                Ok(())
            })
            .context("cannot start a stack spool's writer thread")?;
        Ok(Spool {
            file,
            pending: Vec::with_capacity(run),
            run,
            runs: Vec::new(),
            end: 0,
            to_writer: Some(to_writer),
            backlog: VecDeque::new(),
            written,
            writer: Some(writer),
        })
    }

    /// Adds a sample; an error is a write of an earlier run that failed.
    pub fn push(&mut self, s: StackSample) -> anyhow::Result<()> {
        self.pending.push(s);
        if self.pending.len() >= self.run {
            self.write_run()?;
        }
        Ok(())
    }

    /// Writes the last run and waits for the writes; the spool is then
    /// only read.
    pub fn finish(mut self) -> anyhow::Result<Spooled> {
        self.write_run()?;
        while let Some(run) = self.backlog.pop_front() {
            let sent = self.to_writer.as_ref().is_some_and(|w| w.send(run).is_ok());
            if !sent {
                return Err(self.writer_stopped());
            }
        }
        self.stop_writer()?;
        Ok(Spooled {
            shards: vec![(Arc::clone(&self.file), std::mem::take(&mut self.runs))],
        })
    }

    fn write_run(&mut self) -> anyhow::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let next = self
            .written
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(self.run));
        let samples = std::mem::replace(&mut self.pending, next);
        let run = Run {
            start: self.end,
            len: samples.len() as u64,
        };
        self.runs.push(run);
        self.end += run.len * RECORD_BYTES as u64;
        self.backlog.push_back((run.start, samples));
        // Oldest first, as many as the queue takes now.
        while let Some(next) = self.backlog.pop_front() {
            match self.to_writer.as_ref().map(|w| w.try_send(next)) {
                Some(Ok(())) => {}
                Some(Err(TrySendError::Full(next))) => {
                    self.backlog.push_front(next);
                    break;
                }
                Some(Err(TrySendError::Disconnected(_))) | None => {
                    return Err(self.writer_stopped());
                }
            }
        }
        Ok(())
    }

    /// The writer stopped taking runs: its error says why.
    fn writer_stopped(&mut self) -> anyhow::Error {
        match self.stop_writer() {
            Err(e) => e,
            Ok(()) => anyhow::anyhow!("{} stopped taking writes", self.file.describe()),
        }
    }

    /// Lets the writer finish what it was given; its error, if it failed.
    fn stop_writer(&mut self) -> anyhow::Result<()> {
        self.to_writer = None;
        match self.writer.take().map(JoinHandle::join) {
            None | Some(Ok(Ok(()))) => Ok(()),
            Some(Ok(Err(e))) => Err(e),
            Some(Err(_)) => anyhow::bail!("the writer of {} panicked", self.file.describe()),
        }
    }
}

impl Drop for Spool {
    /// A recording that failed: the writer ends with its queue.
    fn drop(&mut self) {
        let _ = self.stop_writer();
    }
}

/// Finished spools, read back merged.
#[derive(Default)]
pub struct Spooled {
    shards: Vec<(Arc<SpoolFile>, Vec<Run>)>,
}

impl Spooled {
    /// All of `spools`, as one.
    pub fn join(spools: impl IntoIterator<Item = Spooled>) -> Spooled {
        Spooled {
            shards: spools.into_iter().flat_map(|s| s.shards).collect(),
        }
    }

    /// Every sample of every shard in time order (equal times: by shard,
    /// then run); a read error or a bad record ends it with an error.
    pub fn samples(&self) -> Merge<'_> {
        let cursors = self
            .shards
            .iter()
            .flat_map(|(file, runs)| runs.iter().map(move |&run| Cursor::new(file, run)))
            .collect();
        Merge {
            cursors,
            heap: BinaryHeap::new(),
            started: false,
            failed: false,
        }
    }
}

/// [`Spooled::samples`]: a k-way merge of the runs.
pub struct Merge<'a> {
    cursors: Vec<Cursor<'a>>,
    /// Each unfinished run's next time, and its cursor.
    heap: BinaryHeap<Reverse<(u64, usize)>>,
    started: bool,
    failed: bool,
}

impl Merge<'_> {
    fn fail(&mut self, e: anyhow::Error) -> Option<anyhow::Result<StackSample>> {
        self.failed = true;
        Some(Err(e))
    }
}

impl Iterator for Merge<'_> {
    type Item = anyhow::Result<StackSample>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        if !self.started {
            self.started = true;
            for i in 0..self.cursors.len() {
                match self.cursors[i].advance() {
                    Ok(true) => self.heap.push(Reverse((self.cursors[i].current.ts, i))),
                    Ok(false) => {}
                    Err(e) => return self.fail(e),
                }
            }
        }
        let Reverse((_, i)) = self.heap.pop()?;
        let cursor = &mut self.cursors[i];
        let sample = cursor.current;
        match cursor.advance() {
            Ok(true) => self.heap.push(Reverse((cursor.current.ts, i))),
            Ok(false) => {}
            Err(e) => return self.fail(e),
        }
        Some(Ok(sample))
    }
}

/// Reads one run a block at a time.
struct Cursor<'a> {
    file: &'a SpoolFile,
    /// The next block's first byte, and the run's end.
    next: u64,
    end: u64,
    block: Vec<u8>,
    /// The next record's offset in `block`.
    pos: usize,
    current: StackSample,
}

impl<'a> Cursor<'a> {
    fn new(file: &'a SpoolFile, run: Run) -> Cursor<'a> {
        Cursor {
            file,
            next: run.start,
            end: run.start + run.len * RECORD_BYTES as u64,
            block: Vec::new(),
            pos: 0,
            current: StackSample {
                ts: 0,
                tid: 0,
                tgid: 0,
                kernel: None,
                user: None,
                cpu: 0,
                kind: StackKind::OffCpu,
            },
        }
    }

    /// Makes the run's next sample `current`; false at its end.
    fn advance(&mut self) -> anyhow::Result<bool> {
        if self.pos == self.block.len() {
            if self.next == self.end {
                return Ok(false);
            }
            let n = (self.end - self.next).min((READ_RECORDS * RECORD_BYTES) as u64) as usize;
            self.block.resize(n, 0);
            self.file
                .file
                .read_exact_at(&mut self.block, self.next)
                .map_err(|e| match e.kind() {
                    ErrorKind::UnexpectedEof => anyhow::anyhow!(
                        "{} ends before its run at byte {}: it was cut short",
                        self.file.describe(),
                        self.next
                    ),
                    _ => anyhow::Error::new(e)
                        .context(format!("cannot read {}", self.file.describe())),
                })?;
            self.next += n as u64;
            self.pos = 0;
        }
        let at = self.next - (self.block.len() - self.pos) as u64;
        let record = &self.block[self.pos..self.pos + RECORD_BYTES];
        self.current = decode(record.try_into().expect("a whole record")).ok_or_else(|| {
            anyhow::anyhow!(
                "{} holds a bad record at byte {at} (an unknown stack kind)",
                self.file.describe()
            )
        })?;
        self.pos += RECORD_BYTES;
        Ok(true)
    }
}

fn encode(s: &StackSample) -> [u8; RECORD_BYTES] {
    let id = |id: Option<u32>| id.map_or(NO_STACK, |id| id.min(MAX_STACK_ID)).to_le_bytes();
    let kind = StackKind::ALL
        .iter()
        .position(|&k| k == s.kind)
        .expect("every kind is in ALL") as u16;
    let mut r = [0; RECORD_BYTES];
    r[0..8].copy_from_slice(&s.ts.to_le_bytes());
    r[8..12].copy_from_slice(&s.tid.to_le_bytes());
    r[12..16].copy_from_slice(&s.tgid.to_le_bytes());
    r[16..19].copy_from_slice(&id(s.kernel)[..3]);
    r[19..22].copy_from_slice(&id(s.user)[..3]);
    // Linux has at most 8192 CPUs (CONFIG_NR_CPUS).
    r[22..24].copy_from_slice(&((s.cpu & CPU_MASK) | kind << CPU_BITS).to_le_bytes());
    r
}

/// None: not a record [`encode`] writes.
fn decode(r: &[u8; RECORD_BYTES]) -> Option<StackSample> {
    let u32_at = |at: usize| u32::from_le_bytes(r[at..at + 4].try_into().expect("4 bytes"));
    let id = |at: usize| {
        let id = u32::from_le_bytes([r[at], r[at + 1], r[at + 2], 0]);
        (id != NO_STACK).then_some(id)
    };
    let cpu_kind = u16::from_le_bytes([r[22], r[23]]);
    Some(StackSample {
        ts: u64::from_le_bytes(r[0..8].try_into().expect("8 bytes")),
        tid: u32_at(8) as i32,
        tgid: u32_at(12) as i32,
        kernel: id(16),
        user: id(19),
        cpu: cpu_kind & CPU_MASK,
        kind: *StackKind::ALL.get(usize::from(cpu_kind >> CPU_BITS))?,
    })
}

/// An unnamed file in `dir`, mode 0600: O_TMPFILE, or where the filesystem
/// has none, a new file under an unpredictable name unlinked at once.
fn create_unnamed(dir: &Path) -> std::io::Result<File> {
    let unnamed = File::options()
        .read(true)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_TMPFILE)
        .open(dir);
    match unnamed {
        Err(e) if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::EISDIR)) => {}
        other => return other,
    }
    let mut last = None;
    for _ in 0..NAME_ATTEMPTS {
        let path = dir.join(format!(".schedlens-spool.{:016x}", random()?));
        match File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
        {
            Ok(file) => {
                std::fs::remove_file(&path)?;
                return Ok(file);
            }
            Err(e) if e.kind() == ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.expect("at least one attempt"))
}

fn random() -> std::io::Result<u64> {
    let mut bytes = [0u8; 8];
    // SAFETY: getrandom writes at most `bytes.len()` bytes into `bytes`.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if n != bytes.len() as isize {
        return Err(std::io::Error::last_os_error());
    }
    Ok(u64::from_le_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn sample(ts: u64, tid: i32, kind: StackKind) -> StackSample {
        StackSample {
            ts,
            tid,
            tgid: tid + 1,
            kernel: Some(tid as u32),
            user: (tid % 2 == 0).then_some(7),
            cpu: (tid % 3) as u16,
            kind,
        }
    }

    fn read(spooled: &Spooled) -> anyhow::Result<Vec<StackSample>> {
        spooled.samples().collect()
    }

    #[test]
    fn records_round_trip() {
        let mut s = sample(u64::MAX, -1, StackKind::Waker);
        s.kernel = None;
        s.cpu = 8191;
        s.user = Some(MAX_STACK_ID);
        assert_eq!(decode(&encode(&s)), Some(s));
        let far = StackSample {
            kernel: Some(u32::MAX),
            ..s
        };
        assert_eq!(decode(&encode(&far)).unwrap().kernel, Some(MAX_STACK_ID));
    }

    #[test]
    fn merges_runs_of_all_shards_in_time_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut shards = Vec::new();
        let mut all = Vec::new();
        for shard in 0..3 {
            let mut spool = Spool::create(dir.path(), shard, 4).unwrap();
            // Out of order within a run, overlapping across runs and shards.
            for i in 0..23u64 {
                let s = sample(
                    (i * 7919 + shard as u64 * 13) % 101,
                    i as i32,
                    StackKind::Cpu,
                );
                spool.push(s).unwrap();
                all.push(s);
            }
            assert_eq!(spool.runs.len(), 5);
            shards.push(spool.finish().unwrap());
        }
        let spooled = Spooled::join(shards);
        let merged = read(&spooled).unwrap();
        assert_eq!(merged.len(), all.len());
        assert!(merged.windows(2).all(|w| w[0].ts <= w[1].ts));
        let key = |s: &StackSample| (s.ts, s.tid, s.tgid);
        let (mut a, mut b) = (merged.clone(), all);
        a.sort_by_key(key);
        b.sort_by_key(key);
        assert_eq!(a, b);
        // A second pass reads the same.
        assert_eq!(read(&spooled).unwrap(), merged);
    }

    /// Runs come faster than the writer writes them (one sample a run, a
    /// write each): pushes never wait, the runs past the writer's queue wait
    /// in the backlog, and every sample comes back in order.
    #[test]
    fn a_lagging_writer_never_holds_up_pushes() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::create(dir.path(), 0, 1).unwrap();
        let n = 20_000u64;
        let mut most_waiting = 0;
        for i in 0..n {
            spool
                .push(sample(n - i, i as i32, StackKind::OffCpu))
                .unwrap();
            most_waiting = most_waiting.max(spool.backlog.len());
        }
        assert!(most_waiting > 0, "the writer kept up with {n} writes");
        let merged = read(&spool.finish().unwrap()).unwrap();
        let times: Vec<u64> = merged.iter().map(|s| s.ts).collect();
        assert_eq!(times, (1..=n).collect::<Vec<_>>());
    }

    #[test]
    fn the_spool_has_no_name_and_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::create(dir.path(), 0, 2).unwrap();
        spool.push(sample(1, 1, StackKind::OffCpu)).unwrap();
        spool.push(sample(2, 2, StackKind::OffCpu)).unwrap();
        let spooled = spool.finish().unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        let meta = spooled.shards[0].0.file.metadata().unwrap();
        assert_eq!(meta.mode() & 0o777, 0o600);
        assert_eq!(meta.len(), 2 * RECORD_BYTES as u64);
    }

    #[test]
    fn a_bad_record_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::create(dir.path(), 1, 8).unwrap();
        for i in 0..5 {
            spool.push(sample(i, i as i32, StackKind::OffCpu)).unwrap();
        }
        let spooled = spool.finish().unwrap();
        let (file, _) = &spooled.shards[0];
        // The third record's kind becomes 3, which no kind has.
        file.file
            .write_all_at(&[0xff, 0xff], 2 * RECORD_BYTES as u64 + 22)
            .unwrap();
        let e = read(&spooled).unwrap_err().to_string();
        assert!(e.contains("bad record at byte 48"), "{e}");
        assert!(e.contains("stack spool of shard 1"), "{e}");
        // The merge reads one sample ahead: the error comes in the second's place.
        assert_eq!(spooled.samples().filter(Result::is_ok).count(), 1);
    }

    #[test]
    fn a_short_spool_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::create(dir.path(), 0, 3).unwrap();
        for i in 0..6 {
            spool.push(sample(i, i as i32, StackKind::Waker)).unwrap();
        }
        let spooled = spool.finish().unwrap();
        spooled.shards[0]
            .0
            .file
            .set_len(5 * RECORD_BYTES as u64 - 1)
            .unwrap();
        let e = read(&spooled).unwrap_err().to_string();
        assert!(e.contains("cut short"), "{e}");
    }

    #[test]
    fn a_full_disk_names_the_spool() {
        // /dev/full: every write fails with ENOSPC.
        let file = SpoolFile {
            file: File::options().write(true).open("/dev/full").unwrap(),
            shard: 2,
            dir: PathBuf::from("/somewhere"),
        };
        let mut spool = Spool::on(file, 1).unwrap();
        spool.push(sample(1, 1, StackKind::Cpu)).unwrap();
        let e = spool.finish().err().expect("a full disk fails the spool");
        let text = format!("{e:#}");
        assert!(
            text.contains(
                "cannot write the stack spool of shard 2 (an unnamed temporary file in /somewhere)"
            ),
            "{text}"
        );
        assert!(
            e.chain().any(|c| c
                .downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == ErrorKind::StorageFull)),
            "{text}"
        );
    }
}
