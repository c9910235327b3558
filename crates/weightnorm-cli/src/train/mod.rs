//! `train` and `compare`: training on a real data set, metrics, plots and a report.
//!
//! [`args`] holds the options; [`run`] the training loop (steps and epochs), which
//! [`evaluate`] scores on the test split; [`save`] what a finished run writes. The loop never
//! touches plotting: the commands here draw the plots from the metrics a run returns.

pub mod args;
mod batch;
mod checkpoint;
mod evaluate;
mod progress;
mod run;
mod save;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Parser;

use crate::Failure;
use crate::data::Dataset;
use crate::metrics::RunMetrics;
use crate::model::{ModelKind, Param};
use crate::output::{Outputs, write_bytes};
use crate::text::shown;

pub use args::{CompareArgs, DataModelArgs, TrainArgs};
pub use run::Interrupted;

/// The files a run or a comparison writes in its directory (and each run's directory of a
/// comparison): what `--force` replaces and what marks a directory as holding a run.
const RUN_FILES: &[&str] = &[
    "metrics.json",
    "arch.json",
    "model.safetensors",
    "curves.png",
    "steps.jsonl",
    checkpoint::FILE,
    "report.md",
    "loss.png",
    "test.png",
    "loss_time.png",
    "step_time.png",
    "gain.png",
    "pcr_loss.png",
    "accuracy.png",
    COMMAND_FILE,
];

/// Where a comparison keeps the options it was started with, for `--resume`.
const COMMAND_FILE: &str = "command.json";

/// The options after the subcommand, as given.
fn argv() -> Vec<String> {
    std::env::args().skip(2).collect()
}

/// Refuses an `out` that holds a run unless `force` (which removes its run files, and those of
/// the runs under it, so that old and new never mix).
fn claim_out(out: &Path, force: bool, what: &str) -> Result<()> {
    let entries: Vec<PathBuf> = match std::fs::read_dir(out) {
        Ok(dir) => dir.filter_map(|e| e.ok().map(|e| e.path())).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) if out.is_file() => {
            return Err(crate::Failure::input(anyhow::anyhow!(
                "--out {} is a file, not a directory ({e})",
                out.display()
            ))
            .into());
        }
        Err(e) => return Err(anyhow::anyhow!("cannot read {}: {e}", out.display())),
    };
    if entries.is_empty() {
        return Ok(());
    }
    if !force {
        return Err(crate::Failure::input(anyhow::anyhow!(
            "--out {} is not empty: use --force to replace its {what}, --resume {} to continue it, or another --out",
            out.display(),
            out.display()
        ))
        .into());
    }
    for path in entries {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if path.is_dir() && is_run_name(name) {
            clear_param_dir(&path)?;
        } else if RUN_FILES.contains(&name) {
            std::fs::remove_file(&path)
                .with_context(|| format!("cannot remove {}", path.display()))?;
        }
    }
    Ok(())
}

