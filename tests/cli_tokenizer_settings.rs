//! Issue #12 item 3: `padding`, `truncation` and BPE `dropout` in tokenizer.json would silently change the
//! prompt (dropout also makes runs nondeterministic). They are switched off, each with a `warning:` line,
//! and manifest.json records what was switched off; the prompt's tokens are those of the plain file.

mod common;

use common::cli::{Scratch, default_model, edit_json, int, manifest, read_parquet, run_ok};

/// The token ids of `tokens.parquet` in `out`.
fn token_ids(out: &std::path::Path) -> Vec<i64> {
    read_parquet(&out.join("tokens.parquet"))
        .iter()
        .map(|r| int(r, "token_id"))
        .collect()
}

#[test]
fn prompt_changing_settings_are_switched_off_warned_and_recorded() {
    let prompt = "Once upon a time there was a little cat who liked the sun";
    let plain = Scratch::new();
    let mut cmd = plain.run_cmd();
    cmd.arg("--model")
        .arg(default_model())
        .args(["--prompt", prompt]);
    run_ok(&mut cmd);
    let record = &manifest(&plain.out())["tokenizer"];
    assert_eq!(record["kind"], "tokenizer.json");
    assert_eq!(record["disabled"], serde_json::json!([]));
    let want = token_ids(&plain.out());

    let s = Scratch::new();
    let model = s.model_copy(&default_model());
    edit_json(&model.join("tokenizer.json"), |v| {
        v["padding"] = serde_json::json!({
            "strategy": {"Fixed": 64}, "direction": "Right", "pad_to_multiple_of": null,
            "pad_id": 0, "pad_type_id": 0, "pad_token": "<unk>"
        });
        v["truncation"] = serde_json::json!({
            "direction": "Right", "max_length": 3, "strategy": "LongestFirst", "stride": 0
        });
        v["model"]["dropout"] = serde_json::json!(0.9);
    });
    let mut cmd = s.run_cmd();
    cmd.arg("--model").arg(&model).args(["--prompt", prompt]);
    let out = run_ok(&mut cmd);
    let stderr = String::from_utf8_lossy(&out.stderr);
    for d in ["padding", "truncation", "dropout"] {
        let line = format!("`{d}` switched off");
        assert!(
            stderr
                .lines()
                .any(|l| l.starts_with("warning:") && l.contains(&line)),
            "no warning for {d}:\n{stderr}"
        );
    }
    let m = manifest(&s.out());
    let record = &m["tokenizer"];
    assert_eq!(
        record["disabled"],
        serde_json::json!(["padding", "truncation", "dropout"])
    );
    assert!(record["path"].as_str().unwrap().ends_with("tokenizer.json"));
    assert_eq!(record["warnings"].as_array().unwrap().len(), 3);
    assert_eq!(token_ids(&s.out()), want, "the prompt changed");
}
