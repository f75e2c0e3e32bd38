//! `attnscope ablate`: alter the K/V of chosen slots at chosen layers and report the change in
//! log-probability of target tokens (given, or the model's own greedy continuation).

use crate::cli::{AblateArgs, AblationModeArg, model_dir};
use attnscope_core::Error;
use attnscope_core::Result;
use attnscope_core::capture::CaptureSpec;
use attnscope_core::input::{InputSpec, SequenceInput};
use attnscope_core::model::Model;
use attnscope_core::run::ablation::{Ablation, AblationMode, score_targets};
use attnscope_core::run::{GenerateOptions, check_fits, run_sequence};
use attnscope_core::tokenizer::TextTokenizer;
use attnscope_io::{ColumnData, RunDir, Table, write_json, write_parquet};

/// Runs `ablate`.
pub fn ablate(args: AblateArgs) -> Result<()> {
    let device = attnscope_cuda::DeviceRequest::parse(&args.device)?;
    let dtype = attnscope_cuda::GpuDtype::parse(&args.dtype)?;
    let dir = model_dir(args.model.clone(), false);
    let mut model = Model::load(&dir)?;
    let placement = attnscope_job::place(&mut model, device, dtype)?;
    if let Some(note) = &placement.note {
        eprintln!("note: running on the CPU: {note}");
    }
    let tok = TextTokenizer::from_dir(&dir)?;
    let need_tok = || {
        tok.as_ref().ok_or_else(|| {
            Error::tokenizer(
                &dir,
                "no tokenizer in the model directory; use --input and --target-ids",
            )
        })
    };
    let prompt = match (&args.prompt, &args.input) {
        (Some(text), None) => SequenceInput::from_tokens(need_tok()?.encode(text)?),
        (None, Some(path)) => {
            let mut spec = InputSpec::from_file(path)?;
            if spec.sequences.len() != 1 {
                return Err(Error::input(format!(
                    "{}: ablate takes exactly one sequence",
                    path.display()
                )));
            }
            spec.sequences.remove(0)
        }
        _ => {
            return Err(Error::input(
                "give exactly one of --prompt TEXT or --input FILE.json",
            ));
        }
    };
    let n = prompt.token_ids.len();
    let slots = CaptureSpec::parse_indices("--slots", &args.slots, n)?;
    let layers = match &args.ablate_layers {
        Some(s) => CaptureSpec::parse_indices("--ablate-layers", s, model.cfg.n_layers)?,
        None => (0..model.cfg.n_layers).collect(),
    };
    let mode = match (args.mode, args.replace_with) {
        (AblationModeArg::Zero, None) => AblationMode::Zero,
        (AblationModeArg::Mean, None) => AblationMode::Mean,
        (AblationModeArg::Replace, Some(r)) if r < n => AblationMode::Replace(r),
        (AblationModeArg::Replace, Some(r)) => {
            return Err(Error::input(format!(
                "--replace-with: slot {r} is not in the prompt ({n} slots)"
            )));
        }
        (AblationModeArg::Replace, None) => {
            return Err(Error::input("--mode replace needs --replace-with SLOT"));
        }
        (_, Some(_)) => return Err(Error::input("--replace-with only goes with --mode replace")),
    };
    let targets: Vec<u32> = if let Some(text) = &args.target {
        let ids = need_tok()?.encode(text)?;
        // A target continues the prompt: drop the BOS the tokenizer may add.
        let bos = tok.as_ref().and_then(|t| t.bos_id());
        ids.into_iter().skip_while(|id| Some(*id) == bos).collect()
    } else if let Some(list) = &args.target_ids {
        list.split(',')
            .map(|s| {
                s.trim()
                    .parse::<u32>()
                    .map_err(|_| Error::input(format!("--target-ids: {s:?} is not a token id")))
            })
            .collect::<Result<_>>()?
    } else {
        let generation = GenerateOptions {
            max_new_tokens: args.continuation,
            stop_at_eos: false,
            ..GenerateOptions::default()
        };
        check_fits(&model, &prompt, &generation, "--prompt")?;
        let out = run_sequence(
            &model,
            &prompt,
            &CaptureSpec {
                stats: false,
                ..CaptureSpec::default()
            },
            &generation,
            &mut || {},
        )?;
        out.slots[n..].iter().map(|s| s.token).collect()
    };
    if let Some(&t) = targets
        .iter()
        .find(|&&t| t as usize >= model.cfg.vocab_size)
    {
        return Err(Error::input(format!(
            "target token id {t} is out of range (vocab_size {})",
            model.cfg.vocab_size
        )));
    }
    let with_targets = GenerateOptions {
        max_new_tokens: targets.len(),
        ..GenerateOptions::default()
    };
    check_fits(&model, &prompt, &with_targets, "--prompt")?;
    let ablation = Ablation {
        slots: slots.clone(),
        layers,
        mode,
    };
    let split = *slots.iter().max().unwrap_or(&0);
    let base = score_targets(&model, &prompt, &targets, None, split)?;
    let ablated = score_targets(&model, &prompt, &targets, Some(&ablation), split)?;

    let token = |id: u32| tok.as_ref().map(|t| t.token_str(id)).unwrap_or_default();
    println!(
        "ablation {:?} of slots {:?} at layers {:?}",
        ablation.mode, ablation.slots, ablation.layers
    );
    println!(
        "{:>4} {:>8} {:<16} {:>11} {:>11} {:>9}",
        "j", "token_id", "token", "logp_base", "logp_ablat", "delta"
    );
    for (j, &t) in targets.iter().enumerate() {
        println!(
            "{j:>4} {t:>8} {:<16} {:>11.4} {:>11.4} {:>+9.4}",
            token(t),
            base[j],
            ablated[j],
            ablated[j] - base[j]
        );
    }
    let (sb, sa): (f64, f64) = (base.iter().sum(), ablated.iter().sum());
    println!(
        "total log-probability {sb:.4} → {sa:.4} (change {:+.4})",
        sa - sb
    );

    if let Some(out) = &args.out {
        let run = RunDir::create(out, args.overwrite)?;
        let mut t = Table::new();
        t.push(
            "target_index",
            ColumnData::I32((0..targets.len() as i32).collect()),
        )
        .push(
            "token_id",
            ColumnData::I64(targets.iter().map(|&x| x as i64).collect()),
        )
        .push(
            "token",
            ColumnData::Utf8(targets.iter().map(|&x| token(x)).collect()),
        )
        .push("logp_base", ColumnData::F64(base.clone()))
        .push("logp_ablated", ColumnData::F64(ablated.clone()))
        .push(
            "delta",
            ColumnData::F64(base.iter().zip(&ablated).map(|(b, a)| a - b).collect()),
        );
        write_parquet(&run.file("ablation.parquet"), &t)?;
        let manifest = serde_json::json!({
            "attnscope_version": env!("CARGO_PKG_VERSION"),
            "command": std::env::args().collect::<Vec<_>>(),
            "model": model.dir.display().to_string(),
            "device": placement,
            "prompt_token_ids": prompt.token_ids,
            "positions": prompt.positions,
            "groups": prompt.groups,
            "visibility": prompt.visibility,
            "ablation": ablation,
            "targets": targets,
            "total_logp_base": sb,
            "total_logp_ablated": sa,
        });
        write_json(&run.file("manifest.json"), &manifest)?;
        let path = run.commit()?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
