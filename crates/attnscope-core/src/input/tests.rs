//! Tests for `--input` parsing and validation.

use super::*;

fn parse(text: &str) -> Result<InputSpec> {
    InputSpec::from_json_str(Path::new("in.json"), text)
}

/// The error message for `text`, which must fail to parse.
fn err(text: &str) -> String {
    match parse(text) {
        Ok(spec) => panic!("expected an error, got {spec:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn full_and_defaulted_sequences() {
    let spec = parse(
        r#"{"sequences": [
            {"token_ids": [5, 6, 7], "positions": [0, 0, 1], "groups": [0, 1, -1], "visibility": "isolated"},
            {"token_ids": [9, 8]}
        ]}"#,
    )
    .unwrap();
    assert_eq!(spec.sequences.len(), 2);
    let a = &spec.sequences[0];
    assert_eq!(a.token_ids, vec![5, 6, 7]);
    assert_eq!(a.positions, vec![0, 0, 1]);
    assert_eq!(a.groups, vec![0, 1, -1]);
    assert_eq!(a.visibility, Visibility::Isolated);
    assert_eq!(spec.sequences[1], SequenceInput::from_tokens(vec![9, 8]));
    assert_eq!(spec.sequences[1].positions, vec![0, 1]);
    assert_eq!(spec.sequences[1].groups, vec![-1, -1]);
    assert_eq!(spec.sequences[1].visibility, Visibility::Visible);
}

#[test]
fn from_file_reads_and_names_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("spec.json");
    std::fs::write(
        &p,
        r#"{"sequences": [{"token_ids": [1], "visibility": "visible"}]}"#,
    )
    .unwrap();
    assert_eq!(
        InputSpec::from_file(&p).unwrap().sequences[0].token_ids,
        vec![1]
    );
    let missing = dir.path().join("nope.json");
    let e = InputSpec::from_file(&missing).unwrap_err().to_string();
    assert!(e.contains("nope.json"), "{e}");
}

#[test]
fn positions_length_mismatch_names_field() {
    let e = err(r#"{"sequences": [{"token_ids": [1]},
        {"token_ids": [1,2,3,4,5,6], "positions": [0,1,2,3,4]}]}"#);
    assert_eq!(
        e,
        "in.json: field `sequences[1].positions`: length 5 does not match token_ids length 6"
    );
}

#[test]
fn groups_length_mismatch_and_range() {
    let e = err(r#"{"sequences": [{"token_ids": [1,2], "groups": [0]}]}"#);
    assert!(
        e.starts_with("in.json: field `sequences[0].groups`: length 1"),
        "{e}"
    );
    let e = err(r#"{"sequences": [{"token_ids": [1,2], "groups": [0, -2]}]}"#);
    assert!(
        e.contains("`sequences[0].groups`") && e.contains("-2"),
        "{e}"
    );
}

#[test]
fn empty_lists_rejected() {
    assert_eq!(
        err(r#"{"sequences": []}"#),
        "in.json: field `sequences`: is empty"
    );
    let e = err(r#"{"sequences": [{"token_ids": []}]}"#);
    assert_eq!(e, "in.json: field `sequences[0].token_ids`: is empty");
    assert!(err(r#"{}"#).contains("`sequences`: missing"));
}

#[test]
fn negative_position_rejected() {
    let e = err(r#"{"sequences": [{"token_ids": [1,2], "positions": [0, -3]}]}"#);
    assert!(
        e.contains("`sequences[0].positions`") && e.contains("negative"),
        "{e}"
    );
}

#[test]
fn unknown_visibility_lists_allowed_values() {
    let e = err(r#"{"sequences": [{"token_ids": [1], "visibility": "hidden"}]}"#);
    assert!(e.contains("`sequences[0].visibility`"), "{e}");
    assert!(
        e.contains("hidden") && e.contains("visible") && e.contains("isolated"),
        "{e}"
    );
}

#[test]
fn unknown_keys_rejected() {
    let e = err(r#"{"sequences": [{"token_ids": [1], "position": [0]}]}"#);
    assert!(
        e.contains("`sequences[0].position`") && e.contains("unknown key"),
        "{e}"
    );
    let e = err(r#"{"sequences": [{"token_ids": [1]}], "seqs": 1}"#);
    assert!(e.contains("`seqs`"), "{e}");
}

#[test]
fn non_integer_token_ids_and_bad_json_name_the_file() {
    let e = err(r#"{"sequences": [{"token_ids": [1, 2.5]}]}"#);
    assert!(
        e.starts_with("in.json:") && e.contains("`sequences[0].token_ids[1]`"),
        "{e}"
    );
    let e = err(r#"{"sequences": [{"token_ids": [1, "a"]}]}"#);
    assert!(e.contains("`sequences[0].token_ids[1]`"), "{e}");
    let e = err(r#"{"sequences": [{"token_ids": [-1]}]}"#);
    assert!(e.contains("`sequences[0].token_ids[0]`"), "{e}");
    let e = err(r#"{"sequences": [{"token_ids": [1,]}"#);
    assert!(e.starts_with("in.json: ") && !e.contains('\n'), "{e}");
    let json_err = parse("[1]").unwrap_err();
    assert!(matches!(json_err, Error::Json { .. }), "{json_err}");
}

#[test]
fn validate_vocab_and_positions() {
    let mut seq = SequenceInput::from_tokens(vec![3, 10, 4]);
    validate_sequence(&seq, 11, Some(3), "--prompt").unwrap();
    let e = validate_sequence(&seq, 10, None, "in.json: sequences[0]").unwrap_err();
    assert_eq!(
        e.to_string(),
        "in.json: sequences[0]: token_ids[1] = 10 is out of range (vocab_size 10)"
    );
    seq.positions = vec![0, 5, 2];
    validate_sequence(&seq, 11, None, "--prompt").unwrap();
    let e = validate_sequence(&seq, 11, Some(5), "--prompt")
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("--prompt: positions[1] = 5"), "{e}");
    seq.groups = vec![-1];
    let e = validate_sequence(&seq, 11, None, "--prompt")
        .unwrap_err()
        .to_string();
    assert!(e.contains("groups") && e.contains("length 1"), "{e}");
    let empty = SequenceInput::from_tokens(vec![]);
    assert!(validate_sequence(&empty, 11, None, "x").is_err());
}

#[test]
fn visibility_serde_is_lowercase() {
    assert_eq!(
        serde_json::to_string(&Visibility::Isolated).unwrap(),
        "\"isolated\""
    );
    let v: Visibility = serde_json::from_str("\"visible\"").unwrap();
    assert_eq!(v, Visibility::Visible);
}
