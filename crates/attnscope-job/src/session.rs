//! A model ready to run: loaded, placed on a device, with its tokenizer (when the directory has one).
//! Opening a session is the first step of every job; a Python session or a sweep worker keeps one open
//! across many jobs.

use crate::placement::{DtypeRequest, Placement, place, runs_on_cpu};
use attnscope_core::Error;
use attnscope_core::Result;
use attnscope_core::model::Model;
use attnscope_core::tokenizer::TextTokenizer;
use attnscope_core::weights::{LoadOptions, StorageDtype};
use attnscope_cuda::{DeviceRequest, GpuDtype};
use std::path::Path;
use std::time::Instant;

/// A placed model and its tokenizer.
pub struct Session {
    pub model: Model,
    pub tokenizer: Option<TextTokenizer>,
    pub placement: Placement,
    /// Seconds spent loading and placing.
    pub load_seconds: f64,
    /// Things the user should hear about: why `auto` chose the CPU, tokenizer repairs.
    pub notes: Vec<String>,
}

impl Session {
    /// Loads the model directory `dir` (config.json, safetensors, tokenizer) and places it. On the CPU an
    /// explicit bf16/f16 `dtype` is the storage of the linear layers and the embedding table, loaded so
    /// tensor by tensor; for a GPU the host copy is f32, as before. (`auto` falling back to the CPU after a
    /// GPU failed keeps f32.)
    pub fn open(dir: &Path, device: DeviceRequest, dtype: DtypeRequest) -> Result<Session> {
        Session::open_with(dir, device, dtype, LoadOptions::default())
    }

    /// [`Session::open`] with load options (`--allow-unused`); the loader's warnings become notes.
    pub fn open_with(
        dir: &Path,
        device: DeviceRequest,
        dtype: DtypeRequest,
        opts: LoadOptions,
    ) -> Result<Session> {
        let started = Instant::now();
        let storage = if runs_on_cpu(device) {
            dtype.cpu_weights()
        } else {
            StorageDtype::F32
        };
        let (mut model, warnings) = Model::load_with(dir, storage, opts)?;
        let placement = place(&mut model, device, dtype.gpu())?;
        let tokenizer = TextTokenizer::from_dir(dir)?;
        let mut session = Session::assemble(model, tokenizer, placement, started)?;
        session
            .notes
            .extend(warnings.iter().map(|w| format!("warning: {w}")));
        Ok(session)
    }

    /// Places an already-built model (a random model of a named shape, for benchmarks).
    pub fn with_model(
        mut model: Model,
        tokenizer: Option<TextTokenizer>,
        device: DeviceRequest,
        dtype: GpuDtype,
    ) -> Result<Session> {
        let started = Instant::now();
        let placement = place(&mut model, device, dtype)?;
        Session::assemble(model, tokenizer, placement, started)
    }

    fn assemble(
        model: Model,
        tokenizer: Option<TextTokenizer>,
        placement: Placement,
        started: Instant,
    ) -> Result<Session> {
        let mut notes = Vec::new();
        if let Some(note) = &placement.note {
            notes.push(format!("note: running on the CPU: {note}"));
        }
        if let Some(tok) = &tokenizer {
            check_tokenizer(tok, &model)?;
            notes.extend(tok.warnings().iter().map(|w| format!("warning: {w}")));
        }
        Ok(Session {
            model,
            tokenizer,
            placement,
            load_seconds: started.elapsed().as_secs_f64(),
            notes,
        })
    }

    /// The tokenizer, or an error (naming the model directory) with `message`.
    pub fn require_tokenizer(&self, message: &str) -> Result<&TextTokenizer> {
        self.tokenizer
            .as_ref()
            .ok_or_else(|| Error::tokenizer(&self.model.dir, message))
    }

    /// The text of a token, or "" without a tokenizer.
    pub fn token_str(&self, id: u32) -> String {
        self.tokenizer
            .as_ref()
            .map(|t| t.token_str(id))
            .unwrap_or_default()
    }
}

/// A tokenizer whose ids reach past the model's embedding table cannot belong to this model.
fn check_tokenizer(tok: &TextTokenizer, model: &Model) -> Result<()> {
    match tok.max_token_id() {
        Some(max) if max as usize >= model.cfg.vocab_size => Err(Error::tokenizer(
            tok.source(),
            format!(
                "tokenizer has token ids up to {max} but {}/config.json has vocab_size {}: tokenizer and model do not match",
                model.dir.display(),
                model.cfg.vocab_size
            ),
        )),
        _ => Ok(()),
    }
}
