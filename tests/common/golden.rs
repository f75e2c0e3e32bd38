//! The Hugging Face golden checks shared by tests/golden_hf.rs (CPU) and tests/gpu_model.rs (GPU): every
//! fixture in tests/fixtures and stories260K in ../shared, each case as one prefill and step by step through
//! the KV cache, plus the greedy continuation. `place` moves a freshly loaded model to its device.

use super::*;
use attnscope_core::model::Model;
use attnscope_core::slots::Visibility;
use serde_json::Value;

/// Tolerances of one backend: attention max abs error, logits max abs error (`None`: logits not compared).
#[derive(Clone, Copy, Debug)]
pub struct Tolerance {
    pub attention: f32,
    pub logits: Option<f32>,
}

pub fn visibility(s: &str) -> Visibility {
    match s {
        "visible" => Visibility::Visible,
        "isolated" => Visibility::Isolated,
        other => panic!("bad visibility {other}"),
    }
}

pub fn ints<T: TryFrom<i64>>(v: &Value) -> Vec<T>
where
    T::Error: std::fmt::Debug,
{
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| T::try_from(x.as_i64().unwrap()).unwrap())
        .collect()
}

/// Compares logits and every layer's attention of one case, in one prefill and stepwise through the cache;
/// returns the largest attention and logits differences seen.
pub fn check_case(
    model: &Model,
    case: &Case,
    gold: &std::collections::HashMap<String, (Vec<usize>, Vec<f32>)>,
    prefix: &str,
    label: &str,
    tol: Tolerance,
) -> (f32, f32) {
    let spec = full_spec();
    let t = case.ids.len();
    let (mut worst_attn, mut worst_logits) = (0.0f32, 0.0f32);
    for (mode, run) in [
        ("prefill", prefill(model, case, &spec)),
        ("stepwise", stepwise(model, case, &spec)),
    ] {
        let (_, want_logits) = &gold[&format!("{prefix}logits")];
        let d = max_abs_diff(&run.logits, want_logits);
        worst_logits = worst_logits.max(d);
        if let Some(lt) = tol.logits {
            assert!(d <= lt, "{label} {mode}: logits max abs diff {d}");
        }
        for l in 0..model.cfg.n_layers {
            let (shape, want) = &gold[&format!("{prefix}attn.{l}")];
            assert_eq!(
                shape,
                &vec![model.cfg.n_heads, t, t],
                "{label}: golden attn shape"
            );
            for h in 0..model.cfg.n_heads {
                let got = head_weights(&run.capture, l, h);
                let d = max_abs_diff(&got, &want[h * t * t..(h + 1) * t * t]);
                worst_attn = worst_attn.max(d);
                assert!(
                    d <= tol.attention,
                    "{label} {mode}: layer {l} head {h}: attention max abs diff {d}"
                );
            }
        }
    }
    (worst_attn, worst_logits)
}

/// Checks every committed fixture; `place` puts each loaded model on its device.
pub fn check_fixtures(place: &dyn Fn(&mut Model), tol: Tolerance) {
    let root = repo().join("tests/fixtures");
    let mut checked = 0;
    let mut dirs: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("golden.json").exists())
        .collect();
    dirs.sort();
    assert!(
        dirs.len() >= 10,
        "expected the committed fixtures, found {}",
        dirs.len()
    );
    for dir in dirs {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let mut model = Model::load(&dir).unwrap_or_else(|e| panic!("{name}: {e}"));
        place(&mut model);
        let golden: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("golden.json")).unwrap())
                .unwrap();
        let gold = read_tensors(&dir.join("golden.safetensors"));
        let (mut worst_attn, mut worst_logits) = (0.0f32, 0.0f32);
        for c in golden["cases"].as_array().unwrap() {
            let case = Case {
                name: c["name"].as_str().unwrap().to_string(),
                ids: ints(&c["input_ids"]),
                positions: ints(&c["position_ids"]),
                groups: ints(&c["groups"]),
                visibility: visibility(c["visibility"].as_str().unwrap()),
            };
            let (a, l) = check_case(
                &model,
                &case,
                &gold,
                &format!("{}.", case.name),
                &format!("{name}/{}", case.name),
                tol,
            );
            worst_attn = worst_attn.max(a);
            worst_logits = worst_logits.max(l);
        }
        let prompt: Vec<u32> = ints(&golden["greedy"]["input_ids"]);
        let want: Vec<u32> = ints(&golden["greedy"]["greedy_ids"]);
        assert_eq!(
            greedy(&model, &prompt, want.len()),
            want,
            "{name}: greedy tokens"
        );
        eprintln!(
            "ok: {name} ({} cases + greedy; max abs diff: attention {worst_attn:.2e}, logits {worst_logits:.2e})",
            golden["cases"].as_array().unwrap().len()
        );
        checked += 1;
    }
    assert!(checked >= 10);
}

/// Checks stories260K from ../shared (SKIP when absent); `place` puts the model on its device.
pub fn check_stories260k(place: &dyn Fn(&mut Model), tol: Tolerance) {
    let Some(shared) = shared("golden/stories260K.json") else {
        return;
    };
    let mut model = Model::load(&shared.join("models/stories260K")).unwrap();
    place(&mut model);
    let golden: Value = serde_json::from_str(
        &std::fs::read_to_string(shared.join("golden/stories260K.json")).unwrap(),
    )
    .unwrap();
    let gold = read_tensors(&shared.join("golden/stories260K.safetensors"));
    let ids: Vec<u32> = ints(&golden["input_ids"]);
    let t = ids.len();
    let plain = Case {
        name: "plain".into(),
        ids: ids.clone(),
        positions: (0..t as i64).collect(),
        groups: vec![-1; t],
        visibility: Visibility::Visible,
    };
    let (mut worst_attn, mut worst_logits) =
        check_case(&model, &plain, &gold, "", "stories260K/plain", tol);
    for mode in ["visible", "isolated"] {
        let case = Case {
            name: format!("par_{mode}"),
            ids: ids.clone(),
            positions: ints(&golden["parallel"]["position_ids"]),
            groups: ints(&golden["parallel"]["groups"]),
            visibility: visibility(mode),
        };
        let (a, l) = check_case(
            &model,
            &case,
            &gold,
            &format!("par_{mode}."),
            &format!("stories260K/par_{mode}"),
            tol,
        );
        worst_attn = worst_attn.max(a);
        worst_logits = worst_logits.max(l);
    }
    let (_, want) = &gold["greedy_ids"];
    let want: Vec<u32> = want.iter().map(|&x| x as u32).collect();
    let got = greedy(&model, &ids, want.len());
    assert_eq!(got, want, "stories260K greedy continuation");
    eprintln!(
        "ok: stories260K (plain, par_visible, par_isolated + greedy; max abs diff: attention {worst_attn:.2e}, logits {worst_logits:.2e})"
    );
}