/// Removes the run files in `dir`.
fn clear_run_files(dir: &Path) -> Result<()> {
    for name in RUN_FILES {
        let path = dir.join(name);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(anyhow::anyhow!("cannot remove {}: {e}", path.display()));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Removes the run files of a comparison's parameterization directory `dir`: its own (a
/// comparison of one seed before seeds had directories) and those of its `seed-<k>`
/// directories, which are removed when that leaves them empty.
fn clear_param_dir(dir: &Path) -> Result<()> {
    clear_run_files(dir)?;
    for e in std::fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .flatten()
    {
        let name = e.file_name();
        if e.path().is_dir() && name.to_str().is_some_and(|n| n.starts_with("seed-")) {
            clear_run_files(&e.path())?;
            let _ = std::fs::remove_dir(e.path());
        }
    }
    Ok(())
}

/// The name of a run of `param` (of a PCR run in a comparison, with its transport policy:
/// `pcr-covariant`).
fn run_name(param: Param, transport: Option<args::PcrTransport>) -> String {
    match (param, transport) {
        (Param::Pcr, Some(t)) => format!(
            "pcr-{}",
            clap::ValueEnum::to_possible_value(&t)
                .map_or(String::new(), |v| v.get_name().to_string())
        ),
        _ => param.name().to_string(),
    }
}

/// Whether `name` is the directory of a parameterization's runs in a comparison.
fn is_run_name(name: &str) -> bool {
    <Param as clap::ValueEnum>::from_str(name, false).is_ok()
        || name
            .strip_prefix("pcr-")
            .is_some_and(|t| <args::PcrTransport as clap::ValueEnum>::from_str(t, false).is_ok())
}

/// The directory of the run named `name` with `seed` in a comparison's `out`.
fn run_dir(out: &Path, name: &str, seed: u64) -> PathBuf {
    out.join(name).join(format!("seed-{seed}"))
}

/// The options stored for `--resume`, parsed again as the subcommand's.
fn stored<A: clap::Args + clap::FromArgMatches>(argv: Vec<String>, dir: &Path) -> Result<A> {
    #[derive(Parser)]
    struct Stored<A: clap::Args> {
        #[command(flatten)]
        args: A,
    }
    let mut all = vec!["weightnorm".to_string()];
    all.extend(argv);
    Stored::<A>::try_parse_from(all)
        .map(|s| s.args)
        .map_err(|e| {
            crate::Failure::input(anyhow::anyhow!(
                "the options stored in {} no longer parse: {}",
                dir.display(),
                e.kind()
            ))
            .into()
        })
}

/// Refuses options given beside `--resume` (other than `--quiet`).
fn resume_alone(given: &[String]) -> Result<()> {
    let mut others = Vec::new();
    let mut it = given.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--resume" => {
                it.next();
            }
            "--quiet" => {}
            a if a.starts_with("--resume=") => {}
            a => others.push(a),
        }
    }
    if !others.is_empty() {
        return Err(crate::Failure::input(anyhow::anyhow!(
            "--resume continues a run with the options it was started with: give no others (only --quiet), not {}",
            others.join(" ")
        ))
        .into());
    }
    Ok(())
}

/// Checks the options and loads the data set, before anything is trained; returns it and the
/// command's outputs (none of which may be one of the data set's files).
fn prepare(args: &DataModelArgs) -> Result<(Dataset, Outputs)> {
    args::check(args)?;
    args.device.device()?;
    let outputs = Outputs::new(crate::data::input_files(args.dataset, &args.data));
    let ds = crate::data::load(args.dataset, &args.data)?;
    let [_, h, w] = ds.shape;
    if args.model == ModelKind::Cnn && (h < 4 || w < 4 || h % 4 != 0 || w % 4 != 0) {
        bail!(Failure::input(anyhow::anyhow!(
            "the CNN needs images of at least 4x4 pixels with sides divisible by 4 (it pools \
             twice by 2), {} images are {h}x{w}: use --model mlp",
            ds.name
        )));
    }
    Ok((ds, outputs))
}

/// The data set's name and sizes, as the commands announce it.
fn sizes(ds: &Dataset) -> String {
    format!(
        "{}: {} training and {} test images",
        ds.name,
        ds.train_y.len(),
        ds.test_y.len()
    )
}

/// Trains one model with `param` (continuing from the checkpoint in `out` when `resume`) and
/// stages its outputs and its `curves.png` under `out` in `outputs`; returns its metrics.
#[allow(clippy::too_many_arguments)]
fn train_and_save(
    outputs: &mut Outputs,
    args: &DataModelArgs,
    ds: &Dataset,
    param: Param,
    transport: Option<args::PcrTransport>,
    out: &Path,
    resume: bool,
    argv: &[String],
) -> Result<RunMetrics> {
    let name = run_name(param, transport);
    let at = run::RunDir {
        dir: out,
        checkpoint_every: args.checkpoint_every,
        resume,
        argv,
        name: &name,
        pcr: (param == Param::Pcr)
            .then(|| args.pcr(transport.unwrap_or(args::PcrTransport::Covariant))),
    };
    let (spec, model, metrics) = run::run(args, ds, param, &at)?;
    save::save_run(outputs, out, &spec, &model, &metrics, &args.setup(ds))?;
    crate::plot::curves(outputs, &out.join("curves.png"), &metrics)?;
    Ok(metrics)
}

