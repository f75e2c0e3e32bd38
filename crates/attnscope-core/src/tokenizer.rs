//! Text tokenization: loads a Hugging Face tokenizer from a model directory (`tokenizer.json`, or GPT-2
//! style `vocab.json` + `merges.txt`) and applies the BOS/EOS conventions of `tokenizer_config.json`.
//! BPE files that `tokenizers` refuses but that can be read unambiguously are repaired, with a warning
//! (see [`TextTokenizer::warnings`]).

use std::path::{Path, PathBuf};

use serde_json::Value;
use tokenizers::models::ModelWrapper;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer};

use crate::Error;
use crate::Result;

/// A loaded tokenizer plus the special-token conventions of its model directory.
pub struct TextTokenizer {
    inner: Tokenizer,
    source: PathBuf,
    kind: &'static str,
    bos: Option<(u32, String)>,
    eos_ids: Vec<u32>,
    add_bos: bool,
    warnings: Vec<String>,
    disabled: Vec<&'static str>,
}

/// A text's tokens with where each came from ([`TextTokenizer::encode_with_offsets`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncodedText {
    /// The token ids, as [`TextTokenizer::encode`] returns them.
    pub ids: Vec<u32>,
    /// The vocabulary string of each token (e.g. `▁the`, `Ġthe`, `<0xE6>`, `<s>`).
    pub pieces: Vec<String>,
    /// Each token's span `[start, end)` of the text in characters (Unicode scalar values, not bytes);
    /// `(0, 0)` for special tokens the text does not contain, such as a prepended BOS.
    pub offsets: Vec<(usize, usize)>,
}

/// The fields of `tokenizer_config.json` (and `special_tokens_map.json`) that matter here.
#[derive(Default)]
struct SpecialConfig {
    path: Option<PathBuf>,
    add_bos: bool,
    bos: Option<String>,
    eos: Option<String>,
}

/// Makes a message fit on one line.
fn one_line(msg: impl std::fmt::Display) -> String {
    msg.to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Reads a JSON file into a `serde_json::Value`, naming the file on error.
fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::Json {
        path: path.to_path_buf(),
        message: one_line(e),
    })
}

/// A special token given as a string or as an `{"content": ...}` object; `null` and absent give `None`.
fn token_field(path: &Path, obj: &Value, field: &str) -> Result<Option<String>> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Object(m)) => match m.get("content") {
            Some(Value::String(s)) => Ok(Some(s.clone())),
            _ => Err(Error::field(path, field, "object has no string `content`")),
        },
        Some(_) => Err(Error::field(
            path,
            field,
            "expected a string or an object with `content`",
        )),
    }
}

/// Reads `special_tokens_map.json` then `tokenizer_config.json` (the latter wins) when present.
fn read_special_config(dir: &Path) -> Result<SpecialConfig> {
    let mut cfg = SpecialConfig::default();
    for name in ["special_tokens_map.json", "tokenizer_config.json"] {
        let path = dir.join(name);
        if !path.is_file() {
            continue;
        }
        let obj = read_json(&path)?;
        if !obj.is_object() {
            return Err(Error::Json {
                path,
                message: "expected a JSON object".into(),
            });
        }
        match obj.get("add_bos_token") {
            None | Some(Value::Null) => {}
            Some(Value::Bool(b)) => cfg.add_bos = *b,
            Some(_) => {
                return Err(Error::field(
                    &path,
                    "add_bos_token",
                    "expected true or false",
                ));
            }
        }
        if let Some(b) = token_field(&path, &obj, "bos_token")? {
            cfg.bos = Some(b);
        }
        if let Some(e) = token_field(&path, &obj, "eos_token")? {
            cfg.eos = Some(e);
        }
        cfg.path = Some(path);
    }
    Ok(cfg)
}

/// Parses `tokenizer.json` text (under [`guard::guarded`]: a panic in `tokenizers` becomes an error naming
/// the file); `path` is only named in errors.
fn parse_tokenizer_json(path: &Path, text: &str) -> Result<(Tokenizer, Vec<String>)> {
    guard::guarded(path, "loading", || {
        parse_tokenizer_json_unguarded(path, text)
    })?
}

