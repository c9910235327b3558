//! `canonicalize`'s options, and the files it reads.

use std::path::{Path, PathBuf};

use crate::Failure;
use crate::ckpt::{Input, Output};
use crate::data;

/// The most random verification samples (`--samples`).
pub const MAX_SAMPLES: usize = 65_536;

/// The most values the random verification inputs may hold in all (samples times the
/// architecture's input size): 2^24, 128 MiB of f64.
pub const MAX_RANDOM_VALUES: usize = 1 << 24;

/// What to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Form {
    /// Unit-norm layers, plus the output scale under `canonical.scale`.
    Canonical,
    /// A normal network: all of the gain in the last weighted layer.
    Reconstituted,
}

#[derive(clap::Args)]
#[command(after_help = "\
An ONNX model (MODEL.onnx) carries its own graph: no --arch. OUT is the same graph with the
canonical weights and one added Mul by the initializer `canonical.scale` (per output unit or
channel) before the output, or before a trailing Softmax/LogSoftmax, so that any ONNX runtime
computes the original outputs from it; the report names layers by their ONNX nodes. The graph
may hold Gemm, MatMul (+ Add), Conv (1-D, 2-D), Relu, LeakyRelu, PRelu, Identity, Dropout,
MaxPool, AveragePool, GlobalAveragePool, ReduceMean, Flatten, a flatten's Reshape,
BatchNormalization (folded), Add/Sub/Mul/Div by per-channel constants, residual Adds (projection
shortcuts included), Tanh, Sigmoid, Gelu (or its Erf form), WaveNet's gate and Softmax as
barriers; any other op on the way is refused, naming its node. External data is read from
beside the model; OUT holds every weight inline.

The architecture file names the checkpoint's modules in PyTorch nn.Sequential style:
  {\"input\": [784], \"layers\": [{\"op\": \"linear\", \"param\": \"0\"}, {\"op\": \"relu\"},
                             {\"op\": \"linear\", \"param\": \"2\"}]}
Ops: linear, conv1d, conv2d (stride, padding, dilation, groups), relu, leaky_relu
(negative_slope), identity, dropout, max_pool2d / avg_pool2d (kernel, stride, padding),
flatten, batch_norm (param, eps), mean_only_batch_norm (param), tanh, sigmoid, gelu, gate,
residual (body: a list of layers). `weightnorm train` writes one beside its model.

OUT holds every layer's canonical tensors under the input's keys and the output scale under
`canonical.scale`: running the same architecture on OUT and multiplying by canonical.scale
(per output channel) gives the original outputs. Batch norms are folded into the layer before
them; they are written as weight = multiplier, bias = shift, running_mean = 0,
running_var = 1 - eps.

OUT and R.json are written together or not at all: a command that fails (a report that cannot
be written included) leaves neither. Neither may be an input (the checkpoint, the architecture
file, --inputs, the data set), under any name, link or mount, even with --force, and without
--force neither may exist.

Exit codes: 0 done, 2 bad input (files, architecture, outputs), 1 a failed write (nothing is
written then) or verification above --tolerance (then only the report is written).

Examples:
  weightnorm canonicalize runs/wn/model.safetensors --arch runs/wn/arch.json -o canon.safetensors --report canon.json
  weightnorm canonicalize runs/wn/model.safetensors --arch runs/wn/arch.json -o canon.safetensors --dataset digits
  weightnorm canonicalize model.pt --arch arch.json -o plain.safetensors --form reconstituted
  weightnorm canonicalize resnet.onnx -o resnet.canonical.onnx --report canon.json --inputs x.safetensors")]
pub struct CanonicalizeArgs {
    #[command(flatten)]
    pub input: Input,
    /// The architecture file (JSON; see below). Required for a checkpoint; an ONNX model
    /// (`.onnx`) carries its own graph.
    #[arg(long, value_name = "ARCH.json")]
    pub arch: Option<PathBuf>,
    #[command(flatten)]
    pub output: Output,
    /// Write a JSON report: global gain and direction, per-layer statistics, verification.
    #[arg(long, value_name = "R.json")]
    pub report: Option<PathBuf>,
    /// Verify on these inputs: a safetensors file whose tensor `x` (or only tensor) is a batch
    /// `[N, ..input shape]`; an integer tensor `y` of labels, if present, adds accuracies.
    #[arg(long, value_name = "X.safetensors", conflicts_with = "dataset")]
    pub inputs: Option<PathBuf>,
    /// Verify on a data set's test split (`digits` or `fashion-mnist`), standardized as
    /// `weightnorm train` does; reports argmax agreement and accuracies.
    #[arg(long)]
    pub dataset: Option<String>,
    /// Where Fashion-MNIST is (with `--dataset fashion-mnist`).
    #[arg(long, default_value = data::FASHION_DEFAULT)]
    pub data: PathBuf,
    /// Random inputs when neither `--inputs` nor `--dataset` is given: how many (1 to 65536,
    /// and at most 2^24 input values in all).
    #[arg(long, default_value_t = 8)]
    pub samples: usize,
    /// Seed of the random inputs.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// What to write.
    #[arg(long, value_enum, default_value_t = Form::Canonical)]
    pub form: Form,
    /// The largest relative error of the verification accepted (over the largest original
    /// output).
    #[arg(long, default_value_t = 1e-4)]
    pub tolerance: f64,
}

pub(crate) fn bad(e: impl std::fmt::Display) -> anyhow::Error {
    Failure::input(anyhow::anyhow!("{e}")).into()
}

/// The files `canonicalize` reads, which no output may be.
pub(crate) fn input_files(args: &CanonicalizeArgs) -> Vec<PathBuf> {
    let mut files = vec![args.input.input.clone()];
    files.extend(args.arch.clone());
    files.extend(args.inputs.clone());
    if args.dataset.as_deref() == Some("fashion-mnist") {
        files.extend(data::fashion_files(&args.data));
    }
    files
}

/// Whether `path` names an ONNX model (by its extension, `.onnx` in any case).
pub(crate) fn is_onnx(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("onnx"))
}