/// `weightnorm train`: one run, its outputs in `--out`; or `--resume DIR`.
pub fn train(args: TrainArgs) -> Result<()> {
    let (mut args, argv) = match &args.resume {
        Some(dir) => {
            resume_alone(&argv())?;
            let state = checkpoint::load(dir)?.state;
            let mut stored: TrainArgs = stored(state.argv.clone(), dir)?;
            stored.out = dir.clone();
            stored.resume = Some(dir.clone());
            stored.common.quiet |= args.common.quiet;
            (stored, state.argv)
        }
        None => {
            claim_out(&args.out, args.force, "run")?;
            (args, argv())
        }
    };
    args.common.seed = args.seed;
    if args.common.pcr_transport.len() != 1 {
        return Err(Failure::input(anyhow::anyhow!(
            "train takes one --pcr-transport (compare takes a list)"
        ))
        .into());
    }
    if args.common.init == args::Init::Ddi && !args.param.weight_norm() {
        return Err(Failure::input(anyhow::anyhow!(
            "--init ddi initialises weight-normalized models (--param wn or wn-mobn), not {}",
            args.param.name()
        ))
        .into());
    }
    let (ds, outputs) = prepare(&args.common)?;
    let existed = args.out.exists();
    let result = train_prepared(&args, &argv, &ds, outputs);
    clean_up_after(&result, &args.out, existed, args.resume.is_some());
    result
}

/// `train` once its options and data set are in hand.
fn train_prepared(
    args: &TrainArgs,
    argv: &[String],
    ds: &Dataset,
    mut outputs: Outputs,
) -> Result<()> {
    let param = args.param;
    run::catch_interrupts();
    eprintln!(
        "{} of {:?}; {} {}",
        sizes(ds),
        ds.shape,
        args.common.model.name(),
        param.name()
    );
    let resume = args.resume.is_some();
    let metrics = train_and_save(
        &mut outputs,
        &args.common,
        ds,
        param,
        args.common.pcr_transport.first().copied(),
        &args.out,
        resume,
        argv,
    )?;
    outputs.commit()?;
    let last = metrics.last().expect("at least one epoch");
    println!(
        "test accuracy {:.4}, test loss {:.4}, ECE {:.4}; {:.0} examples/s; outputs in {}",
        last.test_accuracy,
        last.test_loss,
        last.ece,
        metrics.examples_per_s,
        shown(&args.out)
    );
    Ok(())
}

/// `weightnorm compare`: one run per parameterization, then the comparison's plots and report;
/// or `--resume DIR`.
pub fn compare(args: CompareArgs) -> Result<()> {
    let (args, argv) = match &args.resume {
        Some(dir) => {
            resume_alone(&argv())?;
            let file = dir.join(COMMAND_FILE);
            let text = std::fs::read_to_string(&file).map_err(|e| {
                crate::Failure::input(anyhow::anyhow!(
                    "cannot resume from {}: {e}",
                    file.display()
                ))
            })?;
            let argv: Vec<String> = serde_json::from_str(&text)
                .map_err(|e| crate::Failure::input(anyhow::anyhow!("{}: {e}", file.display())))?;
            let mut stored: CompareArgs = stored(argv.clone(), dir)?;
            stored.out = dir.clone();
            stored.resume = Some(dir.clone());
            stored.common.quiet |= args.common.quiet;
            (stored, argv)
        }
        None => {
            claim_out(&args.out, args.force, "comparison")?;
            (args, argv())
        }
    };
    if let Some(p) = args
        .params
        .iter()
        .enumerate()
        .find_map(|(i, p)| args.params[..i].contains(p).then_some(p))
    {
        return Err(Failure::input(anyhow::anyhow!(
            "--params names {} twice: each parameterization is trained once",
            p.name()
        ))
        .into());
    }
    let transports = &args.common.pcr_transport;
    if let Some(t) = transports
        .iter()
        .enumerate()
        .find_map(|(i, t)| transports[..i].contains(t).then_some(t))
    {
        return Err(Failure::input(anyhow::anyhow!(
            "--pcr-transport names {} twice",
            run_name(Param::Pcr, Some(*t)).trim_start_matches("pcr-")
        ))
        .into());
    }
    if let Some(s) = args
        .seeds
        .iter()
        .enumerate()
        .find_map(|(i, s)| args.seeds[..i].contains(s).then_some(s))
    {
        return Err(Failure::input(anyhow::anyhow!(
            "--seeds names {s} twice: each seed is trained once"
        ))
        .into());
    }
    if args.common.init == args::Init::Ddi && args.params.iter().any(|p| !p.weight_norm()) {
        eprintln!(
            "note: --init ddi initialises the weight-normalized runs (wn, wn-mobn); plain and bn \
             start from their default initialisation"
        );
    }
    let (ds, outputs) = prepare(&args.common)?;
    let existed = args.out.exists();
    let result = compare_prepared(&args, &argv, &ds, outputs);
    clean_up_after(&result, &args.out, existed, args.resume.is_some());
    result
}

