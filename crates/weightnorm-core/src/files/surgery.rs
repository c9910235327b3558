//! Fuse, split and convert from a checkpoint file to another; fold an ONNX model's weight norms.

use std::path::{Path, PathBuf};

use super::{FileError, Outputs, Result, shown};
use crate::formats::onnx::{OnnxModel, WeightNormSubgraph, encode};
use crate::formats::{Checkpoint, SaveOptions, TensorEntry, TorchError};
use crate::surgery::{FuseOptions, Pair, Scheme, SplitOptions, convert, fuse, split};

/// One checkpoint rewritten into another file.
#[derive(Clone, Copy, Debug)]
pub struct FileJob<'a> {
    /// The checkpoint: `.safetensors`, a PyTorch file, or a sharded checkpoint's index.
    pub input: &'a Path,
    /// For a PyTorch file: the key of the state dict inside it (a dotted path allowed).
    pub key: Option<&'a str>,
    /// Where to write, in the format its name asks for (see [`Checkpoint::plan`]).
    pub output: &'a Path,
    /// Replace the output (and, for an index, its shards) if it exists.
    pub force: bool,
    /// Write the state dict alone, leaving out a training checkpoint's other entries.
    pub state_dict_only: bool,
}

/// What [`rewrite`] wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Written {
    /// Files written (shards and their index).
    pub files: usize,
    /// Tensors of the state dict written.
    pub tensors: usize,
    /// Other entries of the input carried over (a PyTorch output of a training checkpoint).
    pub carried: usize,
}

impl Written {
    /// ` (N tensors)`, with the files of a sharded output and the entries carried over.
    pub fn said(&self) -> String {
        let mut parts = vec![format!("{} tensors", self.tensors)];
        if self.files > 1 {
            parts.insert(0, format!("{} files", self.files));
        }
        if self.carried > 0 {
            parts.push(format!(
                "{} other entr{} carried over",
                self.carried,
                if self.carried == 1 { "y" } else { "ies" }
            ));
        }
        format!(" ({})", parts.join(", "))
    }
}

/// Every file a checkpoint was read from (an index and its shards).
fn input_files_of(ckpt: &Checkpoint) -> Vec<PathBuf> {
    let mut files = vec![ckpt.path.clone()];
    if let Some(s) = ckpt.sharding() {
        let dir = s
            .index
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        files.extend(s.shards.iter().map(|sh| dir.join(&sh.file)));
    }
    files
}

/// Reads the input checkpoint, transforms its tensors with `f` (which returns the new tensors
/// and the pairs it handled) and writes them as the output's name asks; returns the pairs and
/// what was written. Nothing is read when the output is refused, and nothing is written when any
/// output file is.
///
/// # Errors
///
/// [`FileError::Exists`] for an output that exists without `force`; [`FileError::Input`] for an
/// output that is an input; [`FileError::Torch`] for a checkpoint that cannot be read or
/// transformed; [`FileError::Io`] for a failed write.
pub fn rewrite<P>(
    job: &FileJob<'_>,
    f: impl FnOnce(&[TensorEntry]) -> Result<(Vec<TensorEntry>, Vec<P>), TorchError>,
) -> Result<(Vec<P>, Written)> {
    let mut outputs = Outputs::new([job.input]);
    outputs.check(&[job.output], job.force)?;
    let ckpt = Checkpoint::open(job.input, job.key).map_err(FileError::Torch)?;
    outputs.add_inputs(input_files_of(&ckpt));
    let (tensors, pairs) = f(&ckpt.tensors).map_err(FileError::Torch)?;
    let tensors_out = tensors.len();
    let options = SaveOptions {
        format: None,
        state_dict_only: job.state_dict_only,
    };
    let planned = ckpt
        .plan(tensors, job.output, &options)
        .map_err(FileError::Torch)?;
    let targets: Vec<&Path> = planned.iter().map(|p| p.path()).collect();
    outputs.check(&targets, job.force)?;
    let mut written = Written {
        tensors: tensors_out,
        carried: if planned.len() == 1 && !job.state_dict_only {
            ckpt.others().len()
        } else {
            0
        },
        ..Written::default()
    };
    for p in &planned {
        outputs.planned(p, job.force)?;
        written.files += 1;
    }
    outputs.commit()?;
    Ok((pairs, written))
}

/// Fuses every weight-norm pair of `job.input` into its weight (`w = g * v / ||v||`, in `v`'s
/// dtype) and writes the result to `job.output`; `dim` is PyTorch's `dim` for every pair
/// (`Some(None)` for the whole tensor) instead of inferring it from `g`'s shape.
///
/// # Errors
///
/// Those of [`rewrite`]; [`TorchError::NothingTo`] when there is no pair.
pub fn fuse_file(job: &FileJob<'_>, dim: Option<Option<i64>>) -> Result<(Vec<Pair>, Written)> {
    rewrite(job, |t| fuse(t, &FuseOptions { dim }))
}

/// Splits the weights `options` selects into weight-norm pairs and writes the result.
///
/// # Errors
///
/// Those of [`rewrite`]; [`TorchError::NothingTo`] when nothing is selected.
pub fn split_file(job: &FileJob<'_>, options: &SplitOptions<'_>) -> Result<(Vec<Pair>, Written)> {
    rewrite(job, |t| split(t, options))
}

/// Renames every weight-norm pair into `scheme` and writes the result (the data unchanged).
///
/// # Errors
///
/// Those of [`rewrite`]; [`TorchError::NothingTo`] when there is no pair.
pub fn convert_file(job: &FileJob<'_>, scheme: Scheme) -> Result<(Vec<Pair>, Written)> {
    rewrite(job, |t| convert(t, scheme))
}

/// Folds every weight-norm subgraph of the ONNX model `input` into a constant weight and writes
/// the model, standalone (external data inlined), to `output` (which must be named `*.onnx`).
/// Returns the subgraphs folded.
///
/// # Errors
///
/// [`FileError::Input`] for a model that cannot be read or holds no weight-norm subgraph, or an
/// output not named `*.onnx`; the errors of [`Outputs`].
pub fn fuse_onnx_file(input: &Path, output: &Path, force: bool) -> Result<Vec<WeightNormSubgraph>> {
    let onnx_name = output
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("onnx"));
    if !onnx_name {
        return Err(FileError::Input(format!(
            "fusing an ONNX model writes an ONNX model: name the output *.onnx, not {}",
            shown(output)
        )));
    }
    let in_model =
        |e: crate::formats::onnx::OnnxError| FileError::Input(format!("{}: {e}", shown(input)));
    let model = OnnxModel::open(input).map_err(in_model)?;
    let mut inputs = vec![input.to_path_buf()];
    inputs.extend(model.external_files().map_err(in_model)?);
    let mut outputs = Outputs::new(inputs);
    outputs.check(&[output], force)?;
    let (folded, found) = model.fold_weight_norms().map_err(in_model)?;
    if found.is_empty() {
        return Err(FileError::Input(format!(
            "{}: no weight-norm subgraph to fold (g and v initializers feeding ReduceL2, or Pow/ReduceSum/Sqrt, Div and Mul)",
            shown(input)
        )));
    }
    let proto = folded.standalone(folded.proto.clone()).map_err(in_model)?;
    let bytes = encode(&proto).map_err(in_model)?;
    outputs.bytes(output, force, &bytes)?;
    outputs.commit()?;
    Ok(found)
}
