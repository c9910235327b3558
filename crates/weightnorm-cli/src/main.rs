//! The `weightnorm` command line.
//!
//! One concern per module (the library does the numerics; nothing here imports the other way):
//!
//! | module | holds |
//! |---|---|
//! | `main` | the command tree, [`Failure`] (exit 2 for bad input, 1 otherwise, 130 when interrupted), one-line errors |
//! | `text` | how names and errors reach the terminal: escaped, one line |
//! | `output` | every file a command writes: staged in private temporaries, put in place together (`RENAME_NOREPLACE` unless `--force`), never over an input |
//! | `device` | `--device cpu\|cuda[:N]\|wgpu[:N]` and the global `--threads N` |
//! | `op` | `weightnorm op`: the operation on a random tensor, fused against composed |
//! | `ckpt` | `inspect`, `fuse`, `split`, `convert` |
//! | `canon` | `canonicalize`: one pipeline (`canon/pipeline.rs`: read, verify, canonicalize, write, report with one schema) over two front-ends, a checkpoint with its architecture file (`canon/arch.rs`) and an ONNX model read back before it is put in place (`canon/onnx.rs`); the options and the verification inputs |
//! | `data` | data sets (Fashion-MNIST IDX files, the built-in digits), validated at load |
//! | `cnn` | the CNN classifier of `train --model cnn` (plain or weight-normalized, with batch norms or mean-only batch norms), described for the canonical form |
//! | `model` | the MLP and CNN of `train`, their parameterizations, export to a PyTorch `nn.Sequential` checkpoint and architecture file |
//! | `train` | `train` and `compare`: `args` (options), `run` (the loop: steps, epochs, checkpoints, Ctrl-C), `checkpoint` (model, optimizer, position, metrics in one file, each section checksummed), `out` (the run directory claimed under a lock, cleaned of what a failed run wrote), `batch`, `evaluate` (loss, accuracy, ECE), `progress` (bar and per-epoch lines), `save` (a run's outputs) |
//! | `metrics` | what a run measured, and `metrics.json` |
//! | `stats` | a quantity over seeds (mean, spread, the test of a difference), moving averages, quantiles |
//! | `summary` | runs grouped by parameterization: means and spreads over seeds, bands of curves |
//! | `report` | `report.md` (a conclusion computed from the numbers) and the terminal table |
//! | `plot` | PNG plots from metrics only (no training, no clap) |
//! | `demo` | `weightnorm demo` |
//! | `bench` | `weightnorm bench`: the operation, copies, training steps and canonicalization timed |
//! | `malloc` | the allocator settings every command runs with (set first thing in `main`) |
//!
//! Data flow of `train`: data set -> batches -> model -> loss -> gradients -> Adam ->
//! (per step) `steps.jsonl`, (every N steps and epoch) `checkpoint.bin` -> metrics -> outputs
//! staged -> put in place together.

mod bench;
mod canon;
mod ckpt;
mod cnn;
mod data;
mod demo;
mod device;
mod malloc;
mod metrics;
mod model;
mod op;
mod output;
mod plot;
mod report;
mod stats;
mod summary;
mod text;
mod train;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Weight normalization, w = g * v / ||v||, exact to PyTorch.
#[derive(Parser)]
#[command(name = "weightnorm", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Worker threads of the CPU kernels and Burn's CPU backend (default: one per core, or
    /// RAYON_NUM_THREADS).
    #[arg(long, global = true, value_name = "N")]
    threads: Option<usize>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the weight-norm operation on a random weight and report norms, agreement of the
    /// fused and composed paths, and timings.
    Op(op::OpArgs),
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
    /// Time the operation (fused and composed) beside copies of the same bytes, a training
    /// step plain and weight-normalized, and canonicalization.
    Bench(bench::BenchArgs),
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

impl std::error::Error for Failure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

/// A clap usage error on one line: its lines joined with "; ", without the usage block and the
/// pointer to `--help`, so that every error of the command is one line.
fn one_line(rendered: &str) -> String {
    rendered
        .lines()
        .map(str::trim)
        .filter(|l| {
            !l.is_empty() && !l.starts_with("Usage:") && !l.starts_with("For more information")
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn main() -> ExitCode {
    // Before any thread: the allocator keeps large freed blocks (see `malloc`).
    malloc::configure();
    // Die quietly when stdout is closed early (`weightnorm inspect f | head`), as Unix tools do,
    // rather than panicking on the failed write.
    #[cfg(unix)]
    // SAFETY: setting a signal's disposition to the default at start-up, before any thread.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if e.use_stderr() => {
            eprintln!(
                "{}",
                text::shorten_words(&text::escape(&one_line(&e.render().to_string())))
            );
            return ExitCode::from(2);
        }
        Err(e) => e.exit(), // --help and --version: printed as clap lays them out
    };
    let threads = cli.threads;
    // `train` and `compare` start their threads themselves: a resumed run uses those it was
    // started with.
    let own_threads = matches!(cli.command, Command::Train(_) | Command::Compare(_));
    let result = device::check_threads(threads)
        .and_then(|()| device::set_streaming_stores())
        .and_then(|()| {
            if own_threads {
                Ok(())
            } else {
                device::set_threads(threads)
            }
        })
        .and_then(|()| match cli.command {
            Command::Op(args) => op::op(args),
            Command::Inspect(args) => ckpt::inspect(args),
            Command::Fuse(args) => ckpt::fuse_cmd(args),
            Command::Split(args) => ckpt::split_cmd(args),
            Command::Convert(args) => ckpt::convert_cmd(args),
            Command::Train(args) => train::train(args, threads),
            Command::Compare(args) => train::compare(args, threads),
            Command::Canonicalize(args) => canon::canonicalize_cmd(args),
            Command::Demo(args) => demo::demo(args),
            Command::Bench(args) => bench::bench(args),
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the causes a message does not already say appended, lines joined,
            // control characters (from file names, tensor names) escaped.
            eprintln!("error: {}", text::one_line_error(&e));
            if e.downcast_ref::<train::Interrupted>().is_some() {
                ExitCode::from(130)
            } else if e.downcast_ref::<Failure>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}
