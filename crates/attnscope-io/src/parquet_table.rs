//! A small column-oriented table and an uncompressed Parquet writer for it.
//!
//! Every column is REQUIRED (non-null). Strings are BYTE_ARRAY annotated as UTF8/String so that pandas,
//! polars and pyarrow read them as strings; string columns are dictionary-encoded (they mostly hold repeated
//! names), numeric columns are plain-encoded. Rows are split into row groups of at most
//! [`ROW_GROUP_ROWS`] rows so that very long tables never need one giant row group.

use std::collections::HashSet;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parquet::basic::{LogicalType, Repetition, Type as PhysicalType};
use parquet::data_type::{
    BoolType, ByteArray, ByteArrayType, DataType, DoubleType, FloatType, Int32Type, Int64Type,
};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::{SerializedColumnWriter, SerializedFileWriter};
use parquet::schema::types::{ColumnPath, Type};

use attnscope_core::Error;
use attnscope_core::Result;

/// Appended tables shorter than this are gathered in memory until they reach it, then written as one row
/// group: a run of many short sequences must not write one tiny row group each, whose footer metadata
/// (kept in memory until the file is finished, ~1 KB per column chunk) would grow with the number of
/// sequences, and which readers scan slowly.
pub const MIN_GROUP_ROWS: usize = 1 << 16;

/// Maximum number of rows written into one Parquet row group.
pub const ROW_GROUP_ROWS: usize = 1 << 20;

/// The values of one column; all values are present (no nulls).
#[derive(Debug, Clone, PartialEq)]
pub enum ColumnData {
    /// 32-bit signed integers (Parquet INT32).
    I32(Vec<i32>),
    /// 64-bit signed integers (Parquet INT64).
    I64(Vec<i64>),
    /// 32-bit floats (Parquet FLOAT).
    F32(Vec<f32>),
    /// 64-bit floats (Parquet DOUBLE).
    F64(Vec<f64>),
    /// UTF-8 strings (Parquet BYTE_ARRAY with the String logical type).
    Utf8(Vec<String>),
    /// Booleans (Parquet BOOLEAN).
    Bool(Vec<bool>),
}

impl ColumnData {
    /// The same type of column, with no values.
    fn empty_like(&self) -> ColumnData {
        match self {
            ColumnData::I32(_) => ColumnData::I32(Vec::new()),
            ColumnData::I64(_) => ColumnData::I64(Vec::new()),
            ColumnData::F32(_) => ColumnData::F32(Vec::new()),
            ColumnData::F64(_) => ColumnData::F64(Vec::new()),
            ColumnData::Utf8(_) => ColumnData::Utf8(Vec::new()),
            ColumnData::Bool(_) => ColumnData::Bool(Vec::new()),
        }
    }

    /// Appends the values of `other`, a column of the same type (the caller checked the schemas).
    fn extend_from(&mut self, other: &ColumnData) {
        match (self, other) {
            (ColumnData::I32(a), ColumnData::I32(b)) => a.extend_from_slice(b),
            (ColumnData::I64(a), ColumnData::I64(b)) => a.extend_from_slice(b),
            (ColumnData::F32(a), ColumnData::F32(b)) => a.extend_from_slice(b),
            (ColumnData::F64(a), ColumnData::F64(b)) => a.extend_from_slice(b),
            (ColumnData::Utf8(a), ColumnData::Utf8(b)) => a.extend_from_slice(b),
            (ColumnData::Bool(a), ColumnData::Bool(b)) => a.extend_from_slice(b),
            _ => debug_assert!(false, "column types differ; append checks the schema first"),
        }
    }

    /// Number of values in the column.
    pub fn len(&self) -> usize {
        match self {
            ColumnData::I32(v) => v.len(),
            ColumnData::I64(v) => v.len(),
            ColumnData::F32(v) => v.len(),
            ColumnData::F64(v) => v.len(),
            ColumnData::Utf8(v) => v.len(),
            ColumnData::Bool(v) => v.len(),
        }
    }

    /// True when the column holds no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn physical_type(&self) -> PhysicalType {
        match self {
            ColumnData::I32(_) => PhysicalType::INT32,
            ColumnData::I64(_) => PhysicalType::INT64,
            ColumnData::F32(_) => PhysicalType::FLOAT,
            ColumnData::F64(_) => PhysicalType::DOUBLE,
            ColumnData::Utf8(_) => PhysicalType::BYTE_ARRAY,
            ColumnData::Bool(_) => PhysicalType::BOOLEAN,
        }
    }
}

/// A named column.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    /// Column name as it appears in the Parquet schema.
    pub name: String,
    /// The column's values.
    pub data: ColumnData,
}

/// An ordered set of equally long, uniquely named columns.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Table {
    /// The columns, in schema order.
    pub columns: Vec<Column>,
}

