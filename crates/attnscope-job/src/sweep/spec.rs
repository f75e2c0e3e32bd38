//! The sweep spec (`attnscope sweep SPEC.toml`): models × prompt sets × variants, one capture and
//! generation setting, one seed. Parsed with unknown keys refused; every error is one line naming the spec
//! file, the key and its line. Relative paths resolve against the spec file's directory.

use crate::CaptureRequest;
use crate::sweep::names::{check_template, file_name, file_stem};
use crate::sweep::prompts::{PromptContent, PromptSet};
use attnscope_core::Error;
use attnscope_core::Result;
use attnscope_core::capture::WeightsDtype;
use attnscope_core::run::parallel::{ParallelOptions, SetDistribution};
use attnscope_core::run::{GenerateOptions, PromptLogits};
use attnscope_core::sampling::SamplerConfig;
use attnscope_core::slots::Visibility;
use serde::Deserialize;
use std::ops::Range;
use std::path::{Path, PathBuf};
use toml::Spanned;

/// Tokens of one batched forward pass, unless the spec or `--max-batch-tokens` says otherwise.
pub const DEFAULT_MAX_BATCH_TOKENS: usize = 4096;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    name: Option<Spanned<String>>,
    #[serde(default)]
    seed: u64,
    max_batch_tokens: Option<Spanned<usize>>,
    #[serde(default)]
    models: Vec<Spanned<RawModel>>,
    #[serde(default)]
    prompts: Vec<Spanned<RawPrompts>>,
    #[serde(default)]
    variants: Vec<Spanned<RawVariant>>,
    #[serde(default)]
    capture: RawCapture,
    #[serde(default)]
    generation: RawGeneration,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModel {
    name: Option<Spanned<String>>,
    path: Option<Spanned<String>>,
    #[serde(default = "auto")]
    device: Spanned<String>,
    #[serde(default = "auto")]
    dtype: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPrompts {
    name: Option<Spanned<String>>,
    path: Spanned<String>,
    column: Option<Spanned<String>>,
    limit: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVariant {
    name: Spanned<String>,
    template: Option<Spanned<String>>,
    filler: Option<Spanned<RawFiller>>,
    visibility: Option<Spanned<String>>,
    #[serde(default)]
    position_offset: i64,
    parallel: Option<Spanned<RawParallel>>,
    generate: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFiller {
    text: String,
    #[serde(default = "one")]
    repeat: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawParallel {
    threshold: f32,
    #[serde(default = "four")]
    max: usize,
    #[serde(default = "last")]
    next: Spanned<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawCapture {
    kinds: Option<Spanned<String>>,
    layers: Option<String>,
    heads: Option<String>,
    weights_dtype: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawGeneration {
    #[serde(default)]
    max_new_tokens: usize,
    #[serde(default)]
    temperature: f32,
    #[serde(default)]
    top_k: usize,
    top_p: Option<f32>,
    stop_at_eos: Option<bool>,
}

fn auto() -> Spanned<String> {
    Spanned::new(0..0, "auto".into())
}
fn one() -> usize {
    1
}
fn four() -> usize {
    4
}
fn last() -> Spanned<String> {
    Spanned::new(0..0, "last".into())
}

/// A model of the sweep.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ModelEntry {
    /// Its partition value (`model=NAME`).
    pub name: String,
    pub path: PathBuf,
    pub device: String,
    pub dtype: String,
}

/// The text a variant puts around each prompt: `prefix {prompt} suffix`, with an optional filler span
/// (`{filler}`: `text` repeated) in the prefix or the suffix.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Template {
    pub text: String,
    pub filler: Option<String>,
}

/// A variant: how each prompt is rendered and run.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Variant {
    pub name: String,
    pub template: Template,
    pub visibility: Option<Visibility>,
    pub position_offset: i64,
    pub parallel: Option<ParallelOptions>,
    pub max_new_tokens: usize,
}

impl Variant {
    /// True when the template is `{prompt}` alone.
    pub fn is_plain(&self) -> bool {
        self.template.text == "{prompt}"
    }
}

/// A parsed, checked sweep spec.
#[derive(Clone, Debug)]
pub struct SweepSpec {
    pub path: PathBuf,
    /// The spec file's bytes (hashed into the plan, copied into the merged manifest).
    pub text: String,
    pub name: String,
    pub seed: u64,
    pub max_batch_tokens: usize,
    pub models: Vec<ModelEntry>,
    pub prompt_sets: Vec<PromptSet>,
    pub variants: Vec<Variant>,
    pub capture: CaptureRequest,
    pub generation: GenerateOptions,
}

impl SweepSpec {
    /// The generation settings of `variant` (its `generate` and `parallel` over the spec's).
    pub fn generation_of(&self, variant: &Variant) -> GenerateOptions {
        GenerateOptions {
            max_new_tokens: variant.max_new_tokens,
            parallel: variant.parallel,
            ..self.generation.clone()
        }
    }
}

/// Where a key sits in the spec: file, key and line, for one-line errors.
struct Locator<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Locator<'_> {
    fn line(&self, span: &Range<usize>) -> usize {
        let end = span.start.min(self.text.len());
        self.text[..end].bytes().filter(|&b| b == b'\n').count() + 1
    }
    fn err(&self, key: &str, span: &Range<usize>, message: impl std::fmt::Display) -> Error {
        Error::input(format!(
            "{}: line {}: `{key}`: {message}",
            self.path.display(),
            self.line(span)
        ))
    }
}

/// Reads and checks the spec at `path`; prompt files are read and checked too. `default_model` is the model
/// of a `[[models]]` entry without `path`.
pub fn load_spec(path: &Path, default_model: &Path) -> Result<SweepSpec> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let at = Locator { path, text: &text };
    let raw: RawSpec = toml::from_str(&text).map_err(|e| {
        let line = e.span().map_or(0, |s| at.line(&s));
        let message = e.message().replace('\n', " ");
        Error::input(format!("{}: line {line}: {message}", path.display()))
    })?;
    let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let resolve = |p: &str| {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            base.join(p)
        }
    };
    let top = 0..0;
    if raw.models.is_empty() {
        return Err(at.err("models", &top, "no [[models]] entry"));
    }
    if raw.prompts.is_empty() {
        return Err(at.err("prompts", &top, "no [[prompts]] entry"));
    }
    let mut models = Vec::new();
    for m in &raw.models {
        let span = m.span();
        let m = m.get_ref();
        let path = match &m.path {
            Some(p) => {
                let dir = resolve(p.get_ref());
                if !dir.join("config.json").is_file() {
                    return Err(at.err(
                        "models.path",
                        &p.span(),
                        format!("{} holds no config.json", dir.display()),
                    ));
                }
                dir
            }
            None => default_model.to_path_buf(),
        };
        let name = match &m.name {
            Some(n) => checked_name(&at, "models.name", n)?,
            None => file_name(&path),
        };
        crate::DtypeRequest::parse(m.dtype.get_ref())
            .map_err(|e| at.err("models.dtype", &m.dtype.span(), e))?;
        attnscope_cuda::DeviceRequest::parse(m.device.get_ref())
            .map_err(|e| at.err("models.device", &m.device.span(), e))?;
        models.push(ModelEntry {
            name,
            path,
            device: m.device.get_ref().clone(),
            dtype: m.dtype.get_ref().clone(),
        });
        unique(&at, "models.name", &span, models.iter().map(|m| &m.name))?;
    }
    let mut prompt_sets = Vec::new();
    for p in &raw.prompts {
        let span = p.span();
        let p = p.get_ref();
        let file = resolve(p.path.get_ref());
        let name = match &p.name {
            Some(n) => checked_name(&at, "prompts.name", n)?,
            None => file_stem(&file),
        };
        let column = p.column.as_ref().map(|c| c.get_ref().as_str());
        let set = PromptSet::read(&name, &file, column, p.limit)
            .map_err(|e| at.err("prompts.path", &p.path.span(), e))?;
        prompt_sets.push(set);
        unique(
            &at,
            "prompts.name",
            &span,
            prompt_sets.iter().map(|s| &s.name),
        )?;
    }
    let generation = generation(&at, &raw.generation)?;
    let mut variants = Vec::new();
    if raw.variants.is_empty() {
        variants.push(Variant {
            name: "plain".into(),
            template: Template {
                text: "{prompt}".into(),
                filler: None,
            },
            visibility: None,
            position_offset: 0,
            parallel: None,
            max_new_tokens: generation.max_new_tokens,
        });
    }
    for v in &raw.variants {
        let span = v.span();
        let variant = variant(&at, v.get_ref(), generation.max_new_tokens)?;
        check_combinations(&at, &span, &variant, &prompt_sets)?;
        variants.push(variant);
        unique(
            &at,
            "variants.name",
            &span,
            variants.iter().map(|v| &v.name),
        )?;
    }
    let name = match &raw.name {
        Some(n) => checked_name(&at, "name", n)?,
        None => file_stem(path),
    };
    let max_batch_tokens = match &raw.max_batch_tokens {
        Some(m) if *m.get_ref() == 0 => {
            return Err(at.err("max_batch_tokens", &m.span(), "must be at least 1"));
        }
        Some(m) => *m.get_ref(),
        None => DEFAULT_MAX_BATCH_TOKENS,
    };
    Ok(SweepSpec {
        path: path.to_path_buf(),
        name,
        seed: raw.seed,
        max_batch_tokens,
        models,
        prompt_sets,
        variants,
        capture: capture(&at, &raw.capture)?,
        generation: GenerateOptions {
            sampler: SamplerConfig {
                seed: raw.seed,
                ..generation.sampler
            },
            ..generation
        },
        text: text.clone(),
    })
}

