//! Writing a column file while the importer runs.
//!
//! A row's id is fixed when the importer opens it, but the row arrives here
//! when it closes, so rows come slightly out of id order. Closed rows wait in
//! a reorder window and are appended to the current block in id order. A
//! row still open when the window is full (a long sleep) leaves a NULL
//! placeholder and is patched into place at the end, through a writable
//! mapping of the finished file, as are later amendments to written rows.
//! At the end the indexes are built by counting sort (keys) or by one sort
//! of the non-NULL values (the order column).

use super::layout::{Directory, KeyDir, Layout, OrderDir, Source, TableDir};
use super::{BLOCK_ROWS, MAGIC, NULL_I32, NULL_I64, NULL_U32, TRAILER_MAGIC};
use crate::analyze::import::strings::{Str, Strings};
use anyhow::Context;
use rustc_hash::FxHashMap;
use std::collections::VecDeque;
use std::fs::File;
use std::hash::BuildHasher;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Closed rows held for reordering before a row still open is given up on.
const REORDER_WINDOW: usize = 1 << 15;
/// Key columns with more distinct values than this get no index (a hostile
/// trace could otherwise make the run table huge; real keys are utids and
/// CPUs).
const MAX_KEYS: u64 = 1 << 26;

/// Receives one row's values, in the layout's physical column order.
pub trait Put {
    fn i64(&mut self, v: Option<i64>);
    fn i32(&mut self, v: Option<i32>);
    fn u32(&mut self, v: Option<u32>);
    fn str(&mut self, v: Option<Str>);
}

/// A row of a columnar table.
pub trait ColumnRow {
    const LAYOUT: &'static Layout;
    fn id(&self) -> i64;
    fn put(&self, out: &mut impl Put);
}

/// Importer string ids -> the file's own dense string table.
#[derive(Default)]
pub struct StrMap {
    local: Vec<u32>,
    list: Vec<String>,
}

impl StrMap {
    #[inline]
    fn get(&mut self, s: Str, strings: &Strings) -> u32 {
        let i = s as usize;
        if i >= self.local.len() {
            self.local.resize(i + 1, NULL_U32);
        }
        if self.local[i] == NULL_U32 {
            self.local[i] = self.list.len() as u32;
            self.list.push(strings.get(s).to_owned());
        }
        self.local[i]
    }
}

/// Appends values to a block being filled.
struct BlockPut<'a> {
    cols: &'a mut [Vec<u8>],
    col: usize,
    strs: &'a mut StrMap,
    strings: &'a Strings,
}

impl BlockPut<'_> {
    #[inline]
    fn push(&mut self, bytes: &[u8]) {
        self.cols[self.col].extend_from_slice(bytes);
        self.col += 1;
    }
}

impl Put for BlockPut<'_> {
    #[inline]
    fn i64(&mut self, v: Option<i64>) {
        self.push(&v.unwrap_or(NULL_I64).to_le_bytes());
    }
    #[inline]
    fn i32(&mut self, v: Option<i32>) {
        self.push(&v.unwrap_or(NULL_I32).to_le_bytes());
    }
    #[inline]
    fn u32(&mut self, v: Option<u32>) {
        self.push(&v.unwrap_or(NULL_U32).to_le_bytes());
    }
    #[inline]
    fn str(&mut self, v: Option<Str>) {
        let id = v.map_or(NULL_U32, |s| self.strs.get(s, self.strings));
        self.push(&id.to_le_bytes());
    }
}

/// Writes one row's values in place in its mapped block.
struct PatchPut<'a> {
    /// The row's block.
    map: &'a mut [u8],
    layout: &'static Layout,
    slot: usize,
    col: usize,
    strs: &'a mut StrMap,
    strings: &'a Strings,
}

impl PatchPut<'_> {
    fn write(&mut self, bytes: &[u8]) {
        let at =
            self.layout.column_offset(self.col) + self.slot * self.layout.phys[self.col].1.width();
        self.map[at..at + bytes.len()].copy_from_slice(bytes);
        self.col += 1;
    }
}

impl Put for PatchPut<'_> {
    fn i64(&mut self, v: Option<i64>) {
        self.write(&v.unwrap_or(NULL_I64).to_le_bytes());
    }
    fn i32(&mut self, v: Option<i32>) {
        self.write(&v.unwrap_or(NULL_I32).to_le_bytes());
    }
    fn u32(&mut self, v: Option<u32>) {
        self.write(&v.unwrap_or(NULL_U32).to_le_bytes());
    }
    fn str(&mut self, v: Option<Str>) {
        let id = v.map_or(NULL_U32, |s| self.strs.get(s, self.strings));
        self.write(&id.to_le_bytes());
    }
}

