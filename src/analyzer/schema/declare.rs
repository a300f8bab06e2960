//! The `table!` macro that declares a table (see
//! [`tables`](crate::analyzer::tables)), and the checks it makes at build
//! time.

/// What a row struct's field can be; a NOT NULL column's cannot be an
/// Option (checked when the row is written).
pub trait FieldType {
    const OPTIONAL: bool = false;
}

impl<T> FieldType for Option<T> {
    const OPTIONAL: bool = true;
}

macro_rules! required_fields {
    ($($t:ty),*) => {$(impl FieldType for $t {})*};
}
required_fields!(i64, i32, u32, bool, f64, String, &str, &[u8]);

/// Whether an SQL column type forbids NULL.
pub const fn not_null(sql: &str) -> bool {
    contains(sql, "NOT NULL") || contains(sql, "PRIMARY KEY")
}

const fn contains(hay: &str, needle: &str) -> bool {
    let (h, n) = (hay.as_bytes(), needle.as_bytes());
    let mut i = 0;
    while i + n.len() <= h.len() {
        let mut j = 0;
        while j < n.len() && h[i + j] == n[j] {
            j += 1;
        }
        if j == n.len() {
            return true;
        }
        i += 1;
    }
    false
}

/// Declares one table: its documentation (the first line says what a row
/// is), where its rows live, and its columns in SQL order, each with its
/// documentation, SQL type and how it gets its value. Generates the table's
/// [`Table`](super::Table) static and its row struct, with the row writer of its backend
/// ([`SqlRow`](super::SqlRow), or `columns::ColumnRow` for the column file).
///
/// ```text
/// table! {
///     /// What a row is.
///     /// More lines of detail.
///     pub static STATIC_NAME = sql_name in sqlite;
///     pub struct RowStruct<'a> { columns }
/// }
/// ```
/// or `in column_file(keys: [col, ...], order: col)` (`order` optional;
/// a column-file row struct takes no lifetime).
///
/// A column is one of:
/// - `name: Type = SQL TYPE,` a field of the row struct;
///   `name as "sql_name": Type = ...` when the SQL name is a Rust keyword;
/// - `name: i64 = INTEGER PRIMARY KEY => row_id,` (column file) the row's
///   id, a field of the row struct but not stored;
/// - `name = SQL TYPE => row_id,` (SQLite) the id the writer numbers;
/// - `name = SQL TYPE => same_as(other),` an alias of another column;
/// - `name = SQL TYPE => difference(a, b),` (column file) a - b;
/// - `name = SQL TYPE => null,` never written.
///
/// In the column file a TEXT field holds an interned string (`Str`).
macro_rules! table {
    (
        $(#[doc = $doc:literal])*
        $vis:vis static $table:ident = $name:ident in column_file(
            keys: [$($key:ident),*] $(, order: $order:ident)?
        );
        pub struct $row:ident { $($body:tt)* }
    ) => {
        $crate::analyzer::schema::table!(@column
            [column_file [$($doc)*] $vis $table $name $row]
            [$crate::analyzer::schema::Backend::ColumnFile {
                keys: &[$(stringify!($key)),*],
                order: $crate::analyzer::schema::table!(@option $($order)?),
            }]
            fields [] stored [] text [] id [] columns []
            rest [$($body)*]
        );
    };
    (
        $(#[doc = $doc:literal])*
        $vis:vis static $table:ident = $name:ident in sqlite;
        pub struct $row:ident $(<$lt:lifetime>)? { $($body:tt)* }
    ) => {
        $crate::analyzer::schema::table!(@column
            [sqlite [$($doc)*] $vis $table $name $row [$($lt)?]]
            [$crate::analyzer::schema::Backend::Sqlite]
            fields [] stored [] text [] id [] columns []
            rest [$($body)*]
        );
    };

    // One column at a time, in declaration order. The row id field.
    (@column $head:tt $backend:tt
        fields [$($fields:tt)*] stored $stored:tt text $text:tt id []
        columns [$($columns:tt)*]
        rest [$(#[doc = $d:literal])* $f:ident : $t:ty = $($sql:ident)+ => row_id, $($rest:tt)*]
    ) => {
        $crate::analyzer::schema::table!(@column $head $backend
            fields [$($fields)* [$($d)*] $f: $t [$($sql)+];] stored $stored text $text id [$f]
            columns [$($columns)* [stringify!($f), [$($sql)+], [$($d)*], RowId]]
            rest [$($rest)*]
        );
    };
    // A TEXT field.
    (@column $head:tt $backend:tt
        fields [$($fields:tt)*] stored [$($stored:tt)*] text [$($text:tt)*] id $id:tt
        columns [$($columns:tt)*]
        rest [$(#[doc = $d:literal])* $f:ident $(as $n:literal)? : $t:ty = TEXT $($sql:ident)*, $($rest:tt)*]
    ) => {
        $crate::analyzer::schema::table!(@column $head $backend
            fields [$($fields)* [$($d)*] $f: $t [TEXT $($sql)*];] stored [$($stored)* $f] text [$($text)* $f]
            id $id
            columns [$($columns)*
                [$crate::analyzer::schema::table!(@name $f $($n)?), [TEXT $($sql)*], [$($d)*], Field]]
            rest [$($rest)*]
        );
    };
    // Any other field.
    (@column $head:tt $backend:tt
        fields [$($fields:tt)*] stored [$($stored:tt)*] text $text:tt id $id:tt
        columns [$($columns:tt)*]
        rest [$(#[doc = $d:literal])* $f:ident $(as $n:literal)? : $t:ty = $($sql:ident)+, $($rest:tt)*]
    ) => {
        $crate::analyzer::schema::table!(@column $head $backend
            fields [$($fields)* [$($d)*] $f: $t [$($sql)+];] stored [$($stored)* $f] text $text id $id
            columns [$($columns)*
                [$crate::analyzer::schema::table!(@name $f $($n)?), [$($sql)+], [$($d)*], Field]]
            rest [$($rest)*]
        );
    };
    // A column that is not a field.
    (@column $head:tt $backend:tt
        fields $fields:tt stored $stored:tt text $text:tt id $id:tt
        columns [$($columns:tt)*]
        rest [$(#[doc = $d:literal])* $c:ident = $($sql:ident)+ => $fill:ident $(($($arg:ident),+))?, $($rest:tt)*]
    ) => {
        $crate::analyzer::schema::table!(@column $head $backend
            fields $fields stored $stored text $text id $id
            columns [$($columns)*
                [stringify!($c), [$($sql)+], [$($d)*], $crate::analyzer::schema::table!(@fill $fill $($($arg)+)?)]]
            rest [$($rest)*]
        );
    };

    // Every column read: the column file's row struct.
    (@column [column_file [$($doc:literal)*] $vis:vis $table:ident $name:ident $row:ident] [$backend:expr]
        fields [$([$($fd:literal)*] $f:ident: $t:ty [$($fsql:ident)+];)*]
        stored [$($s:ident)*] text [$($x:ident)*] id [$id:ident]
        columns [$($column:tt)*]
        rest []
    ) => {
        $crate::analyzer::schema::table!(@static [$($doc)*] $vis $table $name [$backend] [$($column)*]);

        $(#[doc = $doc])*
        #[derive(Debug, Clone, Default)]
        pub struct $row {
            $($(#[doc = $fd])* pub $f: $t,)*
        }

        impl $row {
            $crate::analyzer::schema::table!(@nullability $name [$($f: $t [$($fsql)+];)*]);
        }

        impl $crate::analyzer::columns::ColumnRow for $row {
            const TABLE: &'static $crate::analyzer::schema::Table = &$table;

            #[inline]
            fn id(&self) -> i64 {
                self.$id
            }

            #[inline]
            fn put(&self, out: &mut impl $crate::analyzer::columns::Put) {
                let () = Self::NULLABILITY;
                $(out.value($crate::analyzer::columns::Cell::to_cell(self.$s));)*
            }

            fn set(&mut self, column: usize, value: Option<i64>) {
                let mut at = 0;
                $(
                    if at == column {
                        self.$s = $crate::analyzer::columns::Cell::from_cell(value);
                    }
                    at += 1;
                )*
                let _ = at;
            }

            #[inline]
            fn map_text(&mut self, _f: &mut impl FnMut($crate::analyzer::strings::Str) -> $crate::analyzer::strings::Str) {
                $($crate::analyzer::columns::TextCell::map(&mut self.$x, _f);)*
            }
        }
    };
    // Every column read: an SQLite table's row struct.
    (@column [sqlite [$($doc:literal)*] $vis:vis $table:ident $name:ident $row:ident [$($lt:lifetime)?]] [$backend:expr]
        fields [$([$($fd:literal)*] $f:ident: $t:ty [$($fsql:ident)+];)*]
        stored [$($s:ident)*] text $text:tt id []
        columns [$($column:tt)*]
        rest []
    ) => {
        $crate::analyzer::schema::table!(@static [$($doc)*] $vis $table $name [$backend] [$($column)*]);

        $(#[doc = $doc])*
        #[derive(Debug, Clone, Default)]
        pub struct $row $(<$lt>)? {
            $($(#[doc = $fd])* pub $f: $t,)*
        }

        impl $(<$lt>)? $row $(<$lt>)? {
            $crate::analyzer::schema::table!(@nullability $name [$($f: $t [$($fsql)+];)*]);
        }

        impl $(<$lt>)? $crate::analyzer::schema::SqlRow for $row $(<$lt>)? {
            const TABLE: &'static $crate::analyzer::schema::Table = &$table;

            fn bind(&self, st: &mut rusqlite::Statement<'_>, first: usize) -> rusqlite::Result<()> {
                let () = Self::NULLABILITY;
                let mut at = first;
                $(
                    st.raw_bind_parameter(at, &self.$s)?;
                    at += 1;
                )*
                let _ = at;
                Ok(())
            }
        }
    };

    (@static [$($doc:literal)*] $vis:vis $table:ident $name:ident [$backend:expr]
        [$([$cname:expr, [$($sql:ident)+], [$($d:literal)*], $fill:expr])*]
    ) => {
        $vis static $table: $crate::analyzer::schema::Table = $crate::analyzer::schema::Table {
            name: stringify!($name),
            doc: &[$($doc),*],
            backend: $backend,
            columns: &[$(
                $crate::analyzer::schema::Column {
                    name: $cname,
                    sql: stringify!($($sql)+),
                    doc: &[$($d),*],
                    fill: {
                        #[allow(unused_imports)]
                        use $crate::analyzer::schema::Fill::*;
                        $fill
                    },
                },
            )*],
        };
    };
    // Fails the build (where the row is written) if a NOT NULL column's
    // field can be None.
    (@nullability $name:ident [$($f:ident: $t:ty [$($sql:ident)+];)*]) => {
        const NULLABILITY: () = {$(
            assert!(
                !(<$t as $crate::analyzer::schema::FieldType>::OPTIONAL
                    && $crate::analyzer::schema::not_null(stringify!($($sql)+))),
                concat!(stringify!($name), ".", stringify!($f), " is NOT NULL: its field cannot be an Option")
            );
        )*};
    };
    (@name $f:ident) => { stringify!($f) };
    (@name $f:ident $n:literal) => { $n };
    (@option) => { None };
    (@option $x:ident) => { Some(stringify!($x)) };
    (@fill row_id) => { RowId };
    (@fill null) => { Null };
    (@fill same_as $c:ident) => { SameAs(stringify!($c)) };
    (@fill difference $a:ident $b:ident) => { Difference(stringify!($a), stringify!($b)) };
}
pub(crate) use table;
