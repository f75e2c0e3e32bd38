//! A safetensors file's bytes → `inspect_safetensors`: the header parse, its diagnosis when unreadable,
//! and the description of its tensors, as every checkpoint load reads each file.
#![no_main]

use attnscope_core::weights::inspect_safetensors;
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let _ = inspect_safetensors(Path::new("model.safetensors"), data);
});
