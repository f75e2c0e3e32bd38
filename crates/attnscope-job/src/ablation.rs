//! An ablation job: alter the keys/values of chosen prompt slots at chosen layers and score target tokens
//! with and without the alteration (`attnscope ablate`).

use crate::session::Session;
use attnscope_core::Error;
use attnscope_core::Result;
use attnscope_core::capture::CaptureSpec;
use attnscope_core::input::{InputSpec, SequenceInput};
use attnscope_core::run::ablation::{Ablation, AblationMode, score_targets};
use attnscope_core::run::{GenerateOptions, check_fits, run_sequence};
use attnscope_io::{ColumnData, RunDir, Table, write_json, write_parquet};
use std::path::{Path, PathBuf};

const NO_TOKENIZER: &str = "no tokenizer in the model directory; use --input and --target-ids";

/// The one sequence an ablation runs on.
#[derive(Clone, Debug)]
pub enum AblationPrompt {
    Text(String),
    SpecFile(PathBuf),
    /// A sequence built in code (the Python module's token ids or dict).
    Sequence(SequenceInput),
}

/// The tokens scored after the prompt.
#[derive(Clone, Debug)]
pub enum AblationTargets {
    /// Text continuing the prompt (tokenized without the BOS the tokenizer may add).
    Text(String),
    /// Token ids, comma-separated.
    Ids(String),
    /// The model's own greedy continuation of this many tokens.
    Continuation(usize),
}

/// Which replacement an ablation asks for, before it is checked against the prompt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AblationModeRequest {
    Zero,
    Mean,
    Replace,
}

/// An ablation job. Index lists (`slots`, `layers`) read like `3,5-7`.
#[derive(Clone, Debug)]
pub struct AblationJob {
    pub prompt: AblationPrompt,
    pub slots: String,
    /// Layers at which the slots are altered (default all).
    pub layers: Option<String>,
    pub mode: AblationModeRequest,
    pub replace_with: Option<usize>,
    pub targets: AblationTargets,
}

/// Log-probabilities of the targets with and without the ablation.
pub struct AblationResult {
    pub prompt: SequenceInput,
    pub ablation: Ablation,
    pub targets: Vec<u32>,
    pub logp_base: Vec<f64>,
    pub logp_ablated: Vec<f64>,
}

impl AblationJob {
    /// Runs the baseline and the ablated scoring on `session`.
    pub fn run(&self, session: &Session) -> Result<AblationResult> {
        let model = &session.model;
        let prompt = self.prompt_sequence(session)?;
        let n = prompt.token_ids.len();
        let slots = CaptureSpec::parse_indices("--slots", &self.slots, n)?;
        let layers = match &self.layers {
            Some(s) => CaptureSpec::parse_indices("--ablate-layers", s, model.cfg.n_layers)?,
            None => (0..model.cfg.n_layers).collect(),
        };
        let mode = self.checked_mode(n)?;
        let targets = self.target_ids(session, &prompt)?;
        if let Some(&t) = targets
            .iter()
            .find(|&&t| t as usize >= model.cfg.vocab_size)
        {
            return Err(Error::input(format!(
                "target token id {t} is out of range (vocab_size {})",
                model.cfg.vocab_size
            )));
        }
        let with_targets = GenerateOptions {
            max_new_tokens: targets.len(),
            ..GenerateOptions::default()
        };
        let no_capture = CaptureSpec {
            stats: false,
            ..CaptureSpec::default()
        };
        check_fits(model, &prompt, &with_targets, &no_capture, "--prompt")?;
        let ablation = Ablation {
            slots: slots.clone(),
            layers,
            mode,
        };
        let split = *slots.iter().max().unwrap_or(&0);
        let logp_base = score_targets(model, &prompt, &targets, None, split)?;
        let logp_ablated = score_targets(model, &prompt, &targets, Some(&ablation), split)?;
        Ok(AblationResult {
            prompt,
            ablation,
            targets,
            logp_base,
            logp_ablated,
        })
    }

    fn prompt_sequence(&self, session: &Session) -> Result<SequenceInput> {
        match &self.prompt {
            AblationPrompt::Text(text) => {
                let tok = session.require_tokenizer(NO_TOKENIZER)?;
                Ok(SequenceInput::from_tokens(tok.encode(text)?))
            }
            AblationPrompt::Sequence(seq) => Ok(seq.clone()),
            AblationPrompt::SpecFile(path) => {
                let mut spec = InputSpec::from_file(path)?;
                if spec.sequences.len() != 1 {
                    return Err(Error::input(format!(
                        "{}: ablate takes exactly one sequence",
                        path.display()
                    )));
                }
                Ok(spec.sequences.remove(0))
            }
        }
    }

