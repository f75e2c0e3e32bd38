//! Issue #12's reproducers that break model files, end to end through the binary: a NaN row in the
//! embedding, random bit flips in the weights, hostile sharded indexes, tokenizer.json files that make the
//! `tokenizers` crate panic, and `inspect` on a config whose parameter count would wrap. Each gives one
//! `error:` line naming the file, tensor or field, a non-zero exit, no panic and nothing left behind (or, for
//! bit flips the model survives, a run whose statistics are all finite).

mod common;

use common::cli::{Scratch, default_model, edit_json, expect_error, read_parquet};
use common::shared;
use safetensors::SafeTensors;
use safetensors::tensor::TensorView;
use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The tensors of a safetensors file: name → (shape, f32 values).
fn read_f32(path: &Path) -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    let bytes = fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(name, v)| {
            assert_eq!(v.dtype(), safetensors::Dtype::F32, "{name}");
            let values = v
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            (name, (v.shape().to_vec(), values))
        })
        .collect()
}

/// Writes f32 tensors to a safetensors file.
fn write_f32(path: &Path, tensors: &BTreeMap<String, (Vec<usize>, Vec<f32>)>) {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(n, (shape, v))| {
            let data = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            (n.clone(), shape.clone(), data)
        })
        .collect();
    let views: Vec<(String, TensorView<'_>)> = bytes
        .iter()
        .map(|(n, shape, data)| {
            let view = TensorView::new(safetensors::Dtype::F32, shape.clone(), data).unwrap();
            (n.clone(), view)
        })
        .collect();
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    fs::write(path, safetensors::serialize(views, Some(metadata)).unwrap()).unwrap();
}

/// `attnscope run --prompt …` on `model`, killed after 60 s so that a hang fails instead of blocking.
fn run_cmd(s: &Scratch, model: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new("timeout");
    cmd.arg("60")
        .arg(env!("CARGO_BIN_EXE_attnscope"))
        .current_dir(s.root())
        .arg("run")
        .arg("--out")
        .arg(s.out())
        .arg("--model")
        .arg(model)
        .args(["--prompt", "Once upon a time there was a cat"])
        .args(extra);
    cmd
}

/// `attnscope inspect MODEL`, killed after 60 s.
fn inspect_cmd(model: &Path) -> Command {
    let mut cmd = Command::new("timeout");
    cmd.arg("60")
        .arg(env!("CARGO_BIN_EXE_attnscope"))
        .arg("inspect")
        .arg(model);
    cmd
}

#[test]
fn nan_or_inf_in_the_embedding_names_the_tensor() {
    for bad in [f32::NAN, f32::INFINITY] {
        let s = Scratch::new();
        let model = s.model_copy(&default_model());
        let file = model.join("model.safetensors");
        let mut tensors = read_f32(&file);
        let (shape, values) = tensors.get_mut("model.embed_tokens.weight").unwrap();
        let row = 7 * shape[1];
        values[row..row + shape[1]].fill(bad);
        write_f32(&file, &tensors);
        expect_error(
            run_cmd(&s, &model, &[]),
            &s.outs(),
            &["model.safetensors", "model.embed_tokens.weight"],
        );
    }
}

/// Random bit flips anywhere in the tensor data: the run either fails with one error line naming a file
/// (a NaN/Inf weight, an overflowed pass) or succeeds with every statistic finite — never a silent NaN.
#[test]
fn bit_flipped_weights_fail_by_name_or_give_finite_statistics() {
    let (mut failed, mut survived) = (0, 0);
    for seed in 1..=12u64 {
        let s = Scratch::new();
        let model = s.model_copy(&default_model());
        let file = model.join("model.safetensors");
        let mut bytes = fs::read(&file).unwrap();
        let header = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        // The engine's seeded generator, so that the flips are the same on every run.
        let mut rng = attnscope_core::rng::Rng::new(seed);
        for _ in 0..64 {
            let i = header + rng.below((bytes.len() - header) as u64) as usize;
            bytes[i] ^= 1 << rng.below(8);
        }
        fs::write(&file, &bytes).unwrap();
        let mut cmd = run_cmd(&s, &model, &["--generate", "3", "--capture", "stats"]);
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "seed {seed}: {stderr}");
        if out.status.success() {
            survived += 1;
            for row in read_parquet(&s.out().join("stats.parquet")) {
                let v = common::cli::float(&row, "value");
                assert!(
                    v.is_finite(),
                    "seed {seed}: a non-finite statistic was written"
                );
            }
        } else {
            failed += 1;
            expect_error(
                run_cmd(&s, &model, &["--generate", "3", "--capture", "stats"]),
                &s.outs(),
                &["error: "],
            );
        }
    }
    eprintln!("bit flips: {failed} runs refused, {survived} ran with finite statistics");
}

/// The default model split into two shards with an index; returns the directory.
fn sharded(s: &Scratch) -> PathBuf {
    let model = s.model_copy(&default_model());
    let file = model.join("model.safetensors");
    let tensors = read_f32(&file);
    fs::remove_file(&file).unwrap();
    let (mut a, mut b) = (BTreeMap::new(), BTreeMap::new());
    let mut map = serde_json::Map::new();
    for (i, (name, t)) in tensors.into_iter().enumerate() {
        let shard = if i % 2 == 0 {
            "part-1.safetensors"
        } else {
            "part-2.safetensors"
        };
        map.insert(name.clone(), shard.into());
        if i % 2 == 0 { &mut a } else { &mut b }.insert(name, t);
    }
    write_f32(&model.join("part-1.safetensors"), &a);
    write_f32(&model.join("part-2.safetensors"), &b);
    let index = serde_json::json!({"metadata": {}, "weight_map": map});
    fs::write(
        model.join("model.safetensors.index.json"),
        index.to_string(),
    )
    .unwrap();
    model
}

