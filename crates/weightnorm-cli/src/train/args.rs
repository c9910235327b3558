//! The options of `train` and `compare`, their checks, and what they make of a data set: the
//! model to build and the setup the metrics record.

use std::ffi::OsStr;
use std::marker::PhantomData;
use std::path::PathBuf;

use anyhow::Result;
use clap::ValueEnum;
use clap::builder::{EnumValueParser, PossibleValue, TypedValueParser};

use crate::Failure;
use crate::data::{Dataset, DatasetName, FASHION_DEFAULT};
use crate::metrics::RunSetup;
use crate::model::{ModelKind, Param, Spec};

/// Options shared by `train` and `compare`.
#[derive(clap::Args, Clone)]
pub struct DataModelArgs {
    /// The data set. Default: Fashion-MNIST when it is installed (under --data), else digits.
    #[arg(long, value_enum)]
    pub dataset: Option<DatasetName>,
    /// Directory of Fashion-MNIST in the original MNIST file layout.
    #[arg(long, default_value = FASHION_DEFAULT)]
    pub data: PathBuf,
    /// The model.
    #[arg(long, value_enum, default_value_t = ModelKind::Mlp)]
    pub model: ModelKind,
    /// Initialisation of weight-normalized models.
    #[arg(long, value_enum, default_value_t = Init::Fp)]
    pub init: Init,
    /// Train on N training images only: a fixed subset, the same for every run and seed (a
    /// regime that overfits in minutes).
    #[arg(long, value_name = "N")]
    pub train_subset: Option<usize>,
    /// Replace this fraction of the training labels (0 to 1) by a wrong class: the same
    /// examples and classes for every run and seed (fixed, seeded).
    #[arg(long, default_value_t = 0.0, value_name = "P")]
    pub label_noise: f64,
    /// The training objective: ce (softmax cross-entropy) or bce (one-vs-rest sigmoid binary
    /// cross-entropy on the class logits, whose scale no softmax fixes).
    #[arg(long, value_enum, default_value_t = super::objective::LossKind::Ce)]
    pub loss: super::objective::LossKind,
    /// Epochs (default: 3 on Fashion-MNIST, 30 on the small digits set).
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Examples per step.
    #[arg(long, default_value_t = 128)]
    pub batch_size: usize,
    /// Adam's (and AdamW's) learning rate.
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// AdamW's decoupled weight decay, for --param plain-wd (PyTorch's AdamW default).
    #[arg(long, default_value_t = 1e-2, value_name = "W")]
    pub weight_decay: f64,
    /// Seed of the initialisation and the data order (`train --seed`; `compare` sets it per
    /// run from `--seeds`).
    #[arg(skip)]
    pub seed: u64,
    /// PCR (--param pcr): canonicalize after every C optimizer steps.
    #[arg(long, default_value_t = 100, value_name = "C")]
    pub pcr_every: u64,
    /// PCR's penalty on the global gain G: none (a rescaling only, not a regularizer); cap:G
    /// (at each canonicalization the output scale is shrunk to norm at most G); soft:L (L * G^2
    /// added to the loss at every step). The default cap:2 binds on the MLP and CNN here (their
    /// gains pass 2 within a few epochs) and had the lowest test NLL of the PCR configurations
    /// in every regime of docs/pcr-study.md.
    #[arg(long, default_value = "cap:2", value_name = "PENALTY", value_parser = parse_penalty)]
    pub pcr_penalty: weightnorm::pcr::Penalty,
    /// PCR's transport of Adam's moments across each canonicalization (compare: a
    /// comma-separated list, one PCR run per policy, named pcr-<policy>).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "covariant",
        value_name = "POLICY"
    )]
    pub pcr_transport: Vec<PcrTransport>,
    /// Where to compute: cpu (the default), cuda or wgpu, with an index for a GPU (cuda:1);
    /// a backend needs the cargo feature of the same name.
    #[arg(long, value_parser = crate::device::DeviceParser, default_value = "cpu")]
    pub device: crate::device::DeviceArg,
    /// Hide the progress bar (the per-epoch lines are always printed, on stderr).
    #[arg(long)]
    pub quiet: bool,
    /// Also write the checkpoint every N optimizer steps (it is always written at every
    /// epoch's end, and on Ctrl-C).
    #[arg(long, value_name = "N")]
    pub checkpoint_every: Option<usize>,
}

