//! `manifest.json`: what was run, on what, with which settings, how long it took, and what each file holds.
//!
//! Paths and command-line arguments are OS strings, which need not be UTF-8. One that is valid UTF-8 is
//! recorded as it is; one that is not is recorded escaped ([`escape_os`]: each backslash doubled, each byte
//! that is not part of valid UTF-8 written `\xNN` with two lowercase hex digits) and listed as escaped
//! (`command_escaped`: indices into `command`; `model.path_escaped`: true; `model.weights.files_escaped`:
//! indices into `model.weights.files`), so the original bytes can be
//! recovered exactly. Both markers are omitted when nothing was escaped.

use attnscope_core::capture::CaptureSpec;
use attnscope_core::config::ModelConfig;
use attnscope_core::run::GenerateOptions;
use attnscope_core::weights::WeightsInfo;
use serde::Serialize;
use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};

/// `s` as manifest text, and whether it had to be escaped (module docs): unchanged when valid UTF-8,
/// else backslashes doubled and invalid bytes as `\xNN`. (On Windows the bytes are the WTF-8 encoding.)
pub fn escape_os(s: &OsStr) -> (String, bool) {
    if let Some(text) = s.to_str() {
        return (text.to_string(), false);
    }
    let mut out = String::new();
    for chunk in s.as_encoded_bytes().utf8_chunks() {
        out.push_str(&chunk.valid().replace('\\', "\\\\"));
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    (out, true)
}

/// The command line as the manifest records it: each argument through [`escape_os`], and the indices of
/// those escaped.
pub fn escape_args(args: &[OsString]) -> (Vec<String>, Vec<usize>) {
    let mut escaped = Vec::new();
    let text = args
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let (t, e) = escape_os(a);
            if e {
                escaped.push(i);
            }
            t
        })
        .collect();
    (text, escaped)
}

/// Version of the run-directory layout; bumped when files or columns change meaning.
pub const LAYOUT_VERSION: u32 = 1;

/// The model as the manifest records it.
#[derive(Serialize)]
pub struct ModelRecord {
    /// The model directory, escaped when not UTF-8 (module docs).
    pub path: String,
    /// Whether `path` is escaped.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub path_escaped: bool,
    pub family: &'static str,
    pub architecture: ModelConfig,
    pub parameters: usize,
    pub config_sha256: String,
    /// The weight files escaped when not UTF-8, listed in `files_escaped` (module docs).
    #[serde(serialize_with = "serialize_weights")]
    pub weights: WeightsInfo,
}

/// [`WeightsInfo`] with its file paths through [`escape_os`].
fn serialize_weights<S: serde::Serializer>(w: &WeightsInfo, s: S) -> Result<S::Ok, S::Error> {
    #[derive(Serialize)]
    struct Escaped<'a> {
        files: Vec<String>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        files_escaped: Vec<usize>,
        dtypes: &'a BTreeMap<String, usize>,
        stored_parameters: usize,
        index_sha256: &'a str,
    }
    let paths: Vec<OsString> = w
        .files
        .iter()
        .map(|f| f.as_os_str().to_os_string())
        .collect();
    let (files, files_escaped) = escape_args(&paths);
    Escaped {
        files,
        files_escaped,
        dtypes: &w.dtypes,
        stored_parameters: w.stored_parameters,
        index_sha256: &w.index_sha256,
    }
    .serialize(s)
}

/// One input sequence.
#[derive(Clone, Debug, Serialize)]
pub struct InputRecord {
    pub seq: usize,
    /// "prompt" (text through the tokenizer) or the `--input` file path.
    pub source: String,
    pub text: Option<String>,
    pub visibility: attnscope_core::slots::Visibility,
    pub prompt_tokens: usize,
    pub generated_tokens: usize,
    pub stopped_at_eos: bool,
    /// Decoded generated text, when a tokenizer is available.
    pub generated_text: Option<String>,
}

/// The tokenizer a run used, and what was changed in it on load.
#[derive(Clone, Debug, Serialize)]
pub struct TokenizerRecord {
    /// The file it was read from (escaped when not UTF-8, as the module docs say).
    pub path: String,
    /// "tokenizer.json" or "vocab.json+merges.txt".
    pub kind: &'static str,
    /// Settings of tokenizer.json switched off because they would change the prompt: any of "padding",
    /// "truncation" and "dropout". Empty when the file has none.
    pub disabled: Vec<&'static str>,
    /// Every warning printed while loading it (disabled settings, repaired merges).
    pub warnings: Vec<String>,
}

