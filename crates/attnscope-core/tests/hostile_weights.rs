//! Hostile checkpoints (issue #12): shard indexes that point outside the model directory or at files that
//! are not regular, tensors in two shards or missing from theirs, NaN/Inf values and tensors the config
//! does not use. Every case must be one error line naming the file and the tensor, and none may hang.

use attnscope_core::config::ModelConfig;
use attnscope_core::weights::{
    LoadOptions, StorageDtype, inspect_weights, load_weights, load_weights_with,
};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use std::path::Path;
use std::time::Duration;

/// A tensor to write: name, shape, f32 values.
type T = (&'static str, Vec<usize>, Vec<f32>);

fn write_f32(path: &Path, tensors: &[T]) {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(n, s, v)| {
            let b = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            (n.to_string(), s.clone(), b)
        })
        .collect();
    let views: Vec<(String, TensorView)> = bytes
        .iter()
        .map(|(n, s, b)| {
            (
                n.clone(),
                TensorView::new(Dtype::F32, s.clone(), b).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

fn write_index(dir: &Path, entries: &[(&str, &str)]) {
    let map: serde_json::Map<String, serde_json::Value> = entries
        .iter()
        .map(|(n, f)| (n.to_string(), serde_json::Value::String(f.to_string())))
        .collect();
    let index = serde_json::json!({"metadata": {}, "weight_map": map});
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
}

fn small(name: &'static str) -> T {
    (name, vec![2], vec![1.0, 2.0])
}

/// `inspect_weights` on another thread; fails the test instead of hanging (a FIFO opened for reading
/// blocks until a writer appears).
fn inspect_err(dir: &Path) -> String {
    let dir = dir.to_path_buf();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(inspect_weights(&dir).map(|_| ()).map_err(|e| e.to_string()));
    });
    let res = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("inspect_weights hung (opened a FIFO?)");
    let msg = res.expect_err("hostile checkpoint accepted");
    assert!(!msg.contains('\n'), "not one line: {msg}");
    msg
}

#[test]
fn index_with_absolute_path_is_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let abs = outside.path().join("a.safetensors");
    write_f32(&abs, &[small("a")]);
    write_index(tmp.path(), &[("a", abs.to_str().unwrap())]);
    let msg = inspect_err(tmp.path());
    assert!(msg.contains("model.safetensors.index.json"), "{msg}");
    assert!(msg.contains("weight_map.a"), "{msg}");
    assert!(msg.contains("absolute"), "{msg}");
}

#[test]
fn index_with_parent_dir_is_rejected() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("model");
    std::fs::create_dir(&dir).unwrap();
    write_f32(&root.path().join("a.safetensors"), &[small("a")]);
    write_index(&dir, &[("a", "../a.safetensors")]);
    let msg = inspect_err(&dir);
    assert!(msg.contains("weight_map.a"), "{msg}");
    assert!(msg.contains("`..`"), "{msg}");
    write_index(&dir, &[("a", "sub/../../a.safetensors")]);
    assert!(inspect_err(&dir).contains("`..`"));
}

#[cfg(unix)]
#[test]
fn index_symlink_outside_the_model_dir_is_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    write_f32(&outside.path().join("a.safetensors"), &[small("a")]);
    std::os::unix::fs::symlink(
        outside.path().join("a.safetensors"),
        tmp.path().join("a.safetensors"),
    )
    .unwrap();
    write_index(tmp.path(), &[("a", "a.safetensors")]);
    let msg = inspect_err(tmp.path());
    assert!(msg.contains("weight_map.a"), "{msg}");
    assert!(msg.contains("outside the model directory"), "{msg}");
    // A symlink that stays inside is fine.
    write_f32(&tmp.path().join("real.safetensors"), &[small("a")]);
    std::fs::remove_file(tmp.path().join("a.safetensors")).unwrap();
    std::os::unix::fs::symlink("real.safetensors", tmp.path().join("a.safetensors")).unwrap();
    inspect_weights(tmp.path()).unwrap();
}

