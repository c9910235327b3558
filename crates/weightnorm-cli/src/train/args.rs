//! The options of `train` and `compare`, their checks, and what they make of a data set: the
//! model to build and the setup the metrics record.

use std::path::PathBuf;

use anyhow::Result;

use crate::Failure;
use crate::data::{Dataset, FASHION_DEFAULT};
use crate::metrics::RunSetup;
use crate::model::{Param, Spec};

/// Options shared by `train` and `compare`.
#[derive(clap::Args, Clone)]
pub struct DataModelArgs {
    /// The data set: `fashion-mnist` (gzipped IDX files under --data) or `digits` (the UCI
    /// digits, compiled in). Default: Fashion-MNIST when it is installed, else digits.
    #[arg(long)]
    pub dataset: Option<String>,
    /// Directory of Fashion-MNIST in the original MNIST file layout.
    #[arg(long, default_value = FASHION_DEFAULT)]
    pub data: PathBuf,
    /// `mlp` (hidden layers 256, 128) or `cnn` (the weight-normalized CNN classifier).
    #[arg(long, default_value = "mlp")]
    pub model: String,
    /// Initialisation of weight-normalized models: `fp` (function-preserving) or `ddi` (the
    /// paper's data-dependent initialisation on the first batch).
    #[arg(long, default_value = "fp")]
    pub init: String,
    /// Epochs (default: 3 on Fashion-MNIST, 30 on the small digits set).
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Examples per step.
    #[arg(long, default_value_t = 128)]
    pub batch_size: usize,
    /// Adam's learning rate.
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// Seed of the initialisation and the data order.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Hide the progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// The options of `train`.
#[derive(clap::Args)]
#[command(
    after_help = "Writes to --out: metrics.json, curves.png, model.safetensors (PyTorch nn.Sequential\n\
keys and layouts) and arch.json (for `weightnorm canonicalize`).\n\n\
Example:\n  weightnorm train --dataset fashion-mnist --model mlp --param wn --epochs 3 --out runs/wn"
)]
pub struct TrainArgs {
    #[command(flatten)]
    pub common: DataModelArgs,
    /// The parameterization: plain, wn, wn-mobn or bn.
    #[arg(long, default_value = "wn")]
    pub param: String,
    /// Output directory (created if missing).
    #[arg(long, default_value = "runs/train")]
    pub out: PathBuf,
}

/// The options of `compare`.
#[derive(clap::Args)]
#[command(
    after_help = "Trains each parameterization with the same seed and data order and writes\n\
report.md, loss.png and accuracy.png to --out (and each run under --out/<param>/).\n\n\
Example:\n  weightnorm compare\n  weightnorm compare --dataset digits --params plain,wn --epochs 10"
)]
pub struct CompareArgs {
    #[command(flatten)]
    pub common: DataModelArgs,
    /// Comma-separated parameterizations.
    #[arg(long, default_value = "plain,wn,wn-mobn,bn")]
    pub params: String,
    /// Output directory.
    #[arg(long, default_value = "runs/compare")]
    pub out: PathBuf,
}

impl DataModelArgs {
    /// The number of epochs: given, or the data set's default.
    pub fn epochs(&self, ds: &Dataset) -> usize {
        self.epochs
            .unwrap_or(if ds.name == "digits" { 30 } else { 3 })
    }

    /// How a run on `ds` is set up, as plain data for its metrics and reports.
    pub fn setup(&self, ds: &Dataset) -> RunSetup {
        RunSetup {
            dataset: ds.name,
            input_norm: ds.norm,
            model: self.model.clone(),
            init: self.init.clone(),
            epochs: self.epochs(ds),
            batch_size: self.batch_size,
            lr: self.lr,
            seed: self.seed,
        }
    }

    /// The model to train on `ds` with the parameterization `param`.
    pub fn spec(&self, ds: &Dataset, param: Param) -> Spec {
        let cnn = self.model == "cnn";
        Spec {
            kind: self.model.clone(),
            param,
            input: ds.shape,
            hidden: if cnn { vec![128] } else { vec![256, 128] },
            cnn_widths: [32, 64, 128],
            classes: ds.classes,
        }
    }
}

/// Checks the options before anything is loaded or printed.
pub fn check(args: &DataModelArgs) -> Result<()> {
    let bad = |m: String| -> Result<()> { Err(Failure::input(anyhow::anyhow!(m)).into()) };
    if !matches!(args.model.as_str(), "mlp" | "cnn") {
        return bad(format!("unknown model `{}`: use mlp or cnn", args.model));
    }
    if args.epochs == Some(0) || args.batch_size == 0 || !(args.lr > 0.0 && args.lr.is_finite()) {
        return bad(
            "--epochs and --batch-size must be positive, and --lr a positive number".into(),
        );
    }
    if !matches!(args.init.as_str(), "fp" | "ddi") {
        return bad(format!("unknown --init `{}`: use fp or ddi", args.init));
    }
    if let Some(d) = args
        .dataset
        .as_deref()
        .filter(|d| !matches!(*d, "fashion-mnist" | "digits"))
    {
        return bad(format!(
            "unknown data set `{d}`: use fashion-mnist or digits"
        ));
    }
    Ok(())
}
