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

use anyhow::Result;

use crate::data::Dataset;
use crate::metrics::RunMetrics;
use crate::model::Param;
use crate::output::write_bytes;

pub use args::{CompareArgs, DataModelArgs, TrainArgs};

/// Checks the options and loads the data set, before anything is trained.
fn prepare(args: &DataModelArgs) -> Result<Dataset> {
    args::check(args)?;
    crate::data::load(args.dataset, &args.data)
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

/// Trains one model with `param` and writes its outputs and its `curves.png` to `out`; returns
/// its metrics.
fn train_and_save(
    args: &DataModelArgs,
    ds: &Dataset,
    param: Param,
    out: &Path,
) -> Result<RunMetrics> {
    let (spec, model, metrics) = run::run(args, ds, param)?;
    save::save_run(out, &spec, &model, &metrics, &args.setup(ds))?;
    crate::plot::curves(&out.join("curves.png"), &metrics)?;
    Ok(metrics)
}

/// `weightnorm train`: one run, its outputs in `--out`.
pub fn train(args: TrainArgs) -> Result<()> {
    let param = args.param;
    let ds = prepare(&args.common)?;
    eprintln!(
        "{} of {:?}; {} {}",
        sizes(&ds),
        ds.shape,
        args.common.model.name(),
        param.name()
    );
    let metrics = train_and_save(&args.common, &ds, param, &args.out)?;
    let last = metrics.last().expect("at least one epoch");
    println!(
        "test accuracy {:.4}, test loss {:.4}, ECE {:.4}; {:.0} examples/s; outputs in {}",
        last.test_accuracy,
        last.test_loss,
        last.ece,
        metrics.examples_per_s,
        args.out.display()
    );
    Ok(())
}

/// `weightnorm compare`: one run per parameterization, then the comparison's plots and report.
pub fn compare(args: CompareArgs) -> Result<()> {
    let params = &args.params;
    let ds = prepare(&args.common)?;
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
        .map(|&p| train_and_save(&args.common, &ds, p, &args.out.join(p.name())))
        .collect::<Result<Vec<_>>>()?;
    crate::plot::comparison(&args.out, &runs)?;
    let report = crate::report::report(&args.common.setup(&ds), &runs);
    write_bytes(&args.out.join("report.md"), report.as_bytes())?;
    println!("{report}");
    println!("report: {}", args.out.join("report.md").display());
    Ok(())
}
