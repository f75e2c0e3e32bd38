//! Tests for the tokenizer loader; they SKIP (with a message) when the shared test data is absent.

use super::*;

const SHARED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared");

/// The shared directory `rel`, or `None` (after printing SKIP) when it is absent.
pub(super) fn shared_dir(rel: &str) -> Option<PathBuf> {
    let dir = Path::new(SHARED).join(rel);
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!("SKIP: test data {} not found", dir.display());
        None
    }
}

pub(super) fn load(dir: &Path) -> TextTokenizer {
    match TextTokenizer::from_dir(dir) {
        Ok(Some(t)) => t,
        Ok(None) => panic!("no tokenizer in {}", dir.display()),
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn stories260k_llama_encode_matches_reference() {
    let Some(dir) = shared_dir("models/stories260K") else {
        return;
    };
    let tok = load(&dir);
    assert_eq!(tok.kind(), "tokenizer.json");
    assert_eq!(tok.bos_id(), Some(1));
    assert_eq!(tok.eos_ids(), &[2]);
    assert!(tok.add_bos());
    let text =
        "Once upon a time, there was a little dog named Max. Max liked to run in the park with his";
    let ids = tok.encode(text).unwrap();
    let want = [
        1, 403, 407, 261, 378, 432, 383, 286, 261, 376, 400, 428, 395, 392, 412, 444, 426, 392,
        412, 444, 397, 355, 267, 352, 379, 322, 265, 282, 295, 433, 335, 345,
    ];
    assert_eq!(ids, want);
    // Decoding keeps the BOS token string; the text itself round-trips.
    let back = tok.decode(&ids[1..]).unwrap();
    assert_eq!(back, text);
    assert_eq!(tok.token_str(1), "<s>");
    assert_eq!(tok.vocab_size(), 512);
    assert_eq!(tok.max_token_id(), Some(511));
}

#[test]
fn gpt2_tokenizer_json_old_layout() {
    let Some(dir) = shared_dir("tokenizers/gpt2") else {
        return;
    };
    let tok = load(&dir);
    assert_eq!(tok.kind(), "tokenizer.json");
    assert_eq!(tok.source(), dir.join("tokenizer.json"));
    assert_eq!(tok.encode("Hello world").unwrap(), vec![15496, 995]);
    let text = "Hello world, it's <|endoftext|> héllo\n  spaces";
    let ids = tok.encode(text).unwrap();
    assert!(ids.contains(&50256), "special token not matched: {ids:?}");
    assert_eq!(tok.decode(&ids).unwrap(), text);
    assert_eq!(tok.token_str(15496), "Hello");
    assert_eq!(tok.token_str(995), "Ġworld");
    assert_eq!(tok.token_str(u32::MAX), "");
    assert_eq!(tok.vocab_size(), 50257);
    assert_eq!(tok.max_token_id(), Some(50256));
}

#[test]
fn gpt2_vocab_merges_matches_tokenizer_json() {
    let Some(dir) = shared_dir("tokenizers/gpt2") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    for f in ["vocab.json", "merges.txt"] {
        std::fs::copy(dir.join(f), tmp.path().join(f)).unwrap();
    }
    let tok = load(tmp.path());
    let reference = load(&dir);
    assert_eq!(tok.kind(), "vocab.json+merges.txt");
    assert_eq!(tok.source(), tmp.path().join("vocab.json"));
    assert_eq!(tok.encode("Hello world").unwrap(), vec![15496, 995]);
    let text = "The quick brown fox<|endoftext|>  jumps  über 12345 \t lazy dogs!";
    let ids = tok.encode(text).unwrap();
    assert_eq!(ids, reference.encode(text).unwrap());
    assert_eq!(tok.decode(&ids).unwrap(), text);
    assert_eq!(tok.eos_ids(), &[50256]);
    assert!(!tok.add_bos());
    assert_eq!(tok.vocab_size(), 50257);
}

#[test]
fn missing_merges_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("vocab.json"), r#"{"a": 0}"#).unwrap();
    let err = TextTokenizer::from_dir(tmp.path())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("merges.txt"), "{err}");
}

