//! `train` and `compare`: training on a real data set, metrics, plots and a report.
//!
//! [`args`] holds the options; [`run`] the training loop (steps and epochs), which
//! [`evaluate`] scores on the test split; [`save`] what a finished run writes; [`out`] the run
//! directory, claimed under a lock for the whole run and cleaned of what a failed run wrote;
//! [`checkpoint`] the run's state, checksummed and checked before a resume. The loop never
//! touches plotting: the commands here draw the plots from the metrics a run returns.

pub mod args;
mod batch;
mod checkpoint;
mod evaluate;
pub mod objective;
mod out;
mod progress;
mod run;
mod save;

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use clap::Parser;

use crate::Failure;
use crate::data::Dataset;
use crate::metrics::RunMetrics;
use crate::model::{ModelKind, Param};
use crate::output::{Outputs, write_bytes};
use crate::text::shown;

pub use args::{CompareArgs, DataModelArgs, TrainArgs};
pub use run::Interrupted;

use out::COMMAND_FILE;

/// The options of the command line as given, without the subcommand's name: the global
/// `--threads` among them wherever it was given (before or after the subcommand). What a run
/// stores for `--resume`.
fn argv() -> Vec<String> {
    options_of(std::env::args().skip(1))
}

/// `args` (the command line after the program's name) without the subcommand's name.
fn options_of(args: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut out = Vec::new();
    let mut args = args.into_iter();
    let mut named = false;
    while let Some(a) = args.next() {
        if !named && a == "--threads" {
            // A global option before the subcommand, with its value.
            out.push(a);
            out.extend(args.next());
        } else if !named && !a.starts_with('-') {
            named = true;
        } else {
            out.push(a);
        }
    }
    out
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

/// The options stored for `--resume`, parsed again as the subcommand's, and the `--threads`
/// among them.
fn stored<A: clap::Args + clap::FromArgMatches>(
    argv: Vec<String>,
    dir: &Path,
) -> Result<(A, Option<usize>)> {
    #[derive(Parser)]
    struct Stored<A: clap::Args> {
        #[command(flatten)]
        args: A,
        #[arg(long)]
        threads: Option<usize>,
    }
    let mut all = vec!["weightnorm".to_string()];
    all.extend(argv);
    Stored::<A>::try_parse_from(all)
        .map(|s| (s.args, s.threads))
        .map_err(|e| {
            crate::Failure::input(anyhow::anyhow!(
                "the options stored in {} no longer parse: {}",
                dir.display(),
                e.kind()
            ))
            .into()
        })
}

/// Refuses options given beside `--resume` (other than `--quiet` and `--threads`, which
/// [`resume_threads`] checks).
fn resume_alone(given: &[String]) -> Result<()> {
    let mut others = Vec::new();
    let mut it = given.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--resume" | "--threads" => {
                it.next();
            }
            "--quiet" => {}
            a if a.starts_with("--resume=") || a.starts_with("--threads=") => {}
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

/// Starts the worker threads a resumed run asks for: those it was started with (`stored`);
/// `given` on the command line too only when it is the same number.
fn resume_threads(given: Option<usize>, stored: Option<usize>) -> Result<()> {
    match (given, stored) {
        (Some(g), Some(s)) if g != s => Err(Failure::input(anyhow::anyhow!(
            "the run was started with --threads {s}: resume it with the same, or without --threads"
        ))
        .into()),
        (Some(g), None) => Err(Failure::input(anyhow::anyhow!(
            "the run was started without --threads (one thread per core): resume it without --threads {g}"
        ))
        .into()),
        _ => crate::device::set_threads(stored),
    }
}

/// Checks the options and loads the data set, before anything is trained; returns it and the
/// command's outputs (none of which may be one of the data set's files).
fn prepare(args: &DataModelArgs) -> Result<(Dataset, Outputs)> {
    args::check(args)?;
    args.device.device()?;
    let outputs = Outputs::new(crate::data::input_files(args.dataset, &args.data));
    let mut ds = crate::data::load(args.dataset, &args.data)?;
    if let Some(n) = args.train_subset {
        ds.subset(n)?;
    }
    ds.add_label_noise(args.label_noise)?;
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

/// `weightnorm train`: one run, its outputs in `--out`; or `--resume DIR`. `threads` is the
/// global `--threads`, stored with the run's options.
pub fn train(args: TrainArgs, threads: Option<usize>) -> Result<()> {
    let (mut args, argv, claim) = match &args.resume {
        Some(dir) => {
            resume_alone(&argv())?;
            let claim = out::claim(dir, false, "run", true)?;
            let state = checkpoint::load(dir)?.state;
            let (mut stored, stored_threads): (TrainArgs, _) = stored(state.argv.clone(), dir)?;
            resume_threads(threads, stored_threads)?;
            stored.out = dir.clone();
            stored.resume = Some(dir.clone());
            stored.common.quiet |= args.common.quiet;
            (stored, state.argv, claim)
        }
        None => {
            crate::device::set_threads(threads)?;
            let claim = out::claim(&args.out, args.force, "run", false)?;
            (args, argv(), claim)
        }
    };
    args.common.seed = args.seed;
    let result = train_checked(&args, &argv);
    if result.is_err() && args.resume.is_none() && !interrupted(&result) {
        claim.clean_up();
    }
    result
}

/// Whether `result` is a run stopped by Ctrl-C (its checkpoint kept for `--resume`).
fn interrupted(result: &Result<()>) -> bool {
    result
        .as_ref()
        .is_err_and(|e| e.downcast_ref::<Interrupted>().is_some())
}

/// The `--pcr-*` options given on a command line.
fn pcr_flags(argv: &[String]) -> Vec<&str> {
    let mut out: Vec<&str> = argv
        .iter()
        .filter_map(|a| {
            a.strip_prefix("--pcr-")
                .map(|_| a.split('=').next().unwrap_or(a))
        })
        .collect();
    out.dedup();
    out
}

/// The warning for PCR options given to runs that do not use PCR, if any.
fn unused_pcr_flags(argv: &[String], params: &[Param]) -> Option<String> {
    let flags = pcr_flags(argv);
    (!flags.is_empty() && !params.contains(&Param::Pcr)).then(|| {
        format!(
            "warning: {} appl{} to --param pcr only; ignored for {}",
            flags.join(", "),
            if flags.len() == 1 { "ies" } else { "y" },
            params
                .iter()
                .map(|p| p.name())
                .collect::<Vec<_>>()
                .join(", ")
        )
    })
}

/// `train` with its directory claimed: the options checked, the data loaded, the run.
fn train_checked(args: &TrainArgs, argv: &[String]) -> Result<()> {
    if let Some(w) = unused_pcr_flags(argv, &[args.param]) {
        eprintln!("{w}");
    }
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
    train_prepared(args, argv, &ds, outputs)
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
pub fn compare(args: CompareArgs, threads: Option<usize>) -> Result<()> {
    let (args, argv, claim) = match &args.resume {
        Some(dir) => {
            resume_alone(&argv())?;
            let claim = out::claim(dir, false, "comparison", true)?;
            let file = dir.join(COMMAND_FILE);
            let text = weightnorm::torch::read_regular(&file, 1 << 20).map_err(|e| {
                crate::Failure::input(anyhow::anyhow!("cannot resume from {}: {e}", shown(&file)))
            })?;
            let argv: Vec<String> = serde_json::from_slice(&text)
                .map_err(|e| crate::Failure::input(anyhow::anyhow!("{}: {e}", shown(&file))))?;
            let (mut stored, stored_threads): (CompareArgs, _) = stored(argv.clone(), dir)?;
            resume_threads(threads, stored_threads)?;
            stored.out = dir.clone();
            stored.resume = Some(dir.clone());
            stored.common.quiet |= args.common.quiet;
            (stored, argv, claim)
        }
        None => {
            crate::device::set_threads(threads)?;
            let claim = out::claim(&args.out, args.force, "comparison", false)?;
            (args, argv(), claim)
        }
    };
    let result = compare_checked(&args, &argv);
    if result.is_err() && args.resume.is_none() && !interrupted(&result) {
        claim.clean_up();
    }
    result
}

/// `compare` with its directory claimed: the options checked, the data loaded, the runs.
fn compare_checked(args: &CompareArgs, argv: &[String]) -> Result<()> {
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
    if let Some(w) = unused_pcr_flags(argv, &args.params) {
        eprintln!("{w}");
    }
    if args.common.init == args::Init::Ddi && args.params.iter().any(|p| !p.weight_norm()) {
        eprintln!(
            "note: --init ddi initialises the weight-normalized runs (wn, wn-mobn); plain and bn \
             start from their default initialisation"
        );
    }
    let (ds, outputs) = prepare(&args.common)?;
    compare_prepared(args, argv, &ds, outputs)
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
    let command = crate::text::command_line("compare", argv);
    let report = crate::report::report(&args.common.setup(ds), &runs, &command);
    for w in crate::report::warnings(&runs) {
        eprintln!("warning: {w}");
    }
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