const EMBED: &str = "model.embed_tokens.weight";

#[test]
fn a_clean_sharded_copy_runs() {
    let s = Scratch::new();
    let model = sharded(&s);
    let out = run_cmd(&s, &model, &[]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn hostile_index_paths_are_refused_by_run_and_inspect() {
    let fifo_ok = |dir: &Path| {
        Command::new("mkfifo")
            .arg(dir.join("pipe.safetensors"))
            .status()
            .is_ok_and(|s| s.success())
    };
    let cases: [(&str, &str); 4] = [
        ("/etc/passwd", "absolute"),
        ("../part-1.safetensors", ".."),
        ("pipe.safetensors", "regular file"),
        ("sub", "regular file"),
    ];
    for (target, needle) in cases {
        let s = Scratch::new();
        let model = sharded(&s);
        if target == "pipe.safetensors" && !fifo_ok(&model) {
            println!("SKIP: FIFO case (mkfifo failed)");
            continue;
        }
        if target == "sub" {
            fs::create_dir(model.join("sub")).unwrap();
        }
        edit_json(&model.join("model.safetensors.index.json"), |v| {
            v["weight_map"][EMBED] = target.into();
        });
        let line = expect_error(run_cmd(&s, &model, &[]), &s.outs(), &["index.json", target]);
        assert!(line.contains(needle), "{line}");
        let line = expect_error(inspect_cmd(&model), &s.outs(), &["index.json", target]);
        assert!(line.contains(needle), "{line}");
    }
}

#[test]
fn a_tensor_in_two_shards_or_missing_from_its_shard_is_named_with_the_files() {
    // In both shards: part-2 gets a copy of the embedding that part-1 holds.
    let s = Scratch::new();
    let model = sharded(&s);
    let mut part2 = read_f32(&model.join("part-2.safetensors"));
    let part1 = read_f32(&model.join("part-1.safetensors"));
    let embed = part1.get(EMBED).cloned().unwrap();
    part2.insert(EMBED.to_string(), embed);
    write_f32(&model.join("part-2.safetensors"), &part2);
    let line = expect_error(run_cmd(&s, &model, &[]), &s.outs(), &[EMBED]);
    assert!(
        line.contains("part-1.safetensors") && line.contains("part-2.safetensors"),
        "{line}"
    );

    // Named in the index for a shard that does not hold it.
    let s = Scratch::new();
    let model = sharded(&s);
    edit_json(&model.join("model.safetensors.index.json"), |v| {
        v["weight_map"][EMBED] = "part-2.safetensors".into();
    });
    expect_error(
        run_cmd(&s, &model, &[]),
        &s.outs(),
        &[EMBED, "part-2.safetensors"],
    );
}

#[test]
fn inspect_refuses_a_parameter_count_that_would_wrap() {
    let s = Scratch::new();
    let model = s.model_copy(&default_model());
    edit_json(&model.join("config.json"), |v| {
        v["num_hidden_layers"] = (1u64 << 62).into();
        v["hidden_size"] = (1u64 << 40).into();
    });
    expect_error(inspect_cmd(&model), &s.outs(), &["config.json", "maximum"]);
}

/// stories260K with its tokenizer.json edited or replaced by `bytes`; `None` (after SKIP) without the data.
fn stories_with_tokenizer(s: &Scratch, bytes: &[u8]) -> Option<PathBuf> {
    let src = shared("models/stories260K")?.join("models/stories260K");
    let model = s.model_copy(&src);
    fs::write(model.join("tokenizer.json"), bytes).unwrap();
    Some(model)
}

#[test]
fn tokenizer_files_that_make_tokenizers_panic_give_one_error_line() {
    let Some(src) = shared("models/stories260K").map(|d| d.join("models/stories260K")) else {
        return;
    };
    let text = fs::read(src.join("tokenizer.json")).unwrap();
    // Truncated anywhere in the span where `tokenizers` panicked: one line naming tokenizer.json.
    let mut panicked = 0;
    for cut in (1440..1710).step_by(15) {
        let s = Scratch::new();
        let model = stories_with_tokenizer(&s, &text[..cut]).unwrap();
        let line = expect_error(run_cmd(&s, &model, &[]), &s.outs(), &["tokenizer.json"]);
        panicked += usize::from(line.contains("panicked"));
    }
    eprintln!("{panicked} truncations reached the tokenizers crate's panic (caught)");

    // A template post-processor without its special token.
    let mut v: serde_json::Value = serde_json::from_slice(&text).unwrap();
    v["post_processor"]["special_tokens"] = serde_json::json!({});
    let s = Scratch::new();
    let model = stories_with_tokenizer(&s, v.to_string().as_bytes()).unwrap();
    expect_error(run_cmd(&s, &model, &[]), &s.outs(), &["tokenizer.json"]);

    // A `Replace` decoder with an empty pattern: runs, or fails by name; never panics.
    for pattern in [
        serde_json::json!({"String": ""}),
        serde_json::json!({"Regex": ""}),
    ] {
        let mut v: serde_json::Value = serde_json::from_slice(&text).unwrap();
        v["decoder"]["decoders"][0]["pattern"] = pattern;
        let s = Scratch::new();
        let model = stories_with_tokenizer(&s, v.to_string().as_bytes()).unwrap();
        let out = run_cmd(&s, &model, &["--generate", "4"]).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked at"), "{stderr}");
        if !out.status.success() {
            expect_error(
                run_cmd(&s, &model, &["--generate", "4"]),
                &s.outs(),
                &["tokenizer.json"],
            );
        }
    }
}