#[test]
fn garbage_tokenizer_json_is_one_line_error() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("tokenizer.json"), "{\"model\": [1,\n 2,").unwrap();
    let err = TextTokenizer::from_dir(tmp.path())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("tokenizer.json"), "{err}");
    assert!(!err.contains('\n'), "{err}");
}

#[test]
fn empty_dir_is_none_and_empty_prompt_errors() {
    let tmp = tempfile::tempdir().unwrap();
    assert!(TextTokenizer::from_dir(tmp.path()).unwrap().is_none());
    let Some(dir) = shared_dir("tokenizers/gpt2") else {
        return;
    };
    let err = load(&dir).encode("").err().unwrap().to_string();
    assert_eq!(err, "empty prompt");
}

#[test]
fn add_bos_is_prepended_once() {
    let Some(dir) = shared_dir("tokenizers/gpt2") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(
        dir.join("tokenizer.json"),
        tmp.path().join("tokenizer.json"),
    )
    .unwrap();
    let cfg = r#"{"add_bos_token": true, "bos_token": {"content": "<|endoftext|>"}}"#;
    std::fs::write(tmp.path().join("tokenizer_config.json"), cfg).unwrap();
    let tok = load(tmp.path());
    assert_eq!(tok.encode("Hello world").unwrap(), vec![50256, 15496, 995]);
    assert_eq!(
        tok.encode("<|endoftext|>Hello").unwrap(),
        vec![50256, 15496]
    );
    // With offsets: the prepended BOS has no span; one in the text has its own.
    let e = tok.encode_with_offsets("Hello world").unwrap();
    assert_eq!(e.ids, [50256, 15496, 995]);
    assert_eq!(e.pieces, ["<|endoftext|>", "Hello", "Ġworld"]);
    assert_eq!(e.offsets, [(0, 0), (0, 5), (5, 11)]);
    let e = tok.encode_with_offsets("<|endoftext|>Hé").unwrap();
    assert_eq!(e.ids, tok.encode("<|endoftext|>Hé").unwrap());
    assert_eq!(e.offsets[0], (0, 13));
    assert_eq!(e.offsets.last().map(|o| o.1), Some(15));
    let bad = r#"{"add_bos_token": "yes"}"#;
    std::fs::write(tmp.path().join("tokenizer_config.json"), bad).unwrap();
    let err = TextTokenizer::from_dir(tmp.path())
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("tokenizer_config.json") && err.contains("add_bos_token"),
        "{err}"
    );
}

#[test]
fn gpt2_unusable_merge_is_dropped_with_warning() {
    let Some(dir) = shared_dir("tokenizers/gpt2") else {
        return;
    };
    // The shared GPT-2 files have merge 40303 `ĠCla ude` whose result is not in the vocabulary
    // (id 40559 is `ĠLLMProvider` there); `tokenizers` refuses such files, the loader drops the merge.
    let tok = load(&dir);
    let w = tok.warnings().join("\n");
    assert!(
        w.contains("tokenizer.json") && w.contains("merge 40303"),
        "{w}"
    );
    let tmp = tempfile::tempdir().unwrap();
    for f in ["vocab.json", "merges.txt"] {
        std::fs::copy(dir.join(f), tmp.path().join(f)).unwrap();
    }
    let w = load(tmp.path()).warnings().join("\n");
    assert!(w.contains("merges.txt") && w.contains("merge 40303"), "{w}");
}

/// A tiny byte-level BPE `tokenizer.json` in the old layout (no model `type`) with `merge`.
fn tiny_old_layout(merge: &str) -> String {
    format!(
        r#"{{"version":"1.0","added_tokens":[],"normalizer":null,
        "pre_tokenizer":{{"type":"ByteLevel","add_prefix_space":false,"trim_offsets":true}},
        "post_processor":null,"decoder":{{"type":"ByteLevel","add_prefix_space":true,"trim_offsets":true}},
        "model":{{"dropout":null,"unk_token":null,"continuing_subword_prefix":"","end_of_word_suffix":"",
        "fuse_unk":false,"vocab":{{"a":0,"b":1,"ab":2}},"merges":["{merge}"]}}}}"#
    )
}