/// Removes what a failed `train` or `compare` wrote in `out` (its checkpoints and step logs; the
/// outputs proper are put in place only at the end), unless it was interrupted (its checkpoint
/// is for `--resume`) or resumed (the checkpoint it started from stays).
fn clean_up_after(result: &Result<()>, out: &Path, existed: bool, resume: bool) {
    let Err(e) = result else { return };
    if resume || e.downcast_ref::<Interrupted>().is_some() {
        return;
    }
    if !existed {
        let _ = std::fs::remove_dir_all(out);
        return;
    }
    let _ = clear_run_files(out);
    if let Ok(dir) = std::fs::read_dir(out) {
        for e in dir.flatten() {
            let name = e.file_name();
            let name = name.to_str().unwrap_or("");
            if e.path().is_dir() && is_run_name(name) {
                let _ = clear_param_dir(&e.path());
                let _ = std::fs::remove_dir(e.path());
            }
        }
    }
}

/// `compare` once its options and data set are in hand.
fn compare_prepared(
    args: &CompareArgs,
    argv: &[String],
    ds: &Dataset,
    mut outputs: Outputs,
) -> Result<()> {
    let params = &args.params;
    if args.resume.is_none() {
        std::fs::create_dir_all(&args.out)
            .with_context(|| format!("cannot create {}", args.out.display()))?;
        write_bytes(
            &args.out.join(COMMAND_FILE),
            serde_json::to_string(&argv)?.as_bytes(),
        )?;
    }
    run::catch_interrupts();
    let names: Vec<&str> = params.iter().map(|p| p.name()).collect();
    let seeds: Vec<String> = args.seeds.iter().map(u64::to_string).collect();
    eprintln!(
        "{}; {} with {}, seeds {}",
        sizes(ds),
        args.common.model.name(),
        names.join(","),
        seeds.join(",")
    );
    let mut runs = Vec::new();
    for &seed in &args.seeds {
        let mut common = args.common.clone();
        common.seed = seed;
        for &p in params {
            let transports: Vec<Option<args::PcrTransport>> = if p == Param::Pcr {
                args.common
                    .pcr_transport
                    .iter()
                    .copied()
                    .map(Some)
                    .collect()
            } else {
                vec![None]
            };
            for t in transports {
                let dir = run_dir(&args.out, &run_name(p, t), seed);
                let resume = args.resume.is_some();
                runs.push(train_and_save(
                    &mut outputs,
                    &common,
                    ds,
                    p,
                    t,
                    &dir,
                    resume,
                    argv,
                )?);
            }
        }
    }
    crate::plot::comparison(&mut outputs, &args.out, &runs)?;
    let command = crate::text::command_line(argv);
    let report = crate::report::report(&args.common.setup(ds), &runs, &command);
    outputs.bytes(&args.out.join("report.md"), true, report.as_bytes())?;
    // Every run's files, the plots and the report are put in place together, or none is.
    outputs.commit()?;
    let conclusion = report
        .lines()
        .find_map(|l| l.strip_prefix("**Conclusion.** "))
        .unwrap_or("")
        .replace("**", "");
    println!("{conclusion}\n");
    print!("{}", crate::report::table(&runs));
    println!("report: {}", shown(&args.out.join("report.md")));
    Ok(())
}
