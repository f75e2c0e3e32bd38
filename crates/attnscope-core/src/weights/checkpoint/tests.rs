//! The parse-from-bytes halves of the checkpoint reader (what fuzz/ drives): the shard index and one
//! file's header.

use super::*;

/// A safetensors file: `header` (JSON) padded with spaces to a multiple of 8, then `data`.
fn file(header: &str, data: &[u8]) -> Vec<u8> {
    let mut h = header.as_bytes().to_vec();
    while !h.len().is_multiple_of(8) {
        h.push(b' ');
    }
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&h);
    out.extend_from_slice(data);
    out
}

fn err_of<T>(r: Result<T>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn shard_index_joins_sorts_and_merges_dot_prefixed_names() {
    let dir = Path::new("m");
    let text = br#"{"weight_map": {"b": "./s1.safetensors", "a": "s2.safetensors", "c": "s1.safetensors"}}"#;
    let index = parse_shard_index(dir, &dir.join("i.json"), text).unwrap();
    assert_eq!(
        index.files(),
        [dir.join("s1.safetensors"), dir.join("s2.safetensors")]
    );
    let shard_of: Vec<_> = index
        .shard_of()
        .iter()
        .map(|(n, &i)| (n.as_str(), i))
        .collect();
    assert_eq!(shard_of, [("a", 1), ("b", 0), ("c", 0)]);
}

#[test]
fn shard_index_errors_name_the_file_and_field() {
    let dir = Path::new("m");
    let path = dir.join("i.json");
    let e = err_of(parse_shard_index(dir, &path, b"{"));
    assert!(e.starts_with("m/i.json: not valid JSON"), "{e}");
    let e = err_of(parse_shard_index(dir, &path, b"[]"));
    assert_eq!(e, "m/i.json: field `weight_map`: missing or not an object");
    let e = err_of(parse_shard_index(
        dir,
        &path,
        br#"{"weight_map": {"x": 3}}"#,
    ));
    assert_eq!(e, "m/i.json: field `weight_map.x`: expected a file name");
    let e = err_of(parse_shard_index(
        dir,
        &path,
        br#"{"weight_map": {"x": "../a"}}"#,
    ));
    assert!(
        e.starts_with("m/i.json: field `weight_map.x`: `../a`: `..`"),
        "{e}"
    );
    let e = err_of(parse_shard_index(
        dir,
        &path,
        br#"{"weight_map": {"x": "/a"}}"#,
    ));
    assert!(e.contains("absolute path"), "{e}");
}

#[test]
fn header_of_bytes_describes_the_tensors() {
    let bytes = file(
        r#"{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "b": {"dtype": "BF16", "shape": [1, 2], "data_offsets": [8, 12]}}"#,
        &[0; 12],
    );
    let info = inspect_safetensors(Path::new("x.safetensors"), &bytes).unwrap();
    assert_eq!(info.stored_parameters, 4);
    assert_eq!(info.dtypes.get("F32"), Some(&1));
    assert_eq!(info.dtypes.get("BF16"), Some(&1));
}

#[test]
fn unreadable_header_names_the_tensor() {
    let path = Path::new("x.safetensors");
    let short = file(
        r#"{"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}"#,
        &[0; 8],
    );
    let e = err_of(inspect_safetensors(path, &short));
    assert!(
        e.starts_with("x.safetensors: not a readable safetensors file: tensor `a`"),
        "{e}"
    );
    let e = err_of(inspect_safetensors(path, &[1, 2, 3]));
    assert!(
        e.starts_with("x.safetensors: not a readable safetensors file"),
        "{e}"
    );
}