/// A name used as a partition value: letters, digits, `.`, `_`, `-`.
fn checked_name(at: &Locator, key: &str, name: &Spanned<String>) -> Result<String> {
    let n = name.get_ref();
    let ok = !n.is_empty()
        && !n.starts_with('.')
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !ok {
        return Err(at.err(
            key,
            &name.span(),
            format!(
                "{n:?} is not a usable name (letters, digits, `.`, `_`, `-`; it names a partition directory)"
            ),
        ));
    }
    Ok(n.clone())
}

fn unique<'a>(
    at: &Locator,
    key: &str,
    span: &Range<usize>,
    names: impl Iterator<Item = &'a String>,
) -> Result<()> {
    let names: Vec<&String> = names.collect();
    if let Some(last) = names.last()
        && names[..names.len() - 1].contains(last)
    {
        return Err(at.err(key, span, format!("{last:?} is used twice")));
    }
    Ok(())
}

fn variant(at: &Locator, v: &RawVariant, default_generate: usize) -> Result<Variant> {
    let name = checked_name(at, "variants.name", &v.name)?;
    let (text, tspan) = match &v.template {
        Some(t) => (t.get_ref().clone(), t.span()),
        None => ("{prompt}".to_string(), v.name.span()),
    };
    check_template(&text)
        .map_err(|m| at.err("variants.template", &tspan, format!("{text:?}: {m}")))?;
    let filler = match &v.filler {
        Some(f) => {
            if !text.contains("{filler}") {
                return Err(at.err(
                    "variants.filler",
                    &f.span(),
                    "given, but the template has no `{filler}`",
                ));
            }
            let f = f.get_ref();
            if f.text.is_empty() || f.repeat == 0 {
                return Err(at.err(
                    "variants.filler",
                    &v.filler.as_ref().map_or(0..0, |f| f.span()),
                    "needs a non-empty `text` and `repeat` ≥ 1",
                ));
            }
            Some(f.text.repeat(f.repeat))
        }
        None if text.contains("{filler}") => {
            return Err(at.err(
                "variants.template",
                &tspan,
                "uses `{filler}` but the variant has no `filler = { text = …, repeat = … }`",
            ));
        }
        None => None,
    };
    let visibility = match &v.visibility {
        None => None,
        Some(s) => Some(match s.get_ref().as_str() {
            "visible" => Visibility::Visible,
            "isolated" => Visibility::Isolated,
            other => {
                return Err(at.err(
                    "variants.visibility",
                    &s.span(),
                    format!("{other:?}: expected \"visible\" or \"isolated\""),
                ));
            }
        }),
    };
    let max_new_tokens = v.generate.unwrap_or(default_generate);
    let parallel = match &v.parallel {
        None => None,
        Some(p) => {
            let span = p.span();
            let r = p.get_ref();
            if !(r.threshold > 0.0 && r.threshold <= 1.0) {
                return Err(at.err("variants.parallel.threshold", &span, "must be in (0, 1]"));
            }
            if r.max < 2 {
                return Err(at.err(
                    "variants.parallel.max",
                    &span,
                    "a parallel set needs at least 2 tokens",
                ));
            }
            let next = match r.next.get_ref().as_str() {
                "last" => SetDistribution::Last,
                "first" => SetDistribution::First,
                "mean" => SetDistribution::Mean,
                other => {
                    return Err(at.err(
                        "variants.parallel.next",
                        &r.next.span(),
                        format!("{other:?}: expected \"last\", \"first\" or \"mean\""),
                    ));
                }
            };
            if max_new_tokens == 0 {
                return Err(at.err(
                    "variants.parallel",
                    &span,
                    "parallel generation needs generated tokens: set `generate` in the variant or \
                     `[generation] max_new_tokens`",
                ));
            }
            Some(ParallelOptions {
                threshold: r.threshold,
                max_set: r.max,
                next,
            })
        }
    };
    Ok(Variant {
        name,
        template: Template { text, filler },
        visibility,
        position_offset: v.position_offset,
        parallel,
        max_new_tokens,
    })
}

