//! Reading checkpoints (safetensors memory-mapped, PyTorch zip archives) and writing
//! safetensors atomically, one tensor at a time.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};

use super::pt::{Detected, HEAD_LEN, detect};
use super::tree::{PtValue, key_name};
use super::{EntrySummary, Result, TorchError};

/// The file formats this module reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `.safetensors`.
    SafeTensors,
    /// A PyTorch checkpoint (`torch.save`: `.pt`, `.pth`, `.bin`).
    PyTorch,
}

type Producer = dyn Fn() -> Result<Vec<u8>> + Send + Sync;

#[derive(Clone)]
enum Source {
    /// A byte range of a memory-mapped file.
    Mapped(Arc<Mmap>, usize, usize),
    /// A tensor of a PyTorch checkpoint: a view of a memory-mapped storage.
    Pt(super::pt::Stored),
    /// Bytes in memory.
    Owned(Arc<Vec<u8>>),
    /// Bytes owned by someone else (a NumPy array, a torch tensor), borrowed without a copy.
    Shared(Arc<dyn AsRef<[u8]> + Send + Sync>),
    /// Computed on demand (a fused or split tensor).
    Lazy(Arc<Producer>),
}

/// One tensor of a checkpoint: name, dtype, shape and (possibly not yet read) bytes,
/// little-endian and contiguous in PyTorch's layout.
#[derive(Clone)]
pub struct TensorEntry {
    /// The key.
    pub name: String,
    /// The element type.
    pub dtype: Dtype,
    /// The shape (empty for a 0-dim tensor).
    pub shape: Vec<usize>,
    source: Source,
    /// The input tensor this one was made from, when it has another name (a renamed pair
    /// member, a fused weight from its `v`, a split pair from its weight): where a writer that
    /// keeps the input's layout (nesting, shards) puts it.
    origin: Option<Arc<str>>,
}

impl core::fmt::Debug for TensorEntry {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("TensorEntry")
            .field("name", &self.name)
            .field("dtype", &self.dtype)
            .field("shape", &self.shape)
            .finish()
    }
}

impl TensorEntry {
    /// A tensor from bytes in memory.
    ///
    /// # Errors
    ///
    /// [`TorchError::DType`] if the byte count does not match the dtype and shape.
    pub fn from_bytes(
        name: impl Into<String>,
        dtype: Dtype,
        shape: Vec<usize>,
        data: Vec<u8>,
    ) -> Result<Self> {
        let name = name.into();
        let expected = byte_len(dtype, &shape);
        if expected != Some(data.len()) {
            return Err(TorchError::DType {
                name,
                reason: format!(
                    "{} bytes do not hold a {dtype:?} tensor of shape {shape:?}",
                    data.len()
                ),
            });
        }
        Ok(Self {
            name,
            dtype,
            shape,
            source: Source::Owned(Arc::new(data)),
            origin: None,
        })
    }

    /// A tensor over bytes that another owner keeps (a NumPy array's buffer, say), borrowed
    /// without a copy for as long as this entry or any clone of it lives.
    ///
    /// # Errors
    ///
    /// [`TorchError::DType`] if the byte count does not match the dtype and shape.
    pub fn from_shared(
        name: impl Into<String>,
        dtype: Dtype,
        shape: Vec<usize>,
        data: Arc<dyn AsRef<[u8]> + Send + Sync>,
    ) -> Result<Self> {
        let name = name.into();
        let len = (*data).as_ref().len();
        if byte_len(dtype, &shape) != Some(len) {
            return Err(TorchError::DType {
                name,
                reason: format!("{len} bytes do not hold a {dtype:?} tensor of shape {shape:?}"),
            });
        }
        Ok(Self {
            name,
            dtype,
            shape,
            source: Source::Shared(data),
            origin: None,
        })
    }

    /// Whether this tensor is computed when its bytes are asked for (a fused weight, a split
    /// `g`), rather than the data of an input (its [`origin`](Self::origin), or itself).
    pub fn is_computed(&self) -> bool {
        matches!(self.source, Source::Lazy(_))
    }