impl Table {
    /// An empty table with no columns.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a column; lengths and names are checked by [`write_parquet`].
    pub fn push(&mut self, name: impl Into<String>, data: ColumnData) -> &mut Self {
        self.columns.push(Column {
            name: name.into(),
            data,
        });
        self
    }

    /// Number of rows (length of the first column, 0 when there are no columns).
    pub fn len(&self) -> usize {
        self.columns.first().map_or(0, |c| c.data.len())
    }

    /// True when the table has no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A table of `like`'s columns with no rows.
fn empty_like(like: &Table) -> Table {
    let mut t = Table::new();
    for col in &like.columns {
        t.push(col.name.clone(), col.data.empty_like());
    }
    t
}

/// Writes `table` to `path` as an uncompressed Parquet file (row groups of at most [`ROW_GROUP_ROWS`] rows).
///
/// Errors when the table has no columns, a column name is empty or repeated, or the columns differ in length.
pub fn write_parquet(path: &Path, table: &Table) -> Result<()> {
    write_parquet_with_row_groups(path, table, ROW_GROUP_ROWS)
}

fn write_parquet_with_row_groups(path: &Path, table: &Table, group_rows: usize) -> Result<()> {
    let mut writer = ParquetWriter::create_with_row_groups(path, table, group_rows, 0)?;
    writer.append(table)?;
    writer.finish()
}

/// A Parquet file written table by table: [`ParquetWriter::append`]ed tables are gathered until they hold
/// [`MIN_GROUP_ROWS`] rows (a longer one goes straight out), then written as the next row group(s) of at
/// most [`ROW_GROUP_ROWS`] rows, so memory holds at most one such group besides the table appended. Every appended table must have the schema the file was
/// created with (column names, types, order). The file is complete once [`ParquetWriter::finish`] wrote
/// its footer and fsynced it; dropped before, it is left without a footer (unreadable).
pub struct ParquetWriter {
    path: PathBuf,
    schema: Arc<Type>,
    writer: SerializedFileWriter<BufWriter<File>>,
    group_rows: usize,
    min_rows: usize,
    /// Appended rows not yet written (empty columns of the file's schema when none).
    pending: Table,
}

impl ParquetWriter {
    /// Creates `path` with the schema of `like` (its rows are not written). Errors as [`write_parquet`].
    pub fn create(path: &Path, like: &Table) -> Result<ParquetWriter> {
        Self::create_with_row_groups(path, like, ROW_GROUP_ROWS, MIN_GROUP_ROWS)
    }

    fn create_with_row_groups(
        path: &Path,
        like: &Table,
        group_rows: usize,
        min_rows: usize,
    ) -> Result<ParquetWriter> {
        validate(path, like)?;
        let pq_err =
            |e: parquet::errors::ParquetError| Error::output(path, format!("parquet: {e}"));
        let schema = Arc::new(build_schema(like).map_err(pq_err)?);

        let mut props = WriterProperties::builder()
            .set_dictionary_enabled(false)
            .set_created_by(format!("attnscope {}", env!("CARGO_PKG_VERSION")));
        for col in &like.columns {
            if matches!(col.data, ColumnData::Utf8(_)) {
                let cp = ColumnPath::new(vec![col.name.clone()]);
                props = props.set_column_dictionary_enabled(cp, true);
            }
        }
        let props = Arc::new(props.build());

        let file = File::create(path).map_err(|e| Error::io(path, e))?;
        let writer = SerializedFileWriter::new(BufWriter::new(file), schema.clone(), props)
            .map_err(pq_err)?;
        Ok(ParquetWriter {
            path: path.to_path_buf(),
            schema,
            writer,
            group_rows: group_rows.max(1),
            min_rows,
            pending: empty_like(like),
        })
    }

    /// Appends the rows of `table` (none for an empty table). Errors, naming the file, when the table is
    /// malformed (as [`write_parquet`]) or its schema differs from the file's.
    pub fn append(&mut self, table: &Table) -> Result<()> {
        let path = self.path.as_path();
        validate(path, table)?;
        let pq_err =
            |e: parquet::errors::ParquetError| Error::output(path, format!("parquet: {e}"));
        let schema = build_schema(table).map_err(pq_err)?;
        if schema != *self.schema {
            return Err(Error::output(
                path,
                format!(
                    "cannot append a table of columns {} to a file of columns {}",
                    describe(&schema),
                    describe(&self.schema)
                ),
            ));
        }
        if self.pending.is_empty() && table.len() >= self.min_rows {
            return self.write_groups(table);
        }
        for (pending, col) in self.pending.columns.iter_mut().zip(&table.columns) {
            pending.data.extend_from(&col.data);
        }
        if self.pending.len() >= self.min_rows {
            self.flush()?;
        }
        Ok(())
    }