/// Switches off what would silently change the prompt: `padding`, `truncation` and BPE `dropout` (which
/// also makes runs nondeterministic). Returns the names of the settings that were on.
fn disable_prompt_changers(tok: &mut Tokenizer, path: &Path) -> Result<Vec<&'static str>> {
    let mut disabled = Vec::new();
    if tok.get_padding().is_some() {
        tok.with_padding(None);
        disabled.push("padding");
    }
    if tok.get_truncation().is_some() {
        tok.with_truncation(None)
            .map_err(|e| Error::tokenizer(path, format!("truncation: {}", one_line(e))))?;
        disabled.push("truncation");
    }
    if let ModelWrapper::BPE(bpe) = tok.get_model()
        && let Some(p) = bpe.dropout
    {
        let mut bpe = bpe.clone();
        bpe.dropout = None;
        tok.with_model(bpe);
        if p > 0.0 {
            disabled.push("dropout");
        }
    }
    Ok(disabled)
}

/// Parses a `tokenizer.json`. When the plain parse fails and the model is BPE, repairs it (see
/// [`repair`]) and parses again; returns the tokenizer and the repairs made.
fn parse_tokenizer_json_unguarded(path: &Path, text: &str) -> Result<(Tokenizer, Vec<String>)> {
    let first_err = match text.parse::<Tokenizer>() {
        Ok(t) => return Ok((t, Vec::new())),
        Err(e) => one_line(e),
    };
    let fail = |msg: &str| Error::tokenizer(path, format!("cannot parse tokenizer: {msg}"));
    let mut value: Value = serde_json::from_str(text).map_err(|_| fail(&first_err))?;
    let Some(warnings) = repair::repair_tokenizer_json(&mut value) else {
        return Err(fail(&first_err));
    };
    match serde_json::from_value::<Tokenizer>(value) {
        Ok(t) => Ok((t, warnings)),
        Err(e) => Err(fail(&one_line(e))),
    }
}

/// Builds a GPT-2 style byte-level BPE tokenizer from `vocab.json` + `merges.txt`, dropping merges that
/// cannot apply; returns the tokenizer and the repairs made.
fn build_vocab_merges(vocab: &Path, merges: &Path) -> Result<(Tokenizer, Vec<String>)> {
    if !merges.is_file() {
        return Err(Error::tokenizer(
            merges,
            "missing (vocab.json is present but merges.txt is not)",
        ));
    }
    let (Some(v), Some(m)) = (vocab.to_str(), merges.to_str()) else {
        return Err(Error::tokenizer(vocab, "path is not valid UTF-8"));
    };
    let (vocab_map, merge_list) = BPE::read_file(v, m).map_err(|e| {
        Error::tokenizer(
            vocab,
            format!("cannot read with merges.txt: {}", one_line(e)),
        )
    })?;
    let (merge_list, warning) = repair::filter_merges(&|t| vocab_map.contains_key(t), merge_list);
    let bpe = BPE::builder()
        .vocab_and_merges(vocab_map, merge_list)
        .build()
        .map_err(|e| {
            Error::tokenizer(
                vocab,
                format!("cannot build BPE with merges.txt: {}", one_line(e)),
            )
        })?;
    let mut tok = Tokenizer::new(bpe);
    tok.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
    tok.with_decoder(Some(ByteLevel::default()));
    Ok((tok, warning.into_iter().collect()))
}

impl TextTokenizer {
    /// Loads from a model directory: `tokenizer.json` if present, else `vocab.json` + `merges.txt`
    /// (GPT-2 style byte-level BPE). Reads `tokenizer_config.json` (and `special_tokens_map.json`) when
    /// present for `add_bos_token`, `bos_token` and `eos_token`. Returns `Ok(None)` when the directory
    /// has no tokenizer files at all.
    pub fn from_dir(dir: &Path) -> Result<Option<TextTokenizer>> {
        let tj = dir.join("tokenizer.json");
        let vocab = dir.join("vocab.json");
        let merges = dir.join("merges.txt");
        let ((inner, warnings), source, kind) = if tj.is_file() {
            let text = std::fs::read_to_string(&tj).map_err(|e| Error::io(&tj, e))?;
            (parse_tokenizer_json(&tj, &text)?, tj, "tokenizer.json")
        } else if vocab.is_file() {
            let t = build_vocab_merges(&vocab, &merges)?;
            (t, vocab, "vocab.json+merges.txt")
        } else if merges.is_file() {
            let msg = "missing (merges.txt is present but vocab.json is not)";
            return Err(Error::tokenizer(vocab, msg));
        } else {
            return Ok(None);
        };
        let cfg = read_special_config(dir)?;
        Self::finish(inner, warnings, source, kind, cfg, dir).map(Some)
    }