    /// A tensor of a PyTorch checkpoint.
    pub(crate) fn from_pt(
        name: String,
        dtype: Dtype,
        shape: Vec<usize>,
        stored: super::pt::Stored,
    ) -> Self {
        Self {
            name,
            dtype,
            shape,
            source: Source::Pt(stored),
            origin: None,
        }
    }

    /// The view of a PyTorch storage this tensor is, if it is one (for the `.pt` writer).
    pub(crate) fn pt_view(&self) -> Option<&super::pt::Stored> {
        match &self.source {
            Source::Pt(s) => Some(s),
            _ => None,
        }
    }

    /// The same tensor, recorded as made from the input tensor `origin`.
    #[must_use]
    pub fn with_origin(mut self, origin: &str) -> Self {
        self.origin = Some(Arc::from(origin));
        self
    }

    /// The name of the input tensor this one was made from, when it differs from its own
    /// (see [`with_origin`](Self::with_origin) and [`renamed`](Self::renamed)).
    pub fn origin(&self) -> Option<&str> {
        self.origin.as_deref()
    }

    /// A tensor computed on demand by `produce`, which must return exactly the byte size of
    /// `dtype` and `shape` (checked when the bytes are read).
    pub fn lazy(
        name: impl Into<String>,
        dtype: Dtype,
        shape: Vec<usize>,
        produce: impl Fn() -> Result<Vec<u8>> + Send + Sync + 'static,
    ) -> Self {
        Self {
            name: name.into(),
            dtype,
            shape,
            source: Source::Lazy(Arc::new(produce)),
            origin: None,
        }
    }

    /// The same data under another name, recorded as made from this one (its
    /// [`origin`](Self::origin), unless it already has one).
    pub fn renamed(&self, name: impl Into<String>) -> Self {
        let name = name.into();
        let origin = match &self.origin {
            Some(o) => Some(Arc::clone(o)),
            None if name != self.name => Some(Arc::from(self.name.as_str())),
            None => None,
        };
        Self {
            name,
            origin,
            ..self.clone()
        }
    }

    /// The values as `f64` (floating-point and integer dtypes).
    ///
    /// # Errors
    ///
    /// The error of reading the bytes, or [`TorchError::DType`] for a boolean or other dtype.
    pub fn values_f64(&self) -> Result<Vec<f64>> {
        self.values_with(|x| x)
    }

    /// The values converted through `f64` by `f` (to `f32`, say, without an `f64` copy of a
    /// large tensor).
    ///
    /// # Errors
    ///
    /// The error of reading the bytes, or [`TorchError::DType`] for a boolean or other dtype.
    pub fn values_with<T>(&self, f: impl Fn(f64) -> T) -> Result<Vec<T>> {
        use half::{bf16, f16};
        fn conv<P: bytemuck::Pod, T>(b: &[u8], f: impl Fn(P) -> T) -> Vec<T> {
            // Aligned bytes (a memory-mapped file's usually are) make one tight loop.
            match bytemuck::try_cast_slice::<u8, P>(b) {
                Ok(xs) => xs.iter().map(|&x| f(x)).collect(),
                Err(_) => b
                    .chunks_exact(std::mem::size_of::<P>())
                    .map(|c| f(bytemuck::pod_read_unaligned::<P>(c)))
                    .collect(),
            }
        }
        let b = self.bytes()?;
        Ok(match self.dtype {
            Dtype::F32 => conv::<f32, T>(&b, |x| f(f64::from(x))),
            Dtype::F64 => conv::<f64, T>(&b, &f),
            Dtype::F16 => conv::<u16, T>(&b, |x| f(f16::from_bits(x).to_f64())),
            Dtype::BF16 => conv::<u16, T>(&b, |x| f(bf16::from_bits(x).to_f64())),
            Dtype::I64 => conv::<i64, T>(&b, |x| f(x as f64)),
            Dtype::I32 => conv::<i32, T>(&b, |x| f(f64::from(x))),
            Dtype::I16 => conv::<i16, T>(&b, |x| f(f64::from(x))),
            Dtype::I8 => conv::<i8, T>(&b, |x| f(f64::from(x))),
            Dtype::U8 => conv::<u8, T>(&b, |x| f(f64::from(x))),
            d => {
                return Err(TorchError::DType {
                    name: self.name.clone(),
                    reason: format!("a {d:?} tensor has no numeric values"),
                });
            }
        })
    }

