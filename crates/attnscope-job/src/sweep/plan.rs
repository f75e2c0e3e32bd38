//! Expanding a spec into units (models × prompt sets × rows × variants, in that order, always the same),
//! each identified by a hash of its resolved parameters; which units a shard runs; and how a unit's prompt
//! becomes a token sequence.

use crate::sweep::prompts::{PromptContent, PromptRow};
use crate::sweep::spec::{SweepSpec, Variant};
use attnscope_core::Error;
use attnscope_core::Result;
use attnscope_core::input::SequenceInput;
use attnscope_core::slots::Visibility;
use attnscope_core::tokenizer::TextTokenizer;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};

/// One unit of a sweep: a model, a prompt (set and row) and a variant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitRef {
    /// 16 hex digits of the SHA-256 of the unit's resolved parameters.
    pub id: String,
    pub model: String,
    pub prompts: String,
    pub variant: String,
    /// The prompt's row in its set.
    pub index: usize,
}

/// A unit with the indexes of its parts in the spec.
#[derive(Clone, Debug)]
pub struct PlannedUnit {
    pub unit: UnitRef,
    /// Its position in the plan (shard `i/N` runs the positions `≡ i mod N`).
    pub position: usize,
    pub model: usize,
    pub set: usize,
    pub row: usize,
    pub variant: usize,
}

/// Every unit of a spec, in plan order.
pub struct Plan {
    pub units: Vec<PlannedUnit>,
}

/// The resolved parameters of a unit: what its id hashes.
pub fn unit_params(spec: &SweepSpec, m: usize, s: usize, r: usize, v: usize) -> serde_json::Value {
    let model = &spec.models[m];
    let set = &spec.prompt_sets[s];
    let variant = &spec.variants[v];
    json!({
        "model": {"name": model.name, "path": model.path.to_string_lossy(), "dtype": model.dtype},
        "prompt": {"set": set.name, "index": r, "content": set.rows[r].content},
        "variant": variant,
        "capture": {
            "stats": spec.capture.stats,
            "weights": spec.capture.weights,
            "weights_dtype": spec.capture.weights_dtype,
            "layers": spec.capture.layers,
            "heads": spec.capture.heads,
        },
        "generation": spec.generation_of(variant),
        "seed": spec.seed,
    })
}

