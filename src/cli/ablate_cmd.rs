//! `attnscope ablate`: alter the K/V of chosen slots at chosen layers and report the change in
//! log-probability of target tokens (given, or the model's own greedy continuation). The work is the job
//! API's [`AblationJob`]; this file checks flags and prints.

use crate::cli::{AblateArgs, AblationModeArg, model_dir};
use attnscope_core::Error;
use attnscope_core::Result;
use attnscope_core::weights::LoadOptions;
use attnscope_cuda::DeviceRequest;
use attnscope_job::{
    AblationJob, AblationModeRequest, AblationPrompt, AblationTargets, DtypeRequest, Session,
};

/// Runs `ablate`.
pub fn ablate(args: AblateArgs) -> Result<()> {
    let device = DeviceRequest::parse(&args.device)?;
    let dtype = DtypeRequest::parse(&args.dtype)?;
    let session = Session::open_with(
        &model_dir(args.model.clone(), false),
        device,
        dtype,
        LoadOptions {
            allow_unused: args.allow_unused,
        },
    )?;
    session.notes.iter().for_each(|n| eprintln!("{n}"));
    let prompt = match (&args.prompt, &args.input) {
        (Some(text), None) => AblationPrompt::Text(text.clone()),
        (None, Some(path)) => AblationPrompt::SpecFile(path.clone()),
        _ => {
            return Err(Error::input(
                "give exactly one of --prompt TEXT or --input FILE.json",
            ));
        }
    };
    let targets = if let Some(text) = &args.target {
        AblationTargets::Text(text.clone())
    } else if let Some(list) = &args.target_ids {
        AblationTargets::Ids(list.clone())
    } else {
        AblationTargets::Continuation(args.continuation)
    };
    let job = AblationJob {
        prompt,
        slots: args.slots.clone(),
        layers: args.ablate_layers.clone(),
        mode: match args.mode {
            AblationModeArg::Zero => AblationModeRequest::Zero,
            AblationModeArg::Mean => AblationModeRequest::Mean,
            AblationModeArg::Replace => AblationModeRequest::Replace,
        },
        replace_with: args.replace_with,
        targets,
    };
    let result = job.run(&session)?;
    let (ablation, targets) = (&result.ablation, &result.targets);
    let (base, ablated) = (&result.logp_base, &result.logp_ablated);
    let token = |id: u32| session.token_str(id);
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
    let (sb, sa) = result.totals();
    println!(
        "total log-probability {sb:.4} → {sa:.4} (change {:+.4})",
        sa - sb
    );

    if let Some(out) = &args.out {
        let command: Vec<std::ffi::OsString> = std::env::args_os().collect();
        let path = result.write(out, args.overwrite, &session, &command)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
