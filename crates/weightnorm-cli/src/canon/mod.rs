//! `weightnorm canonicalize`: one pipeline (`pipeline`) over two front-ends, a checkpoint with
//! its architecture file (`arch`) and an ONNX model (`onnx`); the options (`args`) and the
//! verification inputs (`inputs`) are shared. Modules depend one way: `args` <- `inputs` <-
//! `pipeline` <- `arch`, `onnx` <- this dispatch.

mod arch;
mod args;
mod inputs;
mod onnx;
mod pipeline;

use std::path::Path;
use std::time::Instant;

use anyhow::{Result, bail};
use weightnorm::canonical::Real;
use weightnorm::onnx::OnnxModel;
use weightnorm::torch::{Dtype, FuseOptions, TorchError, from_arch, fuse};

pub use args::CanonicalizeArgs;
pub(crate) use args::bad;

use crate::ckpt::open;
use crate::output::Outputs;
use crate::text::shown;
use args::{input_files, is_onnx};

/// Runs `canonicalize`.
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
        return from_onnx(&args);
    }
    let Some(arch_path) = args.arch.clone() else {
        bail!(bad(format!(
            "--arch ARCH.json is required for the checkpoint {} (an ONNX model, MODEL.onnx, \
             carries its own graph)",
            shown(&args.input.input)
        )));
    };
    let outputs = Outputs::new(input_files(&args));
    check_targets(&args, &outputs)?;
    let t0 = Instant::now();
    let ckpt = open(&args.input)?;
    let (tensors, pairs) = match fuse(&ckpt.tensors, &FuseOptions::default()) {
        Ok((t, p)) => (t, p.len()),
        Err(TorchError::NothingTo(_)) => (ckpt.tensors.clone(), 0),
        Err(e) => bail!(bad(e)),
    };
    let bytes = weightnorm::torch::read_regular(&arch_path, 64 << 20)
        .map_err(|e| bad(format!("{}: {e}", shown(&arch_path))))?;
    let text = String::from_utf8(bytes)
        .map_err(|e| bad(format!("{}: not UTF-8 text: {e}", shown(&arch_path))))?;
    let arch: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| bad(format!("{}: not JSON: {e}", shown(&arch_path))))?;
    /// The checkpoint's tensors with their pairs fused, and the type they are computed in.
    struct Fused {
        tensors: Vec<weightnorm::torch::TensorEntry>,
        pairs: usize,
        dtype: Dtype,
    }
    fn go<T: Real>(
        args: &CanonicalizeArgs,
        outputs: Outputs,
        ckpt: &weightnorm::torch::Checkpoint,
        fused: Fused,
        arch: (&serde_json::Value, &Path),
        t0: Instant,
    ) -> Result<()> {
        let (arch, arch_path) = arch;
        let read = from_arch::<T>(arch, &fused.tensors)
            .map_err(|e| bad(format!("{}: {e}", shown(arch_path))))?;
        let front = arch::ArchFront {
            read,
            ckpt,
            tensors: fused.tensors,
            pairs: fused.pairs,
            dtype: fused.dtype,
            checkpoint: &args.input.input,
            arch: arch_path,
        };
        pipeline::run(args, outputs, front, t0.elapsed().as_secs_f64())
    }
    let wide = tensors.iter().any(|t| t.dtype == Dtype::F64);
    let dtype = if wide { Dtype::F64 } else { Dtype::F32 };
    let fused = Fused {
        tensors,
        pairs,
        dtype,
    };
    let arch = (&arch, arch_path.as_path());
    if wide {
        go::<f64>(&args, outputs, &ckpt, fused, arch, t0)
    } else {
        go::<f32>(&args, outputs, &ckpt, fused, arch, t0)
    }
}

/// The output and the report are new files (or `--force`), and none of them an input.
fn check_targets(args: &CanonicalizeArgs, outputs: &Outputs) -> Result<()> {
    let mut targets: Vec<&Path> = vec![&args.output.output];
    targets.extend(args.report.as_deref());
    outputs.check(&targets, args.output.force)
}

/// `canonicalize` on an ONNX model.
fn from_onnx(args: &CanonicalizeArgs) -> Result<()> {
    let path = &args.input.input;
    let t0 = Instant::now();
    let model = OnnxModel::open(path).map_err(|e| bad(format!("{}: {e}", shown(path))))?;
    // The files its weights lie in are inputs too: no output may be one of them.
    let mut inputs = input_files(args);
    inputs.extend(
        model
            .external_files()
            .map_err(|e| bad(format!("{}: {e}", shown(path))))?,
    );
    // Weight norm still attached (g and v initializers and the subgraph computing the weight
    // from them) is folded first: the weight is then a constant.
    let (model, folded) = model
        .fold_weight_norms()
        .map_err(|e| bad(format!("{}: {e}", shown(path))))?;
    if !folded.is_empty() {
        eprintln!(
            "folded {} weight-norm subgraphs of {} before canonicalizing",
            folded.len(),
            shown(path)
        );
    }
    let outputs = Outputs::new(inputs);
    check_targets(args, &outputs)?;
    fn go<T: Real>(
        args: &CanonicalizeArgs,
        outputs: Outputs,
        model: &OnnxModel,
        t0: Instant,
    ) -> Result<()> {
        let path = &args.input.input;
        let read = model
            .network::<T>()
            .map_err(|e| bad(format!("{}: {e}", shown(path))))?;
        let front = onnx::OnnxFront { model, read, path };
        pipeline::run(args, outputs, front, t0.elapsed().as_secs_f64())
    }
    if model.has_f64_weights() {
        go::<f64>(args, outputs, &model, t0)
    } else {
        go::<f32>(args, outputs, &model, t0)
    }
}
