//! The file formats: checkpoints (`.safetensors` memory-mapped, PyTorch's `.pt` zip archives and
//! the legacy stream of torch < 1.6 through a restricted unpickler that calls nothing),
//! architecture files ([`arch`]) and, with the `onnx` feature, ONNX models ([`onnx`]).
//!
//! Weight-normalized PyTorch models store each normalized parameter as two tensors:
//!
//! | scheme | `g` | `v` |
//! |---|---|---|
//! | [`Scheme::Legacy`](crate::surgery::Scheme::Legacy) (`torch.nn.utils.weight_norm`) | `<prefix>.<name>_g` | `<prefix>.<name>_v` |
//! | [`Scheme::Parametrizations`](crate::surgery::Scheme::Parametrizations) (`torch.nn.utils.parametrizations.weight_norm`) | `<prefix>.parametrizations.<name>.original0` | `<prefix>.parametrizations.<name>.original1` |
//!
//! [`crate::surgery`] finds and transforms those pairs; this module reads and writes the files.
//!
//! Readers never execute code: `.safetensors` is parsed and validated by the `safetensors`
//! crate (memory-mapped); PyTorch's checkpoints (`.pt`, `.pth`, `.bin`), zip archives and the
//! legacy stream of torch < 1.6, by this crate's own readers, whose restricted unpickler
//! interprets only the pickle opcodes and globals that describe tensors and calls nothing.
//! Writers are atomic: a temporary file beside the output, renamed into place.

pub mod arch;
mod checkpoint;
mod legacy;
#[cfg(feature = "onnx")]
pub mod onnx;
mod pickle;
mod pt;
mod zipfile;

pub use arch::{
    ArchError, ArchFault, ArchNetwork, Binding, BindingKind, CANONICAL_SCALE_KEY, from_arch,
    to_tensors, vector_entry,
};
pub use checkpoint::{
    Checkpoint, Format, OpenOptions, TensorEntry, WriteOptions, write_safetensors,
    write_safetensors_with,
};
pub use safetensors::Dtype;

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

use thiserror::Error;