    /// Loads `tokenizer.json` text alone (no `tokenizer_config.json`: no BOS convention); `path` is only
    /// named in errors. The same parse, repairs and post-load checks as [`TextTokenizer::from_dir`].
    pub fn from_json_str(path: &Path, text: &str) -> Result<TextTokenizer> {
        let (inner, warnings) = parse_tokenizer_json(path, text)?;
        let dir = path.parent().unwrap_or(Path::new(""));
        let cfg = SpecialConfig::default();
        Self::finish(
            inner,
            warnings,
            path.to_path_buf(),
            "tokenizer.json",
            cfg,
            dir,
        )
    }

    /// After the parse: switches off the prompt changers (with a warning each), applies the special-token
    /// conventions `cfg` of the model directory `dir`, and checks them against the vocabulary.
    fn finish(
        mut inner: Tokenizer,
        mut warnings: Vec<String>,
        source: PathBuf,
        kind: &'static str,
        mut cfg: SpecialConfig,
        dir: &Path,
    ) -> Result<TextTokenizer> {
        let disabled = guard::guarded(&source, "loading", || {
            disable_prompt_changers(&mut inner, &source)
        })??;
        for d in &disabled {
            warnings.push(format!(
                "{}: `{d}` switched off (it would change the prompt{})",
                source.display(),
                if *d == "dropout" {
                    " and make runs nondeterministic"
                } else {
                    ""
                }
            ));
        }
        if kind == "vocab.json+merges.txt" {
            // GPT-2 defaults: <|endoftext|> is BOS, EOS and a special token.
            let eot = "<|endoftext|>".to_string();
            if inner.token_to_id(&eot).is_some() {
                cfg.bos.get_or_insert_with(|| eot.clone());
                cfg.eos.get_or_insert_with(|| eot.clone());
            }
            let specials: Vec<AddedToken> = [&cfg.bos, &cfg.eos]
                .into_iter()
                .flatten()
                .filter(|t| inner.token_to_id(t).is_some())
                .map(|t| AddedToken::from(t.clone(), true))
                .collect();
            inner
                .add_special_tokens(specials)
                .map_err(|e| Error::tokenizer(&source, one_line(e)))?;
        }
        let bos = cfg
            .bos
            .as_ref()
            .and_then(|t| inner.token_to_id(t).map(|id| (id, t.clone())));
        if cfg.add_bos && bos.is_none() {
            let path = cfg.path.clone().unwrap_or_else(|| dir.to_path_buf());
            let msg = match &cfg.bos {
                Some(t) => format!("add_bos_token is true but {t:?} is not in the vocabulary"),
                None => "add_bos_token is true but no bos_token is given".to_string(),
            };
            return Err(Error::field(path, "bos_token", msg));
        }
        let eos_ids = cfg
            .eos
            .iter()
            .filter_map(|t| inner.token_to_id(t))
            .collect();
        Ok(TextTokenizer {
            inner,
            source,
            kind,
            bos,
            eos_ids,
            add_bos: cfg.add_bos,
            warnings,
            disabled,
        })
    }

