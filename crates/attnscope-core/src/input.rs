//! The `--input FILE.json` experiment spec: explicit token ids per sequence, with optional position ids,
//! group labels and a visibility mode. Parsing walks the JSON by hand so that every error names the file
//! and the exact field path (for example `sequences[1].positions[3]`).

use std::path::Path;

use serde_json::{Map, Value};

use crate::Error;
use crate::Result;
use crate::slots::Visibility;

/// One sequence of an experiment: token ids and per-slot position ids and group labels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SequenceInput {
    /// Token ids, used as given.
    pub token_ids: Vec<u32>,
    /// Position id of each slot (default `0..T-1`).
    pub positions: Vec<i64>,
    /// Group label of each slot; `-1` means none (the default).
    pub groups: Vec<i32>,
    /// Visibility mode (default [`Visibility::Visible`]).
    pub visibility: Visibility,
}

impl SequenceInput {
    /// A plain sequence: positions `0..T-1`, no groups, visible.
    pub fn from_tokens(ids: Vec<u32>) -> SequenceInput {
        let n = ids.len() as i64;
        let groups = vec![-1; ids.len()];
        SequenceInput {
            token_ids: ids,
            positions: (0..n).collect(),
            groups,
            visibility: Visibility::Visible,
        }
    }
}

/// A parsed `--input` file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputSpec {
    /// The sequences, in file order (at least one).
    pub sequences: Vec<SequenceInput>,
}

const TOP_KEYS: &[&str] = &["sequences"];
const SEQ_KEYS: &[&str] = &["token_ids", "positions", "groups", "visibility"];

/// Rejects keys of `obj` that are not in `allowed`.
fn deny_unknown(
    path: &Path,
    obj: &Map<String, Value>,
    prefix: &str,
    allowed: &[&str],
) -> Result<()> {
    match obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        None => Ok(()),
        Some(k) => Err(Error::field(
            path,
            format!("{prefix}{k}"),
            format!("unknown key; allowed keys: {}", allowed.join(", ")),
        )),
    }
}

/// Reads an array of integers in `[lo, hi]`, naming `field[i]` on error.
fn int_array(path: &Path, v: &Value, field: &str, lo: i64, hi: i64) -> Result<Vec<i64>> {
    let arr = v.as_array().ok_or_else(|| {
        Error::field(
            path,
            field,
            format!("expected an array of integers, got {v}"),
        )
    })?;
    arr.iter()
        .enumerate()
        .map(|(i, x)| match x.as_i64() {
            Some(n) if (lo..=hi).contains(&n) => Ok(n),
            _ => Err(Error::field(
                path,
                format!("{field}[{i}]"),
                format!("expected an integer in {lo}..={hi}, got {x}"),
            )),
        })
        .collect()
}

/// Parses one element of `sequences`.
fn parse_sequence(path: &Path, v: &Value, idx: usize) -> Result<SequenceInput> {
    let name = format!("sequences[{idx}]");
    let obj = v
        .as_object()
        .ok_or_else(|| Error::field(path, &name, "expected an object"))?;
    deny_unknown(path, obj, &format!("{name}."), SEQ_KEYS)?;
    let f = |key: &str| format!("{name}.{key}");
    let ids_v = obj
        .get("token_ids")
        .ok_or_else(|| Error::field(path, f("token_ids"), "missing"))?;
    let ids = int_array(path, ids_v, &f("token_ids"), 0, i64::from(u32::MAX))?;
    let token_ids: Vec<u32> = ids
        .into_iter()
        .filter_map(|x| u32::try_from(x).ok())
        .collect();
    let mut seq = SequenceInput::from_tokens(token_ids);
    if let Some(p) = obj.get("positions").filter(|p| !p.is_null()) {
        seq.positions = int_array(path, p, &f("positions"), i64::MIN, i64::MAX)?;
    }
    if let Some(g) = obj.get("groups").filter(|g| !g.is_null()) {
        let lo = i64::from(i32::MIN);
        let groups = int_array(path, g, &f("groups"), lo, i64::from(i32::MAX))?;
        seq.groups = groups
            .into_iter()
            .filter_map(|x| i32::try_from(x).ok())
            .collect();
    }
    match obj.get("visibility") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if s == "visible" => seq.visibility = Visibility::Visible,
        Some(Value::String(s)) if s == "isolated" => seq.visibility = Visibility::Isolated,
        Some(other) => {
            let msg = format!("unknown value {other}; allowed: \"visible\", \"isolated\"");
            return Err(Error::field(path, f("visibility"), msg));
        }
    }
    check_shape(&seq).map_err(|(field, msg)| Error::field(path, f(field), msg))?;
    Ok(seq)
}

