//! Memory and speed of bf16/f16 weight storage on the CPU against f32, from a real safetensors checkpoint.
//!
//!   weight_storage write DIR [SHAPE]   random weights of a named llama-like shape (default llama-100m)
//!                                      written to DIR as a bf16 checkpoint (config.json + model.safetensors)
//!   weight_storage load DIR DTYPE [time]  loads DIR with DTYPE (f32, bf16, f16) storage, prints the peak RSS
//!                                      and the anonymous / file-backed RSS after loading; with `time`, the
//!                                      prefill (T = 128, 512) and decode (batch 1, context 64, 32 steps)
//!                                      times, medians of 5
//!
//! Run each `load` in its own process (the peak is the process's), alternating the dtypes.

use attnscope_core::config::ModelConfig;
use attnscope_core::model::random::{named_config_json, random_weights};
use attnscope_core::model::{LogitRows, Model};
use attnscope_core::slots::{SlotInfo, Visibility};
use attnscope_core::weights::{Linear, StorageDtype};
use safetensors::Dtype;
use safetensors::tensor::TensorView;
use std::path::Path;
use std::time::Instant;

type Error = Box<dyn std::error::Error>;

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["write", dir, ref rest @ ..] => write(
            Path::new(dir),
            rest.first().copied().unwrap_or("llama-100m"),
        ),
        ["load", dir, dtype, ref rest @ ..] => {
            load(Path::new(dir), dtype, rest.first() == Some(&"time"))
        }
        _ => Err("usage: weight_storage write DIR [SHAPE] | load DIR f32|bf16|f16 [time]".into()),
    }
}

/// bf16 bytes of f32 values.
fn bf16_bytes(values: &[f32]) -> Vec<u8> {
    values
        .iter()
        .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
        .collect()
}

fn write(dir: &Path, shape: &str) -> Result<(), Error> {
    let json = named_config_json(shape)?;
    let cfg = ModelConfig::from_json_str(Path::new(shape), json)?;
    let w = random_weights(&cfg, 7);
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    let lin = |out: &mut Vec<(String, Vec<usize>, Vec<u8>)>, name: String, l: &Linear| {
        out.push((
            name,
            vec![l.out_dim, l.in_dim],
            bf16_bytes(&l.weight.to_f32()),
        ));
    };
    let h = cfg.hidden_size;
    tensors.push((
        "model.embed_tokens.weight".into(),
        vec![cfg.vocab_size, h],
        bf16_bytes(&w.embed.to_f32()),
    ));
    for (i, l) in w.layers.iter().enumerate() {
        let p = format!("model.layers.{i}");
        tensors.push((
            format!("{p}.input_layernorm.weight"),
            vec![h],
            bf16_bytes(&l.attn_norm.weight),
        ));
        tensors.push((
            format!("{p}.post_attention_layernorm.weight"),
            vec![h],
            bf16_bytes(&l.mlp_norm.weight),
        ));
        for (n, x) in [("q", &l.q), ("k", &l.k), ("v", &l.v), ("o", &l.o)] {
            lin(&mut tensors, format!("{p}.self_attn.{n}_proj.weight"), x);
        }
        for (n, x) in [
            ("gate", l.gate.as_ref()),
            ("up", Some(&l.up)),
            ("down", Some(&l.down)),
        ] {
            if let Some(x) = x {
                lin(&mut tensors, format!("{p}.mlp.{n}_proj.weight"), x);
            }
        }
    }
    tensors.push((
        "model.norm.weight".into(),
        vec![h],
        bf16_bytes(&w.final_norm.weight),
    ));
    if let Some(head) = &w.lm_head {
        lin(&mut tensors, "lm_head.weight".into(), head);
    }
    drop(w);
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("config.json"), json)?;
    let views = tensors
        .iter()
        .map(|(n, s, b)| Ok((n.clone(), TensorView::new(Dtype::BF16, s.clone(), b)?)))
        .collect::<Result<Vec<_>, Error>>()?;
    safetensors::serialize_to_file(views, None, &dir.join("model.safetensors"))?;
    let bytes: usize = tensors.iter().map(|t| t.2.len()).sum();
    println!(
        "wrote {} ({} tensors, {:.1} MB bf16)",
        dir.display(),
        tensors.len(),
        bytes as f64 / 1e6
    );
    Ok(())
}

/// A field of /proc/self/status in MB.
fn status_mb(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn load(dir: &Path, dtype: &str, time: bool) -> Result<(), Error> {
    let storage = match dtype {
        "f32" => StorageDtype::F32,
        "bf16" => StorageDtype::Bf16,
        "f16" => StorageDtype::F16,
        other => return Err(format!("unknown dtype {other}").into()),
    };
    // The kernel keeps no peak of the anonymous RSS alone (VmHWM also counts the checkpoint's mapped file
    // pages, which are clean and reclaimable): a thread samples it every 2 ms while loading.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut peak = 0.0f64;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(status_mb("RssAnon:"));
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            peak
        })
    };
    let start = Instant::now();
    let model = Model::load_as(dir, storage)?;
    let seconds = start.elapsed().as_secs_f64();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let peak_anon = sampler.join().unwrap_or(f64::NAN);
    println!(
        "{dtype}: loaded in {seconds:.2} s ({}); peak RSS {:.0} MB, peak RssAnon {peak_anon:.0} MB (sampled); \
         after loading RssAnon {:.0} MB, RssFile {:.0} MB",
        model.device().dtype,
        status_mb("VmHWM:"),
        status_mb("RssAnon:"),
        status_mb("RssFile:")
    );
    if !time {
        return Ok(());
    }
    let vocab = model.cfg.vocab_size as u32;
    let prompt = |n: usize| -> Vec<SlotInfo> {
        (0..n)
            .map(|i| SlotInfo::prompt((i as u32 * 7 + 3) % vocab, i as i64, -1))
            .collect()
    };
    for t in [128usize, 512] {
        let mut ms = Vec::new();
        for round in 0..6 {
            let mut cache = model.new_cache(t, Visibility::Visible)?;
            let s = Instant::now();
            model.forward(&mut cache, &prompt(t), None, LogitRows::Last)?;
            if round > 0 {
                ms.push(s.elapsed().as_secs_f64() * 1e3);
            }
        }
        println!("{dtype}: prefill T={t}: {:.1} ms (median of 5)", median(ms));
    }
    let (ctx, steps) = (64usize, 32usize);
    let mut per_step = Vec::new();
    let mut logits = Vec::new();
    for round in 0..6 {
        let mut cache = model.new_cache(ctx + steps, Visibility::Visible)?;
        model.forward_into(&mut cache, &prompt(ctx), None, LogitRows::Last, &mut logits)?;
        let s = Instant::now();
        for i in 0..steps {
            let slot = [SlotInfo::prompt(
                (i as u32 * 13 + 1) % vocab,
                (ctx + i) as i64,
                -1,
            )];
            model.forward_into(&mut cache, &slot, None, LogitRows::Last, &mut logits)?;
        }
        if round > 0 {
            per_step.push(s.elapsed().as_secs_f64() * 1e3 / steps as f64);
        }
    }
    let ms = median(per_step);
    println!(
        "{dtype}: decode batch 1, context {ctx}: {ms:.2} ms/step = {:.1} tok/s (median of 5)",
        1e3 / ms
    );
    println!("{dtype}: peak RSS at the end {:.0} MB", status_mb("VmHWM:"));
    Ok(())
}
