//! `attnscope bench-serve`: one random-weight model kept loaded, measured one call at a time on request,
//! for a harness that interleaves attnscope with another engine (`scripts/bench_pair.py`).
//!
//! Line protocol, one JSON object per line on each side (stdout carries nothing else):
//!
//! * on start, after the model is built: `{"ready":true,"engine":"attnscope","version":…,"model":…,
//!   "parameters":…,"threads":…,"device":…,"compute_dtype":…,"cpu":…}`;
//! * `{"op":"prefill","t":T,"mode":M}` → one [`measure::prefill`] of T random tokens (batch 1) →
//!   `{"ok":true,"seconds":…,"peak_bytes":…}`;
//! * `{"op":"decode","batch":B,"context":C,"steps":S,"mode":M}` → one [`measure::decode`] (B prompts of C
//!   random tokens prefilled untimed, then S timed batched steps) → `{"ok":true,"seconds":…,"steps":S,
//!   "seconds_per_step":…,"peak_bytes":…}`;
//! * `{"op":"quit"}` → `{"ok":true}` and the server returns; end of input returns too.
//!
//! M is a capture mode of `attnscope bench` (`none`, `stats`, `weights_all`, `weights_one_layer`). The
//! prompts are those `attnscope bench` uses for the same seed. A request that cannot be served gets
//! `{"ok":false,"error":…}` and the server goes on; only a failed write to the output ends it with an error.

use crate::measure::{self, Sample};
use crate::{Mode, positions_exceed};
use attnscope_core::config::ModelConfig;
use attnscope_core::model::Model;
use attnscope_core::{Error, Result};
use serde::Deserialize;
use serde_json::{Value, json};
use std::io::{BufRead, Write};

/// One request of the protocol.
#[derive(Debug, Deserialize, PartialEq)]
#[serde(tag = "op", rename_all = "lowercase", deny_unknown_fields)]
pub enum Request {
    /// One prefill of `t` tokens.
    Prefill { t: usize, mode: String },
    /// `steps` batched decode steps over `batch` prompts of `context` tokens.
    Decode {
        batch: usize,
        context: usize,
        steps: usize,
        mode: String,
    },
    /// End the session.
    Quit,
}

/// What the server knows about itself, sent in the ready line.
#[derive(Clone, Debug)]
pub struct ServerInfo {
    /// Label of the model (named shape or config path).
    pub model: String,
    /// Worker threads.
    pub threads: usize,
    /// "cpu" or "cuda:N".
    pub device: String,
    /// Compute dtype ("f32" on the CPU).
    pub compute_dtype: String,
    /// CPU model name.
    pub cpu: String,
}

/// Serves requests from `input` until `quit` or end of input, writing the ready line first. `seed` picks
/// the prompts (as `attnscope bench --seed`).
pub fn serve(
    model: &Model,
    info: &ServerInfo,
    seed: u64,
    input: impl BufRead,
    mut output: impl Write,
) -> Result<()> {
    let ready = json!({
        "ready": true,
        "engine": "attnscope",
        "version": env!("CARGO_PKG_VERSION"),
        "model": info.model,
        "parameters": model.cfg.parameter_count(),
        "threads": info.threads,
        "device": info.device,
        "compute_dtype": info.compute_dtype,
        "cpu": info.cpu,
    });
    write_line(&mut output, &ready)?;
    for line in input.lines() {
        let line =
            line.map_err(|e| Error::input(format!("bench-serve: reading a request: {e}")))?;
        if line.trim().is_empty() {
            continue;
        }
        let (reply, quit) = match serde_json::from_str::<Request>(&line) {
            Ok(Request::Quit) => (json!({"ok": true}), true),
            Ok(request) => (reply_of(handle(model, seed, &request)), false),
            Err(e) => (
                reply_of(Err(Error::input(format!("bad request: {e}")))),
                false,
            ),
        };
        write_line(&mut output, &reply)?;
        if quit {
            break;
        }
    }
    Ok(())
}

/// Measures one prefill or decode request (not `quit`): the reply's fields besides `ok`.
pub fn handle(model: &Model, seed: u64, request: &Request) -> Result<Value> {
    let cfg = &model.cfg;
    match request {
        Request::Prefill { t, mode } => {
            let mode = Mode::from_name(mode)?;
            check_slots(cfg, *t, *t)?;
            let prompt = measure::random_prompt(*t, cfg.vocab_size, seed);
            let Sample {
                seconds,
                peak_bytes,
            } = measure::prefill(model, &prompt, mode)?;
            Ok(json!({"seconds": seconds, "peak_bytes": peak_bytes}))
        }
        Request::Decode {
            batch,
            context,
            steps,
            mode,
        } => {
            let mode = Mode::from_name(mode)?;
            if *batch == 0 || *steps == 0 {
                return Err(Error::input("decode: batch and steps must be at least 1"));
            }
            check_slots(cfg, *context, context + steps)?;
            let prompts = measure::decode_prompts(cfg, *batch, *context, seed);
            let Sample {
                seconds,
                peak_bytes,
            } = measure::decode(model, &prompts, *steps, mode)?;
            Ok(json!({
                "seconds": seconds,
                "steps": steps,
                "seconds_per_step": seconds / *steps as f64,
                "peak_bytes": peak_bytes,
            }))
        }
        Request::Quit => Err(Error::input("quit is not a measurement")),
    }
}

