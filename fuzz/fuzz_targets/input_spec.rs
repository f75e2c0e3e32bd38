//! `--input` JSON text → `InputSpec::from_json_str` (what `InputSpec::from_file` calls), then every
//! sequence checked against a small model as a run does.
#![no_main]

use attnscope_core::input::{InputSpec, validate_sequence};
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(spec) = InputSpec::from_json_str(Path::new("input.json"), text) {
        for seq in &spec.sequences {
            let _ = validate_sequence(seq, 512, Some(256), "input.json");
        }
    }
});