/// What can go wrong with a checkpoint. Every message names the file's tensor where it applies.
#[derive(Debug, Error)]
#[non_exhaustive]
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
    /// The file is not a valid PyTorch checkpoint.
    #[error("{path} is not a valid PyTorch checkpoint: {source}")]
    Pt {
        /// The file (or, once opened, the tensor being read).
        path: String,
        /// What is wrong.
        source: PtError,
    },
    /// The key of a nested state dict names nothing in a PyTorch checkpoint.
    #[error("{path} has no key `{key}`: {reason}")]
    Key {
        /// The file.
        path: String,
        /// The key.
        key: String,
        /// What the file has instead.
        reason: String,
    },
    /// A key was given for a safetensors file, which holds no nested state dicts.
    #[error(
        "{path} is a safetensors file: it has no nested state dicts, so the key `{key}` does not apply"
    )]
    KeyInSafetensors {
        /// The file.
        path: String,
        /// The key.
        key: String,
    },
    /// A dotted key names two places of a PyTorch checkpoint (a key holding a dot, and a
    /// path through nested dicts).
    #[error(
        "{path}: the key `{key}` is ambiguous: it names both {} and {}",
        .first.iter().map(|k| format!("[{k:?}]")).collect::<String>(),
        .second.iter().map(|k| format!("[{k:?}]")).collect::<String>()
    )]
    AmbiguousKey {
        /// The file.
        path: String,
        /// The key as given.
        key: String,
        /// One path of dict keys it names.
        first: Vec<String>,
        /// Another.
        second: Vec<String>,
    },
    /// The state dict (the file's root, or what the key names) is not a dict.
    #[error("{path}: {} holds a {found}, not a dict of tensors", match .key {
        Some(k) => format!("the key `{k}`"),
        None => "the top level".to_string(),
    })]
    NotADict {
        /// The file.
        path: String,
        /// The key, if one was given or picked.
        key: Option<String>,
        /// The Python type found there.
        found: String,
    },
    /// Two entries of a nested PyTorch checkpoint flatten to one dotted name (`{"a.b": x}`
    /// beside `{"a": {"b": y}}`): neither may silently win.
    #[error("{path}: two entries are both named `{name}` once nested keys are joined with dots")]
    DuplicateName {
        /// The file.
        path: String,
        /// The flattened name.
        name: String,
    },
    /// A tensor would take more memory than the limit (by default, the file's own size).
    #[error(
        "{path}: `{name}` of shape {shape:?} would hold more than {limit} bytes (the limit on one tensor read from this file)"
    )]
    TooLarge {
        /// The file.
        path: String,
        /// The tensor.
        name: String,
        /// Its declared shape.
        shape: Vec<usize>,
        /// The limit in bytes.
        limit: u64,
    },
    /// A tensor list holds one name twice (a safetensors file cannot).
    #[error("the tensor `{name}` appears twice")]
    DuplicateTensor {
        /// The name.
        name: String,
    },
    /// A tensor takes the name safetensors reserves for its metadata.
    #[error(
        "a tensor cannot be called `{name}` in a safetensors file: the format reserves that name"
    )]
    ReservedName {
        /// The name.
        name: String,
    },
    /// One parameter has a weight-norm pair in both key schemes.
    #[error(
        "`{name}` has a weight-norm pair in both schemes (`{legacy_g}`/`{legacy_v}` and `{param_g}`/`{param_v}`): remove one of them"
    )]
    BothSchemes {
        /// The parameter.
        name: String,
        /// The legacy `g` key.
        legacy_g: String,
        /// The legacy `v` key.
        legacy_v: String,
        /// The parametrizations `g` key.
        param_g: String,
        /// The parametrizations `v` key.
        param_v: String,
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
        /// What the operation said (boxed: it is the largest variant).
        #[source]
        source: Box<crate::Error>,
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
    /// A slice's norm beyond the dtype's range: `g = ||w||` cannot hold it (`split`).
    #[error(
        "`{name}`: the norm of slice {slice} ({}) exceeds the range of {dtype}, so g cannot hold it",
        if norm.is_finite() { format!("{norm:e}") } else { "beyond f64 too".to_string() }
    )]
    NormOverflow {
        /// The tensor.
        name: String,
        /// The slice.
        slice: usize,
        /// The norm, computed in f64 (infinite where it is beyond f64 too).
        norm: f64,
        /// The dtype (`f32`, `f64`, `f16`, `bf16`).
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

/// What is wrong with a PyTorch checkpoint (zip archive, legacy stream, or their pickles).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum PtError {
    /// A zip structure is malformed.
    #[error("zip archive: {0}")]
    Zip(&'static str),
    /// A zip entry is compressed, which `torch.save` never does.
    #[error("the entry `{0}` is compressed (torch.save stores entries uncompressed)")]
    Compressed(String),
    /// Two zip entries or legacy storages with one name.
    #[error("`{0}` appears twice")]
    DuplicateEntry(String),
    /// A zip entry's bytes do not match its CRC-32.
    #[error("the entry `{0}` does not match its CRC-32 (a damaged file?)")]
    Crc(String),
    /// The archive has no `data.pkl`.
    #[error("no data.pkl entry (not a torch.save archive)")]
    NoPickle,
    /// The file was written on a big-endian machine.
    #[error("it was written big-endian, and only little-endian checkpoints are read")]
    BigEndian,
    /// The tar container of PyTorch before 0.1.10.
    #[error(
        "the tar format of PyTorch before 0.1.10 is not supported (load and save it again with a newer PyTorch)"
    )]
    Tar,
    /// The legacy stream's structure is wrong.
    #[error("legacy format: {0}")]
    Legacy(&'static str),
    /// A legacy storage key no tensor declared.
    #[error("legacy format: the storage `{0}` is not declared by any tensor")]
    UnknownStorage(String),
    /// A storage runs past the end of the file.
    #[error("the storage `{0}` runs past the end of the file")]
    StorageTruncated(String),
    /// A tensor's storage is missing.
    #[error("the storage `{0}` is missing")]
    MissingStorage(String),
    /// A tensor's view reaches outside its storage.
    #[error("the tensor `{0}` reaches outside its storage")]
    OutsideStorage(String),
    /// Containers nest too deeply, or refer to each other too often.
    #[error("the pickle nests containers too deeply or refers to them too often")]
    TooDeep,
    /// The pickle ends early or declares a length past its end.
    #[error("the pickle ends early (or declares a length past its end)")]
    PickleTruncated,
    /// A pickle string is not UTF-8.
    #[error("a pickle string is not valid UTF-8")]
    PickleBadString,
    /// The pickle pops more than it pushed.
    #[error("the pickle pops more values than it pushed")]
    PickleStackUnderflow,
    /// A value of the wrong kind.
    #[error("the pickle holds {0}")]
    PickleType(&'static str),
    /// An unknown pickle protocol.
    #[error("pickle protocol {0} is not supported")]
    PickleProtocol(u8),
    /// An opcode the reader does not interpret.
    #[error("pickle opcode 0x{0:02x} is not supported")]
    PickleOpcode(u8),
    /// A memo index that was never stored.
    #[error("the pickle refers to memo entry {0}, which it never stored")]
    PickleMemo(u32),
    /// A global that a checkpoint of tensors does not need.
    #[error(
        "unsupported global: found {0} (only tensors, storages and containers are read; nothing is called)"
    )]
    Global(String),
}

/// What a checkpoint transform was doing, for [`TorchError::NothingTo`] and
/// [`TorchError::Collision`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Action {
    /// [`fuse`](crate::surgery::fuse): pairs to plain weights.
    Fuse,
    /// [`split`](crate::surgery::split): plain weights to pairs.
    Split,
    /// [`convert`](crate::surgery::convert): one key scheme to the other.
    Convert,
}

/// The result type of this module.
pub type Result<T, E = TorchError> = core::result::Result<T, E>;