/// A value for one column of a row already written.
#[derive(Debug, Clone, Copy)]
pub enum Patch {
    U32(Option<u32>),
    Str(Option<Str>),
}

/// The file being written, shared by the tables.
pub struct ColumnFile {
    out: BufWriter<File>,
    pos: u64,
    build_id: u64,
    strs: StrMap,
}

impl ColumnFile {
    /// Creates the column file at `path`, or an anonymous temporary file
    /// (for loads into an in-memory database).
    pub fn create(path: Option<&Path>) -> anyhow::Result<ColumnFile> {
        let file = match path {
            Some(p) => File::options()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(p)
                .with_context(|| format!("cannot create {}", p.display()))?,
            None => tempfile::tempfile().context("cannot create a temporary column file")?,
        };
        // Random enough to tell two builds apart; not a secret.
        let build_id = std::hash::RandomState::new().hash_one(std::time::SystemTime::now());
        let mut out = BufWriter::with_capacity(1 << 20, file);
        out.write_all(MAGIC)?;
        out.write_all(&build_id.to_le_bytes())?;
        Ok(ColumnFile {
            out,
            pos: 16,
            build_id,
            strs: StrMap::default(),
        })
    }

    pub fn build_id(&self) -> u64 {
        self.build_id
    }

    fn write_block(&mut self, cols: &mut [Vec<u8>], layout: &Layout) -> std::io::Result<u64> {
        let at = self.pos;
        for (c, (_, phys)) in cols.iter_mut().zip(layout.phys) {
            // A short (last) block is padded with NULLs to the full shape.
            let full = BLOCK_ROWS * phys.width();
            while c.len() < full {
                c.extend_from_slice(phys.null_bytes());
            }
            self.out.write_all(c)?;
            c.clear();
        }
        self.pos += layout.block_bytes() as u64;
        Ok(at)
    }

    /// Completes the file: patches, indexes, directory. `tables` are every
    /// table written to this file, each already flushed. Works through
    /// buffers of a block or a bounded chunk, never the whole file at once,
    /// so the load's memory does not grow with the trace.
    pub fn finish(
        mut self,
        tables: &mut [&mut dyn Finish],
        strings: &Strings,
    ) -> anyhow::Result<()> {
        self.out.flush()?;
        let file = self
            .out
            .into_inner()
            .map_err(|e| e.into_error())
            .context("writing the column file")?;
        let mut index_end = self.pos;
        let mut plans = Vec::new();
        for t in tables.iter_mut() {
            t.apply_patches(&file, &mut self.strs, strings)
                .context("patching the column file")?;
            plans.push(t.plan_indexes(&file, &mut index_end)?);
        }
        file.set_len(index_end)?;
        for (t, plan) in tables.iter().zip(&plans) {
            t.write_indexes(&file, plan)
                .context("writing the column file's indexes")?;
        }
        let dir = Directory {
            build_id: self.build_id,
            tables: tables
                .iter()
                .zip(plans)
                .map(|(t, plan)| t.directory(plan))
                .collect(),
            strings: std::mem::take(&mut self.strs.list),
        };
        let mut w = BufWriter::new(file);
        w.seek(SeekFrom::Start(index_end))?;
        serde_json::to_writer(&mut w, &dir)?;
        w.write_all(&index_end.to_le_bytes())?;
        w.write_all(TRAILER_MAGIC)?;
        w.flush()?;
        Ok(())
    }
}

/// What a table's indexes will hold, decided before they are written.
pub struct IndexPlan {
    rows: u64,
    ts_sorted: bool,
    keys: Vec<(Vec<u32>, KeyDir)>,
    order: Option<(OrderKeys, OrderDir)>,
}

/// The order index's (value, id) pairs, sorted by value descending then id.
/// Values in 0..2^32 (nearly all: latencies under 4 s) are packed with
/// their id in one u64, half the memory of a pair.
struct OrderKeys {
    /// ((u32::MAX - value) << 32 | id), ascending.
    packed: Vec<u64>,
    /// The others, sorted; those >= 2^32 come before `packed`, negatives after.
    wide: Vec<(i64, u32)>,
}

impl OrderKeys {
    fn ids(&self) -> impl Iterator<Item = u32> + '_ {
        let split = self.wide.partition_point(|w| w.0 >= 1 << 32);
        self.wide[..split]
            .iter()
            .map(|w| w.1)
            .chain(self.packed.iter().map(|p| *p as u32))
            .chain(self.wide[split..].iter().map(|w| w.1))
    }
}