/// Wall-clock timings in seconds.
#[derive(Serialize)]
pub struct Timings {
    pub load_seconds: f64,
    /// Per sequence.
    pub prefill_seconds: Vec<f64>,
    /// Per sequence, per generated token.
    pub decode_token_seconds: Vec<Vec<f64>>,
    /// Prompt tokens per second of prefill, over all sequences.
    pub prefill_tokens_per_second: f64,
    /// Generated tokens per second, over all sequences.
    pub decode_tokens_per_second: f64,
    /// Writing the files: every sequence's rows and tensors as it ended, and closing them at the end.
    pub write_seconds: f64,
    pub total_seconds: f64,
}

/// The whole manifest.
#[derive(Serialize)]
pub struct Manifest {
    pub attnscope_version: &'static str,
    pub layout_version: u32,
    pub created_unix_seconds: u64,
    /// The command line, each argument escaped when not UTF-8 (module docs).
    pub command: Vec<String>,
    /// Indices of the escaped arguments of `command`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub command_escaped: Vec<usize>,
    pub model: ModelRecord,
    /// "cpu" or "cuda:N".
    pub device: String,
    /// GPU name when on a GPU.
    pub device_name: Option<String>,
    /// Storage dtype of weights / activations / KV cache ("f32" on the CPU).
    pub compute_dtype: String,
    pub threads: usize,
    pub capture: CaptureSpec,
    pub generation: GenerateOptions,
    pub seed: u64,
    pub inputs: Vec<InputRecord>,
    /// The tokenizer, when the model directory has one.
    pub tokenizer: Option<TokenizerRecord>,
    pub timings: Timings,
    /// File name → what it holds and how to load it.
    pub files: BTreeMap<String, String>,
}

/// Descriptions of the files a run may write.
pub fn file_descriptions(weights: bool, stats: bool, generated: bool) -> BTreeMap<String, String> {
    let mut files = BTreeMap::new();
    files.insert(
        "tokens.parquet".into(),
        "one row per slot: seq, slot, token_id, token, position, group, step (0 = prompt, k = k-th generated), \
         kind (prompt | generated | parallel: a member of a parallel set sharing one position)"
            .into(),
    );
    if stats {
        files.insert(
            "stats.parquet".into(),
            "long format per query row: seq, layer, head, slot, metric (entropy [nats], max_weight, argmax_slot, \
             sink_mass, prev_mass, self_mass, group_mass [only for slots in a group]), value"
                .into(),
        );
        files.insert(
            "received.parquet".into(),
            "per key slot: seq, layer, head, slot, received_sum (sum over query rows), received_mean (over the \
             visible_rows query rows that can see the key), visible_rows, received_decode_sum (sum over \
             generation-step query rows only)"
                .into(),
        );
        files.insert(
            "distance.parquet".into(),
            "attention mass by position distance d = position[q] - position[k] in log2 buckets (bucket 0: d < 0, \
             1: d = 0, b >= 2: 2^(b-2) <= d < 2^(b-1)): seq, layer, head, bucket, label, distance_min, \
             distance_max, mass_sum (over query rows), mass_mean (mass_sum / rows), rows"
                .into(),
        );
    }
    if stats && generated {
        files.insert(
            "steps.parquet".into(),
            "per generation-step query row (step > 0), layer and head: seq, step, slot, layer, head, query_kind, \
             mass_prompt, mass_generated, mass_parallel (attention to visible key slots of each kind, the query itself \
             excluded), mass_self, n_prompt, n_generated, n_parallel (visible key slots of each kind)"
                .into(),
        );
        files.insert(
            "step_groups.parquet".into(),
            "per generation-step query row, layer, head and key group: seq, step, slot, layer, head, group, mass, \
             n_slots (visible members of the group, the query itself excluded)"
                .into(),
        );
    }
    if weights {
        files.insert(
            "attention.safetensors".into(),
            "exact post-softmax probabilities, tensors seq{s}.layer{l} of shape [heads, T, T] (rows = query slots, \
             zeros where a key is not visible); the heads kept are in the metadata key seq{s}.layer{l}.heads"
                .into(),
        );
    }
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_is_kept_and_other_bytes_escaped() {
        assert_eq!(
            escape_os(OsStr::new("a\\b é")),
            ("a\\b é".to_string(), false)
        );
        #[cfg(unix)]
        {
            use std::os::unix::ffi::OsStrExt;
            let raw = OsStr::from_bytes(b"run\\\xff\xc3\xa9\xc3");
            assert_eq!(escape_os(raw), ("run\\\\\\xffé\\xc3".to_string(), true));
            let args = [OsString::from("attnscope"), raw.to_os_string()];
            let (text, escaped) = escape_args(&args);
            assert_eq!(text[0], "attnscope");
            assert_eq!(escaped, vec![1]);
        }
    }
}
