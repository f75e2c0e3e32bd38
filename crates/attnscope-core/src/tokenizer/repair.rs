//! Repairs for BPE tokenizer files that the `tokenizers` crate refuses: a `tokenizer.json` model in the
//! old layout (no `"type"`), and merges whose parts or result are missing from the vocabulary (such a
//! merge can never yield a valid id; `tokenizers` fails the whole load on it). Every repair is reported
//! as a warning so that the caller can tell the user.

use serde_json::{Map, Value};

/// Describes dropped merges in one warning line (`None` when nothing was dropped).
fn dropped_warning(file: &str, dropped: &[String]) -> Option<String> {
    let (first, rest) = (dropped.first()?, dropped.len() - 1);
    let more = if rest > 0 {
        format!(" (and {rest} more)")
    } else {
        String::new()
    };
    Some(format!(
        "{file}: dropped {} merge(s) that cannot apply: {first}{more}",
        dropped.len()
    ))
}

/// Why merge `rank` of `a b` cannot apply, or `None` when all three tokens are in the vocabulary.
fn bad_merge(
    has: &dyn Fn(&str) -> bool,
    rank: usize,
    a: &str,
    b: &str,
    prefix: &str,
) -> Option<String> {
    let joined = format!("{a}{}", b.strip_prefix(prefix).unwrap_or(b));
    let missing = [a, b, joined.as_str()].into_iter().find(|t| !has(t))?;
    Some(format!(
        "merge {rank} `{a} {b}`: `{missing}` is not in the vocabulary"
    ))
}

/// Keeps the merges of a `vocab.json` + `merges.txt` pair that can apply; returns the kept merges and
/// an optional warning.
pub(super) fn filter_merges(
    has: &dyn Fn(&str) -> bool,
    merges: Vec<(String, String)>,
) -> (Vec<(String, String)>, Option<String>) {
    let mut dropped = Vec::new();
    let kept = merges
        .into_iter()
        .enumerate()
        .filter_map(|(rank, (a, b))| match bad_merge(has, rank, &a, &b, "") {
            Some(why) => {
                dropped.push(why);
                None
            }
            None => Some((a, b)),
        })
        .collect();
    (kept, dropped_warning("merges.txt", &dropped))
}

/// Splits one serialized merge (`"a b"` or `["a", "b"]`).
fn merge_parts(m: &Value) -> Option<(&str, &str)> {
    match m {
        Value::String(s) => s.split_once(' '),
        Value::Array(p) if p.len() == 2 => Some((p[0].as_str()?, p[1].as_str()?)),
        _ => None,
    }
}

/// Repairs the BPE model object of a parsed `tokenizer.json` in place. Returns the warnings, or `None`
/// when the model is not a repairable BPE model or nothing needed repair.
pub(super) fn repair_tokenizer_json(root: &mut Value) -> Option<Vec<String>> {
    let model: &mut Map<String, Value> = root.get_mut("model")?.as_object_mut()?;
    let is_bpe = match model.get("type") {
        None => true,
        Some(t) => t == "BPE",
    };
    if !is_bpe || !model.contains_key("vocab") {
        return None;
    }
    // The old layout (no "type") is not worth a warning: it changes nothing about tokenization.
    let typed = model
        .insert("type".into(), Value::String("BPE".into()))
        .is_none();
    let prefix = model
        .get("continuing_subword_prefix")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let vocab = model.get("vocab")?.as_object()?.clone();
    let has = |t: &str| vocab.contains_key(t);
    let merges = model.get_mut("merges")?.as_array_mut()?;
    let mut dropped = Vec::new();
    let mut rank = 0;
    merges.retain(|m| {
        let why = merge_parts(m).and_then(|(a, b)| bad_merge(&has, rank, a, b, &prefix));
        rank += 1;
        match why {
            Some(w) => {
                dropped.push(w);
                false
            }
            None => true,
        }
    });
    let warnings: Vec<String> = dropped_warning("tokenizer.json", &dropped)
        .into_iter()
        .collect();
    (typed || !warnings.is_empty()).then_some(warnings)
}
