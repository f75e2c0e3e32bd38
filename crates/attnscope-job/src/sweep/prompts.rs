//! Prompt sets of a sweep: a `.txt` file (one prompt per non-empty line), a `.jsonl` file (one object per
//! line) or a `.parquet` file, each row holding a text or a `token_ids` column; token-id rows may give
//! `positions` and `groups`. Every other scalar column is carried into the outputs, the same columns with
//! the same types on every row. Errors name the file, the line (or row) and the column.

use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::Field;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A carried column's value.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
pub enum Extra {
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
}

impl Extra {
    fn kind(&self) -> &'static str {
        match self {
            Extra::Bool(_) => "boolean",
            Extra::Int(_) => "integer",
            Extra::Float(_) => "number",
            Extra::Str(_) => "string",
        }
    }
}

/// What a row prompts with.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PromptContent {
    /// Text, through the model's tokenizer.
    Text(String),
    /// Token ids as given, with optional explicit positions and groups.
    Tokens {
        ids: Vec<u32>,
        #[serde(skip_serializing_if = "Option::is_none")]
        positions: Option<Vec<i64>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        groups: Option<Vec<i32>>,
    },
}

/// One prompt and its carried columns.
#[derive(Clone, Debug, PartialEq)]
pub struct PromptRow {
    pub content: PromptContent,
    pub extra: BTreeMap<String, Extra>,
}

/// A named prompt set read from a file.
#[derive(Clone, Debug)]
pub struct PromptSet {
    pub name: String,
    pub path: PathBuf,
    pub rows: Vec<PromptRow>,
}

type Res<T> = std::result::Result<T, String>;

impl PromptSet {
    /// Reads `path` (by extension: `.txt`, `.jsonl`, `.parquet`); `column` names the prompt column
    /// (default `text`, else `token_ids`); `limit` keeps the first rows.
    pub fn read(name: &str, path: &Path, column: Option<&str>, limit: Option<usize>) -> Res<Self> {
        let shown = path.display();
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        let mut rows = match ext {
            "txt" => read_txt(path),
            "jsonl" => read_jsonl(path, column),
            "parquet" => read_parquet_rows(path, column),
            _ => Err(format!(
                "{shown}: unknown prompt file type (expected .txt, .jsonl or .parquet)"
            )),
        }?;
        if let Some(n) = limit {
            rows.truncate(n);
        }
        if rows.is_empty() {
            return Err(format!("{shown}: holds no prompts"));
        }
        check_same_columns(path, &rows)?;
        Ok(PromptSet {
            name: name.to_string(),
            path: path.to_path_buf(),
            rows,
        })
    }
}

fn read_text(path: &Path) -> Res<String> {
    std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
}

fn read_txt(path: &Path) -> Res<Vec<PromptRow>> {
    let text = read_text(path)?;
    Ok(text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| PromptRow {
            content: PromptContent::Text(l.to_string()),
            extra: BTreeMap::from([("line".to_string(), Extra::Int(i as i64 + 1))]),
        })
        .collect())
}

/// Keys of a token-id row that describe the sequence rather than being carried.
const SEQUENCE_KEYS: [&str; 2] = ["positions", "groups"];

fn read_jsonl(path: &Path, column: Option<&str>) -> Res<Vec<PromptRow>> {
    let text = read_text(path)?;
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = format!("{}: line {}", path.display(), i + 1);
        let value: Value =
            serde_json::from_str(line).map_err(|e| format!("{at}: not JSON: {e}"))?;
        let Value::Object(obj) = value else {
            return Err(format!("{at}: expected a JSON object"));
        };
        let key = prompt_column(column, |k| obj.contains_key(k)).ok_or_else(|| {
            format!(
                "{at}: no `{}` column",
                column.unwrap_or("text` or `token_ids")
            )
        })?;
        let content = match &obj[key.as_str()] {
            Value::String(s) => PromptContent::Text(s.clone()),
            Value::Array(a) => PromptContent::Tokens {
                ids: int_list(a, &at, &key)?,
                positions: opt_list(obj.get("positions"), &at, "positions")?,
                groups: opt_list(obj.get("groups"), &at, "groups")?,
            },
            other => {
                return Err(format!(
                    "{at}: column `{key}`: expected a string or a list of token ids, got {other}"
                ));
            }
        };
        let mut extra = BTreeMap::new();
        for (k, v) in &obj {
            if *k == key || (is_tokens(&content) && SEQUENCE_KEYS.contains(&k.as_str())) {
                continue;
            }
            let e = match v {
                Value::Bool(b) => Extra::Bool(*b),
                Value::Number(n) => match n.as_i64() {
                    Some(x) => Extra::Int(x),
                    None => Extra::Float(n.as_f64().unwrap_or(f64::NAN)),
                },
                Value::String(s) => Extra::Str(s.clone()),
                other => {
                    return Err(format!(
                        "{at}: column `{k}`: only strings, numbers and booleans are carried, got {other}"
                    ));
                }
            };
            extra.insert(k.clone(), e);
        }
        rows.push(PromptRow { content, extra });
    }
    Ok(rows)
}

fn is_tokens(c: &PromptContent) -> bool {
    matches!(c, PromptContent::Tokens { .. })
}

fn prompt_column(column: Option<&str>, has: impl Fn(&str) -> bool) -> Option<String> {
    match column {
        Some(c) => has(c).then(|| c.to_string()),
        None => ["text", "token_ids"]
            .into_iter()
            .find(|k| has(k))
            .map(str::to_string),
    }
}

