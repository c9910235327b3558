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
mod open;
mod pickle;
mod pt;
mod pt_write;
mod save;
mod tree;
mod zipfile;

pub use arch::{
    ArchError, ArchFault, ArchNetwork, Binding, BindingKind, CANONICAL_SCALE_KEY, from_arch,
    to_tensors, vector_entry,
};
pub use checkpoint::{
    Checkpoint, Format, OpenOptions, Shard, Sharding, TensorEntry, WriteOptions, write_safetensors,
    write_safetensors_with,
};
pub use safetensors::Dtype;
pub use save::{OutputFormat, Planned, SaveOptions, read_pt, write_pt};
pub use tree::{PtDict, PtTensor, PtValue};

/// Opens `path` for reading only if it is a regular file (following symbolic links): a FIFO,
/// a device (`/dev/zero`), a socket or a directory is refused at once, and the open itself
/// never blocks (it is made non-blocking, so that a FIFO with no writer cannot hang it).
///
/// # Errors
///
/// The error of opening, or [`std::io::ErrorKind::InvalidInput`] naming what the path is.
pub fn open_regular(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC);
    }
    let file = options.open(path)?;
    let kind = file.metadata()?.file_type();
    if !kind.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("it is {}, not a regular file", file_kind(&kind)),
        ));
    }
    #[cfg(unix)]
    {
        use std::os::fd::AsRawFd;
        // Blocking again for the reads (a regular file's reads never block anyway).
        // SAFETY: fcntl on a descriptor this function owns.
        unsafe {
            let fd = file.as_raw_fd();
            let flags = libc::fcntl(fd, libc::F_GETFL);
            if flags >= 0 {
                libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK);
            }
        }
    }
    Ok(file)
}

/// Reads the whole of the regular file at `path` (opened as [`open_regular`] opens it, so a
/// FIFO, a device such as `/dev/zero` or a directory is an error, never a hang or a read
/// without end), refusing one larger than `max` bytes.
///
/// # Errors
///
/// The open's or the read's error; `InvalidInput` for a file that is not regular, or larger
/// than `max`.
pub fn read_regular(path: &std::path::Path, max: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let file = open_regular(path)?;
    let len = file.metadata()?.len();
    if len > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("it holds {len} bytes, more than the {max} this input may"),
        ));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    // A file that grows while it is read stops at `max` + 1 bytes, then is refused.
    file.take(max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("it grew past the {max} bytes this input may hold while it was read"),
        ));
    }
    Ok(bytes)
}

/// What a file is, in words, as errors say it: "a FIFO", "a directory", "a regular file".
pub fn file_kind(kind: &std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if kind.is_fifo() {
            return "a FIFO";
        }
        if kind.is_char_device() {
            return "a character device";
        }
        if kind.is_block_device() {
            return "a block device";
        }
        if kind.is_socket() {
            return "a socket";
        }
    }
    if kind.is_dir() {
        "a directory"
    } else if kind.is_file() {
        "a regular file"
    } else if kind.is_symlink() {
        "a symbolic link"
    } else {
        "a special file"
    }
}

/// One entry of a dict that is not a state dict, as [`TorchError::NotAStateDict`] lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntrySummary {
    /// Its key.
    pub name: String,
    /// Its Python type (`dict`, `int`, ...).
    pub kind: String,
    /// How many tensors it holds.
    pub tensors: usize,
    /// How many weight-norm pairs their names spell.
    pub pairs: usize,
    /// Whether it is a dict under a key that a dotted path can name (a state dict could be it).
    pub nameable: bool,
}

impl core::fmt::Display for EntrySummary {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "`{}` ({}", shorten(&self.name, NAME_WIDTH), self.kind)?;
        if self.tensors > 0 {
            write!(
                f,
                ": {} tensor{}",
                self.tensors,
                if self.tensors == 1 { "" } else { "s" }
            )?;
            if self.pairs > 0 {
                write!(
                    f,
                    ", {} weight-norm pair{}",
                    self.pairs,
                    if self.pairs == 1 { "" } else { "s" }
                )?;
            }
        }
        write!(f, ")")
    }
}

/// The widest name a message shows whole; longer ones are shortened in the middle.
pub(crate) const NAME_WIDTH: usize = 80;
/// How many entries a listing shows before "and N more".
const LISTED: usize = 12;

/// `name` whole when it is at most `width` characters, else its start and end around an
/// ellipsis and its length (so that a hostile 65 KB name cannot make a 65 KB message).
pub fn shorten(name: &str, width: usize) -> String {
    let n = name.chars().count();
    if n <= width {
        return name.to_string();
    }
    let keep = width.saturating_sub(1) / 2;
    let head: String = name.chars().take(keep).collect();
    let tail: String = name.chars().skip(n - keep).collect();
    format!("{head}…{tail} ({n} characters)")
}

fn listing(entries: &[EntrySummary]) -> String {
    let mut s = entries
        .iter()
        .take(LISTED)
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    if entries.len() > LISTED {
        s.push_str(&format!(" and {} more", entries.len() - LISTED));
    }
    s
}

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
    /// Without a key, a PyTorch checkpoint whose top level (or the single dict it holds) holds
    /// more than tensors: a training checkpoint (`{'generator': ..., 'optim_g': ..., 'steps':
    /// 1000}`). Nothing is flattened or dropped silently: the entries are listed, and the state
    /// dict must be chosen by its key.
    #[error(
        "{path}{}: not a state dict of tensors alone; it holds {}{}",
        .at.as_ref().map(|k| format!(" (under `{}`)", shorten(k, NAME_WIDTH))).unwrap_or_default(),
        listing(.entries),
        .suggestion.as_ref().map(|k| format!("; choose the state dict by its key, e.g. `{}`", shorten(k, NAME_WIDTH))).unwrap_or_else(|| "; no entry holds tensors".to_string())
    )]
    NotAStateDict {
        /// The file.
        path: String,
        /// The dotted key of the level listed, when it is not the top level.
        at: Option<String>,
        /// What that level holds.
        entries: Vec<EntrySummary>,
        /// The dotted key of the entry most likely to be the state dict (the one with the most
        /// weight-norm pairs, then tensors).
        suggestion: Option<String>,
    },
    /// A tensor's bytes are damaged (a zip entry that does not match its CRC-32).
    #[error("{path}: the tensor `{}` cannot be read: {source}", shorten(.tensor, NAME_WIDTH))]
    Damaged {
        /// The file.
        path: String,
        /// The tensor.
        tensor: String,
        /// What is wrong.
        #[source]
        source: PtError,
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
    /// A value that a PyTorch file cannot hold as given.
    #[error("cannot write a PyTorch file: {reason}")]
    Unwritable {
        /// What is wrong.
        reason: String,
    },
    /// The input holds entries besides its state dict that the output format cannot hold (a
    /// safetensors file holds tensors only): refused rather than dropped.
    #[error(
        "{path} holds entries besides the state dict that {format} cannot hold: {}; write a PyTorch file to keep them, or leave them out explicitly",
        listing(.entries)
    )]
    WouldDrop {
        /// The input file.
        path: String,
        /// The output format, in words.
        format: &'static str,
        /// The entries that would be lost.
        entries: Vec<EntrySummary>,
    },
    /// A sharded checkpoint's index is malformed or disagrees with its shards.
    #[error("{path}: {reason}")]
    Index {
        /// The index file.
        path: String,
        /// What is wrong.
        reason: String,
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
    /// The pickle asks for more work than its length allows (callables copying long lists
    /// again and again).
    #[error(
        "the pickle asks for more work than a file of its size can need (containers copied again and again)"
    )]
    TooMuchWork,
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