    /// The number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The size of the data in bytes.
    pub fn byte_len(&self) -> usize {
        byte_len(self.dtype, &self.shape).unwrap_or(usize::MAX)
    }

    /// The tensor's bytes: borrowed from a memory map, read from a PyTorch archive, or computed.
    ///
    /// # Errors
    ///
    /// Whatever reading or computing the tensor reports.
    pub fn bytes(&self) -> Result<Cow<'_, [u8]>> {
        let data: Cow<'_, [u8]> = match &self.source {
            Source::Mapped(map, start, end) => Cow::Borrowed(&map[*start..*end]),
            Source::Owned(v) => Cow::Borrowed(v.as_slice()),
            Source::Shared(b) => Cow::Borrowed((**b).as_ref()),
            Source::Pt(t) => t.bytes(&self.name)?,
            Source::Lazy(f) => Cow::Owned(f()?),
        };
        if data.len() != self.byte_len() {
            return Err(TorchError::DType {
                name: self.name.clone(),
                reason: format!(
                    "holds {} bytes, but {:?} {:?} needs {}",
                    data.len(),
                    self.dtype,
                    self.shape,
                    self.byte_len()
                ),
            });
        }
        Ok(data)
    }

    /// Lets the operating system drop the pages of a memory-mapped tensor from this process's
    /// resident memory once it has been used (they are read again from the file if needed).
    /// Does nothing for other sources.
    pub fn release(&self) {
        if let Source::Pt(t) = &self.source {
            t.release();
        }
        if let Source::Mapped(map, start, end) = &self.source {
            let page = 4096;
            let from = start.div_ceil(page) * page;
            if *end > from {
                // SAFETY: the map is read-only and private to this process; dropping its pages
                // only makes later reads fault them in again from the file, which is unchanged.
                let _ = unsafe {
                    map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, from, end - from)
                };
            }
        }
    }
}

/// The byte size of a tensor of `dtype` and `shape`, or `None` on overflow.
pub(crate) fn byte_len(dtype: Dtype, shape: &[usize]) -> Option<usize> {
    let bits = shape
        .iter()
        .try_fold(dtype.bitsize(), |acc, &d| acc.checked_mul(d))?;
    Some(bits.div_ceil(8))
}

/// One shard of a sharded checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shard {
    /// Its file name, beside the index.
    pub file: String,
    /// The tensors it holds, by name.
    pub tensors: Vec<String>,
    /// Its safetensors `__metadata__`, if any.
    pub metadata: Option<BTreeMap<String, String>>,
}

/// The index and shards of a sharded checkpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct Sharding {
    /// The index file.
    pub index: PathBuf,
    /// The index's `metadata` object as it was (its `total_size` is recomputed when written).
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// The shards, in the order of their file names.
    pub shards: Vec<Shard>,
    /// The shards' format.
    pub format: Format,
}

impl Sharding {
    /// The index of the shard holding the tensor `name`.
    pub fn shard_of(&self, name: &str) -> Option<usize> {
        self.shards
            .iter()
            .position(|s| s.tensors.iter().any(|t| t == name))
    }
}

/// Whether `path` names a sharded checkpoint's index (`*.index.json`).
pub(crate) fn is_index(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.ends_with(".index.json"))
}

/// A checkpoint read from a file: its tensors in name order, and its metadata.
pub struct Checkpoint {
    /// The file it was read from.
    pub path: PathBuf,
    /// Its format.
    pub format: Format,
    /// The key of a PyTorch checkpoint's state dict, when one was picked.
    pub key: Option<String>,
    /// The tensors, sorted by name.
    pub tensors: Vec<TensorEntry>,
    /// The safetensors `__metadata__`, kept by [`write_safetensors`] users.
    pub metadata: Option<BTreeMap<String, String>>,
    /// For a PyTorch checkpoint, the whole file (the state dict is under `key_path`).
    pub(crate) root: Option<PtValue>,
    /// The dict keys leading to the state dict in `root`.
    pub(crate) key_path: Vec<String>,
    /// For a sharded checkpoint, its index and shards.
    pub(crate) sharding: Option<Sharding>,
}

