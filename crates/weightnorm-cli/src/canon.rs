//! `weightnorm canonicalize`: a checkpoint and its architecture file in, the canonical (or
//! reconstituted) checkpoint and a report out, verified against the original; or an ONNX model
//! in and out (`canon_onnx`). The options, the verification inputs and the report's pieces are
//! shared.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Result, bail};
use safetensors::Dtype;
use serde_json::json;
use weightnorm::canonical::{Agreement, Real, argmax, canonicalize, reconstitute};
use weightnorm::torch::{
    ArchNetwork, CANONICAL_SCALE_KEY, FuseOptions, TensorEntry, TorchError, from_arch, fuse,
    to_tensors, vector_entry,
};

use crate::Failure;
use crate::ckpt::{Input, Output, open};
use crate::data;
use crate::output::Outputs;
use crate::text::shown;

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

/// Inputs for the verification, with labels when known, and where they came from.
pub(crate) struct Inputs {
    pub x: Vec<Vec<f64>>,
    pub y: Option<Vec<usize>>,
    pub what: String,
}

fn decode_f64(t: &TensorEntry) -> Result<Vec<f64>> {
    t.values_f64().map_err(bad)
}

pub(crate) fn load_inputs(args: &CanonicalizeArgs, shape: &[usize]) -> Result<Inputs> {
    let per: usize = shape.iter().product();
    let split = |flat: Vec<f64>| flat.chunks(per).map(<[f64]>::to_vec).collect::<Vec<_>>();
    if let Some(path) = &args.inputs {
        let ck = weightnorm::torch::Checkpoint::open(path, None).map_err(bad)?;
        let x = ck
            .get("x")
            .or_else(|| (ck.tensors.len() == 1).then(|| &ck.tensors[0]))
            .ok_or_else(|| {
                bad(format!(
                    "{}: no tensor `x` (and more than one tensor)",
                    shown(path)
                ))
            })?;
        let n = x.shape.first().copied().unwrap_or(0);
        let rest: usize = x.shape.iter().skip(1).product();
        if x.shape.len() < 2 || rest != per || n == 0 {
            bail!(bad(format!(
                "{}: `{}` has shape {:?}, expected [N, {}] with N > 0",
                shown(path),
                x.name,
                x.shape,
                shape
                    .iter()
                    .map(usize::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let xs = decode_f64(x)?;
        if xs.iter().any(|v| !v.is_finite()) {
            bail!(bad(format!(
                "{}: the inputs hold NaN or infinity",
                shown(path)
            )));
        }
        let y = match ck.get("y") {
            Some(y) if y.numel() == n => {
                Some(decode_f64(y)?.into_iter().map(|v| v as usize).collect())
            }
            Some(y) => bail!(bad(format!(
                "{}: `y` has {} labels for {n} samples",
                shown(path),
                y.numel()
            ))),
            None => None,
        };
        return Ok(Inputs {
            x: split(xs),
            y,
            what: format!("{} ({n} samples)", shown(path)),
        });
    }
    if let Some(name) = &args.dataset {
        let ds = match name.as_str() {
            "digits" => data::digits(),
            "fashion-mnist" => data::fashion_mnist(&args.data)?,
            other => bail!(bad(format!(
                "unknown data set `{other}`: use digits or fashion-mnist"
            ))),
        }
        .standardize();
        if ds.features() != per {
            bail!(bad(format!(
                "the architecture takes {per} values per sample, {} images have {}",
                ds.name,
                ds.features()
            )));
        }
        let n = ds.test_y.len();
        return Ok(Inputs {
            x: split(ds.test_x.iter().map(|&v| f64::from(v)).collect()),
            y: Some(ds.test_y.iter().map(|&v| usize::from(v)).collect()),
            what: format!("{} test split ({n} samples)", ds.name),
        });
    }
    let values = args.samples.saturating_mul(per);
    if args.samples == 0 || args.samples > MAX_SAMPLES || values > MAX_RANDOM_VALUES {
        bail!(bad(format!(
            "--samples must be 1 to {MAX_SAMPLES}, and at most {MAX_RANDOM_VALUES} values in all \
             ({per} per sample here): give fewer, or verify on --inputs or --dataset"
        )));
    }
    // Standard normal samples (Box-Muller).
    let mut rng = data::SplitMix64(args.seed);
    let xs = (0..values)
        .map(|_| {
            let (u, v) = (1.0 - rng.next_f64(), rng.next_f64());
            (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
        })
        .collect();
    Ok(Inputs {
        x: split(xs),
        y: None,
        what: format!(
            "random normal inputs ({} samples, seed {})",
            args.samples, args.seed
        ),
    })
}

pub(crate) fn accuracy(outputs: &[Vec<f64>], labels: &[usize]) -> f64 {
    let right = outputs
        .iter()
        .zip(labels)
        .filter(|(y, l)| argmax(y) == **l)
        .count();
    right as f64 / labels.len().max(1) as f64
}

pub(crate) fn range_json(r: (f64, f64)) -> serde_json::Value {
    json!([r.0, r.1])
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

pub fn canonicalize_cmd(args: CanonicalizeArgs) -> Result<()> {
    if is_onnx(&args.input.input) {
        if args.arch.is_some() {
            bail!(bad(format!(
                "{} is an ONNX model, which carries its own graph: drop --arch",
                shown(&args.input.input)
            )));
        }
        if args.input.key.is_some() {
            bail!(bad(
                "--key selects a state dict in a PyTorch checkpoint, not in an ONNX model"
            ));
        }
        return crate::canon_onnx::canonicalize_onnx(&args);
    }
    let Some(arch_path) = args.arch.clone() else {
        bail!(bad(format!(
            "--arch ARCH.json is required for the checkpoint {} (an ONNX model, MODEL.onnx, \
             carries its own graph)",
            shown(&args.input.input)
        )));
    };
    let outputs = Outputs::new(input_files(&args));
    let mut targets: Vec<&Path> = vec![&args.output.output];
    targets.extend(args.report.as_deref());
    outputs.check(&targets, args.output.force)?;
    let t0 = Instant::now();
    let ckpt = open(&args.input)?;
    let (tensors, pairs) = match fuse(&ckpt.tensors, &FuseOptions::default()) {
        Ok((t, p)) => (t, p.len()),
        Err(TorchError::NothingTo(_)) => (ckpt.tensors.clone(), 0),
        Err(e) => bail!(bad(e)),
    };
    let text = std::fs::read_to_string(&arch_path)
        .map_err(|e| bad(format!("{}: {e}", shown(&arch_path))))?;
    let arch: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| bad(format!("{}: not JSON: {e}", shown(&arch_path))))?;
    let wide = tensors.iter().any(|t| t.dtype == Dtype::F64);
    if wide {
        run::<f64>(
            &args,
            outputs,
            &ckpt,
            &tensors,
            pairs,
            &arch,
            Dtype::F64,
            t0,
        )
    } else {
        run::<f32>(
            &args,
            outputs,
            &ckpt,
            &tensors,
            pairs,
            &arch,
            Dtype::F32,
            t0,
        )
    }
}

#[allow(clippy::too_many_arguments)]
fn run<T: Real>(
    args: &CanonicalizeArgs,
    mut outputs: Outputs,
    ckpt: &weightnorm::torch::Checkpoint,
    tensors: &[TensorEntry],
    pairs: usize,
    arch: &serde_json::Value,
    dtype: Dtype,
    t0: Instant,
) -> Result<()> {
    let arch_path = args.arch.as_deref().expect("checked by canonicalize_cmd");
    let read: ArchNetwork<T> =
        from_arch(arch, tensors).map_err(|e| bad(format!("{}: {e}", shown(arch_path))))?;
    let (net, bindings) = (read.network.clone(), &read.bindings);
    let parameters = net.parameters();
    let load_s = t0.elapsed().as_secs_f64();
    let inputs = load_inputs(args, net.input())?;
    let t = Instant::now();
    let expected = net.forward(&inputs.x);
    let mut verify_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let c = canonicalize(net).map_err(bad)?;
    let canon_s = t.elapsed().as_secs_f64();
    let (gain, direction, scale) = (c.global_gain(), c.gain_direction(), c.scale().to_vec());
    let (layers, notes) = (c.reports().to_vec(), c.notes().to_vec());
    let t = Instant::now();
    let (network, got) = match args.form {
        Form::Canonical => {
            let got = c.forward(&inputs.x);
            (c.into_parts().0, got)
        }
        Form::Reconstituted => {
            let (canonical, scale) = c.into_parts();
            let (back, _) = reconstitute(canonical, &scale).map_err(bad)?;
            let got = back.forward(&inputs.x);
            (back, got)
        }
    };
    verify_s += t.elapsed().as_secs_f64();
    let agreement = Agreement::between(&expected, &got);
    let accuracies = inputs
        .y
        .as_ref()
        .map(|y| (accuracy(&expected, y), accuracy(&got, y)));
    let ok = agreement.max_rel_error <= args.tolerance;
    let t = Instant::now();
    if ok {
        let extra = match args.form {
            Form::Canonical => vec![vector_entry(CANONICAL_SCALE_KEY, &scale, dtype).map_err(bad)?],
            Form::Reconstituted => Vec::new(),
        };
        let entries = to_tensors(Arc::new(network), bindings, tensors, extra).map_err(bad)?;
        let mut metadata = ckpt.metadata.clone().unwrap_or_default();
        metadata.insert("format".into(), "pt".into());
        metadata.insert(
            "weightnorm.form".into(),
            match args.form {
                Form::Canonical => "canonical",
                Form::Reconstituted => "reconstituted",
            }
            .into(),
        );
        outputs.safetensors(
            &args.output.output,
            args.output.force,
            &entries,
            Some(&metadata),
        )?;
    }
    let write_s = t.elapsed().as_secs_f64();
    let carried: Vec<_> = layers
        .iter()
        .filter_map(|r| {
            r.carries
                .as_ref()
                .map(|w| format!("layer {}: {w}", r.layer))
        })
        .collect();
    if let Some(path) = &args.report {
        let report = json!({
            "checkpoint": args.input.input.display().to_string(),
            "arch": arch_path.display().to_string(),
            "form": format!("{:?}", args.form).to_lowercase(),
            "dtype": format!("{dtype:?}").to_lowercase(),
            "parameters": parameters,
            "fused_weight_norm_pairs": pairs,
            "global_gain": gain,
            "gain_direction": direction,
            "scale": scale,
            "layers": layers.iter().map(|r| json!({
                "layer": r.layer,
                "op": r.op,
                "param": read.prefix(&r.layer),
                "row_norms_before": range_json(r.row_norms_before),
                "scale_after": range_json(r.scale),
                "row_norms_after": range_json(r.row_norms_after),
                "zero_rows": r.zero_rows,
                "carries": r.carries,
            })).collect::<Vec<_>>(),
            "notes": notes,
            "verification": verification_json(args, &inputs, &agreement, accuracies, ok),
            "max_abs_error": agreement.max_abs_error,
            "max_rel_error": agreement.max_rel_error,
            "timings_s": {"load": load_s, "canonicalize": canon_s, "verify": verify_s, "write": write_s},
        });
        outputs.json(path, args.output.force, &report)?;
    }
    // The checkpoint and the report are put in place together, or neither is.
    outputs.commit()?;
    println!(
        "{parameters} parameters, {} weighted layers{}: global gain {gain:.6e} over {} outputs",
        layers.len(),
        if pairs > 0 {
            format!(" ({pairs} weight-norm pairs fused)")
        } else {
            String::new()
        },
        scale.len()
    );
    for n in &notes {
        println!("  {n}");
    }
    for w in &carried {
        println!("  {w}");
    }
    finish(
        args,
        &format!("verified on {}", inputs.what),
        &agreement,
        accuracies,
        [load_s, canon_s, verify_s, write_s],
        ok,
    )
}

/// The report's `verification` object: on what, the errors, the accuracies where there are
/// labels, the tolerance and whether it passed. Shared by both front-ends.
pub(crate) fn verification_json(
    args: &CanonicalizeArgs,
    inputs: &Inputs,
    agreement: &Agreement,
    accuracies: Option<(f64, f64)>,
    ok: bool,
) -> serde_json::Value {
    json!({
        "inputs": inputs.what,
        "samples": inputs.x.len(),
        "max_abs_error": agreement.max_abs_error,
        "max_rel_error": agreement.max_rel_error,
        "argmax_agreement": agreement.argmax_agreement,
        "accuracy_original": accuracies.map(|a| a.0),
        "accuracy_canonical": accuracies.map(|a| a.1),
        "tolerance": args.tolerance,
        "passed": ok,
    })
}

/// The verification line (`verified`, then the errors and, with labels, the accuracies), the
/// timings of the four stages, and the verdict (`ok`: the largest relative error is within
/// `--tolerance`): an error when it is not (the caller then wrote nothing), else
/// the line naming the written model. Shared by the architecture-file and ONNX front-ends.
pub(crate) fn finish(
    args: &CanonicalizeArgs,
    verified: &str,
    agreement: &Agreement,
    accuracies: Option<(f64, f64)>,
    [load_s, canon_s, verify_s, write_s]: [f64; 4],
    ok: bool,
) -> Result<()> {
    println!(
        "{verified}: max abs error {:.3e}, max rel error {:.3e}{}{}",
        agreement.max_abs_error,
        agreement.max_rel_error,
        agreement
            .argmax_agreement
            .map_or(String::new(), |a| format!(", argmax agreement {a:.6}")),
        accuracies.map_or(String::new(), |(a, b)| format!(
            ", accuracy {a:.4} original / {b:.4} {}",
            if args.form == Form::Canonical {
                "canonical"
            } else {
                "reconstituted"
            }
        ))
    );
    println!(
        "time: load {load_s:.3} s, canonicalize {canon_s:.3} s, verify {verify_s:.3} s, write {write_s:.3} s"
    );
    if !ok {
        bail!(
            "verification failed: max rel error {:.3e} exceeds --tolerance {:.1e}; nothing written",
            agreement.max_rel_error,
            args.tolerance
        );
    }
    println!("wrote {}", shown(&args.output.output));
    Ok(())
}
