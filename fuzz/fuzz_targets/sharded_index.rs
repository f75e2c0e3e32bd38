//! `model.safetensors.index.json` bytes → `parse_shard_index` (what the checkpoint reader calls before it
//! checks the shard files on disk).
#![no_main]

use attnscope_core::weights::parse_shard_index;
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let dir = Path::new("model");
    let _ = parse_shard_index(dir, &dir.join("model.safetensors.index.json"), data);
});