/// Options of [`Checkpoint::open_with`].
#[derive(Clone, Debug, Default)]
pub struct OpenOptions {
    /// For a PyTorch checkpoint, the state dict to read: a key of the top-level dict, or a
    /// dotted path through nested dicts (`"model.generator"`). Without one, a file whose top
    /// level is a single dict under one key is opened at that key.
    pub key: Option<String>,
    /// The most bytes one tensor may hold once read; `None` for the file's own length. A
    /// PyTorch view can declare far more elements than its storage holds (an `expand` has
    /// stride 0), so this is what bounds the memory a small hostile file can make us allocate.
    pub max_tensor_bytes: Option<u64>,
}

impl OpenOptions {
    /// The default options with `key` set.
    pub fn with_key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// The default options with `max_tensor_bytes` set.
    pub fn with_max_tensor_bytes(mut self, bytes: u64) -> Self {
        self.max_tensor_bytes = Some(bytes);
        self
    }
}

impl Checkpoint {
    /// One file (not an index): see [`Checkpoint::open_with`].
    pub(crate) fn open_file(path: &Path, options: &OpenOptions) -> Result<Self> {
        let read_err = |source| TorchError::Read {
            path: path.display().to_string(),
            source,
        };
        let mut file = super::open_regular(path).map_err(read_err)?;
        let file_len = file.metadata().map_err(read_err)?.len();
        let mut head = Vec::with_capacity(HEAD_LEN);
        (&mut file)
            .take(HEAD_LEN as u64)
            .read_to_end(&mut head)
            .map_err(read_err)?;
        let limit = options.max_tensor_bytes.unwrap_or(file_len);
        let ckpt = match detect(&head) {
            Detected::PyTorch => Self::open_pt(path, &file, options.key.as_deref())?,
            Detected::SafeTensors => {
                if let Some(key) = &options.key {
                    return Err(TorchError::KeyInSafetensors {
                        path: path.display().to_string(),
                        key: key.clone(),
                    });
                }
                Self::open_safetensors(path, file)?
            }
        };
        if let Some(t) = ckpt
            .tensors
            .iter()
            .find(|t| byte_len(t.dtype, &t.shape).is_none_or(|n| n as u64 > limit))
        {
            return Err(TorchError::TooLarge {
                path: path.display().to_string(),
                name: t.name.clone(),
                shape: t.shape.clone(),
                limit,
            });
        }
        Ok(ckpt)
    }
    fn open_safetensors(path: &Path, file: File) -> Result<Self> {
        let invalid = |reason: String| TorchError::Invalid {
            path: path.display().to_string(),
            format: "safetensors",
            reason,
        };
        // SAFETY: the map is read-only; a file changed underneath while it is open can give
        // wrong bytes but not unsafety in this process beyond what reading it would.
        let map = unsafe { Mmap::map(&file) }.map_err(|source| TorchError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let map = Arc::new(map);
        let st = SafeTensors::deserialize(&map).map_err(|e| invalid(describe_st_error(&e)))?;
        let (_, meta) =
            SafeTensors::read_metadata(&map).map_err(|e| invalid(describe_st_error(&e)))?;
        let base = map.as_ptr() as usize;
        let mut tensors: Vec<TensorEntry> = st
            .tensors()
            .into_iter()
            .map(|(name, view)| {
                let start = view.data().as_ptr() as usize - base;
                let end = start + view.data().len();
                TensorEntry {
                    name,
                    dtype: view.dtype(),
                    shape: view.shape().to_vec(),
                    source: Source::Mapped(Arc::clone(&map), start, end),
                    origin: None,
                }
            })
            .collect();
        tensors.sort_by(|a, b| a.name.cmp(&b.name));
        let metadata = meta
            .metadata()
            .clone()
            .map(|m| m.into_iter().collect::<BTreeMap<_, _>>());
        Ok(Self {
            path: path.to_path_buf(),
            format: Format::SafeTensors,
            key: None,
            tensors,
            metadata,
            root: None,
            key_path: Vec::new(),
            sharding: None,
        })
    }

    fn open_pt(path: &Path, file: &File, key: Option<&str>) -> Result<Self> {
        // SAFETY: as for safetensors above.
        let map = unsafe { Mmap::map(file) }.map_err(|source| TorchError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let pt = super::pt::read(&path.display().to_string(), Arc::new(map), key)?;
        Ok(Self {
            path: path.to_path_buf(),
            format: Format::PyTorch,
            key: (!pt.key.is_empty()).then(|| pt.key.join(".")),
            tensors: pt.tensors.into_values().collect(),
            metadata: None,
            root: Some(pt.root),
            key_path: pt.key,
            sharding: None,
        })
    }

    /// For a PyTorch checkpoint, the whole file: the state dict's tensors are below
    /// [`key`](Self::key), and everything else (optimizer states, counters) beside it.
    pub fn tree(&self) -> Option<&PtValue> {
        self.root.as_ref()
    }

    /// For a sharded checkpoint, its index and shards.
    pub fn sharding(&self) -> Option<&Sharding> {
        self.sharding.as_ref()
    }

    /// What the file holds besides the state dict's tensors: the entries beside the state dict
    /// (each whole: `optim_g`, `steps`) and the values inside it that are not tensors, by their
    /// dotted names. Empty for safetensors files and for PyTorch files of tensors alone.
    pub fn others(&self) -> Vec<EntrySummary> {
        let Some(root) = &self.root else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut at = root;
        let mut prefix = String::new();
        for seg in &self.key_path {
            let PtValue::Dict(d) = at else { break };
            for (k, v) in &d.entries {
                let name = key_name(k);
                if name.as_deref() != Some(seg.as_str()) {
                    let name = name.unwrap_or_else(|| format!("<a {} key>", k.type_name()));
                    out.push(super::pt::summary(format!("{prefix}{name}"), v));
                }
            }
            let Some(next) = at.get(std::slice::from_ref(seg)) else {
                break;
            };
            at = next;
            prefix.push_str(seg);
            prefix.push('.');
        }
        for (name, kind) in at.non_tensors() {
            out.push(EntrySummary {
                name: format!("{prefix}{name}"),
                kind: kind.to_string(),
                tensors: 0,
                pairs: 0,
                nameable: false,
            });
        }
        out
    }

    /// The tensor called `name`.
    pub fn get(&self, name: &str) -> Option<&TensorEntry> {
        self.tensors
            .binary_search_by(|t| t.name.as_str().cmp(name))
            .ok()
            .map(|i| &self.tensors[i])
    }

    /// Names and shapes, for [`detect_pairs`](super::detect_pairs).
    pub fn shapes(&self) -> Vec<(String, Vec<usize>)> {
        self.tensors
            .iter()
            .map(|t| (t.name.clone(), t.shape.clone()))
            .collect()
    }
}

fn describe_st_error(e: &safetensors::SafeTensorError) -> String {
    use safetensors::SafeTensorError as E;
    match e {
        E::HeaderTooLarge => "the header length is larger than the limit (100 MB)".into(),
        E::HeaderTooSmall => "the file is too small to hold a header".into(),
        E::InvalidHeaderLength => "the header length runs past the end of the file".into(),
        E::InvalidHeader(_) => "the header is not valid UTF-8".into(),
        E::InvalidHeaderStart => "the header does not start with '{'".into(),
        E::InvalidHeaderDeserialization(m) => format!("the header is not valid JSON ({m})"),
        E::InvalidOffset(name) => {
            format!("the data offsets of `{name}` are out of order, overlap or leave gaps")
        }
        E::TensorInvalidInfo => "a tensor's shape and dtype do not match its byte range".into(),
        E::MetadataIncompleteBuffer => {
            "the data section is shorter or longer than the header says (truncated?)".into()
        }
        E::ValidationOverflow => "a tensor's size overflows".into(),
        other => other.to_string(),
    }
}

fn dtype_name(d: Dtype) -> String {
    format!("{d:?}")
}

/// The header key safetensors keeps its metadata under, which no tensor may take.
const METADATA_KEY: &str = "__metadata__";

/// Options of [`write_safetensors_with`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteOptions {
    /// Flush the file to disk (`fsync`) before renaming it over the destination, so that a
    /// crash cannot leave a renamed but incomplete file. Off only for scratch outputs.
    pub fsync: bool,
}

impl Default for WriteOptions {
    /// `fsync` on.
    fn default() -> Self {
        Self { fsync: true }
    }
}

/// Writes tensors as a `.safetensors` file, atomically and flushed to disk: see
/// [`write_safetensors_with`] with the default [`WriteOptions`].
///
/// # Errors
///
/// As [`write_safetensors_with`].
pub fn write_safetensors(
    path: &Path,
    tensors: &[TensorEntry],
    metadata: Option<&BTreeMap<String, String>>,
) -> Result<()> {
    write_safetensors_with(path, tensors, metadata, &WriteOptions::default())
}

/// Writes tensors as a `.safetensors` file, atomically: into a temporary file beside `path`,
/// flushed to disk if `options.fsync`, and renamed over `path` only when every tensor has been
/// written. Tensors are produced (read or computed) and written one at a time, and a
/// memory-mapped source is released after use, so memory holds one tensor at a time. On any
/// error the temporary file is removed and `path` is untouched.
///
/// # Errors
///
/// [`TorchError::DuplicateTensor`] when two tensors have one name, [`TorchError::Write`] for
/// I/O errors, or the error of producing a tensor.
pub fn write_safetensors_with(
    path: &Path,
    tensors: &[TensorEntry],
    metadata: Option<&BTreeMap<String, String>>,
    options: &WriteOptions,
) -> Result<()> {
    let mut names: Vec<&str> = tensors.iter().map(|t| t.name.as_str()).collect();
    names.sort_unstable();
    if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
        return Err(TorchError::DuplicateTensor {
            name: w[0].to_string(),
        });
    }
    if names.binary_search(&METADATA_KEY).is_ok() {
        return Err(TorchError::ReservedName {
            name: METADATA_KEY.to_string(),
        });
    }
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let file_name = path
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{file_name}.partial-{}", std::process::id()));
    let werr = |source| TorchError::Write {
        path: path.display().to_string(),
        source,
    };
    let result = write_to(&tmp, tensors, metadata, options.fsync).and_then(|()| {
        std::fs::rename(&tmp, path).map_err(werr)?;
        if options.fsync {
            // The rename itself is durable only once the directory is flushed.
            sync_dir(dir).map_err(werr)?;
        }
        Ok(())
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_dir(_: &Path) -> std::io::Result<()> {
    Ok(())
}

fn write_to(
    tmp: &Path,
    tensors: &[TensorEntry],
    metadata: Option<&BTreeMap<String, String>>,
    fsync: bool,
) -> Result<()> {
    let werr = |source| TorchError::Write {
        path: tmp.display().to_string(),
        source,
    };
    let mut header = serde_json::Map::new();
    if let Some(m) = metadata {
        header.insert(
            METADATA_KEY.into(),
            serde_json::Value::Object(
                m.iter()
                    .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                    .collect(),
            ),
        );
    }
    let mut offset = 0usize;
    for t in tensors {
        let len = byte_len(t.dtype, &t.shape).ok_or_else(|| TorchError::DType {
            name: t.name.clone(),
            reason: "its size overflows".into(),
        })?;
        header.insert(
            t.name.clone(),
            serde_json::json!({
                "dtype": dtype_name(t.dtype),
                "shape": t.shape,
                "data_offsets": [offset, offset + len],
            }),
        );
        offset += len;
    }
    let mut json = serde_json::to_vec(&serde_json::Value::Object(header))
        .expect("JSON of strings and numbers");
    // Pad with spaces so that the data starts 8-byte aligned.
    while !json.len().is_multiple_of(8) {
        json.push(b' ');
    }
    let file = File::create(tmp).map_err(werr)?;
    let mut out = BufWriter::with_capacity(1 << 22, file);
    out.write_all(&(json.len() as u64).to_le_bytes())
        .map_err(werr)?;
    out.write_all(&json).map_err(werr)?;
    for t in tensors {
        let data = t.bytes()?;
        out.write_all(&data).map_err(werr)?;
        drop(data);
        t.release();
    }
    let file = out.into_inner().map_err(|e| werr(e.into_error()))?;
    if fsync {
        file.sync_all().map_err(werr)?;
    }
    Ok(())
}