/// The id of a unit with these parameters.
pub fn unit_id(params: &serde_json::Value) -> String {
    let digest = Sha256::digest(params.to_string().as_bytes());
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

impl Plan {
    /// The units of `spec`, models outermost, then prompt sets, rows, variants.
    pub fn new(spec: &SweepSpec) -> Plan {
        let mut units = Vec::new();
        for (m, model) in spec.models.iter().enumerate() {
            for (s, set) in spec.prompt_sets.iter().enumerate() {
                for r in 0..set.rows.len() {
                    for (v, variant) in spec.variants.iter().enumerate() {
                        let id = unit_id(&unit_params(spec, m, s, r, v));
                        units.push(PlannedUnit {
                            unit: UnitRef {
                                id,
                                model: model.name.clone(),
                                prompts: set.name.clone(),
                                variant: variant.name.clone(),
                                index: r,
                            },
                            position: units.len(),
                            model: m,
                            set: s,
                            row: r,
                            variant: v,
                        });
                    }
                }
            }
        }
        Plan { units }
    }

    /// The units shard `shard` runs.
    pub fn shard(&self, shard: Shard) -> impl Iterator<Item = &PlannedUnit> {
        self.units
            .iter()
            .filter(move |u| u.position % shard.count == shard.index)
    }
}

/// Shard `index` of `count`: the plan positions `≡ index mod count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl Shard {
    /// Every unit.
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    /// Parses `I/N` (`0 ≤ I < N`); `flag` names the source in errors.
    pub fn parse(text: &str, flag: &str) -> Result<Shard> {
        let bad = || {
            Error::input(format!(
                "{flag}: {text:?} is not I/N with 0 ≤ I < N (e.g. 0/4)"
            ))
        };
        let (i, n) = text.split_once('/').ok_or_else(bad)?;
        let (index, count) = (
            i.trim().parse::<usize>().map_err(|_| bad())?,
            n.trim().parse::<usize>().map_err(|_| bad())?,
        );
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }

    /// The shard of a Slurm array task: `SLURM_ARRAY_TASK_ID − SLURM_ARRAY_TASK_MIN` of
    /// `SLURM_ARRAY_TASK_COUNT`, read through `var`; `None` outside an array.
    pub fn from_slurm(var: impl Fn(&str) -> Option<String>) -> Result<Option<Shard>> {
        let Some(id) = var("SLURM_ARRAY_TASK_ID") else {
            return Ok(None);
        };
        let num = |name: &str, v: Option<String>| -> Result<Option<usize>> {
            v.map(|s| {
                s.trim().parse::<usize>().map_err(|_| {
                    Error::input(format!("{name}={s:?} is not a non-negative integer"))
                })
            })
            .transpose()
        };
        let id = num("SLURM_ARRAY_TASK_ID", Some(id))?.unwrap_or(0);
        let min = num("SLURM_ARRAY_TASK_MIN", var("SLURM_ARRAY_TASK_MIN"))?.unwrap_or(0);
        let count =
            num("SLURM_ARRAY_TASK_COUNT", var("SLURM_ARRAY_TASK_COUNT"))?.ok_or_else(|| {
                Error::input("SLURM_ARRAY_TASK_ID is set but SLURM_ARRAY_TASK_COUNT is not")
            })?;
        if id < min || id - min >= count {
            return Err(Error::input(format!(
                "SLURM_ARRAY_TASK_ID={id} is outside SLURM_ARRAY_TASK_MIN={min} + SLURM_ARRAY_TASK_COUNT={count} \
                 (for a non-contiguous or resubmitted array pass --shard I/N)"
            )));
        }
        Ok(Some(Shard {
            index: id - min,
            count,
        }))
    }
}

/// A unit's prompt as a token sequence, with where the prompt and the filler landed.
pub struct RenderedUnit {
    pub sequence: SequenceInput,
    /// The text run (template applied), for text prompts.
    pub text: Option<String>,
    /// Token range `[start, end)` of the prompt itself.
    pub prompt_span: (usize, usize),
    /// Token range of the filler, when the variant has one.
    pub filler_span: Option<(usize, usize)>,
}

/// Renders `row` through `variant`: the template around a text prompt, tokenized with character offsets
/// (spans are the tokens overlapping the prompt's / filler's characters), or token ids as given; positions
/// shifted by the variant's `position_offset`; its visibility.
pub fn render(
    row: &PromptRow,
    variant: &Variant,
    tokenizer: Option<&TextTokenizer>,
    model: &str,
) -> Result<RenderedUnit> {
    let mut rendered = match &row.content {
        PromptContent::Tokens {
            ids,
            positions,
            groups,
        } => {
            let n = ids.len();
            let mut seq = SequenceInput::from_tokens(ids.clone());
            if let Some(p) = positions {
                seq.positions = p.clone();
            }
            if let Some(g) = groups {
                seq.groups = g.clone();
            }
            if seq.positions.len() != n || seq.groups.len() != n {
                return Err(Error::input(format!(
                    "{n} token ids but {} positions and {} groups",
                    seq.positions.len(),
                    seq.groups.len()
                )));
            }
            RenderedUnit {
                sequence: seq,
                text: None,
                prompt_span: (0, n),
                filler_span: None,
            }
        }
        PromptContent::Text(prompt) => {
            let tok = tokenizer.ok_or_else(|| {
                Error::input(format!(
                    "model {model:?} has no tokenizer (tokenizer.json or vocab.json + merges.txt); text \
                     prompts need one (give token_ids instead)"
                ))
            })?;
            let (text, prompt_chars, filler_chars) = apply_template(variant, prompt);
            let enc = tok.encode_with_offsets(&text)?;
            let span = |chars: (usize, usize)| {
                let inside = |&(s, e): &(usize, usize)| e > s && s < chars.1 && e > chars.0;
                let first = enc.offsets.iter().position(inside);
                let last = enc.offsets.iter().rposition(inside);
                match (first, last) {
                    (Some(a), Some(b)) => (a, b + 1),
                    _ => (0, 0),
                }
            };
            RenderedUnit {
                prompt_span: span(prompt_chars),
                filler_span: filler_chars.map(span),
                sequence: SequenceInput::from_tokens(enc.ids),
                text: Some(text),
            }
        }
    };
    let seq = &mut rendered.sequence;
    if variant.position_offset != 0 {
        for p in &mut seq.positions {
            *p = p.checked_add(variant.position_offset).ok_or_else(|| {
                Error::input(format!(
                    "position {p} + position_offset {} overflows",
                    variant.position_offset
                ))
            })?;
        }
    }
    seq.visibility = variant.visibility.unwrap_or(Visibility::Visible);
    Ok(rendered)
}