/// A table writer seen by [`ColumnFile::finish`].
pub trait Finish {
    fn apply_patches(
        &mut self,
        file: &File,
        strs: &mut StrMap,
        strings: &Strings,
    ) -> std::io::Result<()>;
    fn plan_indexes(&self, file: &File, end: &mut u64) -> std::io::Result<IndexPlan>;
    fn write_indexes(&self, file: &File, plan: &IndexPlan) -> std::io::Result<()>;
    fn directory(&self, plan: IndexPlan) -> TableDir;
}

/// One table's writer.
pub struct TableWriter<T: ColumnRow> {
    /// Id of the first slot of `window`.
    base: i64,
    /// Closed rows from `base` on; None for rows not closed yet.
    window: VecDeque<Option<T>>,
    /// The block being filled: one byte vector per physical column.
    cols: Vec<Vec<u8>>,
    /// Rows in `cols`.
    filled: usize,
    /// Offsets of the blocks written.
    blocks: Vec<u64>,
    /// Rows closed after their placeholder was written.
    late: FxHashMap<i64, T>,
    /// Amendments to rows already written: (id, physical column, value).
    patches: Vec<(i64, usize, Patch)>,
}

impl<T: ColumnRow> Default for TableWriter<T> {
    fn default() -> Self {
        TableWriter {
            base: 0,
            window: VecDeque::new(),
            cols: T::LAYOUT
                .phys
                .iter()
                .map(|p| Vec::with_capacity(BLOCK_ROWS * p.1.width()))
                .collect(),
            filled: 0,
            blocks: Vec::new(),
            late: FxHashMap::default(),
            patches: Vec::new(),
        }
    }
}

impl<T: ColumnRow> TableWriter<T> {
    /// Takes a closed row and appends every row that is now in order.
    pub fn add(&mut self, row: T, file: &mut ColumnFile, strings: &Strings) -> anyhow::Result<()> {
        let Ok(at) = usize::try_from(row.id() - self.base) else {
            // Its slot was given up on: patched in at the end.
            self.late.insert(row.id(), row);
            return Ok(());
        };
        if at >= self.window.len() {
            self.window.resize_with(at + 1, || None);
        }
        self.window[at] = Some(row);
        if at > 0 && self.window.len() <= REORDER_WINDOW {
            return Ok(());
        }
        while self.window.len() > REORDER_WINDOW || matches!(self.window.front(), Some(Some(_))) {
            let front = self.window.pop_front().flatten();
            self.base += 1;
            self.append(front.as_ref(), file, strings)?;
        }
        Ok(())
    }

    /// Appends a row, or a NULL placeholder for a row still open.
    #[inline]
    fn append(
        &mut self,
        row: Option<&T>,
        file: &mut ColumnFile,
        strings: &Strings,
    ) -> std::io::Result<()> {
        match row {
            Some(r) => r.put(&mut BlockPut {
                cols: &mut self.cols,
                col: 0,
                strs: &mut file.strs,
                strings,
            }),
            None => {
                for (c, (_, phys)) in self.cols.iter_mut().zip(T::LAYOUT.phys) {
                    c.extend_from_slice(phys.null_bytes());
                }
            }
        }
        self.filled += 1;
        if self.filled == BLOCK_ROWS {
            self.blocks
                .push(file.write_block(&mut self.cols, T::LAYOUT)?);
            self.filled = 0;
        }
        Ok(())
    }

    /// A closed row not written yet, to be amended.
    pub fn pending(&mut self, id: i64) -> Option<&mut T> {
        let in_window = usize::try_from(id - self.base)
            .ok()
            .and_then(|at| self.window.get_mut(at))
            .and_then(Option::as_mut);
        match in_window {
            Some(r) => Some(r),
            None => self.late.get_mut(&id),
        }
    }

    /// Amends physical column `col` of a row already written (or not
    /// closed yet: the patch then applies after it is).
    pub fn patch(&mut self, id: i64, col: usize, value: Patch) {
        self.patches.push((id, col, value));
    }

    /// Appends every row held; call once, after the last row.
    pub fn flush(&mut self, file: &mut ColumnFile, strings: &Strings) -> std::io::Result<()> {
        while let Some(r) = self.window.pop_front() {
            self.base += 1;
            self.append(r.as_ref(), file, strings)?;
        }
        if self.filled > 0 {
            self.blocks
                .push(file.write_block(&mut self.cols, T::LAYOUT)?);
            self.filled = 0;
        }
        Ok(())
    }

    /// Rows written so far.
    pub fn rows(&self) -> u64 {
        self.base as u64
    }