/// The options of `train`.
#[derive(clap::Args)]
#[command(
    after_help = "Writes to --out: metrics.json, curves.png, model.safetensors (PyTorch nn.Sequential\n\
keys and layouts) and arch.json (for `weightnorm canonicalize`), steps.jsonl (one line per\n\
step, written as it trains) and checkpoint.bin (model, optimizer state, data position and\n\
metrics; written at every epoch's end, every --checkpoint-every steps and on Ctrl-C).\n\n\
Example:\n  weightnorm train --dataset fashion-mnist --model mlp --param wn --epochs 3 --out runs/wn\n  \
weightnorm train --resume runs/wn"
)]
pub struct TrainArgs {
    #[command(flatten)]
    pub common: DataModelArgs,
    /// Seed of the initialisation and the data order.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// The parameterization.
    #[arg(long, value_enum, default_value_t = Param::Wn)]
    pub param: Param,
    /// Output directory (created if missing; an existing run there is refused unless
    /// --force or --resume).
    #[arg(long, default_value = "runs/train")]
    pub out: PathBuf,
    /// Replace the run files of an existing --out (other files there are left alone).
    #[arg(long, conflicts_with = "resume")]
    pub force: bool,
    /// Continue the run in DIR from its checkpoint, with the options it was started with
    /// (give no other options but --quiet).
    #[arg(long, value_name = "DIR")]
    pub resume: Option<PathBuf>,
}

/// The options of `compare`.
#[derive(clap::Args)]
#[command(
    after_help = "Trains each parameterization with the same seed and data order and writes\n\
report.md and its plots to --out (loss.png, test.png, loss_time.png, step_time.png), and each
run under --out/<param>/seed-<k>/. The summary table is printed when it is done.\n\n\
Example:\n  weightnorm compare\n  weightnorm compare --dataset digits --params plain,wn --seeds 0,1 --epochs 10\n  \
weightnorm compare --resume runs/compare"
)]
pub struct CompareArgs {
    #[command(flatten)]
    pub common: DataModelArgs,
    /// Comma-separated parameterizations.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "plain,plain-wd,wn,wn-mobn,bn,pcr",
        value_parser = Trimmed::<Param>::new()
    )]
    pub params: Vec<Param>,
    /// Comma-separated seeds: every parameterization is trained once per seed, and the report
    /// gives the mean and the spread over them.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "0,1,2",
        value_name = "SEEDS"
    )]
    pub seeds: Vec<u64>,
    /// Output directory (an existing comparison there is refused unless --force or --resume).
    #[arg(long, default_value = "runs/compare")]
    pub out: PathBuf,
    /// Replace the run files of an existing --out (other files there are left alone).
    #[arg(long, conflicts_with = "resume")]
    pub force: bool,
    /// Continue the comparison in DIR: finished runs are kept, the others continue from their
    /// checkpoints, with the options it was started with (give no other options but --quiet).
    #[arg(long, value_name = "DIR")]
    pub resume: Option<PathBuf>,
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
            model: self.model.name().into(),
            init: self.init.name().into(),
            epochs: self.epochs(ds),
            batch_size: self.batch_size,
            lr: self.lr,
            seed: self.seed,
            device: self.device.to_string(),
            threads: crate::device::threads(),
            allocator: crate::malloc::settings().to_string(),
            train_images: ds.train_y.len(),
            train_subset: self.train_subset,
            label_noise: self.label_noise,
            loss: self.loss.describe().into(),
        }
    }

    /// The model to train on `ds` with the parameterization `param`.
    pub fn spec(&self, ds: &Dataset, param: Param) -> Spec {
        let cnn = self.model == ModelKind::Cnn;
        Spec {
            kind: self.model,
            param,
            input: ds.shape,
            hidden: if cnn { vec![128] } else { vec![256, 128] },
            cnn_widths: [32, 64, 128],
            classes: ds.classes,
        }
    }
}