/// Combinations no unit could run: text around token-id prompts.
fn check_combinations(
    at: &Locator,
    span: &Range<usize>,
    v: &Variant,
    sets: &[PromptSet],
) -> Result<()> {
    if v.is_plain() {
        return Ok(());
    }
    for s in sets {
        if s.rows
            .iter()
            .any(|r| matches!(r.content, PromptContent::Tokens { .. }))
        {
            return Err(at.err(
                "variants.template",
                span,
                format!(
                    "variant {:?} puts text around {{prompt}}, but prompt set {:?} holds token ids; \
                     a template needs text prompts (use template = \"{{prompt}}\")",
                    v.name, s.name
                ),
            ));
        }
    }
    Ok(())
}

fn capture(at: &Locator, c: &RawCapture) -> Result<CaptureRequest> {
    let mut req = match &c.kinds {
        Some(k) => CaptureRequest::from_kinds(k.get_ref())
            .map_err(|e| at.err("capture.kinds", &k.span(), e))?,
        None => CaptureRequest::default(),
    };
    req.layers = c.layers.clone().filter(|l| l != "all");
    req.heads = c.heads.clone().filter(|h| h != "all");
    if let Some(d) = &c.weights_dtype {
        req.weights_dtype = match d.get_ref().as_str() {
            "f32" => WeightsDtype::F32,
            "f16" => WeightsDtype::F16,
            other => {
                return Err(at.err(
                    "capture.weights_dtype",
                    &d.span(),
                    format!("{other:?}: expected \"f32\" or \"f16\""),
                ));
            }
        };
    }
    Ok(req)
}

fn generation(at: &Locator, g: &RawGeneration) -> Result<GenerateOptions> {
    let top = 0..0;
    if !(g.temperature >= 0.0 && g.temperature.is_finite()) {
        return Err(at.err(
            "generation.temperature",
            &top,
            "must be a finite number ≥ 0",
        ));
    }
    let top_p = g.top_p.unwrap_or(1.0);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(at.err("generation.top_p", &top, "must be in (0, 1]"));
    }
    Ok(GenerateOptions {
        max_new_tokens: g.max_new_tokens,
        sampler: SamplerConfig {
            temperature: g.temperature,
            top_k: g.top_k,
            top_p,
            seed: 0,
        },
        stop_at_eos: g.stop_at_eos.unwrap_or(true),
        parallel: None,
        prompt_logits: PromptLogits::None,
    })
}