fn int_list<T: TryFrom<i64>>(a: &[Value], at: &str, key: &str) -> Res<Vec<T>> {
    a.iter()
        .map(|v| {
            v.as_i64()
                .and_then(|x| T::try_from(x).ok())
                .ok_or_else(|| format!("{at}: column `{key}`: {v} is not a usable integer"))
        })
        .collect()
}

fn opt_list<T: TryFrom<i64>>(v: Option<&Value>, at: &str, key: &str) -> Res<Option<Vec<T>>> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(a)) => int_list(a, at, key).map(Some),
        Some(other) => Err(format!(
            "{at}: column `{key}`: expected a list of integers, got {other}"
        )),
    }
}

fn read_parquet_rows(path: &Path, column: Option<&str>) -> Res<Vec<PromptRow>> {
    let shown = path.display();
    let file = std::fs::File::open(path).map_err(|e| format!("{shown}: {e}"))?;
    let reader = SerializedFileReader::new(file)
        .map_err(|e| format!("{shown}: not a readable Parquet file: {e}"))?;
    let names: Vec<String> = reader
        .metadata()
        .file_metadata()
        .schema_descr()
        .root_schema()
        .get_fields()
        .iter()
        .map(|f| f.name().to_string())
        .collect();
    let key = prompt_column(column, |k| names.iter().any(|n| n == k)).ok_or_else(|| {
        format!(
            "{shown}: no `{}` column",
            column.unwrap_or("text` or `token_ids")
        )
    })?;
    let iter = reader
        .get_row_iter(None)
        .map_err(|e| format!("{shown}: {e}"))?;
    let mut rows = Vec::new();
    for (i, row) in iter.enumerate() {
        let at = format!("{shown}: row {i}");
        let row = row.map_err(|e| format!("{at}: {e}"))?;
        let fields: BTreeMap<&String, &Field> = row.get_column_iter().collect();
        let content = match fields.get(&key) {
            Some(Field::Str(s)) => PromptContent::Text(s.clone()),
            Some(Field::ListInternal(l)) => PromptContent::Tokens {
                ids: field_ints(l.elements(), &at, &key)?,
                positions: match fields.get(&"positions".to_string()) {
                    Some(Field::ListInternal(p)) => {
                        Some(field_ints(p.elements(), &at, "positions")?)
                    }
                    _ => None,
                },
                groups: match fields.get(&"groups".to_string()) {
                    Some(Field::ListInternal(g)) => Some(field_ints(g.elements(), &at, "groups")?),
                    _ => None,
                },
            },
            other => {
                return Err(format!(
                    "{at}: column `{key}`: expected a string or a list of token ids, got {other:?}"
                ));
            }
        };
        let mut extra = BTreeMap::new();
        for (k, v) in &fields {
            if **k == key || (is_tokens(&content) && SEQUENCE_KEYS.contains(&k.as_str())) {
                continue;
            }
            let e = match v {
                Field::Bool(b) => Extra::Bool(*b),
                Field::Byte(x) => Extra::Int(i64::from(*x)),
                Field::Short(x) => Extra::Int(i64::from(*x)),
                Field::Int(x) => Extra::Int(i64::from(*x)),
                Field::Long(x) => Extra::Int(*x),
                Field::UInt(x) => Extra::Int(i64::from(*x)),
                Field::Float(x) => Extra::Float(f64::from(*x)),
                Field::Double(x) => Extra::Float(*x),
                Field::Str(s) => Extra::Str(s.clone()),
                other => {
                    return Err(format!(
                        "{at}: column `{k}`: only strings, numbers and booleans are carried, got {other:?}"
                    ));
                }
            };
            extra.insert((*k).clone(), e);
        }
        rows.push(PromptRow { content, extra });
    }
    Ok(rows)
}

fn field_ints<T: TryFrom<i64>>(fields: &[Field], at: &str, key: &str) -> Res<Vec<T>> {
    fields
        .iter()
        .map(|f| {
            let x = match f {
                Field::Byte(x) => Some(i64::from(*x)),
                Field::Short(x) => Some(i64::from(*x)),
                Field::Int(x) => Some(i64::from(*x)),
                Field::Long(x) => Some(*x),
                Field::UInt(x) => Some(i64::from(*x)),
                _ => None,
            };
            x.and_then(|x| T::try_from(x).ok())
                .ok_or_else(|| format!("{at}: column `{key}`: {f:?} is not a usable integer"))
        })
        .collect()
}

/// Carried columns must be the same, with the same types, on every row (the merged tables have no nulls).
fn check_same_columns(path: &Path, rows: &[PromptRow]) -> Res<()> {
    let first = &rows[0];
    for (i, r) in rows.iter().enumerate().skip(1) {
        let kinds = |r: &PromptRow| -> Vec<(String, &'static str)> {
            r.extra.iter().map(|(k, v)| (k.clone(), v.kind())).collect()
        };
        let (a, b) = (kinds(first), kinds(r));
        if a != b {
            let missing: Vec<String> = a
                .iter()
                .filter(|x| !b.contains(x))
                .chain(b.iter().filter(|x| !a.contains(x)))
                .map(|(k, t)| format!("`{k}` ({t})"))
                .collect();
            return Err(format!(
                "{}: prompt {} differs from the first in its carried columns: {} (every row needs the same \
                 columns with the same types)",
                path.display(),
                i + 1,
                missing.join(", ")
            ));
        }
        if is_tokens(&r.content) != is_tokens(&first.content) {
            return Err(format!(
                "{}: prompt {} mixes text and token ids with the first prompt",
                path.display(),
                i + 1
            ));
        }
    }
    Ok(())
}
