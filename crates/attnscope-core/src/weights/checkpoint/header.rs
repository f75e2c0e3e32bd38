//! A safetensors file's header, read from the file's bytes (no filesystem): the tensor table, with an
//! error that names the tensor at fault when the header is unreadable, and the checks across the files of
//! a sharded checkpoint (each tensor in one file, and in the one the index says).

use super::index::Index;
use crate::Error;
use crate::Result;
use safetensors::SafeTensors;
use std::collections::HashMap;
use std::path::PathBuf;

/// Bytes per element of a safetensors dtype name (`None` for names this diagnosis does not know).
fn dtype_bytes(dtype: &str) -> Option<usize> {
    Some(match dtype {
        "F64" | "I64" | "U64" => 8,
        "F32" | "I32" | "U32" => 4,
        "F16" | "BF16" | "I16" | "U16" => 2,
        "F8_E4M3" | "F8_E5M2" | "I8" | "U8" | "BOOL" => 1,
        _ => return None,
    })
}

/// Finds the tensor that makes a safetensors header unreadable (shape × dtype not matching its offsets, a
/// gap or overlap, data past the end of the file), for an error that names it.
fn diagnose_header(map: &[u8]) -> Option<String> {
    let n = u64::from_le_bytes(map.get(..8)?.try_into().ok()?) as usize;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(map.get(8..8usize.checked_add(n)?)?).ok()?;
    let data_len = map.len() - 8 - n;
    let mut entries: Vec<(String, String, Vec<usize>, usize, usize)> = Vec::new();
    for (name, info) in &header {
        if name == "__metadata__" {
            continue;
        }
        let dtype = info.get("dtype")?.as_str()?.to_string();
        let shape: Vec<usize> = info
            .get("shape")?
            .as_array()?
            .iter()
            .map(|d| d.as_u64().map(|d| d as usize))
            .collect::<Option<_>>()?;
        let offs = info.get("data_offsets")?.as_array()?;
        let (b, e) = (
            offs.first()?.as_u64()? as usize,
            offs.get(1)?.as_u64()? as usize,
        );
        entries.push((name.clone(), dtype, shape, b, e));
    }
    entries.sort_by_key(|e| (e.3, e.4));
    let mut expected_start = 0;
    for (name, dtype, shape, b, e) in &entries {
        if *b != expected_start || e < b {
            return Some(format!(
                "tensor `{name}`: data_offsets [{b}, {e}] do not follow the previous tensor (which ends at {expected_start})"
            ));
        }
        if let Some(size) = dtype_bytes(dtype) {
            let need = shape.iter().try_fold(size, |acc, &d| acc.checked_mul(d));
            if need != Some(e - b) {
                return Some(format!(
                    "tensor `{name}`: shape {shape:?} of {dtype} needs {} bytes but its data_offsets span {}",
                    need.map_or("too many".to_string(), |n| n.to_string()),
                    e - b
                ));
            }
        }
        if *e > data_len {
            return Some(format!(
                "tensor `{name}`: data ends at byte {e} but the file holds only {data_len} data bytes; is it truncated?"
            ));
        }
        expected_start = *e;
    }
    (expected_start != data_len).then(|| {
        format!(
            "the tensors' data ends at byte {expected_start} but the file holds {data_len} data bytes"
        )
    })
}

/// Reads the header of every file (`maps[i]` the bytes of `files[i]`) and the tensor name → file lookup.
/// A tensor stored in two files is an error naming both; with an index, so is a tensor missing from the
/// shard the index places it in.
pub(super) fn read_headers<'a>(
    files: &[PathBuf],
    maps: &[&'a [u8]],
    index: Option<&Index>,
) -> Result<(Vec<SafeTensors<'a>>, HashMap<String, usize>)> {
    let mut tables = Vec::with_capacity(maps.len());
    let mut by_name: HashMap<String, usize> = HashMap::new();
    for (i, (&map, path)) in maps.iter().zip(files).enumerate() {
        let table = SafeTensors::deserialize(map).map_err(|e| {
            let why = diagnose_header(map).unwrap_or_else(|| e.to_string());
            Error::weights(path, format!("not a readable safetensors file: {why}"))
        })?;
        let mut names = table.names();
        names.sort();
        for name in names {
            if let Some(prev) = by_name.insert(name.to_string(), i) {
                return Err(Error::weights(
                    path,
                    format!(
                        "tensor `{name}` is also in {}; a tensor must be stored in one file only",
                        files[prev].display()
                    ),
                ));
            }
        }
        tables.push(table);
    }
    if let Some(index) = index {
        for (name, &want) in &index.shard_of {
            let shard = &files[want];
            match by_name.get(name) {
                Some(&got) if got == want => {}
                Some(&got) => {
                    return Err(Error::weights(
                        shard,
                        format!(
                            "tensor `{name}` is not in this file, where {} places it, but in {}",
                            index.path.display(),
                            files[got].display()
                        ),
                    ));
                }
                None => {
                    return Err(Error::weights(
                        shard,
                        format!(
                            "tensor `{name}` is missing from this file, where {} places it",
                            index.path.display()
                        ),
                    ));
                }
            }
        }
    }
    Ok((tables, by_name))
}
