//! Reading back the Parquet tables attnscope writes (for `attnscope analyze`), into the same [`Table`]
//! type the writer takes. Row-oriented and simple: analysis tables are small.

use crate::{ColumnData, Table};
use attnscope_core::Error;
use attnscope_core::Result;
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::Field;
use std::fs::File;
use std::path::Path;

/// Reads every column of a flat Parquet file (INT32, INT64, FLOAT, DOUBLE, BOOLEAN, UTF8).
pub fn read_parquet(path: &Path) -> Result<Table> {
    let bad = |m: String| Error::output(path, m);
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let reader = SerializedFileReader::new(file)
        .map_err(|e| bad(format!("not a readable Parquet file: {e}")))?;
    let schema = reader.metadata().file_metadata().schema_descr_ptr();
    let mut table = Table::new();
    let mut kinds = Vec::new();
    for col in schema.columns() {
        use parquet::basic::Type as P;
        let data = match col.physical_type() {
            P::INT32 => ColumnData::I32(Vec::new()),
            P::INT64 => ColumnData::I64(Vec::new()),
            P::FLOAT => ColumnData::F32(Vec::new()),
            P::DOUBLE => ColumnData::F64(Vec::new()),
            P::BOOLEAN => ColumnData::Bool(Vec::new()),
            P::BYTE_ARRAY => ColumnData::Utf8(Vec::new()),
            other => {
                return Err(bad(format!(
                    "column `{}`: unsupported type {other}",
                    col.name()
                )));
            }
        };
        kinds.push(col.name().to_string());
        table.push(col.name(), data);
    }
    let rows = reader.get_row_iter(None).map_err(|e| bad(e.to_string()))?;
    for row in rows {
        let row = row.map_err(|e| bad(e.to_string()))?;
        for (i, (_, field)) in row.get_column_iter().enumerate() {
            let Some(column) = table.columns.get_mut(i) else {
                return Err(bad("row wider than the schema".into()));
            };
            match (&mut column.data, field) {
                (ColumnData::I32(v), Field::Int(x)) => v.push(*x),
                (ColumnData::I64(v), Field::Long(x)) => v.push(*x),
                (ColumnData::F32(v), Field::Float(x)) => v.push(*x),
                (ColumnData::F64(v), Field::Double(x)) => v.push(*x),
                (ColumnData::Bool(v), Field::Bool(x)) => v.push(*x),
                (ColumnData::Utf8(v), Field::Str(x)) => v.push(x.clone()),
                (_, other) => {
                    return Err(bad(format!(
                        "column `{}`: unexpected value {other:?}",
                        kinds[i]
                    )));
                }
            }
        }
    }
    Ok(table)
}

impl Table {
    /// The column of this name.
    pub fn column(&self, name: &str) -> Option<&ColumnData> {
        self.columns
            .iter()
            .find(|c| c.name == name)
            .map(|c| &c.data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::write_parquet;

    #[test]
    fn reads_back_what_the_writer_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.parquet");
        let mut t = Table::new();
        t.push("a", ColumnData::I32(vec![1, -2, 3]))
            .push("b", ColumnData::I64(vec![10, 20, 30]))
            .push("c", ColumnData::F32(vec![0.5, 1.5, -2.0]))
            .push("d", ColumnData::F64(vec![1e-9, 2.0, 3.0]))
            .push(
                "e",
                ColumnData::Utf8(vec!["x".into(), "y".into(), "x".into()]),
            )
            .push("f", ColumnData::Bool(vec![true, false, true]));
        write_parquet(&path, &t).unwrap();
        assert_eq!(read_parquet(&path).unwrap(), t);
        let e = read_parquet(&dir.path().join("missing.parquet"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing.parquet"), "{e}");
    }
}
