//! Writing a column file while the importer runs.
//!
//! Rows are gathered a block at a time as i64 values, then each column is
//! packed by frame of reference (see [`Packing`]) as the block is written.
//! A row's id is fixed when the importer opens it, but the row arrives here
//! when it closes, so rows come slightly out of id order. Closed rows wait in
//! a reorder window and are appended to the current block in id order. A
//! row still open when the window is full (a long sleep) leaves a NULL
//! placeholder and is patched into place at the end, through a writable
//! mapping of the finished file, as are later amendments to written rows;
//! a value its block's packing cannot hold goes to the exception list.
//! At the end the indexes are built by counting sort (keys) or by one sort
//! of the non-NULL values (the order column).

use super::layout::{
    BlockDir, Bulk, Directory, KeyDir, Layout, OrderDir, Packing, Source, Stored, TableDir,
};
use super::{BLOCK_ROWS, MAGIC, NULL_I64, TRAILER_MAGIC};
use crate::analyzer::schema::Table;
use crate::analyzer::strings::{Str, Strings};
use anyhow::Context;
use std::collections::VecDeque;
use std::fs::File;
use std::hash::BuildHasher;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt as _};
use std::path::Path;

/// Closed rows held for reordering before a row still open is given up on.
const REORDER_WINDOW: usize = 1 << 15;
/// Late rows held before those of written blocks go to the file; more
/// than a block's rows, which stay until their block is written.
const LATE_BATCH: usize = 2 * BLOCK_ROWS;
/// Key columns with more distinct values than this get no index (a hostile
/// trace could otherwise make the run table huge; real keys are utids and
/// CPUs).
const MAX_KEYS: u64 = 1 << 26;

/// Receives one row's values, in the layout's physical column order (a Str
/// column's value is an index into the strings given to
/// [`ColumnFile::finish`]).
pub trait Put {
    fn value(&mut self, v: Option<i64>);
}

/// A row of a column-file table: a struct `table!` declares, which derives
/// this from the table's columns.
pub trait ColumnRow {
    const TABLE: &'static Table;
    fn id(&self) -> i64;
    /// Puts the stored fields, in physical column order.
    fn put(&self, out: &mut impl Put);
    /// Sets stored field `column` (an amendment to a row not written yet).
    fn set(&mut self, column: usize, value: Option<i64>);
    /// Replaces the interned strings of the TEXT fields.
    fn map_text(&mut self, f: &mut impl FnMut(Str) -> Str);
}

/// A field type the column file stores: an integer or NULL.
pub trait Cell: Copy {
    fn to_cell(self) -> Option<i64>;
    /// The field's value for a stored value (amendments only set nullable
    /// fields; a NULL for a required one becomes its default).
    fn from_cell(v: Option<i64>) -> Self;
}

macro_rules! int_cell {
    ($($t:ty),*) => {$(
        impl Cell for $t {
            #[inline]
            fn to_cell(self) -> Option<i64> {
                Some(i64::from(self))
            }
            fn from_cell(v: Option<i64>) -> Self {
                v.and_then(|v| <$t>::try_from(v).ok()).unwrap_or_default()
            }
        }
    )*};
}
int_cell!(i64, i32, u32);

impl Cell for bool {
    #[inline]
    fn to_cell(self) -> Option<i64> {
        Some(i64::from(self))
    }
    fn from_cell(v: Option<i64>) -> Self {
        v.is_some_and(|v| v != 0)
    }
}

impl<T: Cell> Cell for Option<T> {
    #[inline]
    fn to_cell(self) -> Option<i64> {
        self.and_then(Cell::to_cell)
    }
    fn from_cell(v: Option<i64>) -> Self {
        v.map(|v| T::from_cell(Some(v)))
    }
}

/// A TEXT field of a column-file row: an interned string, or none.
pub trait TextCell {
    fn map(&mut self, f: &mut impl FnMut(Str) -> Str);
}

impl TextCell for Str {
    #[inline]
    fn map(&mut self, f: &mut impl FnMut(Str) -> Str) {
        *self = f(*self);
    }
}

