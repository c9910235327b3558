//! Everything that knows PyTorch: checkpoint formats, the two weight-norm key schemes, pair
//! detection, `dim` inference, fuse / split / convert on whole checkpoints, Burn modules in and
//! out, and networks for the canonical form from an architecture file ([`from_arch`],
//! [`to_tensors`]).
//!
//! Weight-normalized PyTorch models store each normalized parameter as two tensors:
//!
//! | scheme | `g` | `v` |
//! |---|---|---|
//! | [`Scheme::Legacy`] (`torch.nn.utils.weight_norm`) | `<prefix>.<name>_g` | `<prefix>.<name>_v` |
//! | [`Scheme::Parametrizations`] (`torch.nn.utils.parametrizations.weight_norm`) | `<prefix>.parametrizations.<name>.original0` | `<prefix>.parametrizations.<name>.original1` |
//!
//! `g` has `v`'s size on the kept axis and 1 elsewhere, or is 0-dim for `dim=None`; the axis is
//! inferred from that shape ([`infer_axis`]). Tensors are in PyTorch's layout here (Linear
//! `[out, in]`); [`load_into_module`] and [`save_module`] translate to and from Burn's.
//!
//! Readers never execute code: `.safetensors` is parsed and validated by the `safetensors`
//! crate (memory-mapped), and PyTorch's zip checkpoints (`.pt`, `.pth`, `.bin`) by
//! `pytorch-reader`, which interprets only the pickle opcodes that describe tensors.

pub mod arch;
mod checkpoint;
mod module_io;
mod pairs;
mod transform;

pub use arch::{
    ArchError, ArchNetwork, Binding, BindingKind, CANONICAL_SCALE_KEY, from_arch, to_tensors,
    vector_entry,
};
pub use checkpoint::{Checkpoint, Format, TensorEntry, write_safetensors};

/// PyTorch's names of a module's tensors: `<module>.<field>`.
pub mod field {
    /// A layer's weight; a batch norm's `gamma`.
    pub const WEIGHT: &str = "weight";
    /// A layer's bias; a batch norm's `beta`.
    pub const BIAS: &str = "bias";
    /// A batch norm's running mean.
    pub const RUNNING_MEAN: &str = "running_mean";
    /// A batch norm's running variance.
    pub const RUNNING_VAR: &str = "running_var";
    /// A batch norm's step counter.
    pub const NUM_BATCHES_TRACKED: &str = "num_batches_tracked";

    /// `<module>.<field>`.
    pub fn key(module: &str, field: &str) -> String {
        format!("{module}.{field}")
    }
}

/// A tensor produced on demand: see [`TensorEntry::lazy`].
pub fn lazy_entry(
    name: &str,
    dtype: safetensors::Dtype,
    shape: Vec<usize>,
    produce: impl Fn() -> Vec<u8> + Send + Sync + 'static,
) -> TensorEntry {
    TensorEntry::lazy(name, dtype, shape, move || Ok(produce()))
}
pub use module_io::{load_into_module, save_module};
pub use pairs::{Pair, Scheme, detect_pairs, infer_axis, pair_keys};
pub use transform::{
    FuseOptions, Selector, SplitOptions, Stats, convert, fuse, fuse_tensor, pair_stats, split,
    split_tensor,
};

use thiserror::Error;

