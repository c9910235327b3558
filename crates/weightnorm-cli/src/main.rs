//! The `weightnorm` command line.

mod canon;
mod ckpt;
mod data;
mod demo;
mod metrics;
mod model;
mod output;
mod plot;
mod report;
mod train;

use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Result, bail};
use burn::tensor::{Device, Distribution, Tensor};
use clap::{Parser, Subcommand};
use weightnorm::NormAxis;
use weightnorm::ops::{norm_except_dim, weight_norm, weight_norm_composed};

/// Weight normalization, w = g * v / ||v||, exact to PyTorch.
#[derive(Parser)]
#[command(name = "weightnorm", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the weight-norm operation on a random weight and report norms, agreement of the
    /// fused and composed paths, and timings.
    Op(OpArgs),
    /// List a checkpoint's tensors and its weight-norm pairs (scheme, dim, statistics).
    Inspect(ckpt::InspectArgs),
    /// Replace every weight-norm pair of a checkpoint by the plain weight, for inference.
    Fuse(ckpt::FuseArgs),
    /// Split plain weights into weight-norm pairs (g = ||w||, v = w).
    Split(ckpt::SplitArgs),
    /// Rename weight-norm pairs between the legacy and the parametrizations key schemes.
    Convert(ckpt::ConvertArgs),
    /// Train a model on Fashion-MNIST or the UCI digits, with metrics, plots and a checkpoint.
    Train(train::TrainArgs),
    /// Train every parameterization with the same seed and data, and write a report: the main job.
    Compare(train::CompareArgs),
    /// Put a trained network in canonical form (unit-norm layers, one output scale), verified
    /// against the original, and report its global gain.
    Canonicalize(canon::CanonicalizeArgs),
    /// Demonstrations: decoupling, batch-independence, wn-vs-bn.
    Demo(demo::DemoArgs),
}

/// An error caused by the user's input (arguments, files): exit code 2. Anything else (a
/// failed write) exits with 1.
#[derive(Debug)]
pub struct Failure(anyhow::Error);

impl Failure {
    /// Marks `e` as caused by the user's input.
    pub fn input(e: impl Into<anyhow::Error>) -> Self {
        Self(e.into())
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl std::error::Error for Failure {}

#[derive(clap::Args)]
#[command(
    after_help = "Example:\n  weightnorm op --shape 4096,4096 --dim 0\n  weightnorm op --shape 64,3,3,3 --dim none"
)]
struct OpArgs {
    /// The weight's shape, comma-separated, in PyTorch's layout (rank 1 to 5).
    #[arg(
        long,
        default_value = "1024,1024",
        value_delimiter = ',',
        required = true
    )]
    shape: Vec<usize>,
    /// PyTorch's `dim`: an axis (negative values wrap), or `none` / `-1` for the whole tensor.
    #[arg(long, default_value = "0", allow_hyphen_values = true)]
    dim: String,
    /// How many timed repetitions.
    #[arg(long, default_value_t = 10)]
    repeats: usize,
    /// Seed of the random weight.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

fn main() -> ExitCode {
    // Die quietly when stdout is closed early (`weightnorm inspect f | head`), as Unix tools do,
    // rather than panicking on the failed write.
    #[cfg(unix)]
    // SAFETY: setting a signal's disposition to the default at start-up, before any thread.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Op(args) => op(args),
        Command::Inspect(args) => ckpt::inspect(args),
        Command::Fuse(args) => ckpt::fuse_cmd(args),
        Command::Split(args) => ckpt::split_cmd(args),
        Command::Convert(args) => ckpt::convert_cmd(args),
        Command::Train(args) => train::train(args),
        Command::Compare(args) => train::compare(args),
        Command::Canonicalize(args) => canon::canonicalize_cmd(args),
        Command::Demo(args) => demo::demo(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The library's messages already say what their causes said: print one line.
            eprintln!("error: {e}");
            if e.downcast_ref::<Failure>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}

fn op(args: OpArgs) -> Result<()> {
    let rank = args.shape.len();
    let axis = NormAxis::from_torch(ckpt::parse_dim(&args.dim)?, rank).map_err(Failure::input)?;
    match rank {
        1 => op_rank::<1>(&args, axis),
        2 => op_rank::<2>(&args, axis),
        3 => op_rank::<3>(&args, axis),
        4 => op_rank::<4>(&args, axis),
        5 => op_rank::<5>(&args, axis),
        r => bail!(Failure::input(anyhow::anyhow!(
            "rank {r} is not supported: give a shape of 1 to 5 sizes"
        ))),
    }
}

fn op_rank<const D: usize>(args: &OpArgs, axis: NormAxis) -> Result<()> {
    let device = Device::default();
    device.seed(args.seed);
    let shape: [usize; D] = args.shape.clone().try_into().expect("rank checked");
    let v = Tensor::<D>::random(shape, Distribution::Normal(0.0, 1.0), &device);
    let g = norm_except_dim(v.clone(), 2.0, axis)?;
    let norms = g.clone().into_data().convert::<f64>().try_to_vec::<f64>()?;
    let (lo, hi) = norms
        .iter()
        .fold((f64::INFINITY, 0.0f64), |(l, h), &x| (l.min(x), h.max(x)));
    println!(
        "v {:?}, {} ({} slices), norms in [{lo:.4}, {hi:.4}]",
        shape,
        axis.describe(),
        norms.len()
    );

    let time = |f: &dyn Fn() -> Tensor<D>| -> (Tensor<D>, f64) {
        let mut out = f();
        let t0 = Instant::now();
        for _ in 0..args.repeats.max(1) {
            out = f();
        }
        (
            out,
            t0.elapsed().as_secs_f64() * 1e3 / args.repeats.max(1) as f64,
        )
    };
    let (fused, t_fused) = time(&|| weight_norm(v.clone(), g.clone(), axis).expect("validated"));
    let (composed, t_composed) =
        time(&|| weight_norm_composed(v.clone(), g.clone(), axis, 0.0).expect("validated"));
    let to_f32 = |t: Tensor<1>| -> f32 { t.into_scalar::<f32>() };
    let err_identity = to_f32((fused.clone() - v).abs().max());
    let err_paths = to_f32((fused - composed).abs().max());
    println!("with g = ||v||, max |w - v| = {err_identity:.3e} (the function-preserving init)");
    println!("max |fused - composed| = {err_paths:.3e}");
    println!("forward: fused {t_fused:.3} ms, composed {t_composed:.3} ms");
    Ok(())
}