impl TextCell for Option<Str> {
    #[inline]
    fn map(&mut self, f: &mut impl FnMut(Str) -> Str) {
        if let Some(s) = self {
            *s = f(*s);
        }
    }
}

/// Importer string ids -> the file's own dense string table.
#[derive(Default)]
pub struct StrMap {
    /// UNMAPPED for importer strings not seen yet.
    local: Vec<u32>,
    list: Vec<String>,
}

impl StrMap {
    #[inline]
    pub fn get(&mut self, s: Str, strings: &Strings) -> u32 {
        let i = s as usize;
        if i >= self.local.len() {
            self.local.resize(i + 1, UNMAPPED);
        }
        if self.local[i] == UNMAPPED {
            self.local[i] = self.list.len() as u32;
            self.list.push(strings.get(s).to_owned());
        }
        self.local[i]
    }

    /// The file's strings, by index.
    pub fn into_list(self) -> Vec<String> {
        self.list
    }
}

const UNMAPPED: u32 = u32::MAX;
/// The largest row id: the indexes hold ids as u32, and readers accept
/// tables of fewer than u32::MAX rows.
const MAX_ROW_ID: i64 = u32::MAX as i64 - 2;

/// `id` as the u32 the indexes hold, or the error of a trace with more
/// rows of `table` than a column file indexes.
pub fn row_id(table: &Table, id: i64) -> anyhow::Result<u32> {
    match u32::try_from(id) {
        Ok(id) if i64::from(id) <= MAX_ROW_ID => Ok(id),
        _ => anyhow::bail!(
            "the trace has more {} rows than a column file indexes ({}): record a shorter \
             trace, or a --flight window",
            table.name,
            MAX_ROW_ID + 1
        ),
    }
}

/// Appends values to the block being filled.
struct BlockPut<'a> {
    cols: &'a mut [Vec<i64>],
    col: usize,
}

impl Put for BlockPut<'_> {
    #[inline]
    fn value(&mut self, v: Option<i64>) {
        self.cols[self.col].push(v.unwrap_or(NULL_I64));
        self.col += 1;
    }
}

/// Writes one row's values in place in its mapped block.
struct PatchPut<'a> {
    /// The row's block, mapped.
    map: &'a mut [u8],
    block: &'a mut BlockDir,
    row: u64,
    col: usize,
    exceptions: &'a mut Vec<(u64, i64)>,
}

impl Put for PatchPut<'_> {
    fn value(&mut self, v: Option<i64>) {
        let v = v.unwrap_or(NULL_I64);
        let at = self.block.column_offset(self.col);
        let slot = self.row as usize % BLOCK_ROWS;
        let p = &mut self.block.columns[self.col];
        match p.encode(v) {
            Some(code) if p.width > 0 => p.write(&mut self.map[at..], slot, code),
            // NULL into a column of NULLs.
            Some(_) if !p.exceptions => {}
            _ => {
                if p.width > 0 {
                    p.write(&mut self.map[at..], slot, p.exception_code());
                }
                p.exceptions = true;
                self.exceptions.push((exception_key(self.row, self.col), v));
            }
        }
        self.col += 1;
    }
}

/// The exception list's sort key of (row, physical column).
pub fn exception_key(row: u64, col: usize) -> u64 {
    (row << 8) | col as u64
}

/// The file being written, shared by the tables.
pub struct ColumnFile {
    out: BufWriter<File>,
    pos: u64,
    build_id: u64,
    /// A column being packed.
    packed: Vec<u8>,
}