/// The template with the filler and the prompt put in, and the character ranges they occupy.
fn apply_template(v: &Variant, prompt: &str) -> (String, (usize, usize), Option<(usize, usize)>) {
    let mut out = String::new();
    let mut chars = 0usize;
    let (mut prompt_at, mut filler_at) = ((0, 0), None);
    let mut rest = v.template.text.as_str();
    loop {
        let next = [("{prompt}", prompt), ("{filler}", "")]
            .iter()
            .filter_map(|(p, _)| rest.find(p).map(|i| (i, *p)))
            .min();
        let Some((i, placeholder)) = next else {
            out.push_str(rest);
            break;
        };
        out.push_str(&rest[..i]);
        chars += rest[..i].chars().count();
        let value = if placeholder == "{prompt}" {
            prompt
        } else {
            v.template.filler.as_deref().unwrap_or("")
        };
        let n = value.chars().count();
        if placeholder == "{prompt}" {
            prompt_at = (chars, chars + n);
        } else {
            filler_at = Some((chars, chars + n));
        }
        out.push_str(value);
        chars += n;
        rest = &rest[i + placeholder.len()..];
    }
    (out, prompt_at, filler_at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sweep::spec::Template;

    fn variant(template: &str, filler: Option<&str>) -> Variant {
        Variant {
            name: "v".into(),
            template: Template {
                text: template.into(),
                filler: filler.map(str::to_string),
            },
            visibility: None,
            position_offset: 0,
            parallel: None,
            max_new_tokens: 0,
        }
    }

    #[test]
    fn template_places_prompt_and_filler_by_characters() {
        let v = variant("Ä {filler}: {prompt}!", Some("ab ab "));
        let (text, p, f) = apply_template(&v, "héllo");
        assert_eq!(text, "Ä ab ab : héllo!");
        assert_eq!(f, Some((2, 8)));
        assert_eq!(p, (10, 15));
        let chars: Vec<char> = text.chars().collect();
        assert_eq!(chars[p.0..p.1].iter().collect::<String>(), "héllo");
    }

    #[test]
    fn shards_parse_and_come_from_slurm() {
        assert_eq!(
            Shard::parse("2/4", "--shard").unwrap(),
            Shard { index: 2, count: 4 }
        );
        for bad in ["4/4", "1", "a/2", "0/0"] {
            assert!(Shard::parse(bad, "--shard").is_err(), "{bad}");
        }
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let s = Shard::from_slurm(env(&[
            ("SLURM_ARRAY_TASK_ID", "7"),
            ("SLURM_ARRAY_TASK_MIN", "5"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
        ]))
        .unwrap();
        assert_eq!(s, Some(Shard { index: 2, count: 4 }));
        assert_eq!(Shard::from_slurm(env(&[])).unwrap(), None);
        let outside = Shard::from_slurm(env(&[
            ("SLURM_ARRAY_TASK_ID", "9"),
            ("SLURM_ARRAY_TASK_MIN", "5"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
        ]));
        assert!(outside.is_err());
    }
}
