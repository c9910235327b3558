//! `train` and `compare`: training on a real data set, metrics, plots and a report.
//!
//! [`args`] holds the options; [`run`] the training loop (steps and epochs), which
//! [`evaluate`] scores on the test split; [`save`] what a finished run writes. The loop never
//! touches plotting: the commands here draw the plots from the metrics a run returns.

pub mod args;
mod batch;
mod evaluate;
mod progress;
mod run;
mod save;

use std::path::Path;

use anyhow::{Result, bail};

use crate::Failure;
use crate::data::Dataset;
use crate::metrics::RunMetrics;
use crate::model::{ModelKind, Param};
use crate::output::Outputs;
use crate::text::shown;

pub use args::{CompareArgs, DataModelArgs, TrainArgs};

/// Checks the options and loads the data set, before anything is trained; returns it and the
/// command's outputs (none of which may be one of the data set's files).
fn prepare(args: &DataModelArgs) -> Result<(Dataset, Outputs)> {
    args::check(args)?;
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

/// Trains one model with `param` and stages its outputs and its `curves.png` under `out` in
/// `outputs`; returns its metrics.
fn train_and_save(
    outputs: &mut Outputs,
    args: &DataModelArgs,
    ds: &Dataset,
    param: Param,
    out: &Path,
) -> Result<RunMetrics> {
    let (spec, model, metrics) = run::run(args, ds, param)?;
    save::save_run(outputs, out, &spec, &model, &metrics, &args.setup(ds))?;
    crate::plot::curves(outputs, &out.join("curves.png"), &metrics)?;
    Ok(metrics)
}

/// `weightnorm train`: one run, its outputs in `--out`.
pub fn train(args: TrainArgs) -> Result<()> {
    let param = args.param;
    let (ds, mut outputs) = prepare(&args.common)?;
    eprintln!(
        "{} of {:?}; {} {}",
        sizes(&ds),
        ds.shape,
        args.common.model.name(),
        param.name()
    );
    let metrics = train_and_save(&mut outputs, &args.common, &ds, param, &args.out)?;
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

/// `weightnorm compare`: one run per parameterization, then the comparison's plots and report.
pub fn compare(args: CompareArgs) -> Result<()> {
    let params = &args.params;
    let (ds, mut outputs) = prepare(&args.common)?;
    eprintln!(
        "{}; {} with {}",
        sizes(&ds),
        args.common.model.name(),
        params
            .iter()
            .map(|p| p.name())
            .collect::<Vec<_>>()
            .join(",")
    );
    let runs = params
        .iter()
        .map(|&p| train_and_save(&mut outputs, &args.common, &ds, p, &args.out.join(p.name())))
        .collect::<Result<Vec<_>>>()?;
    crate::plot::comparison(&mut outputs, &args.out, &runs)?;
    let report = crate::report::report(&args.common.setup(&ds), &runs);
    outputs.bytes(&args.out.join("report.md"), true, report.as_bytes())?;
    // Every run's files, the plots and the report are put in place together, or none is.
    outputs.commit()?;
    println!("{report}");
    println!("report: {}", shown(&args.out.join("report.md")));
    Ok(())
}