impl ColumnFile {
    /// Creates the column file at `path`, or an anonymous temporary file
    /// (for loads into an in-memory database).
    pub fn create(path: Option<&Path>) -> anyhow::Result<ColumnFile> {
        let file = match path {
            // A new file only, never through a link: the name is beside
            // the database's temporary file, and never reused.
            Some(p) => File::options()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
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
            packed: Vec::with_capacity(BLOCK_ROWS * 8),
        })
    }

    pub fn build_id(&self) -> u64 {
        self.build_id
    }

    /// Packs and writes a block's columns (emptying them).
    fn write_block(&mut self, cols: &mut [Vec<i64>]) -> std::io::Result<BlockDir> {
        let offset = self.pos;
        let mut columns = Vec::with_capacity(cols.len());
        for c in cols.iter_mut() {
            let p = Packing::fit(range(c));
            // A short (last) block is padded with NULLs to the full shape.
            c.resize(BLOCK_ROWS, NULL_I64);
            pack(p, c, &mut self.packed);
            self.out.write_all(&self.packed)?;
            self.pos += self.packed.len() as u64;
            c.clear();
            columns.push(p);
        }
        Ok(BlockDir { offset, columns })
    }

    /// Completes the file: patches, indexes, directory. `tables` are every
    /// table written to this file, each already flushed. Reads a block at a
    /// time and writes each key index through a mapping of its own region,
    /// so the heap does not grow with the trace (the page cache does).
    pub fn finish(
        mut self,
        tables: &mut [&mut dyn Finish],
        strings: Vec<String>,
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
            t.apply_patches(&file).context("patching the column file")?;
            plans.push(t.plan_indexes(&file, &mut index_end)?);
        }
        file.set_len(index_end)?;
        // One thread per table: the index builds are independent.
        std::thread::scope(|s| {
            let builds: Vec<_> = tables
                .iter()
                .zip(&plans)
                .map(|(t, plan)| {
                    let (t, file): (&dyn Finish, &File) = (&**t, &file);
                    s.spawn(move || t.write_indexes(file, plan))
                })
                .collect();
            builds
                .into_iter()
                .try_for_each(|b| b.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
        })
        .context("writing the column file's indexes")?;
        let dir = Directory {
            build_id: self.build_id,
            tables: tables
                .iter()
                .zip(plans)
                .map(|(t, plan)| t.directory(plan))
                .collect(),
            strings,
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
    exceptions_at: u64,
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
pub trait Finish: Sync {
    fn apply_patches(&mut self, file: &File) -> std::io::Result<()>;
    fn plan_indexes(&self, file: &File, end: &mut u64) -> std::io::Result<IndexPlan>;
    fn write_indexes(&self, file: &File, plan: &IndexPlan) -> std::io::Result<()>;
    fn directory(&self, plan: IndexPlan) -> TableDir;
}

/// One table's writer.
pub struct TableWriter<T: ColumnRow> {
    layout: &'static Layout,
    /// Id of the first slot of `window`.
    base: i64,
    /// Closed rows from `base` on; None for rows not closed yet.
    window: VecDeque<Option<T>>,
    /// The block being filled: one vector per physical column.
    cols: Vec<Vec<i64>>,
    /// Rows in `cols`.
    filled: usize,
    blocks: Vec<BlockDir>,
    /// Values packed blocks cannot hold, by [`exception_key`]; sorted once
    /// the patches are in.
    exceptions: Vec<(u64, i64)>,
    /// Rows closed after their placeholder was written, in the order they
    /// came: a trace may leave millions of tasks' last states open to the
    /// end, so no map (amendments to these rows are patches, applied after them).
    late: Vec<(i64, T)>,
    /// Amendments to rows already written: (id, physical column, value).
    patches: Vec<(i64, usize, Option<i64>)>,
}

impl<T: ColumnRow> Default for TableWriter<T> {
    fn default() -> Self {
        let layout = Layout::of(T::TABLE);
        TableWriter {
            layout,
            base: 0,
            window: VecDeque::new(),
            cols: layout
                .phys
                .iter()
                .map(|_| Vec::with_capacity(BLOCK_ROWS))
                .collect(),
            filled: 0,
            blocks: Vec::new(),
            exceptions: Vec::new(),
            late: Vec::new(),
            patches: Vec::new(),
        }
    }
}

impl<T: ColumnRow> TableWriter<T> {
    /// Takes a closed row and appends every row that is now in order.
    pub fn add(&mut self, row: T, file: &mut ColumnFile) -> anyhow::Result<()> {
        row_id(T::TABLE, row.id())?;
        let Ok(at) = usize::try_from(row.id() - self.base) else {
            // Its slot was given up on: patched in at the end.
            self.late.push((row.id(), row));
            if self.late.len() >= LATE_BATCH {
                self.write_late(file)?;
            }
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
            self.append(front.as_ref(), file)?;
        }
        Ok(())
    }

    /// Appends a row, or a NULL placeholder for a row still open.
    #[inline]
    fn append(&mut self, row: Option<&T>, file: &mut ColumnFile) -> std::io::Result<()> {
        match row {
            Some(r) => r.put(&mut BlockPut {
                cols: &mut self.cols,
                col: 0,
            }),
            None => {
                for c in &mut self.cols {
                    c.push(NULL_I64);
                }
            }
        }
        self.filled += 1;
        if self.filled == BLOCK_ROWS {
            self.blocks.push(file.write_block(&mut self.cols)?);
            self.filled = 0;
        }
        Ok(())
    }

    /// A closed row still in the reorder window.
    fn pending(&mut self, id: i64) -> Option<&mut T> {
        usize::try_from(id - self.base)
            .ok()
            .and_then(|at| self.window.get_mut(at))
            .and_then(Option::as_mut)
    }

    /// Amends physical column `col` of row `id`: in place while the row is
    /// held, else through a patch of the written file at the end (the patch
    /// also applies after a row not closed yet is written).
    pub fn amend(&mut self, id: i64, col: usize, value: Option<i64>) {
        match self.pending(id) {
            Some(row) => row.set(col, value),
            None => self.patches.push((id, col, value)),
        }
    }

    /// Appends every row held; call once, after the last row.
    pub fn flush(&mut self, file: &mut ColumnFile) -> std::io::Result<()> {
        while let Some(r) = self.window.pop_front() {
            self.base += 1;
            self.append(r.as_ref(), file)?;
        }
        if self.filled > 0 {
            self.blocks.push(file.write_block(&mut self.cols)?);
            self.filled = 0;
        }
        Ok(())
    }

    /// Writes late rows, then patches (each sorted by id), into the blocks
    /// of the file that hold them, one block mapped at a time.
    fn patch_file(
        &mut self,
        file: &File,
        late: &[(i64, T)],
        patches: &[(i64, usize, Option<i64>)],
    ) -> std::io::Result<()> {
        let block_of = |id: i64| usize::try_from(id).ok().map(|i| i / BLOCK_ROWS);
        let (mut li, mut pi) = (0, 0);
        while li < late.len() || pi < patches.len() {
            let id = match (late.get(li), patches.get(pi)) {
                (Some(l), Some(p)) => l.0.min(p.0),
                (Some(l), None) => l.0,
                (None, Some(p)) => p.0,
                (None, None) => break,
            };
            let b = block_of(id);
            let in_block = |i: i64| block_of(i) == b;
            let mut target = match b.and_then(|b| self.blocks.get_mut(b)) {
                Some(block) => {
                    let len = block.column_offset(block.columns.len());
                    // SAFETY: the file is ours alone while the load runs
                    // (created here, renamed into place only when complete).
                    let map = unsafe {
                        memmap2::MmapOptions::new()
                            .offset(block.offset)
                            .len(len)
                            .map_mut(file)?
                    };
                    Some((map, block))
                }
                None => None, // an id outside the table: nothing to patch
            };
            while li < late.len() && in_block(late[li].0) {
                if let Some((map, block)) = &mut target {
                    late[li].1.put(&mut PatchPut {
                        map,
                        block,
                        row: late[li].0 as u64,
                        col: 0,
                        exceptions: &mut self.exceptions,
                    });
                }
                li += 1;
            }
            while pi < patches.len() && in_block(patches[pi].0) {
                let (id, col, value) = patches[pi];
                if let Some((map, block)) = &mut target {
                    let mut p = PatchPut {
                        map,
                        block,
                        row: id as u64,
                        col,
                        exceptions: &mut self.exceptions,
                    };
                    p.value(value);
                }
                pi += 1;
            }
        }
        Ok(())
    }

    /// Writes the late rows of blocks already in the file: a trace that
    /// leaves millions of rows open to its end (one per task) then holds a
    /// batch of them, not all.
    fn write_late(&mut self, file: &mut ColumnFile) -> std::io::Result<()> {
        let written = (self.blocks.len() * BLOCK_ROWS) as i64;
        let mut late = std::mem::take(&mut self.late);
        late.sort_unstable_by_key(|r| r.0);
        let n = late.partition_point(|r| r.0 < written);
        // The mapping must see every block written so far.
        file.out.flush()?;
        self.patch_file(file.out.get_ref(), &late[..n], &[])?;
        late.drain(..n);
        self.late = late;
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
        let mut buf = vec![0; BLOCK_ROWS * 8];
        let mut values: [Vec<i64>; N] = std::array::from_fn(|_| Vec::with_capacity(BLOCK_ROWS));
        let rows = self.rows();
        for (b, block) in self.blocks.iter().enumerate() {
            let first = (b * BLOCK_ROWS) as u64;
            let n = (rows - first).min(BLOCK_ROWS as u64) as usize;
            for (out, &c) in values.iter_mut().zip(&cols) {
                let p = block.columns[c];
                let at = block.column_offset(c);
                let bytes = &mut buf[..n * usize::from(p.width)];
                file.read_exact_at(bytes, block.offset + at as u64)?;
                out.clear();
                match p.width {
                    _ if p.exceptions => out.extend((0..n).map(|slot| match p.read(bytes, slot) {
                        Stored::Value(v) => v,
                        Stored::Exception => self.exception(first + slot as u64, c),
                    })),
                    0 => out.resize(n, NULL_I64),
                    1 => Bulk::<1>::unpack(p, bytes, out),
                    2 => Bulk::<2>::unpack(p, bytes, out),
                    4 => Bulk::<4>::unpack(p, bytes, out),
                    _ => Bulk::<8>::unpack(p, bytes, out),
                }
            }
            // Indexes N columns at once, which no iterator zip spells.
            #[allow(clippy::needless_range_loop)]
            for slot in 0..n {
                f(
                    first + slot as u64,
                    std::array::from_fn(|i| values[i][slot]),
                );
            }
        }
        Ok(())
    }

    /// The exception of (row, col); NULL if there is none.
    fn exception(&self, row: u64, col: usize) -> i64 {
        let key = exception_key(row, col);
        self.exceptions
            .binary_search_by_key(&key, |e| e.0)
            .map_or(NULL_I64, |i| self.exceptions[i].1)
    }
}

impl<T: ColumnRow + Sync> Finish for TableWriter<T> {
    fn apply_patches(&mut self, file: &File) -> std::io::Result<()> {
        let mut late = std::mem::take(&mut self.late);
        // Ids are unique; unstable sorts in place.
        late.sort_unstable_by_key(|r| r.0);
        // Stable: several amendments of one row apply in their order.
        let mut patches = std::mem::take(&mut self.patches);
        patches.sort_by_key(|p| p.0);
        self.patch_file(file, &late, &patches)?;
        // Stable, so of two values for one (row, column) the later stays.
        self.exceptions.sort_by_key(|e| e.0);
        self.exceptions.dedup_by(|later, kept| {
            let same = later.0 == kept.0;
            if same {
                kept.1 = later.1;
            }
            same
        });
        Ok(())
    }

    fn plan_indexes(&self, file: &File, end: &mut u64) -> std::io::Result<IndexPlan> {
        let layout = self.layout;
        // A placeholder never filled (NULL ts) also breaks the order.
        let mut last = i64::MIN;
        let mut ts_sorted = true;
        self.scan(file, [layout.ts], |_, [ts]| {
            ts_sorted &= ts >= last && ts != NULL_I64;
            last = ts;
        })?;
        let exceptions_at = *end;
        *end += self.exceptions.len() as u64 * 16;
        let mut keys = Vec::new();
        for &col in &layout.keys {
            let mut counts: Vec<u32> = Vec::new();
            let mut too_many = false;
            self.scan(file, [col], |_, [k]| {
                if k == NULL_I64 || k < 0 || too_many {
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
                        if x != NULL_I64 && y != NULL_I64 {
                            add(id, x.wrapping_sub(y));
                        }
                    })?,
                    Source::Col(c) => self.scan(file, [c], |id, [v]| {
                        if v != NULL_I64 {
                            add(id, v);
                        }
                    })?,
                    Source::Id | Source::Null => {}
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
            exceptions_at,
        })
    }

    fn write_indexes(&self, file: &File, plan: &IndexPlan) -> std::io::Result<()> {
        for (i, chunk) in self.exceptions.chunks(BLOCK_ROWS).enumerate() {
            let bytes: Vec<u8> = chunk
                .iter()
                .flat_map(|&(k, v)| k.to_le_bytes().into_iter().chain(v.to_le_bytes()))
                .collect();
            file.write_all_at(&bytes, plan.exceptions_at + (i * BLOCK_ROWS * 16) as u64)?;
        }
        for (starts, dir) in &plan.keys {
            file.write_all_at(&u32_bytes(starts), dir.starts)?;
            // Scatter row ids into their key's run, in one pass over the key
            // column, through a mapping: the page cache holds the perm, not
            // our heap. Ids ascend within a run because rows are visited in
            // id order.
            let len = starts.last().map_or(0, |&n| n as usize * 4);
            if len == 0 {
                continue;
            }
            // SAFETY: as in apply_patches, the file is ours alone.
            let mut perm = unsafe {
                memmap2::MmapOptions::new()
                    .offset(dir.perm)
                    .len(len)
                    .map_mut(file)?
            };
            let mut next = starts[..starts.len() - 1].to_vec();
            self.scan(file, [dir.column], |id, [k]| {
                let Some(slot) = usize::try_from(k).ok().and_then(|k| next.get_mut(k)) else {
                    return; // NULL
                };
                let at = *slot as usize * 4;
                perm[at..at + 4].copy_from_slice(&(id as u32).to_le_bytes());
                *slot += 1;
            })?;
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
            name: self.layout.name.to_string(),
            rows: plan.rows,
            phys: self
                .layout
                .phys
                .iter()
                .map(|(n, p)| ((*n).to_string(), *p))
                .collect(),
            blocks: self.blocks.clone(),
            exceptions: (plan.exceptions_at, self.exceptions.len() as u64),
            ts_sorted: plan.ts_sorted,
            keys: plan.keys.into_iter().map(|k| k.1).collect(),
            order: plan.order.map(|o| o.1),
        }
    }
}

/// The smallest and largest non-NULL value; None if all are NULL.
fn range(values: &[i64]) -> Option<(i64, i64)> {
    let (mut lo, mut hi) = (i64::MAX, i64::MIN);
    let mut any = false;
    for &v in values {
        if v != NULL_I64 {
            lo = lo.min(v);
            hi = hi.max(v);
            any = true;
        }
    }
    any.then_some((lo, hi))
}

/// `values` packed by `p` (which holds them all) into `out`.
fn pack(p: Packing, values: &[i64], out: &mut Vec<u8>) {
    out.clear();
    out.resize(p.bytes(), 0);
    match p.width {
        1 => Bulk::<1>::pack(p, values, out),
        2 => Bulk::<2>::pack(p, values, out),
        4 => Bulk::<4>::pack(p, values, out),
        8 => Bulk::<8>::pack(p, values, out),
        _ => {}
    }
}

fn u32_bytes(v: &[u32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn align8(n: u64) -> u64 {
    n.div_ceil(8) * 8
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyzer::tables::SliceRow;

    #[test]
    fn a_row_past_the_index_width_is_a_clear_error() {
        let mut file = ColumnFile::create(None).unwrap();
        let mut w = TableWriter::<SliceRow>::default();
        let row = |id| SliceRow {
            id,
            ts: 0,
            dur: 1,
            cpu: 0,
            utid: 1,
            end_state: None,
            priority: 120,
        };
        let err = w.add(row(MAX_ROW_ID + 1), &mut file).unwrap_err();
        assert!(
            err.to_string()
                .contains("more sched_slice rows than a column file indexes"),
            "{err}"
        );
        assert!(w.add(row(0), &mut file).is_ok());
    }
}