    /// Writes the gathered rows, if any.
    fn flush(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let empty = empty_like(&self.pending);
        let pending = std::mem::replace(&mut self.pending, empty);
        self.write_groups(&pending)
    }

    /// Writes `table` as row groups of at most `group_rows` rows.
    fn write_groups(&mut self, table: &Table) -> Result<()> {
        let path = self.path.as_path();
        let pq_err =
            |e: parquet::errors::ParquetError| Error::output(path, format!("parquet: {e}"));
        let rows = table.len();
        let mut start = 0;
        while start < rows {
            let end = (start + self.group_rows).min(rows);
            let mut rg = self.writer.next_row_group().map_err(pq_err)?;
            for col in &table.columns {
                let Some(mut cw) = rg.next_column().map_err(pq_err)? else {
                    return Err(Error::output(
                        path,
                        "parquet: schema has fewer columns than table",
                    ));
                };
                write_range(&mut cw, &col.data, start, end).map_err(pq_err)?;
                cw.close().map_err(pq_err)?;
            }
            rg.close().map_err(pq_err)?;
            start = end;
        }
        Ok(())
    }

    /// Writes the gathered rows and the footer, and fsyncs the file.
    pub fn finish(mut self) -> Result<()> {
        self.flush()?;
        let path = self.path.as_path();
        let buf = self
            .writer
            .into_inner()
            .map_err(|e| Error::output(path, format!("parquet: {e}")))?;
        let file = buf
            .into_inner()
            .map_err(|e| Error::io(path, e.into_error()))?;
        file.sync_all().map_err(|e| Error::io(path, e))
    }
}

/// `[name: TYPE, ...]` of a flat schema, for messages.
fn describe(schema: &Type) -> String {
    let columns: Vec<String> = schema
        .get_fields()
        .iter()
        .map(|f| {
            let kind = match f.as_ref() {
                Type::PrimitiveType { physical_type, .. } => format!("{physical_type:?}"),
                Type::GroupType { .. } => "group".to_string(),
            };
            format!("{}: {kind}", f.name())
        })
        .collect();
    format!("[{}]", columns.join(", "))
}

fn validate(path: &Path, table: &Table) -> Result<()> {
    if table.columns.is_empty() {
        return Err(Error::output(path, "cannot write a table with no columns"));
    }
    let rows = table.len();
    let mut seen = HashSet::new();
    for col in &table.columns {
        if col.name.is_empty() {
            return Err(Error::output(path, "column with an empty name"));
        }
        if !seen.insert(col.name.as_str()) {
            return Err(Error::output(
                path,
                format!("column `{}` appears more than once", col.name),
            ));
        }
        if col.data.len() != rows {
            return Err(Error::output(
                path,
                format!(
                    "column `{}` has {} rows but column `{}` has {rows}",
                    col.name,
                    col.data.len(),
                    table.columns[0].name
                ),
            ));
        }
    }
    Ok(())
}

fn build_schema(table: &Table) -> parquet::errors::Result<Type> {
    let mut fields = Vec::with_capacity(table.columns.len());
    for col in &table.columns {
        let logical = match col.data {
            ColumnData::Utf8(_) => Some(LogicalType::String),
            _ => None,
        };
        let field = Type::primitive_type_builder(&col.name, col.data.physical_type())
            .with_repetition(Repetition::REQUIRED)
            .with_logical_type(logical)
            .build()?;
        fields.push(Arc::new(field));
    }
    Type::group_type_builder("schema")
        .with_fields(fields)
        .build()
}

fn write_typed<T: DataType>(
    cw: &mut SerializedColumnWriter<'_>,
    values: &[T::T],
) -> parquet::errors::Result<()>
where
    T::T: Sized,
{
    cw.typed::<T>().write_batch(values, None, None)?;
    Ok(())
}

fn write_range(
    cw: &mut SerializedColumnWriter<'_>,
    data: &ColumnData,
    start: usize,
    end: usize,
) -> parquet::errors::Result<()> {
    match data {
        ColumnData::I32(v) => write_typed::<Int32Type>(cw, &v[start..end]),
        ColumnData::I64(v) => write_typed::<Int64Type>(cw, &v[start..end]),
        ColumnData::F32(v) => write_typed::<FloatType>(cw, &v[start..end]),
        ColumnData::F64(v) => write_typed::<DoubleType>(cw, &v[start..end]),
        ColumnData::Bool(v) => write_typed::<BoolType>(cw, &v[start..end]),
        ColumnData::Utf8(v) => {
            let values: Vec<ByteArray> = v[start..end]
                .iter()
                .map(|s| ByteArray::from(s.as_str()))
                .collect();
            write_typed::<ByteArrayType>(cw, &values)
        }
    }
}

#[cfg(test)]
mod tests;