    /// Calls `f(id, values)` for every row with the values of physical
    /// columns `cols`, reading one block column at a time.
    fn scan<const N: usize>(
        &self,
        file: &File,
        cols: [usize; N],
        mut f: impl FnMut(u64, [i64; N]),
    ) -> std::io::Result<()> {
        let layout = T::LAYOUT;
        let mut bufs: Vec<Vec<u8>> = cols
            .iter()
            .map(|&c| vec![0; BLOCK_ROWS * layout.phys[c].1.width()])
            .collect();
        let rows = self.rows();
        for (b, &start) in self.blocks.iter().enumerate() {
            let first = (b * BLOCK_ROWS) as u64;
            let n = (rows - first).min(BLOCK_ROWS as u64) as usize;
            for (buf, &c) in bufs.iter_mut().zip(&cols) {
                let w = layout.phys[c].1.width();
                file.read_exact_at(&mut buf[..n * w], start + layout.column_offset(c) as u64)?;
            }
            for slot in 0..n {
                let mut v = [0i64; N];
                for (i, &c) in cols.iter().enumerate() {
                    let phys = layout.phys[c].1;
                    v[i] = phys.read(&bufs[i], slot * phys.width());
                }
                f(first + slot as u64, v);
            }
        }
        Ok(())
    }
}

/// Perm entries held in memory per pass of the (key, id) scatter.
const SCATTER_CHUNK: u32 = 1 << 23;

impl<T: ColumnRow> Finish for TableWriter<T> {
    fn apply_patches(
        &mut self,
        file: &File,
        strs: &mut StrMap,
        strings: &Strings,
    ) -> std::io::Result<()> {
        let mut late: Vec<(i64, T)> = self.late.drain().collect();
        late.sort_unstable_by_key(|r| r.0);
        // Stable: several amendments of one row apply in their order.
        let mut patches = std::mem::take(&mut self.patches);
        patches.sort_by_key(|p| p.0);
        let block_of = |id: i64| usize::try_from(id).ok().map(|i| i / BLOCK_ROWS);
        let (mut li, mut pi) = (0, 0);
        // One block mapped at a time: those that hold late rows or patches.
        while li < late.len() || pi < patches.len() {
            let id = match (late.get(li), patches.get(pi)) {
                (Some(l), Some(p)) => l.0.min(p.0),
                (Some(l), None) => l.0,
                (None, Some(p)) => p.0,
                (None, None) => break,
            };
            let b = block_of(id);
            let in_block = |i: i64| block_of(i) == b;
            let mut map = match b.and_then(|b| self.blocks.get(b)) {
                Some(&off) => Some(unsafe {
                    // SAFETY: the file is ours alone while the load runs
                    // (created here, renamed into place only when complete).
                    memmap2::MmapOptions::new()
                        .offset(off)
                        .len(T::LAYOUT.block_bytes())
                        .map_mut(file)?
                }),
                None => None, // an id outside the table: nothing to patch
            };
            while li < late.len() && in_block(late[li].0) {
                if let Some(map) = &mut map {
                    late[li].1.put(&mut PatchPut {
                        map,
                        layout: T::LAYOUT,
                        slot: late[li].0 as usize % BLOCK_ROWS,
                        col: 0,
                        strs,
                        strings,
                    });
                }
                li += 1;
            }
            while pi < patches.len() && in_block(patches[pi].0) {
                let (id, col, value) = patches[pi];
                if let Some(map) = &mut map {
                    let mut p = PatchPut {
                        map,
                        layout: T::LAYOUT,
                        slot: id as usize % BLOCK_ROWS,
                        col,
                        strs,
                        strings,
                    };
                    match value {
                        Patch::U32(v) => p.u32(v),
                        Patch::Str(v) => p.str(v),
                    }
                }
                pi += 1;
            }
        }
        Ok(())
    }