    fn checked_mode(&self, n: usize) -> Result<AblationMode> {
        match (self.mode, self.replace_with) {
            (AblationModeRequest::Zero, None) => Ok(AblationMode::Zero),
            (AblationModeRequest::Mean, None) => Ok(AblationMode::Mean),
            (AblationModeRequest::Replace, Some(r)) if r < n => Ok(AblationMode::Replace(r)),
            (AblationModeRequest::Replace, Some(r)) => Err(Error::input(format!(
                "--replace-with: slot {r} is not in the prompt ({n} slots)"
            ))),
            (AblationModeRequest::Replace, None) => {
                Err(Error::input("--mode replace needs --replace-with SLOT"))
            }
            (_, Some(_)) => Err(Error::input("--replace-with only goes with --mode replace")),
        }
    }

    fn target_ids(&self, session: &Session, prompt: &SequenceInput) -> Result<Vec<u32>> {
        match &self.targets {
            AblationTargets::Text(text) => {
                let tok = session.require_tokenizer(NO_TOKENIZER)?;
                let ids = tok.encode(text)?;
                // A target continues the prompt: drop the BOS the tokenizer may add.
                let bos = tok.bos_id();
                Ok(ids.into_iter().skip_while(|id| Some(*id) == bos).collect())
            }
            AblationTargets::Ids(list) => list
                .split(',')
                .map(|s| {
                    s.trim()
                        .parse::<u32>()
                        .map_err(|_| Error::input(format!("--target-ids: {s:?} is not a token id")))
                })
                .collect(),
            AblationTargets::Continuation(n_tokens) => {
                let generation = GenerateOptions {
                    max_new_tokens: *n_tokens,
                    stop_at_eos: false,
                    ..GenerateOptions::default()
                };
                let model = &session.model;
                let spec = CaptureSpec {
                    stats: false,
                    ..CaptureSpec::default()
                };
                check_fits(model, prompt, &generation, &spec, "--prompt")?;
                let out = run_sequence(model, prompt, &spec, &generation, &mut || Ok(()))?;
                let n = prompt.token_ids.len();
                Ok(out.slots[n..].iter().map(|s| s.token).collect())
            }
        }
    }
}

impl AblationResult {
    /// Total log-probability of the targets without and with the ablation.
    pub fn totals(&self) -> (f64, f64) {
        (self.logp_base.iter().sum(), self.logp_ablated.iter().sum())
    }

    /// The ablation table (what `ablation.parquet` holds): per target its index, token id and text (through
    /// the session's tokenizer; empty without one), log-probabilities without and with the ablation, and
    /// their difference (ablated − base).
    pub fn table(&self, session: &Session) -> Table {
        let targets = &self.targets;
        let mut t = Table::new();
        t.push(
            "target_index",
            ColumnData::I32((0..targets.len() as i32).collect()),
        )
        .push(
            "token_id",
            ColumnData::I64(targets.iter().map(|&x| x as i64).collect()),
        )
        .push(
            "token",
            ColumnData::Utf8(targets.iter().map(|&x| session.token_str(x)).collect()),
        )
        .push("logp_base", ColumnData::F64(self.logp_base.clone()))
        .push("logp_ablated", ColumnData::F64(self.logp_ablated.clone()))
        .push(
            "delta",
            ColumnData::F64(
                self.logp_base
                    .iter()
                    .zip(&self.logp_ablated)
                    .map(|(b, a)| a - b)
                    .collect(),
            ),
        );
        t
    }

    /// Writes `ablation.parquet` ([`AblationResult::table`]) and `manifest.json` to the run directory
    /// `out`.
    pub fn write(
        &self,
        out: &Path,
        overwrite: bool,
        session: &Session,
        command: &[std::ffi::OsString],
    ) -> Result<PathBuf> {
        let run = RunDir::create(out, overwrite)?;
        write_parquet(&run.file("ablation.parquet"), &self.table(session))?;
        let targets = &self.targets;
        let (sb, sa) = self.totals();
        let p = &self.prompt;
        let (command, command_escaped) = attnscope_io::manifest::escape_args(command);
        let (model, model_escaped) =
            attnscope_io::manifest::escape_os(session.model.dir.as_os_str());
        let mut manifest = serde_json::json!({
            "attnscope_version": env!("CARGO_PKG_VERSION"),
            "command": command,
            "model": model,
            "device": session.placement,
            "prompt_token_ids": p.token_ids,
            "positions": p.positions,
            "groups": p.groups,
            "visibility": p.visibility,
            "ablation": self.ablation,
            "targets": targets,
            "total_logp_base": sb,
            "total_logp_ablated": sa,
        });
        // Escaped strings are listed as in a run's manifest (attnscope_io::manifest docs).
        if !command_escaped.is_empty() {
            manifest["command_escaped"] = serde_json::json!(command_escaped);
        }
        if model_escaped {
            manifest["model_escaped"] = serde_json::json!(true);
        }
        write_json(&run.file("manifest.json"), &manifest)?;
        run.commit()
    }
}
