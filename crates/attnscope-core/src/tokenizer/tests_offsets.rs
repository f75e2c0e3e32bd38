//! Tests of `TextTokenizer::encode_with_offsets` on the committed tokenizer and those of ../shared (SKIP
//! when absent).

use super::tests::{load, shared_dir};
use super::*;
use serde_json::Value;

/// The texts of tests/fixtures/tokenizer_cases.json for `name`, and a non-ASCII one whose character and
/// byte offsets differ.
fn offset_texts(name: &str) -> Vec<String> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/tokenizer_cases.json"
    );
    let cases: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut texts: Vec<String> = cases[name]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["text"].as_str().unwrap().to_string())
        .filter(|t| !t.is_empty())
        .collect();
    assert!(texts.len() >= 5, "{name}");
    texts.push(NON_ASCII.to_string());
    texts
}

const NON_ASCII: &str = "héllo wörld 日本";

/// `encode_with_offsets` of `text`: the ids of `encode`, each piece the token's vocabulary string, spans
/// in characters, ordered and inside the text, ending at its last character (the BOS's is `(0, 0)`).
/// `piece_text` gives the text a piece spells (`None`: not comparable, e.g. one byte of a character);
/// where it does, the characters of the span spell it (at the start, but for the space a SentencePiece
/// normalizer prepends).
fn check_offsets(
    tok: &TextTokenizer,
    text: &str,
    piece_text: &dyn Fn(u32, &str) -> Option<String>,
) {
    let e = tok.encode_with_offsets(text).unwrap();
    assert_eq!(e.ids, tok.encode(text).unwrap(), "{text:?}");
    assert_eq!(
        (e.pieces.len(), e.offsets.len()),
        (e.ids.len(), e.ids.len())
    );
    let chars: Vec<char> = text.chars().collect();
    let mut last_start = 0;
    for (i, (&id, &(start, end))) in e.ids.iter().zip(&e.offsets).enumerate() {
        let piece = &e.pieces[i];
        assert_eq!(piece, &tok.token_str(id), "{text:?}");
        assert!(
            start <= end && end <= chars.len() && start >= last_start,
            "{text:?}: {piece:?} {start}..{end}"
        );
        last_start = start;
        if Some(id) == tok.bos_id() {
            assert_eq!((i, start, end), (0, 0, 0), "{text:?}");
            continue;
        }
        let span: String = chars[start..end].iter().collect();
        if let Some(want) = piece_text(id, piece) {
            // A space the normalizer prepends has no character of its own: it shares the first one's span.
            let prepended = start == 0
                && want
                    .strip_prefix(' ')
                    .is_some_and(|rest| span.starts_with(rest));
            assert!(
                want == span || prepended,
                "{text:?}: {piece:?} spells {want:?}, its span {span:?}"
            );
        }
    }
    assert_eq!(e.offsets.last().map(|o| o.1), Some(chars.len()), "{text:?}");
    if text == NON_ASCII {
        assert_ne!(
            chars.len(),
            text.len(),
            "character offsets are not byte offsets"
        );
    }
}

/// The committed default model's byte-level BPE (and GPT-2's, from ../shared): a piece spells what it
/// decodes to when that is whole characters.
#[test]
fn encode_with_offsets_of_byte_level_tokenizers() {
    let committed = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../models/tiny-random-llama"
    ));
    let mut dirs = vec![(committed, "tiny-random-llama")];
    dirs.extend(shared_dir("tokenizers/gpt2").map(|d| (d, "gpt2")));
    for (dir, name) in dirs {
        let tok = load(&dir);
        let decoded = |id: u32, _: &str| {
            let s = tok.decode(&[id]).ok()?;
            (!s.contains('\u{fffd}')).then_some(s)
        };
        for text in offset_texts(name) {
            check_offsets(&tok, &text, &decoded);
        }
        let e = tok.encode_with_offsets(NON_ASCII).unwrap();
        // "wö" and "日" are split into bytes; every byte of a character has the character's span.
        assert!(
            e.offsets.iter().filter(|o| **o == (12, 13)).count() >= 2,
            "{name}: {e:?}"
        );
    }
}

/// stories260K's SentencePiece-style BPE (../shared; SKIP when absent): not byte-level, so the characters
/// of each span spell the piece (`▁` read as a space), byte-fallback pieces (`<0xE6>`) aside.
#[test]
fn encode_with_offsets_of_a_sentencepiece_tokenizer() {
    let Some(dir) = shared_dir("models/stories260K") else {
        return;
    };
    let tok = load(&dir);
    let spelled = |_: u32, piece: &str| {
        let byte = piece.starts_with("<0x") && piece.ends_with('>');
        (!byte).then(|| piece.replace('\u{2581}', " "))
    };
    for text in offset_texts("tiny-random-llama") {
        check_offsets(&tok, &text, &spelled);
    }
    let e = tok.encode_with_offsets(NON_ASCII).unwrap();
    assert_eq!(e.offsets[0], (0, 0));
    assert_eq!(e.pieces[0], "<s>");
    assert_eq!(e.pieces[2], "é");
    assert_eq!(e.offsets[2], (1, 2));
    assert_eq!(
        tok.encode_with_offsets("").err().unwrap().to_string(),
        "empty prompt"
    );
}
