//! Engine tables → Python: each column a numpy array moved from its Rust vector (no copy), strings
//! dictionary-encoded (int32 codes as numpy plus the distinct values) so that a long table's repeated
//! names cost one Python string each. `python/attnscope/_tables.py` turns them into pyarrow tables.

use attnscope_io::{ColumnData, Table};
use numpy::IntoPyArray;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};
use std::collections::HashMap;

/// A table as `[(name, column)]`, where a column is a numpy array or `("dict", codes, values)`.
pub fn table_to_py<'py>(py: Python<'py>, table: Table) -> PyResult<Bound<'py, PyList>> {
    let out = PyList::empty(py);
    for column in table.columns {
        let data: Bound<'py, PyAny> = match column.data {
            ColumnData::I32(v) => v.into_pyarray(py).into_any(),
            ColumnData::I64(v) => v.into_pyarray(py).into_any(),
            ColumnData::F32(v) => v.into_pyarray(py).into_any(),
            ColumnData::F64(v) => v.into_pyarray(py).into_any(),
            ColumnData::Bool(v) => v.into_pyarray(py).into_any(),
            ColumnData::Utf8(v) => {
                let (codes, values) = dictionary(v);
                PyTuple::new(
                    py,
                    [
                        "dict".into_pyobject(py)?.into_any(),
                        codes.into_pyarray(py).into_any(),
                        PyList::new(py, values)?.into_any(),
                    ],
                )?
                .into_any()
            }
        };
        out.append((column.name, data))?;
    }
    Ok(out)
}

/// `values` as codes into its distinct values, in order of first appearance.
fn dictionary(values: Vec<String>) -> (Vec<i32>, Vec<String>) {
    let mut index: HashMap<String, i32> = HashMap::new();
    let mut distinct = Vec::new();
    let codes = values
        .into_iter()
        .map(|v| {
            *index.entry(v).or_insert_with_key(|k| {
                distinct.push(k.clone());
                distinct.len() as i32 - 1
            })
        })
        .collect();
    (codes, distinct)
}

/// A JSON-serialisable value as the Python object `json.loads` would give.
pub fn json_to_py<'py>(py: Python<'py>, value: &serde_json::Value) -> PyResult<Bound<'py, PyAny>> {
    use serde_json::Value;
    Ok(match value {
        Value::Null => py.None().into_bound(py),
        Value::Bool(b) => b.into_pyobject(py)?.to_owned().into_any(),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => i.into_pyobject(py)?.into_any(),
            (_, Some(u), _) => u.into_pyobject(py)?.into_any(),
            (_, _, f) => f.unwrap_or(f64::NAN).into_pyobject(py)?.into_any(),
        },
        Value::String(s) => s.into_pyobject(py)?.into_any(),
        Value::Array(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(json_to_py(py, item)?)?;
            }
            list.into_any()
        }
        Value::Object(map) => {
            let dict = PyDict::new(py);
            for (k, v) in map {
                dict.set_item(k, json_to_py(py, v)?)?;
            }
            dict.into_any()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::dictionary;

    #[test]
    fn strings_encode_as_codes_into_first_seen_values() {
        let v = ["b", "a", "b", "c", "a"].map(String::from).to_vec();
        let (codes, values) = dictionary(v);
        assert_eq!(codes, [0, 1, 0, 2, 1]);
        assert_eq!(values, ["b", "a", "c"]);
    }
}
