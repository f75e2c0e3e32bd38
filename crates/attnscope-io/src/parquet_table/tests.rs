//! Round-trip and validation tests for the Parquet table writer.

use super::*;
use parquet::basic::Encoding;
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::Field;

fn sample(n: usize) -> Table {
    let mut t = Table::new();
    t.push(
        "i32",
        ColumnData::I32((0..n).map(|i| i as i32 - 2).collect()),
    );
    t.push(
        "i64",
        ColumnData::I64((0..n).map(|i| (i as i64) << 40).collect()),
    );
    t.push(
        "f32",
        ColumnData::F32((0..n).map(|i| i as f32 * 0.5).collect()),
    );
    t.push(
        "f64",
        ColumnData::F64((0..n).map(|i| i as f64 / 3.0).collect()),
    );
    let names = (0..n).map(|i| format!("m{}", i % 3)).collect();
    t.push("metric", ColumnData::Utf8(names));
    t.push(
        "flag",
        ColumnData::Bool((0..n).map(|i| i % 2 == 0).collect()),
    );
    t
}

fn expected(data: &ColumnData, r: usize) -> Field {
    match data {
        ColumnData::I32(v) => Field::Int(v[r]),
        ColumnData::I64(v) => Field::Long(v[r]),
        ColumnData::F32(v) => Field::Float(v[r]),
        ColumnData::F64(v) => Field::Double(v[r]),
        ColumnData::Utf8(v) => Field::Str(v[r].clone()),
        ColumnData::Bool(v) => Field::Bool(v[r]),
    }
}

/// Reads `path` back, compares schema and every value with `t`, returns the row-group count.
fn check_roundtrip(path: &Path, t: &Table) -> usize {
    let reader = SerializedFileReader::new(File::open(path).unwrap()).unwrap();
    let schema = reader.metadata().file_metadata().schema_descr_ptr();
    assert_eq!(schema.num_columns(), t.columns.len());
    let metric = schema.column(4);
    assert_eq!(metric.logical_type_ref(), Some(&LogicalType::String));
    let info = metric.self_type().get_basic_info();
    assert_eq!(info.repetition(), Repetition::REQUIRED);
    let mut n = 0;
    for (r, row) in reader.get_row_iter(None).unwrap().enumerate() {
        let row = row.unwrap();
        for ((name, field), col) in row.get_column_iter().zip(&t.columns) {
            assert_eq!(name, &col.name);
            assert_eq!(field, &expected(&col.data, r), "row {r} column {name}");
        }
        n += 1;
    }
    assert_eq!(n, t.len());
    reader.num_row_groups()
}

#[test]
fn roundtrip_all_types_and_dictionary_strings() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.parquet");
    let t = sample(7);
    write_parquet(&path, &t).unwrap();
    assert_eq!(check_roundtrip(&path, &t), 1);
    let reader = SerializedFileReader::new(File::open(&path).unwrap()).unwrap();
    let rg = reader.metadata().row_group(0);
    assert!(
        rg.column(4)
            .encodings()
            .any(|e| e == Encoding::RLE_DICTIONARY)
    );
    assert!(
        !rg.column(3)
            .encodings()
            .any(|e| e == Encoding::RLE_DICTIONARY)
    );
}

#[test]
fn splits_into_row_groups() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.parquet");
    let t = sample(10);
    write_parquet_with_row_groups(&path, &t, 3).unwrap();
    assert_eq!(check_roundtrip(&path, &t), 4);
}

#[test]
fn empty_table_keeps_schema() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.parquet");
    let t = sample(0);
    write_parquet(&path, &t).unwrap();
    assert_eq!(check_roundtrip(&path, &t), 0);
    let reader = SerializedFileReader::new(File::open(&path).unwrap()).unwrap();
    assert_eq!(reader.metadata().file_metadata().num_rows(), 0);
}