    /// Encodes text, adding special tokens as the tokenizer's post-processor says; when
    /// `add_bos_token` is true and the result does not already start with BOS, prepends BOS.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self.encode_raw(text, |t| self.inner.encode(t, true))?;
        let mut ids = enc.get_ids().to_vec();
        if let Some(bos) = self.missing_bos(&ids) {
            ids.insert(0, bos);
        }
        Self::refuse_no_tokens(&ids)?;
        Ok(ids)
    }

    /// [`TextTokenizer::encode`] with each token's vocabulary string and its span of `text` in
    /// characters: the same ids (and BOS rule: a prepended BOS has the span `(0, 0)`) and the same errors.
    pub fn encode_with_offsets(&self, text: &str) -> Result<EncodedText> {
        let enc = self.encode_raw(text, |t| self.inner.encode_char_offsets(t, true))?;
        let mut out = EncodedText {
            ids: enc.get_ids().to_vec(),
            pieces: enc.get_tokens().to_vec(),
            offsets: enc.get_offsets().to_vec(),
        };
        if let (Some(bos), Some((_, piece))) = (self.missing_bos(&out.ids), &self.bos) {
            out.ids.insert(0, bos);
            out.pieces.insert(0, piece.clone());
            out.offsets.insert(0, (0, 0));
        }
        Self::refuse_no_tokens(&out.ids)?;
        Ok(out)
    }

    /// Runs `encode` on a non-empty `text` under the panic guard, errors naming the tokenizer file.
    fn encode_raw(
        &self,
        text: &str,
        encode: impl FnOnce(&str) -> tokenizers::Result<tokenizers::Encoding>,
    ) -> Result<tokenizers::Encoding> {
        if text.is_empty() {
            return Err(Error::input("empty prompt"));
        }
        guard::guarded(&self.source, "encoding", || encode(text))?
            .map_err(|e| Error::tokenizer(&self.source, format!("encode failed: {}", one_line(e))))
    }

    /// The BOS id to prepend to `ids`: when `add_bos_token` is true and they do not start with it.
    fn missing_bos(&self, ids: &[u32]) -> Option<u32> {
        match (self.add_bos, &self.bos) {
            (true, Some((bos, _))) if ids.first() != Some(bos) => Some(*bos),
            _ => None,
        }
    }

    fn refuse_no_tokens(ids: &[u32]) -> Result<()> {
        if ids.is_empty() {
            return Err(Error::input("prompt encodes to no tokens"));
        }
        Ok(())
    }

    /// Decodes ids to text, keeping special tokens.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        guard::guarded(&self.source, "decoding", || self.inner.decode(ids, false))?
            .map_err(|e| Error::tokenizer(&self.source, format!("decode failed: {}", one_line(e))))
    }

    /// The vocabulary string of one id, or `""` when the id is unknown.
    pub fn token_str(&self, id: u32) -> String {
        guard::guarded(&self.source, "looking up a token", || {
            self.inner.id_to_token(id)
        })
        .ok()
        .flatten()
        .unwrap_or_default()
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The largest id in the vocabulary and added tokens (`None` for an empty vocabulary).
    pub fn max_token_id(&self) -> Option<u32> {
        self.inner.get_vocab(true).into_values().max()
    }

    /// The file the tokenizer was loaded from (`tokenizer.json` or `vocab.json`).
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// How it was loaded: `"tokenizer.json"` or `"vocab.json+merges.txt"`.
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// The BOS token id, when the configuration names one that is in the vocabulary.
    pub fn bos_id(&self) -> Option<u32> {
        self.bos.as_ref().map(|(id, _)| *id)
    }

    /// The BOS token string, when known.
    pub fn bos_token(&self) -> Option<&str> {
        self.bos.as_ref().map(|(_, t)| t.as_str())
    }

    /// EOS token ids from the configuration (empty when none is known).
    pub fn eos_ids(&self) -> &[u32] {
        &self.eos_ids
    }

    /// Whether `tokenizer_config.json` asks for BOS to be prepended.
    pub fn add_bos(&self) -> bool {
        self.add_bos
    }

    /// Repairs made while loading (one line each, naming the file), e.g. merges dropped because their
    /// result is not in the vocabulary. Empty for well-formed files; callers should show these.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The `tokenizer.json` settings switched off on load because they would silently change the prompt:
    /// any of `"padding"`, `"truncation"` and `"dropout"` (BPE merge dropout), in that order. Each also has
    /// a line in [`TextTokenizer::warnings`]; the manifest can record this list.
    pub fn disabled(&self) -> &[&'static str] {
        &self.disabled
    }
}

mod guard;
mod repair;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_offsets;