/// How PCR carries Adam's moments across a rescaling that multiplies a weight by `a`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PcrTransport {
    /// m/a and v/a^2: the moments Adam would hold had it trained in the new coordinates.
    Covariant,
    /// a*m and a^2*v.
    WeightScaled,
    /// Zeros: the rescaled parameters' moments start afresh.
    Reset,
    /// Untouched.
    Keep,
}

impl PcrTransport {
    /// The library's policy.
    pub fn policy(self) -> weightnorm::pcr::Transport {
        use weightnorm::pcr::Transport;
        match self {
            Self::Covariant => Transport::Covariant,
            Self::WeightScaled => Transport::WeightScaled,
            Self::Reset => Transport::Reset,
            Self::Keep => Transport::Keep,
        }
    }
}

/// `--pcr-penalty`: `none`, `cap:G` or `soft:L`.
fn parse_penalty(s: &str) -> Result<weightnorm::pcr::Penalty, String> {
    s.parse().map_err(|_| {
        "expected none, cap:G (G > 0) or soft:L (L >= 0), e.g. cap:10 or soft:1e-4".to_string()
    })
}

impl DataModelArgs {
    /// PCR's configuration with the transport `transport`.
    pub fn pcr(&self, transport: PcrTransport) -> weightnorm::pcr::PcrConfig {
        weightnorm::pcr::PcrConfig::new(self.pcr_every)
            .with_penalty(self.pcr_penalty)
            .with_transport(transport.policy())
    }
}

/// Checks the numeric options before anything is loaded or printed (clap checks the
/// enumerated ones).
///
/// # Errors
///
/// A [`Failure`] naming the options at fault.
pub fn check(args: &DataModelArgs) -> Result<()> {
    if args.epochs == Some(0) || args.batch_size == 0 || !(args.lr > 0.0 && args.lr.is_finite()) {
        return Err(Failure::input(anyhow::anyhow!(
            "--epochs and --batch-size must be positive, and --lr a positive number"
        ))
        .into());
    }
    if args.pcr_every == 0 {
        return Err(Failure::input(anyhow::anyhow!("--pcr-every must be at least 1")).into());
    }
    if !(args.weight_decay >= 0.0 && args.weight_decay.is_finite()) {
        return Err(Failure::input(anyhow::anyhow!(
            "--weight-decay must be a number >= 0, not {}",
            args.weight_decay
        ))
        .into());
    }
    Ok(())
}

/// The initialisation of weight-normalized models.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Init {
    /// Function-preserving: g is the norm of the initial weight.
    Fp,
    /// The paper's data-dependent initialisation on the first batch.
    Ddi,
}

impl Init {
    /// The name on the command line and in outputs: `fp` or `ddi`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Fp => "fp",
            Self::Ddi => "ddi",
        }
    }
}

/// A parser of one value of an enumerated option that ignores spaces around it, so that a
/// comma-separated list may be written `plain, wn`; `--help` lists the possible values and
/// clap suggests the nearest one for a typo, as for any `ValueEnum`.
#[derive(Clone)]
pub struct Trimmed<E>(PhantomData<E>);

impl<E> Trimmed<E> {
    /// The parser.
    pub fn new() -> Self {
        Self(PhantomData)
    }
}

impl<E> Default for Trimmed<E> {
    fn default() -> Self {
        Self::new()
    }
}

impl<E: ValueEnum + Clone + Send + Sync + 'static> TypedValueParser for Trimmed<E> {
    type Value = E;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<E, clap::Error> {
        let trimmed = value.to_str().map_or(value, |s| OsStr::new(s.trim()));
        EnumValueParser::<E>::new().parse_ref(cmd, arg, trimmed)
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = PossibleValue> + '_>> {
        Some(Box::new(
            E::value_variants()
                .iter()
                .filter_map(ValueEnum::to_possible_value),
        ))
    }
}
