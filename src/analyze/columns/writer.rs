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

use super::layout::{Directory, KeyDir, Layout, OrderDir, Phys, Source, TableDir};
use super::{BLOCK_ROWS, MAGIC, NULL_I32, NULL_I64, NULL_U32, TRAILER_MAGIC};
use crate::analyze::import::strings::{Str, Strings};
use anyhow::Context;
use memmap2::MmapMut;
use rustc_hash::FxHashMap;
use std::collections::VecDeque;
use std::fs::File;
use std::hash::BuildHasher;
use std::io::{BufWriter, Seek, SeekFrom, Write};
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

/// Writes one row's values in place in the mapped file.
struct PatchPut<'a> {
    map: &'a mut [u8],
    layout: &'static Layout,
    block: usize,
    slot: usize,
    col: usize,
    strs: &'a mut StrMap,
    strings: &'a Strings,
}

impl PatchPut<'_> {
    fn write(&mut self, bytes: &[u8]) {
        let at = self.block
            + self.layout.column_offset(self.col)
            + self.slot * self.layout.phys[self.col].1.width();
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
            let pad: &[u8] = match phys {
                Phys::I64 => &NULL_I64.to_le_bytes(),
                Phys::I32 => &NULL_I32.to_le_bytes(),
                Phys::U32 | Phys::Str => &NULL_U32.to_le_bytes(),
            };
            while c.len() < full {
                c.extend_from_slice(pad);
            }
            self.out.write_all(c)?;
            c.clear();
        }
        self.pos += layout.block_bytes() as u64;
        Ok(at)
    }

    /// Completes the file: patches, indexes, directory. `tables` are every
    /// table written to this file, each already flushed.
    pub fn finish(
        mut self,
        tables: &mut [&mut dyn Finish],
        strings: &Strings,
    ) -> anyhow::Result<()> {
        self.out.flush()?;
        let data_end = self.pos;
        let mut file = self
            .out
            .into_inner()
            .map_err(|e| e.into_error())
            .context("writing the column file")?;
        // Pass 1, on the data: patches, then what the indexes need to know.
        let mut plans = Vec::new();
        let mut index_end = data_end;
        {
            // SAFETY: the file is ours alone while the load runs (created
            // here, renamed into place only after it is complete).
            let mut map = unsafe { MmapMut::map_mut(&file) }.context("mapping the column file")?;
            for t in tables.iter_mut() {
                t.apply_patches(&mut map, &mut self.strs, strings);
                let plan = t.plan_indexes(&map, &mut index_end);
                plans.push(plan);
            }
        }
        // Pass 2: the index arrays, after the data.
        file.set_len(index_end)?;
        {
            // SAFETY: as above.
            let mut map = unsafe { MmapMut::map_mut(&file) }.context("mapping the column file")?;
            for (t, plan) in tables.iter_mut().zip(&mut plans) {
                t.write_indexes(&mut map, plan);
            }
            map.flush()?;
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
        file.seek(SeekFrom::Start(index_end))?;
        let mut w = BufWriter::new(file);
        serde_json::to_writer(&mut w, &dir)?;
        w.write_all(&index_end.to_le_bytes())?;
        w.write_all(TRAILER_MAGIC)?;
        w.flush()?;
        Ok(())
    }
}

/// What a table's indexes will hold, decided in pass 1.
pub struct IndexPlan {
    rows: u64,
    ts_sorted: bool,
    keys: Vec<(usize, Vec<u32>, KeyDir)>,
    order: Option<(Vec<(i64, u32)>, OrderDir)>,
}

/// A table writer seen by [`ColumnFile::finish`].
pub trait Finish {
    fn apply_patches(&mut self, map: &mut [u8], strs: &mut StrMap, strings: &Strings);
    fn plan_indexes(&self, map: &[u8], end: &mut u64) -> IndexPlan;
    fn write_indexes(&self, map: &mut [u8], plan: &mut IndexPlan);
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
                    match phys {
                        Phys::I64 => c.extend_from_slice(&NULL_I64.to_le_bytes()),
                        Phys::I32 => c.extend_from_slice(&NULL_I32.to_le_bytes()),
                        Phys::U32 | Phys::Str => c.extend_from_slice(&NULL_U32.to_le_bytes()),
                    }
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

    fn rows(&self) -> u64 {
        self.base as u64
    }

    /// Reads physical column `col` of row `id` from the mapped file.
    fn read(&self, map: &[u8], col: usize, id: u64) -> i64 {
        let (block, slot) = ((id as usize) / BLOCK_ROWS, (id as usize) % BLOCK_ROWS);
        let phys = T::LAYOUT.phys[col].1;
        let at = self.blocks[block] as usize + T::LAYOUT.column_offset(col) + slot * phys.width();
        read_value(map, at, phys)
    }
}

/// A stored value as i64 (NULL sentinels as they are).
#[inline]
fn read_value(map: &[u8], at: usize, phys: Phys) -> i64 {
    match phys {
        Phys::I64 => i64::from_le_bytes(map[at..at + 8].try_into().unwrap_or_default()),
        Phys::I32 => i32::from_le_bytes(map[at..at + 4].try_into().unwrap_or_default()).into(),
        Phys::U32 | Phys::Str => {
            u32::from_le_bytes(map[at..at + 4].try_into().unwrap_or_default()).into()
        }
    }
}

/// Whether a stored value (as read by [`read_value`]) is NULL.
#[inline]
fn is_null(v: i64, phys: Phys) -> bool {
    match phys {
        Phys::I64 => v == NULL_I64,
        Phys::I32 => v == i64::from(NULL_I32),
        Phys::U32 | Phys::Str => v == i64::from(NULL_U32),
    }
}