/// Rejects an empty prompt and lengths beyond a learned position table.
fn check_slots(cfg: &ModelConfig, prompt: usize, slots: usize) -> Result<()> {
    if prompt == 0 {
        return Err(Error::input("the prompt length must be at least 1"));
    }
    match positions_exceed(cfg, slots) {
        Some(max) => Err(Error::input(format!(
            "{slots} positions exceed the model's {max} learned positions"
        ))),
        None => Ok(()),
    }
}

/// `{"ok":true, …fields}` or `{"ok":false,"error":…}` (the error on one line).
fn reply_of(result: Result<Value>) -> Value {
    match result {
        Ok(Value::Object(mut fields)) => {
            fields.insert("ok".into(), Value::Bool(true));
            Value::Object(fields)
        }
        Ok(other) => json!({"ok": true, "value": other}),
        Err(e) => json!({"ok": false, "error": e.to_string().replace('\n', " ")}),
    }
}

fn write_line(output: &mut impl Write, value: &Value) -> Result<()> {
    let written = writeln!(output, "{value}").and_then(|()| output.flush());
    written.map_err(|e| Error::input(format!("bench-serve: writing a reply: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use attnscope_core::model::random::random_model;
    use std::path::Path;

    fn tiny() -> Model {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/llama_gqa/config.json");
        let text = std::fs::read_to_string(&path).unwrap();
        random_model(ModelConfig::from_json_str(&path, &text).unwrap(), 0)
    }

    fn info() -> ServerInfo {
        ServerInfo {
            model: "tiny".into(),
            threads: 1,
            device: "cpu".into(),
            compute_dtype: "f32".into(),
            cpu: "test".into(),
        }
    }

    fn session(requests: &str) -> Vec<Value> {
        let mut out = Vec::new();
        serve(&tiny(), &info(), 0, requests.as_bytes(), &mut out).unwrap();
        String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn answers_each_request_with_one_line() {
        let replies = session(concat!(
            r#"{"op":"prefill","t":12,"mode":"stats"}"#,
            "\n\n",
            r#"{"op":"decode","batch":2,"context":5,"steps":3,"mode":"weights_all"}"#,
            "\n",
            r#"{"op":"quit"}"#,
            "\n",
            r#"{"op":"prefill","t":12,"mode":"none"}"#,
            "\n",
        ));
        assert_eq!(replies.len(), 4, "{replies:?}");
        assert_eq!(replies[0]["ready"], true);
        assert_eq!(replies[0]["engine"], "attnscope");
        assert_eq!(replies[1]["ok"], true);
        assert!(replies[1]["seconds"].as_f64().unwrap() > 0.0);
        assert_eq!(replies[2]["ok"], true);
        assert_eq!(replies[2]["steps"], 3);
        let (all, per) = (&replies[2]["seconds"], &replies[2]["seconds_per_step"]);
        assert!((all.as_f64().unwrap() / 3.0 - per.as_f64().unwrap()).abs() < 1e-12);
        assert_eq!(replies[3], json!({"ok": true}), "quit ends the session");
    }

    #[test]
    fn bad_requests_get_an_error_and_the_session_goes_on() {
        let replies = session(concat!(
            "not json\n",
            r#"{"op":"prefill","t":8,"mode":"weights"}"#,
            "\n",
            r#"{"op":"prefill","t":0,"mode":"none"}"#,
            "\n",
            r#"{"op":"decode","batch":0,"context":4,"steps":2,"mode":"none"}"#,
            "\n",
            r#"{"op":"prefill","t":8,"mode":"none","extra":1}"#,
            "\n",
            r#"{"op":"prefill","t":8,"mode":"none"}"#,
            "\n",
        ));
        assert_eq!(replies.len(), 7, "{replies:?}");
        for r in &replies[1..6] {
            assert_eq!(r["ok"], false, "{r}");
            assert!(!r["error"].as_str().unwrap().is_empty());
        }
        assert!(
            replies[2]["error"]
                .as_str()
                .unwrap()
                .contains("weights_all")
        );
        assert_eq!(replies[6]["ok"], true, "end of input after a good request");
    }
}