#[test]
fn old_layout_and_bad_merges_parse() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("tokenizer.json");
    // tokenizers 0.23 itself reads the old layout (its model deserializer has an untagged fallback).
    assert!(tiny_old_layout("a b").parse::<Tokenizer>().is_ok());
    assert!(tiny_old_layout("b a").parse::<Tokenizer>().is_err());
    std::fs::write(&path, tiny_old_layout("a b")).unwrap();
    let tok = load(tmp.path());
    assert_eq!(tok.encode("abab").unwrap(), vec![2, 2]);
    assert!(tok.warnings().is_empty(), "{:?}", tok.warnings());
    std::fs::write(&path, tiny_old_layout("b a")).unwrap();
    let tok = load(tmp.path());
    assert_eq!(tok.encode("ab").unwrap(), vec![0, 1]);
    assert!(tok.warnings()[0].contains("`ba` is not in the vocabulary"));
}

/// stories260K's tokenizer.json (and tokenizer_config.json) copied into a tempdir, with `edit` applied to
/// the parsed JSON; `None` (after SKIP) without the shared data.
fn edited_stories(edit: impl FnOnce(&mut Value)) -> Option<tempfile::TempDir> {
    let dir = shared_dir("models/stories260K")?;
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(
        dir.join("tokenizer_config.json"),
        tmp.path().join("tokenizer_config.json"),
    )
    .unwrap();
    let text = std::fs::read_to_string(dir.join("tokenizer.json")).unwrap();
    let mut v: Value = serde_json::from_str(&text).unwrap();
    edit(&mut v);
    std::fs::write(
        tmp.path().join("tokenizer.json"),
        serde_json::to_string_pretty(&v).unwrap(),
    )
    .unwrap();
    Some(tmp)
}

const STORY: &str = "Once upon a time, there was a little dog named Max.";

/// Asserts a one-line tokenizer error naming tokenizer.json.
fn assert_tokenizer_error(e: &Error) {
    let msg = e.to_string();
    assert!(matches!(e, Error::Tokenizer { .. }), "{msg}");
    assert!(msg.contains("tokenizer.json"), "{msg}");
    assert!(!msg.contains('\n'), "{msg}");
}

/// Loads and encodes/decodes; returns the first error. Panics only if the guard let a panic through.
fn load_encode_decode(dir: &Path) -> Result<()> {
    let tok = TextTokenizer::from_dir(dir)?.expect("a tokenizer");
    let ids = tok.encode(STORY)?;
    tok.decode(&ids)?;
    Ok(())
}

/// Issue #12's first reproducer. With this build of `tokenizers` (fancy-regex) an empty `Replace` pattern
/// does not panic; whatever it does, no panic may escape and any error must name tokenizer.json. Every
/// vocabulary id is decoded, alone and together, in the regex variant too.
#[test]
fn replace_decoder_with_empty_pattern_never_panics() {
    for pattern in [
        serde_json::json!({"String": ""}),
        serde_json::json!({"Regex": ""}),
    ] {
        let Some(tmp) = edited_stories(|v| {
            v["decoder"]["decoders"][0]["pattern"] = pattern.clone();
        }) else {
            return;
        };
        let run = || -> Result<()> {
            let tok = TextTokenizer::from_dir(tmp.path())?.expect("a tokenizer");
            let ids = tok.encode(STORY)?;
            tok.decode(&ids)?;
            let all: Vec<u32> = (0..tok.vocab_size() as u32).collect();
            for id in &all {
                tok.decode(&[*id])?;
            }
            tok.decode(&all)?;
            Ok(())
        };
        let outcome = std::panic::catch_unwind(run).expect("a panic escaped the tokenizer guard");
        if let Err(e) = outcome {
            assert_tokenizer_error(&e);
        }
    }
}

/// A guarded panic leaves the panic hook working for everyone else (the test harness reports panics
/// through it) and is reported once, as the error.
#[test]
fn guard_turns_a_panic_into_one_error_line() {
    let path = Path::new("/m/tokenizer.json");
    let e = guard::guarded(path, "encoding", || -> u32 { panic!("boom\nsecond line") })
        .expect_err("panic not caught");
    let msg = e.to_string();
    assert!(msg.starts_with("/m/tokenizer.json: "), "{msg}");
    assert!(
        msg.contains("panicked while encoding") && msg.contains("boom second line"),
        "{msg}"
    );
    assert!(!msg.contains('\n'), "{msg}");
    assert_eq!(guard::guarded(path, "x", || 7).unwrap(), 7);
}

