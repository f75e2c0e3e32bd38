//! Pure checks of a sweep spec's names and templates (a leaf: no other sweep module is used here).

use std::path::Path;

pub(super) fn sanitize(s: &str) -> String {
    let cleaned: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let cleaned = cleaned.trim_start_matches('.').to_string();
    if cleaned.is_empty() {
        "unnamed".into()
    } else {
        cleaned
    }
}

pub(super) fn file_name(path: &Path) -> String {
    sanitize(
        &path
            .file_name()
            .map_or(String::new(), |n| n.to_string_lossy().into()),
    )
}

pub(super) fn file_stem(path: &Path) -> String {
    sanitize(
        &path
            .file_stem()
            .map_or(String::new(), |n| n.to_string_lossy().into()),
    )
}

/// A template holds `{prompt}` exactly once, `{filler}` at most once, and no other `{…}`.
pub(super) fn check_template(text: &str) -> std::result::Result<(), String> {
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
