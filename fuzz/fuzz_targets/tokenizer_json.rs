//! tokenizer.json text → `TextTokenizer::from_json_str` (the parse, repairs, panic guard and post-load
//! checks of `TextTokenizer::from_dir`), then a short fixed text encoded and decoded with it.
#![no_main]

use attnscope_core::tokenizer::TextTokenizer;
use libfuzzer_sys::fuzz_target;
use std::path::Path;

const TEXT: &str = "Once upon a time, a little dog ran <s> home. Héllo wörld 12345!\n";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(tok) = TextTokenizer::from_json_str(Path::new("tokenizer.json"), text) else {
        return;
    };
    if let Ok(ids) = tok.encode(TEXT) {
        let _ = tok.decode(&ids);
        for &id in ids.iter().take(8) {
            let _ = tok.token_str(id);
        }
    }
    let _ = tok.max_token_id();
});