#[cfg(target_os = "linux")]
#[test]
fn index_naming_a_fifo_or_directory_fails_without_hanging() {
    let tmp = tempfile::tempdir().unwrap();
    let fifo = tmp.path().join("f.safetensors");
    let ok = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        eprintln!("SKIP: mkfifo unavailable");
        return;
    }
    write_index(tmp.path(), &[("a", "f.safetensors")]);
    let msg = inspect_err(tmp.path());
    assert!(msg.contains("weight_map.a"), "{msg}");
    assert!(msg.contains("FIFO"), "{msg}");
    // The single-file layout too.
    std::fs::remove_file(tmp.path().join("model.safetensors.index.json")).unwrap();
    std::fs::rename(&fifo, tmp.path().join("model.safetensors")).unwrap();
    let msg = inspect_err(tmp.path());
    assert!(
        msg.contains("model.safetensors") && msg.contains("FIFO"),
        "{msg}"
    );
    // A directory.
    std::fs::remove_file(tmp.path().join("model.safetensors")).unwrap();
    std::fs::create_dir(tmp.path().join("d.safetensors")).unwrap();
    write_index(tmp.path(), &[("a", "d.safetensors")]);
    let msg = inspect_err(tmp.path());
    assert!(msg.contains("a directory"), "{msg}");
}

#[test]
fn tensor_in_two_shards_names_tensor_and_both_files() {
    let tmp = tempfile::tempdir().unwrap();
    write_f32(&tmp.path().join("s1.safetensors"), &[small("a")]);
    write_f32(
        &tmp.path().join("s2.safetensors"),
        &[small("a"), small("b")],
    );
    write_index(
        tmp.path(),
        &[("a", "s1.safetensors"), ("b", "s2.safetensors")],
    );
    let msg = inspect_err(tmp.path());
    assert!(msg.contains("`a`"), "{msg}");
    assert!(
        msg.contains("s1.safetensors") && msg.contains("s2.safetensors"),
        "{msg}"
    );
}

#[test]
fn tensor_missing_from_its_named_shard_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    write_f32(&tmp.path().join("s1.safetensors"), &[small("a")]);
    write_f32(&tmp.path().join("s2.safetensors"), &[small("c")]);
    write_index(
        tmp.path(),
        &[
            ("a", "s1.safetensors"),
            ("b", "s1.safetensors"),
            ("c", "s2.safetensors"),
        ],
    );
    let msg = inspect_err(tmp.path());
    assert!(
        msg.contains("`b`") && msg.contains("s1.safetensors"),
        "{msg}"
    );
    assert!(msg.contains("missing"), "{msg}");
    // Present, but in another shard than the index says: the index's shard is the one read, so an error.
    write_f32(
        &tmp.path().join("s2.safetensors"),
        &[small("b"), small("c")],
    );
    let msg = inspect_err(tmp.path());
    assert!(
        msg.contains("`b`") && msg.contains("s1.safetensors"),
        "{msg}"
    );
    assert!(msg.contains("s2.safetensors"), "{msg}");
}

#[test]
fn truncated_shard_names_the_tensor() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("model.safetensors");
    write_f32(
        &path,
        &[
            ("a", vec![4], vec![1.0; 4]),
            ("zz", vec![64], vec![0.5; 64]),
        ],
    );
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 10]).unwrap();
    let msg = inspect_err(tmp.path());
    assert!(msg.contains("model.safetensors"), "{msg}");
    assert!(msg.contains("`zz`") && msg.contains("truncated"), "{msg}");
}

const LLAMA: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/fixtures/llama_gqa"
);

/// The llama_gqa fixture copied into a tempdir with its tensors passed through `edit` (which may
/// change values) plus `extra` tensors.
fn llama_copy(edit: impl Fn(&str, &mut Vec<f32>), extra: &[T]) -> (tempfile::TempDir, ModelConfig) {
    let src = Path::new(LLAMA);
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(src.join("config.json"), tmp.path().join("config.json")).unwrap();
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut owned: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
    for (name, view) in st.tensors() {
        assert_eq!(view.dtype(), Dtype::F32);
        let mut v: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        edit(&name, &mut v);
        owned.push((name, view.shape().to_vec(), v));
    }
    for (n, s, v) in extra {
        owned.push((n.to_string(), s.clone(), v.clone()));
    }
    let leaked: Vec<T> = owned
        .into_iter()
        .map(|(n, s, v)| (&*Box::leak(n.into_boxed_str()), s, v))
        .collect();
    write_f32(&tmp.path().join("model.safetensors"), &leaked);
    let cfg = ModelConfig::from_dir(tmp.path()).unwrap();
    (tmp, cfg)
}

const UP: &str = "model.layers.1.mlp.up_proj.weight";
const NORM: &str = "model.layers.0.input_layernorm.weight";

