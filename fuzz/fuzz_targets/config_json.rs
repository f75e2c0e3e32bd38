//! config.json text → `ModelConfig::from_json_str` (what `ModelConfig::from_dir` calls), then the
//! parameter count of an accepted config.
#![no_main]

use attnscope_core::config::ModelConfig;
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = ModelConfig::from_json_str(Path::new("config.json"), text) {
        let _ = config.parameter_count();
        let _ = config.group_size();
    }
});
