//! A spec's `[[variants]]`: template (`{prompt}` once, `{filler}` at most once), filler, visibility,
//! position offset, parallel sets and generation length, checked as they are parsed; and the
//! combinations no unit could run.

use crate::sweep::prompts::{PromptContent, PromptSet};
use crate::sweep::spec::{Locator, RawVariant, Template, Variant, checked_name};
use attnscope_core::Result;
use attnscope_core::run::parallel::{ParallelOptions, SetDistribution};
use attnscope_core::slots::Visibility;
use std::ops::Range;

pub(super) fn variant(at: &Locator, v: &RawVariant, default_generate: usize) -> Result<Variant> {
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

/// A template holds `{prompt}` exactly once, `{filler}` at most once, and no other `{…}`.
fn check_template(text: &str) -> std::result::Result<(), String> {
    let mut rest = text;
    let (mut prompts, mut fillers) = (0, 0);
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}') else {
            return Err("an unclosed `{`".into());
        };
        match &rest[open + 1..open + close] {
            "prompt" => prompts += 1,
            "filler" => fillers += 1,
            other => {
                return Err(format!(
                    "unknown placeholder `{{{other}}}` (only {{prompt}} and {{filler}})"
                ));
            }
        }
        rest = &rest[open + close + 1..];
    }
    if rest.contains('}') {
        return Err("a `}` without `{`".into());
    }
    match (prompts, fillers) {
        (1, 0 | 1) => Ok(()),
        (0, _) => Err("has no `{prompt}`".into()),
        (_, 0 | 1) => Err("has `{prompt}` more than once".into()),
        _ => Err("has `{filler}` more than once".into()),
    }
}

/// Combinations no unit could run: text around token-id prompts.
pub(super) fn check_combinations(
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