/// A whole column, block by block, as (id, value).
fn scan<'m, T: ColumnRow>(
    t: &'m TableWriter<T>,
    map: &'m [u8],
    col: usize,
) -> impl Iterator<Item = (u64, i64)> + 'm {
    let phys = T::LAYOUT.phys[col].1;
    let off = T::LAYOUT.column_offset(col);
    let w = phys.width();
    let rows = t.rows();
    t.blocks.iter().enumerate().flat_map(move |(b, &start)| {
        let first = (b * BLOCK_ROWS) as u64;
        let n = (rows - first).min(BLOCK_ROWS as u64) as usize;
        let base = start as usize + off;
        (0..n).map(move |slot| (first + slot as u64, read_value(map, base + slot * w, phys)))
    })
}

impl<T: ColumnRow> Finish for TableWriter<T> {
    fn apply_patches(&mut self, map: &mut [u8], strs: &mut StrMap, strings: &Strings) {
        let late = std::mem::take(&mut self.late);
        for (id, row) in late {
            let Ok(id) = usize::try_from(id) else {
                continue;
            };
            let Some(&block) = self.blocks.get(id / BLOCK_ROWS) else {
                continue;
            };
            row.put(&mut PatchPut {
                map,
                layout: T::LAYOUT,
                block: block as usize,
                slot: id % BLOCK_ROWS,
                col: 0,
                strs,
                strings,
            });
        }
        for &(id, col, value) in &self.patches {
            let Ok(id) = usize::try_from(id) else {
                continue;
            };
            let Some(&block) = self.blocks.get(id / BLOCK_ROWS) else {
                continue;
            };
            let mut p = PatchPut {
                map,
                layout: T::LAYOUT,
                block: block as usize,
                slot: id % BLOCK_ROWS,
                col,
                strs,
                strings,
            };
            match value {
                Patch::U32(v) => p.u32(v),
                Patch::Str(v) => p.str(v),
            }
        }
    }

    fn plan_indexes(&self, map: &[u8], end: &mut u64) -> IndexPlan {
        let layout = T::LAYOUT;
        // A placeholder never filled (NULL ts) also breaks the order.
        let mut last = i64::MIN;
        let ts_sorted = scan(self, map, layout.ts).all(|(_, ts)| {
            let ok = ts >= last && ts != NULL_I64;
            last = ts;
            ok
        });
        let mut keys = Vec::new();
        for &col in layout.keys {
            let phys = layout.phys[col].1;
            let mut counts: Vec<u32> = Vec::new();
            let mut too_many = false;
            for (_, k) in scan(self, map, col) {
                if is_null(k, phys) || k < 0 {
                    continue;
                }
                if k as u64 >= MAX_KEYS {
                    too_many = true;
                    break;
                }
                if k as usize >= counts.len() {
                    counts.resize(k as usize + 1, 0);
                }
                counts[k as usize] += 1;
            }
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
            keys.push((col, starts, dir));
        }
        let order = layout.order.map(|column| {
            let mut vals: Vec<(i64, u32)> = match layout.columns[column].1 {
                Source::Diff(a, b) => scan(self, map, a)
                    .zip(scan(self, map, b))
                    .filter(|((_, x), (_, y))| {
                        !is_null(*x, layout.phys[a].1) && !is_null(*y, layout.phys[b].1)
                    })
                    .map(|((id, x), (_, y))| (x.wrapping_sub(y), id as u32))
                    .collect(),
                Source::Col(c) => scan(self, map, c)
                    .filter(|(_, v)| !is_null(*v, layout.phys[c].1))
                    .map(|(id, v)| (v, id as u32))
                    .collect(),
                Source::Id => Vec::new(),
            };
            // Descending by value, ascending by id among equals.
            vals.sort_unstable_by(|x, y| y.0.cmp(&x.0).then(x.1.cmp(&y.1)));
            let dir = OrderDir {
                column,
                perm: *end,
                len: vals.len() as u64,
            };
            *end += align8(vals.len() as u64 * 4);
            (vals, dir)
        });
        IndexPlan {
            rows: self.rows(),
            ts_sorted,
            keys,
            order,
        }
    }

    fn write_indexes(&self, map: &mut [u8], plan: &mut IndexPlan) {
        for (col, starts, dir) in &mut plan.keys {
            let at = dir.starts as usize;
            for (i, s) in starts.iter().enumerate() {
                map[at + i * 4..at + i * 4 + 4].copy_from_slice(&s.to_le_bytes());
            }
            // Scatter: ids ascend within each run because they are visited
            // in order. `starts` becomes the run ends as it goes.
            let phys = T::LAYOUT.phys[*col].1;
            let perm = dir.perm as usize;
            for id in 0..plan.rows {
                let k = self.read(map, *col, id);
                if is_null(k, phys) || k < 0 {
                    continue;
                }
                let slot = &mut starts[k as usize];
                let at = perm + *slot as usize * 4;
                map[at..at + 4].copy_from_slice(&(id as u32).to_le_bytes());
                *slot += 1;
            }
        }
        if let Some((vals, dir)) = &plan.order {
            let at = dir.perm as usize;
            for (i, (_, id)) in vals.iter().enumerate() {
                map[at + i * 4..at + i * 4 + 4].copy_from_slice(&id.to_le_bytes());
            }
        }
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
            keys: plan.keys.into_iter().map(|k| k.2).collect(),
            order: plan.order.map(|o| o.1),
        }
    }
}

fn align8(n: u64) -> u64 {
    n.div_ceil(8) * 8
}
