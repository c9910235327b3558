//! Reading checkpoints (safetensors memory-mapped, PyTorch zip archives) and writing
//! safetensors atomically, one tensor at a time.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;
use pytorch_reader::{PickleValue, PytorchReader};
use safetensors::{Dtype, SafeTensors};

use super::{Result, TorchError};

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
    /// A tensor of a PyTorch checkpoint, read on demand.
    Pt(pytorch_reader::Tensor),
    /// Bytes in memory.
    Owned(Arc<Vec<u8>>),
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
        })
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
        }
    }

    /// The same data under another name.
    pub fn renamed(&self, name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
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
        use burn::tensor::{bf16, f16};
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
            Source::Pt(t) => Cow::Owned(t.read().map_err(|e| TorchError::Invalid {
                path: self.name.clone(),
                format: "PyTorch tensor",
                reason: e.to_string(),
            })?),
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
}

impl Checkpoint {
    /// Opens a checkpoint, recognising its format from its first bytes (a zip archive is a
    /// PyTorch checkpoint; anything else is read as safetensors).
    ///
    /// For a PyTorch checkpoint, `key` picks a nested state dict (`"model"`,
    /// `"state_dict"`, or a dotted path); without one, a file whose top level is a single dict
    /// under one key is opened at that key.
    ///
    /// # Errors
    ///
    /// [`TorchError::Read`] when the file cannot be read, [`TorchError::Invalid`] when it is not a
    /// valid checkpoint (bad header, offsets out of bounds or overlapping, sizes that do not add
    /// up, an archive that does not parse), [`TorchError::Key`] for a missing key.
    pub fn open(path: &Path, key: Option<&str>) -> Result<Self> {
        let read_err = |source| TorchError::Read {
            path: path.display().to_string(),
            source,
        };
        let mut magic = [0u8; 4];
        let mut file = File::open(path).map_err(read_err)?;
        let n = file.read(&mut magic).map_err(read_err)?;
        if n == 4 && magic == *b"PK\x03\x04" {
            Self::open_pt(path, key)
        } else {
            if key.is_some() {
                return Err(TorchError::Key {
                    path: path.display().to_string(),
                    key: key.unwrap_or_default().to_string(),
                    reason: "--key applies to PyTorch checkpoints, and this is a safetensors file"
                        .into(),
                });
            }
            Self::open_safetensors(path, file)
        }
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
        })
    }

    fn open_pt(path: &Path, key: Option<&str>) -> Result<Self> {
        let invalid = |reason: String| TorchError::Invalid {
            path: path.display().to_string(),
            format: "PyTorch checkpoint",
            reason,
        };
        let key = match key {
            Some(k) => Some(k.to_string()),
            None => match PytorchReader::read_pickle_data(path, None) {
                Ok(PickleValue::Dict(d)) if d.len() == 1 => d
                    .into_iter()
                    .next()
                    .filter(|(_, v)| matches!(v, PickleValue::Dict(_)))
                    .map(|(k, _)| k),
                Ok(_) => None,
                Err(e) => return Err(invalid(e.to_string())),
            },
        };
        let reader = match &key {
            Some(k) => PytorchReader::with_top_level_key(path, k).map_err(|e| match e {
                pytorch_reader::PytorchError::KeyNotFound(reason) => TorchError::Key {
                    path: path.display().to_string(),
                    key: k.clone(),
                    reason,
                },
                other => invalid(other.to_string()),
            })?,
            None => PytorchReader::new(path).map_err(|e| invalid(e.to_string()))?,
        };
        let mut tensors = Vec::new();
        for (name, t) in reader.into_tensors() {
            let dtype = match t.dtype() {
                pytorch_reader::DType::F64 => Dtype::F64,
                pytorch_reader::DType::F32 => Dtype::F32,
                pytorch_reader::DType::F16 => Dtype::F16,
                pytorch_reader::DType::BF16 => Dtype::BF16,
                pytorch_reader::DType::I64 => Dtype::I64,
                pytorch_reader::DType::I32 => Dtype::I32,
                pytorch_reader::DType::I16 => Dtype::I16,
                pytorch_reader::DType::I8 => Dtype::I8,
                pytorch_reader::DType::U64 => Dtype::U64,
                pytorch_reader::DType::U32 => Dtype::U32,
                pytorch_reader::DType::U16 => Dtype::U16,
                pytorch_reader::DType::U8 => Dtype::U8,
                pytorch_reader::DType::Bool => Dtype::BOOL,
            };
            tensors.push(TensorEntry {
                name,
                dtype,
                shape: t.shape().to_vec(),
                source: Source::Pt(t),
            });
        }
        tensors.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Self {
            path: path.to_path_buf(),
            format: Format::PyTorch,
            key,
            tensors,
            metadata: None,
        })
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

/// Writes tensors as a `.safetensors` file, atomically: into a temporary file beside `path`,
/// flushed to disk (`fsync`, unless the environment variable `WEIGHTNORM_NO_FSYNC` is set, for
/// scratch outputs) and renamed over `path` only when every tensor has been written. Tensors are produced (read or
/// computed) and written one at a time, and a memory-mapped source is released after use, so
/// memory holds one tensor at a time. On any error the temporary file is removed and `path` is
/// untouched.
///
/// # Errors
///
/// [`TorchError::Write`] for I/O errors, or the error of producing a tensor.
pub fn write_safetensors(
    path: &Path,
    tensors: &[TensorEntry],
    metadata: Option<&BTreeMap<String, String>>,
) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let file_name = path
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{file_name}.partial-{}", std::process::id()));
    let result = write_to(&tmp, tensors, metadata).and_then(|()| {
        std::fs::rename(&tmp, path).map_err(|source| TorchError::Write {
            path: path.display().to_string(),
            source,
        })
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn write_to(
    tmp: &Path,
    tensors: &[TensorEntry],
    metadata: Option<&BTreeMap<String, String>>,
) -> Result<()> {
    let werr = |source| TorchError::Write {
        path: tmp.display().to_string(),
        source,
    };
    let mut header = serde_json::Map::new();
    if let Some(m) = metadata {
        header.insert(
            "__metadata__".into(),
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
    if std::env::var_os("WEIGHTNORM_NO_FSYNC").is_none() {
        file.sync_all().map_err(werr)?;
    }
    Ok(())
}