/// What can go wrong with a checkpoint. Every message names the file's tensor where it applies.
#[derive(Debug, Error)]
pub enum TorchError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The output could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a valid safetensors or PyTorch checkpoint.
    #[error("{path} is not a valid {format} file: {reason}")]
    Invalid {
        /// The file.
        path: String,
        /// The format it was read as.
        format: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// `--key` names nothing in a `.pt` file.
    #[error("{path} has no key `{key}`: {reason}")]
    Key {
        /// The file.
        path: String,
        /// The key.
        key: String,
        /// The reader's message.
        reason: String,
    },
    /// A weight-norm tensor has no partner.
    #[error("`{present}` has no partner: `{missing}` is missing")]
    MissingPartner {
        /// The tensor found.
        present: String,
        /// The tensor expected beside it.
        missing: String,
    },
    /// `g` and `v` disagree in shape.
    #[error(
        "`{name}`: g has shape {g:?}, which fits no axis of v {v:?} (g must have v's size on one axis and 1 elsewhere, or be 0-dim)"
    )]
    ShapeMismatch {
        /// The parameter.
        name: String,
        /// The shape of g.
        g: Vec<usize>,
        /// The shape of v.
        v: Vec<usize>,
    },
    /// A tensor that must be floating point is not, or `g` and `v` differ in dtype.
    #[error("`{name}`: {reason}")]
    DType {
        /// The tensor.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// NaN or infinity in a tensor the operation reads.
    #[error("`{name}` holds NaN or infinite values")]
    NonFinite {
        /// The tensor.
        name: String,
    },
    /// The operation refused the tensor (zero-norm slice, bad dim, ...).
    #[error("`{name}`: {source}")]
    Op {
        /// The tensor.
        name: String,
        /// What the operation said.
        source: crate::Error,
    },
    /// Nothing to do: no pair to fuse or convert, no tensor selected for split.
    #[error("{}", match .0 {
        Action::Fuse => "no weight-norm pair (`*_g`/`*_v` or `parametrizations.*.original0/1`) to fuse",
        Action::Split => "no tensor selected to split (by default: every `*.weight` of rank 2 or more)",
        Action::Convert => "no weight-norm pair to convert",
    })]
    NothingTo(Action),
    /// The result would hold a key twice.
    #[error("{}", match .action {
        Action::Fuse => format!("`{key}` exists beside its weight-norm pair: fusing would overwrite it"),
        Action::Split => format!("splitting would write `{key}` twice: the input already holds that key"),
        Action::Convert => format!("converting would write `{key}` twice"),
    })]
    Collision {
        /// What was being done.
        action: Action,
        /// The key.
        key: String,
    },
    /// A checkpoint tensor's shape differs from the module parameter it would load into.
    #[error(
        "`{path}`: the checkpoint gives shape {checkpoint:?} (in Burn's layout), the module has {module:?}"
    )]
    ShapeDiffers {
        /// The parameter path.
        path: String,
        /// The shape in the checkpoint (in Burn's layout).
        checkpoint: Vec<usize>,
        /// The parameter's shape.
        module: Vec<usize>,
    },
    /// A weight-norm pair normalizes another axis than the module's weight norm.
    #[error(
        "`{path}`: the checkpoint normalizes dim {dim:?} ({norms} norms), the module's weight norm keeps {kept}; apply weight norm with that dim (AxisChoice::Torch)"
    )]
    AxisDiffers {
        /// The parameter path.
        path: String,
        /// The checkpoint's PyTorch `dim`.
        dim: Option<i64>,
        /// The number of norms the checkpoint holds.
        norms: usize,
        /// The number of norms the module keeps.
        kept: usize,
    },
    /// The module's parameter has weight norm but the checkpoint has no pair for it.
    #[error(
        "`{path}` has weight norm in the module, but the checkpoint has no pair for it (`{g_key}`/`{v_key}` or its parametrizations keys)"
    )]
    MissingPair {
        /// The parameter path.
        path: String,
        /// The legacy `g` key.
        g_key: String,
        /// The legacy `v` key.
        v_key: String,
    },
    /// The checkpoint lacks a tensor the module needs.
    #[error("the checkpoint has no tensor `{name}`")]
    MissingTensor {
        /// The tensor's name.
        name: String,
    },
    /// Checkpoint tensors that have no place in the module.
    #[error("the module has no place for these checkpoint tensors: {}", .names.join(", "))]
    UnusedTensors {
        /// Their names.
        names: Vec<String>,
    },
    /// The axis a module's weight norm keeps cannot be told from `g`'s length.
    #[error("`{path}`: cannot tell which axis its weight norm keeps from g's {norms} values")]
    AmbiguousAxis {
        /// The parameter path.
        path: String,
        /// The length of `g`.
        norms: usize,
    },
    /// A finite value that the tensor's dtype cannot hold (it would become infinite).
    #[error("`{name}`: a value of {value:e} overflows {dtype}")]
    Overflow {
        /// The tensor.
        name: String,
        /// The value.
        value: f64,
        /// The dtype, in words (`f32`, `f16`, `bf16`).
        dtype: &'static str,
    },
    /// A Linear weight (transposed between the layouts) that is not 2-D.
    #[error("`{name}` should be a 2-D Linear weight, but has shape {shape:?}")]
    NotLinear {
        /// The tensor's name.
        name: String,
        /// Its shape.
        shape: Vec<usize>,
    },
}

/// What a checkpoint transform was doing, for [`TorchError::NothingTo`] and
/// [`TorchError::Collision`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// [`fuse`]: pairs to plain weights.
    Fuse,
    /// [`split`]: plain weights to pairs.
    Split,
    /// [`convert`]: one key scheme to the other.
    Convert,
}

/// The result type of this module.
pub type Result<T, E = TorchError> = core::result::Result<T, E>;