#[test]
fn rejects_bad_tables() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.parquet");
    let mut t = sample(3);
    t.push("short", ColumnData::I32(vec![1, 2]));
    let msg = write_parquet(&path, &t).unwrap_err().to_string();
    assert!(
        msg.contains("bad.parquet") && msg.contains("short"),
        "{msg}"
    );

    let mut t = sample(3);
    t.push("metric", ColumnData::I32(vec![1, 2, 3]));
    let msg = write_parquet(&path, &t).unwrap_err().to_string();
    assert!(msg.contains("more than once"), "{msg}");

    assert!(write_parquet(&path, &Table::new()).is_err());
    assert!(!path.exists());
}

/// The rows of `t` from `start` to `end`, as a table of the same columns.
fn rows(t: &Table, start: usize, end: usize) -> Table {
    let mut out = Table::new();
    for col in &t.columns {
        let data = match &col.data {
            ColumnData::I32(v) => ColumnData::I32(v[start..end].to_vec()),
            ColumnData::I64(v) => ColumnData::I64(v[start..end].to_vec()),
            ColumnData::F32(v) => ColumnData::F32(v[start..end].to_vec()),
            ColumnData::F64(v) => ColumnData::F64(v[start..end].to_vec()),
            ColumnData::Utf8(v) => ColumnData::Utf8(v[start..end].to_vec()),
            ColumnData::Bool(v) => ColumnData::Bool(v[start..end].to_vec()),
        };
        out.push(col.name.clone(), data);
    }
    out
}

/// Tables appended one after another read back as their concatenation, one row group each (an empty one
/// adds none, a long one is split).
#[test]
fn appended_tables_become_row_groups() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.parquet");
    let t = sample(12);
    let mut w = ParquetWriter::create_with_row_groups(&path, &sample(0), 4, 0).unwrap();
    for (start, end) in [(0, 3), (3, 3), (3, 10), (10, 12)] {
        w.append(&rows(&t, start, end)).unwrap();
    }
    w.finish().unwrap();
    assert_eq!(check_roundtrip(&path, &t), 1 + 2 + 1);
}

/// Short tables are gathered until they hold the minimum, then written as one row group; a table at the
/// minimum or longer goes straight out when nothing is gathered; what is left goes out at `finish`.
#[test]
fn short_appended_tables_are_gathered_into_row_groups() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.parquet");
    let t = sample(30);
    let mut w = ParquetWriter::create_with_row_groups(&path, &sample(0), 100, 5).unwrap();
    // [0,3) + [3,3) + [3,10) → one group of 10; [10,22) alone; [22,24) + [24,30) → one of 8.
    for (start, end) in [(0, 3), (3, 3), (3, 10), (10, 22), (22, 24), (24, 30)] {
        w.append(&rows(&t, start, end)).unwrap();
    }
    w.finish().unwrap();
    assert_eq!(check_roundtrip(&path, &t), 3);

    let path = dir.path().join("tail.parquet");
    let t = sample(4);
    let mut w = ParquetWriter::create_with_row_groups(&path, &sample(0), 100, 5).unwrap();
    w.append(&rows(&t, 0, 1)).unwrap();
    w.append(&rows(&t, 1, 4)).unwrap();
    w.finish().unwrap();
    assert_eq!(
        check_roundtrip(&path, &t),
        1,
        "the gathered tail is written at finish"
    );
}

/// A table of other columns (names, types or order) is refused by name, not written.
#[test]
fn appending_another_schema_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mixed.parquet");
    let mut w = ParquetWriter::create(&path, &sample(0)).unwrap();
    w.append(&sample(2)).unwrap();
    let mut renamed = sample(1);
    renamed.columns[0].name = "other".into();
    let mut retyped = sample(1);
    retyped.columns[1].data = ColumnData::I32(vec![7]);
    let mut reordered = sample(1);
    reordered.columns.swap(0, 1);
    let mut fewer = sample(1);
    fewer.columns.pop();
    for bad in [renamed, retyped, reordered, fewer] {
        let msg = w.append(&bad).unwrap_err().to_string();
        assert!(
            msg.contains("mixed.parquet") && msg.contains("i32: INT32"),
            "{msg}"
        );
    }
    w.finish().unwrap();
    assert_eq!(check_roundtrip(&path, &sample(2)), 1);
}