#[test]
fn clean_fixture_loads_without_warnings() {
    let (tmp, cfg) = llama_copy(|_, _| {}, &[]);
    let (_, _, warnings) =
        load_weights_with(tmp.path(), &cfg, StorageDtype::F32, LoadOptions::default()).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
}

#[test]
fn nan_or_inf_in_a_tensor_is_rejected_with_its_name() {
    for storage in [StorageDtype::F32, StorageDtype::Bf16, StorageDtype::F16] {
        let (tmp, cfg) = llama_copy(
            |n, v| {
                if n == UP {
                    v[7] = f32::NAN;
                    v[9] = f32::INFINITY;
                }
            },
            &[],
        );
        let msg = load_weights(tmp.path(), &cfg, storage)
            .expect_err("NaN accepted")
            .to_string();
        assert!(
            msg.contains(UP) && msg.contains("model.safetensors"),
            "{msg}"
        );
        assert!(
            msg.contains("2 non-finite") && msg.contains("index 7"),
            "{msg}"
        );
    }
    // A norm (read as f32, not as a matrix).
    let (tmp, cfg) = llama_copy(
        |n, v| {
            if n == NORM {
                v[3] = f32::NEG_INFINITY
            }
        },
        &[],
    );
    let msg = load_weights(tmp.path(), &cfg, StorageDtype::F32)
        .err()
        .unwrap()
        .to_string();
    assert!(msg.contains(NORM) && msg.contains("index 3"), "{msg}");
}

#[test]
fn unused_tensor_is_an_error_unless_allowed() {
    let extra = [
        ("model.layers.0.extra_proj.weight", vec![2], vec![1.0, 2.0]),
        (
            "model.layers.0.self_attn.rotary_emb.inv_freq",
            vec![2],
            vec![1.0, 0.5],
        ),
    ];
    let (tmp, cfg) = llama_copy(|_, _| {}, &extra);
    let msg = load_weights(tmp.path(), &cfg, StorageDtype::F32)
        .expect_err("unused accepted")
        .to_string();
    assert!(msg.contains("model.safetensors"), "{msg}");
    assert!(
        msg.contains("1 tensor(s)") && msg.contains("`model.layers.0.extra_proj.weight`"),
        "{msg}"
    );
    assert!(!msg.contains("inv_freq"), "benign buffer reported: {msg}");
    let opts = LoadOptions { allow_unused: true };
    let (_, _, warnings) = load_weights_with(tmp.path(), &cfg, StorageDtype::F32, opts).unwrap();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("extra_proj"), "{warnings:?}");
}

#[test]
fn many_unused_tensors_are_counted() {
    let extra: Vec<T> = ["x.a", "x.b", "x.c", "x.d", "x.e", "x.f", "x.g"]
        .into_iter()
        .map(small)
        .collect();
    let (tmp, cfg) = llama_copy(|_, _| {}, &extra);
    let msg = load_weights(tmp.path(), &cfg, StorageDtype::F32)
        .err()
        .unwrap()
        .to_string();
    assert!(
        msg.contains("7 tensor(s)") && msg.contains("(and 2 more)"),
        "{msg}"
    );
}

/// The Hugging Face hub cache stores a snapshot's files as symlinks to `../../blobs/<hash>`: a model
/// directory that is such a snapshot may read its shards from there, but nothing else outside.
#[cfg(unix)]
#[test]
fn hf_cache_snapshot_symlinks_into_blobs_are_allowed() {
    let repo = tempfile::tempdir().unwrap();
    let blobs = repo.path().join("blobs");
    let snap = repo.path().join("snapshots").join("abc123");
    std::fs::create_dir_all(&blobs).unwrap();
    std::fs::create_dir_all(&snap).unwrap();
    write_f32(&blobs.join("0f1e"), &[small("a")]);
    std::os::unix::fs::symlink("../../blobs/0f1e", snap.join("s1.safetensors")).unwrap();
    write_index(&snap, &[("a", "s1.safetensors")]);
    inspect_weights(&snap).unwrap();
    // A sibling of blobs/ is still outside.
    write_f32(&repo.path().join("other.safetensors"), &[small("a")]);
    std::fs::remove_file(snap.join("s1.safetensors")).unwrap();
    std::os::unix::fs::symlink("../../other.safetensors", snap.join("s1.safetensors")).unwrap();
    assert!(inspect_err(&snap).contains("outside the model directory"));
}