#[test]
fn template_processing_missing_special_token_is_an_error() {
    let Some(tmp) = edited_stories(|v| {
        v["post_processor"]["special_tokens"] = serde_json::json!({});
    }) else {
        return;
    };
    let e = load_encode_decode(tmp.path()).expect_err("missing special token accepted");
    assert_tokenizer_error(&e);
}

#[test]
fn truncated_tokenizer_json_is_an_error_not_a_panic() {
    let Some(dir) = shared_dir("models/stories260K") else {
        return;
    };
    let bytes = std::fs::read(dir.join("tokenizer.json")).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let mut panicked_somewhere = false;
    for cut in (1440..1710).step_by(5) {
        std::fs::write(tmp.path().join("tokenizer.json"), &bytes[..cut]).unwrap();
        let e = load_encode_decode(tmp.path()).expect_err("truncated file accepted");
        // A cut inside a multi-byte character is an I/O error (not UTF-8); the rest tokenizer errors.
        let msg = e.to_string();
        assert!(
            msg.contains("tokenizer.json") && !msg.contains('\n'),
            "{msg}"
        );
        panicked_somewhere |= e.to_string().contains("panicked");
    }
    // The reproducer of issue #12: some of these cuts make `tokenizers` panic; the guard must be what
    // turned them into errors.
    assert!(panicked_somewhere, "no cut reached the panic path");
}

#[test]
fn padding_truncation_and_dropout_are_switched_off_and_reported() {
    let Some(plain) = shared_dir("models/stories260K") else {
        return;
    };
    let want = load(&plain).encode(STORY).unwrap();
    let Some(tmp) = edited_stories(|v| {
        v["padding"] = serde_json::json!({
            "strategy": {"Fixed": 64}, "direction": "Right", "pad_to_multiple_of": null,
            "pad_id": 0, "pad_type_id": 0, "pad_token": "<unk>"
        });
        v["truncation"] = serde_json::json!({
            "direction": "Right", "max_length": 4, "strategy": "LongestFirst", "stride": 0
        });
        v["model"]["dropout"] = serde_json::json!(1.0);
    }) else {
        return;
    };
    let tok = load(tmp.path());
    assert_eq!(tok.disabled(), &["padding", "truncation", "dropout"]);
    let w = tok.warnings().join("\n");
    for d in ["padding", "truncation", "dropout"] {
        assert!(w.contains(&format!("`{d}` switched off")), "{w}");
    }
    // Deterministic and unchanged: dropout 1.0 would undo every merge, padding/truncation change length.
    for _ in 0..3 {
        assert_eq!(tok.encode(STORY).unwrap(), want);
    }
    assert!(load(&plain).disabled().is_empty());
}

#[test]
fn from_json_str_is_the_tokenizer_json_load_without_the_bos_convention() {
    let Some(dir) = shared_dir("models/stories260K") else {
        return;
    };
    let path = dir.join("tokenizer.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let tok = TextTokenizer::from_json_str(&path, &text).unwrap();
    assert_eq!(tok.kind(), "tokenizer.json");
    assert_eq!(tok.source(), path);
    assert!(!tok.add_bos());
    assert_eq!(tok.bos_id(), None);
    // Its post-processor adds BOS already, so from_dir (which prepends BOS only when missing) agrees.
    assert_eq!(
        tok.encode(STORY).unwrap(),
        load(&dir).encode(STORY).unwrap()
    );
    // The same post-load checks: padding is switched off and reported.
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["padding"] = serde_json::json!({
        "strategy": {"Fixed": 64}, "direction": "Right", "pad_to_multiple_of": null,
        "pad_id": 0, "pad_type_id": 0, "pad_token": "<unk>"
    });
    let padded = TextTokenizer::from_json_str(&path, &v.to_string()).unwrap();
    assert_eq!(padded.disabled(), &["padding"]);
    let e = match TextTokenizer::from_json_str(&path, "{") {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    };
    assert!(
        e.starts_with(&format!("{}: cannot parse tokenizer", path.display())),
        "{e}"
    );
}