/// Shape checks shared by file parsing and [`validate_sequence`]: returns the offending field and a
/// message.
fn check_shape(seq: &SequenceInput) -> std::result::Result<(), (&'static str, String)> {
    let n = seq.token_ids.len();
    if n == 0 {
        return Err(("token_ids", "is empty".into()));
    }
    if seq.positions.len() != n {
        let msg = format!(
            "length {} does not match token_ids length {n}",
            seq.positions.len()
        );
        return Err(("positions", msg));
    }
    if seq.groups.len() != n {
        let msg = format!(
            "length {} does not match token_ids length {n}",
            seq.groups.len()
        );
        return Err(("groups", msg));
    }
    if let Some((i, p)) = seq.positions.iter().enumerate().find(|(_, p)| **p < 0) {
        return Err(("positions", format!("positions[{i}] = {p} is negative")));
    }
    if let Some((i, g)) = seq.groups.iter().enumerate().find(|(_, g)| **g < -1) {
        return Err((
            "groups",
            format!("groups[{i}] = {g} is below -1 (-1 means no group)"),
        ));
    }
    Ok(())
}

impl InputSpec {
    /// Reads and parses an input file.
    pub fn from_file(path: &Path) -> Result<InputSpec> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        InputSpec::from_json_str(path, &text)
    }

    /// Parses input JSON; `path_for_errors` is the file named in error messages.
    pub fn from_json_str(path_for_errors: &Path, text: &str) -> Result<InputSpec> {
        let path = path_for_errors;
        let root: Value = serde_json::from_str(text).map_err(|e| Error::Json {
            path: path.to_path_buf(),
            message: format!("not valid JSON: {e}"),
        })?;
        let obj = root.as_object().ok_or_else(|| Error::Json {
            path: path.to_path_buf(),
            message: "expected a JSON object with `sequences`".into(),
        })?;
        deny_unknown(path, obj, "", TOP_KEYS)?;
        let seqs = obj
            .get("sequences")
            .ok_or_else(|| Error::field(path, "sequences", "missing"))?
            .as_array()
            .ok_or_else(|| Error::field(path, "sequences", "expected an array"))?;
        if seqs.is_empty() {
            return Err(Error::field(path, "sequences", "is empty"));
        }
        let sequences = seqs
            .iter()
            .enumerate()
            .map(|(i, v)| parse_sequence(path, v, i))
            .collect::<Result<Vec<_>>>()?;
        Ok(InputSpec { sequences })
    }
}

/// Checks a sequence against the model: shapes, token ids below `vocab_size`, and positions below
/// `max_positions` when given. `where_` names the source in the message, e.g. `"in.json: sequences[0]"`
/// or `"--prompt"`.
pub fn validate_sequence(
    seq: &SequenceInput,
    vocab_size: usize,
    max_positions: Option<usize>,
    where_: &str,
) -> Result<()> {
    if let Err((field, msg)) = check_shape(seq) {
        return Err(Error::input(format!("{where_}: {field}: {msg}")));
    }
    if let Some((i, id)) = seq
        .token_ids
        .iter()
        .enumerate()
        .find(|(_, id)| **id as usize >= vocab_size)
    {
        return Err(Error::input(format!(
            "{where_}: token_ids[{i}] = {id} is out of range (vocab_size {vocab_size})"
        )));
    }
    if let Some(max) = max_positions
        && let Some((i, p)) = seq
            .positions
            .iter()
            .enumerate()
            .find(|(_, p)| **p as u64 >= max as u64)
    {
        return Err(Error::input(format!(
            "{where_}: positions[{i}] = {p} is not below max_position_embeddings {max}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