    fn plan_indexes(&self, file: &File, end: &mut u64) -> std::io::Result<IndexPlan> {
        let layout = T::LAYOUT;
        // A placeholder never filled (NULL ts) also breaks the order.
        let mut last = i64::MIN;
        let mut ts_sorted = true;
        self.scan(file, [layout.ts], |_, [ts]| {
            ts_sorted &= ts >= last && ts != NULL_I64;
            last = ts;
        })?;
        let mut keys = Vec::new();
        for &col in layout.keys {
            let phys = layout.phys[col].1;
            let mut counts: Vec<u32> = Vec::new();
            let mut too_many = false;
            self.scan(file, [col], |_, [k]| {
                if phys.is_null(k) || k < 0 || too_many {
                    return;
                }
                if k as u64 >= MAX_KEYS {
                    too_many = true;
                    return;
                }
                if k as usize >= counts.len() {
                    counts.resize(k as usize + 1, 0);
                }
                counts[k as usize] += 1;
            })?;
            if too_many {
                continue;
            }
            // counts -> starts (exclusive prefix sums, one more at the end).
            let mut starts = Vec::with_capacity(counts.len() + 1);
            let mut sum = 0u32;
            for c in &counts {
                starts.push(sum);
                sum += c;
            }
            starts.push(sum);
            let dir = KeyDir {
                column: col,
                keys: counts.len() as u64,
                starts: *end,
                perm: *end + align8(starts.len() as u64 * 4),
            };
            *end = dir.perm + align8(u64::from(sum) * 4);
            keys.push((starts, dir));
        }
        let order = match layout.order {
            Some(column) => {
                let mut packed = Vec::new();
                let mut wide = Vec::new();
                let mut add = |id: u64, v: i64| {
                    if (0..1 << 32).contains(&v) {
                        packed.push(((u64::from(u32::MAX) - v as u64) << 32) | id);
                    } else {
                        wide.push((v, id as u32));
                    }
                };
                match layout.columns[column].1 {
                    Source::Diff(a, b) => self.scan(file, [a, b], |id, [x, y]| {
                        if !layout.phys[a].1.is_null(x) && !layout.phys[b].1.is_null(y) {
                            add(id, x.wrapping_sub(y));
                        }
                    })?,
                    Source::Col(c) => self.scan(file, [c], |id, [v]| {
                        if !layout.phys[c].1.is_null(v) {
                            add(id, v);
                        }
                    })?,
                    Source::Id => {}
                }
                packed.sort_unstable();
                wide.sort_unstable_by(|x, y| y.0.cmp(&x.0).then(x.1.cmp(&y.1)));
                let len = (packed.len() + wide.len()) as u64;
                let dir = OrderDir {
                    column,
                    perm: *end,
                    len,
                };
                *end += align8(len * 4);
                Some((OrderKeys { packed, wide }, dir))
            }
            None => None,
        };
        Ok(IndexPlan {
            rows: self.rows(),
            ts_sorted,
            keys,
            order,
        })
    }

    fn write_indexes(&self, file: &File, plan: &IndexPlan) -> std::io::Result<()> {
        for (starts, dir) in &plan.keys {
            file.write_all_at(&u32_bytes(starts), dir.starts)?;
            // Scatter row ids into their key's run, a chunk of keys per pass
            // over the key column. Ids ascend within a run because rows are
            // visited in id order.
            let phys = T::LAYOUT.phys[dir.column].1;
            let nkeys = starts.len() - 1;
            let mut k0 = 0;
            while k0 < nkeys {
                let mut k1 = k0 + 1;
                while k1 < nkeys && starts[k1 + 1] - starts[k0] <= SCATTER_CHUNK {
                    k1 += 1;
                }
                let base = starts[k0];
                let mut buf = vec![0u32; (starts[k1] - base) as usize];
                let mut next: Vec<u32> = starts[k0..k1].iter().map(|s| s - base).collect();
                self.scan(file, [dir.column], |id, [k]| {
                    if phys.is_null(k) || k < k0 as i64 || k >= k1 as i64 {
                        return;
                    }
                    let slot = &mut next[k as usize - k0];
                    buf[*slot as usize] = id as u32;
                    *slot += 1;
                })?;
                file.write_all_at(&u32_bytes(&buf), dir.perm + u64::from(base) * 4)?;
                k0 = k1;
            }
        }
        if let Some((keys, dir)) = &plan.order {
            let mut at = dir.perm;
            let mut buf = Vec::with_capacity(BLOCK_ROWS);
            let mut ids = keys.ids().peekable();
            while ids.peek().is_some() {
                buf.clear();
                buf.extend(ids.by_ref().take(BLOCK_ROWS));
                let bytes = u32_bytes(&buf);
                file.write_all_at(&bytes, at)?;
                at += bytes.len() as u64;
            }
        }
        Ok(())
    }

    fn directory(&self, plan: IndexPlan) -> TableDir {
        TableDir {
            name: T::LAYOUT.name.to_string(),
            rows: plan.rows,
            phys: T::LAYOUT
                .phys
                .iter()
                .map(|(n, p)| ((*n).to_string(), *p))
                .collect(),
            blocks: self.blocks.clone(),
            ts_sorted: plan.ts_sorted,
            keys: plan.keys.into_iter().map(|k| k.1).collect(),
            order: plan.order.map(|o| o.1),
        }
    }
}

fn u32_bytes(v: &[u32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn align8(n: u64) -> u64 {
    n.div_ceil(8) * 8
}
