//! Tensors of a model: their shapes and values (inline, typed or raw, or in an external file
//! under the model's directory), decoded defensively; and values encoded back as raw bytes.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use half::{bf16, f16};
use memmap2::Mmap;

use super::OnnxError;
use super::fault::TensorFault;
use super::proto::{DATA_LOCATION_EXTERNAL, TensorProto, data_type};
use crate::canonical::Real;

/// Maps a whole file into memory, as [`Bytes`].
pub(crate) fn map_file(path: &Path) -> Result<Bytes, OnnxError> {
    let io = |e: std::io::Error| OnnxError::Io {
        path: path.display().to_string(),
        source: Arc::new(e),
    };
    // Opened without blocking and checked to be a regular file: a FIFO's open would wait for
    // a writer, a device's read would not end.
    let file = crate::formats::open_regular(path).map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if meta.len() == 0 {
        return Ok(Bytes::new());
    }
    // SAFETY: the map is read-only; a file changed underneath while it is open can give wrong
    // bytes but not unsafety in this process beyond what reading it would (as for checkpoints).
    let map = unsafe { Mmap::map(&file) }.map_err(io)?;
    Ok(Bytes::from_owner(map))
}

/// The external data of a model: its directory and the files mapped so far.
#[derive(Clone, Default)]
pub(crate) struct External {
    dir: Option<PathBuf>,
    files: Arc<Mutex<HashMap<PathBuf, Bytes>>>,
}

impl std::fmt::Debug for External {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("External").field("dir", &self.dir).finish()
    }
}

impl PartialEq for External {
    fn eq(&self, other: &Self) -> bool {
        self.dir == other.dir
    }
}

fn entry<'a>(t: &'a TensorProto, key: &str) -> Option<&'a str> {
    t.external_data
        .iter()
        .find(|e| e.key.as_deref() == Some(key))
        .and_then(|e| e.value.as_deref())
}

fn tensor_err(t: &TensorProto, reason: TensorFault) -> OnnxError {
    OnnxError::Tensor {
        name: t.name.clone().unwrap_or_default(),
        reason,
    }
}

impl External {
    pub(crate) fn new(dir: Option<PathBuf>) -> Self {
        Self {
            dir,
            files: Arc::default(),
        }
    }

    /// The file holding `t`'s data if it is external, checked to lie under the model's
    /// directory (relative, no `..`, and not leaving it through a link).
    pub(crate) fn location(&self, t: &TensorProto) -> Result<Option<PathBuf>, OnnxError> {
        if t.data_location != Some(DATA_LOCATION_EXTERNAL) {
            return Ok(None);
        }
        let loc = entry(t, "location").ok_or_else(|| tensor_err(t, TensorFault::NoLocation))?;
        let rel = Path::new(loc);
        if loc.is_empty()
            || loc.contains('\0')
            || !rel
                .components()
                .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
        {
            return Err(tensor_err(
                t,
                TensorFault::LocationNotRelative(loc.to_string()),
            ));
        }
        let dir = self
            .dir
            .as_ref()
            .ok_or_else(|| tensor_err(t, TensorFault::NoDirectory))?;
        let path = dir.join(rel);
        // A link may not lead out of the directory either.
        if let (Ok(real), Ok(base)) = (path.canonicalize(), dir.canonicalize())
            && !real.starts_with(&base)
        {
            return Err(tensor_err(t, TensorFault::LocationEscapes(loc.to_string())));
        }
        Ok(Some(path))
    }

    /// The `len` bytes of `t`'s external data.
    fn bytes(&self, t: &TensorProto, len: usize) -> Result<Bytes, OnnxError> {
        let path = self.location(t)?.expect("an external tensor");
        let number = |key: &str| -> Result<Option<usize>, OnnxError> {
            entry(t, key)
                .map(|v| {
                    v.trim().parse::<usize>().map_err(|_| {
                        tensor_err(
                            t,
                            TensorFault::NotASize {
                                key: key.to_string(),
                                value: v.to_string(),
                            },
                        )
                    })
                })
                .transpose()
        };
        let offset = number("offset")?.unwrap_or(0);
        if let Some(l) = number("length")?
            && l != len
        {
            return Err(tensor_err(
                t,
                TensorFault::ExternalLength {
                    got: l as u64,
                    want: len,
                },
            ));
        }
        let file = {
            let mut files = self.files.lock().unwrap_or_else(|e| e.into_inner());
            match files.get(&path) {
                Some(b) => b.clone(),
                None => {
                    let b = map_file(&path)
                        .map_err(|e| tensor_err(t, TensorFault::ExternalFile(Box::new(e))))?;
                    files.insert(path.clone(), b.clone());
                    b
                }
            }
        };
        match offset.checked_add(len) {
            Some(end) if end <= file.len() => Ok(file.slice(offset..end)),
            _ => Err(tensor_err(
                t,
                TensorFault::PastEnd {
                    offset: offset as u64,
                    len,
                    file: path.display().to_string(),
                    size: file.len(),
                },
            )),
        }
    }
}

/// `t` with its external data read in (raw, inline), so that it no longer depends on a file
/// beside the model; `t` itself if its data is inline.
///
/// # Errors
///
/// [`OnnxError::Tensor`] if the data cannot be read, or `t` is not of a numeric type.
pub(crate) fn inlined(t: &TensorProto, ext: &External) -> Result<TensorProto, OnnxError> {
    if t.data_location != Some(DATA_LOCATION_EXTERNAL) {
        return Ok(t.clone());
    }
    let n = numel(&dims(t)?).expect("checked by dims");
    let bytes = raw(t, ext, n)?.expect("external data");
    Ok(TensorProto {
        raw_data: Some(bytes),
        external_data: Vec::new(),
        data_location: None,
        ..t.clone()
    })
}

/// A tensor's shape, checked: no negative axis, and a number of elements that fits.
pub(crate) fn dims(t: &TensorProto) -> Result<Vec<usize>, OnnxError> {
    let d: Vec<usize> = t
        .dims
        .iter()
        .map(|&x| usize::try_from(x))
        .collect::<Result<_, _>>()
        .map_err(|_| tensor_err(t, TensorFault::NegativeDim(t.dims.clone())))?;
    numel(&d).ok_or_else(|| tensor_err(t, TensorFault::ShapeOverflow(t.dims.clone())))?;
    Ok(d)
}

/// The number of elements of a shape (`None` on overflow).
pub(crate) fn numel(d: &[usize]) -> Option<usize> {
    d.iter().try_fold(1usize, |a, &x| a.checked_mul(x))
}

/// The size in bytes of one element of a numeric data type.
fn elem_size(dtype: i32) -> Option<usize> {
    use data_type::*;
    Some(match dtype {
        FLOAT | INT32 | UINT32 => 4,
        DOUBLE | INT64 | UINT64 => 8,
        FLOAT16 | BFLOAT16 | INT16 | UINT16 => 2,
        INT8 | UINT8 | BOOL => 1,
        _ => return None,
    })
}

/// The name of a data type, for messages.
pub(crate) fn dtype_name(dtype: i32) -> String {
    use data_type::*;
    match dtype {
        FLOAT => "float32".into(),
        DOUBLE => "float64".into(),
        FLOAT16 => "float16".into(),
        BFLOAT16 => "bfloat16".into(),
        INT64 => "int64".into(),
        INT32 => "int32".into(),
        STRING => "string".into(),
        BOOL => "bool".into(),
        other => format!("data type {other}"),
    }
}

/// Whether a data type is one the calculus reads weights from.
pub(crate) fn is_float(dtype: i32) -> bool {
    matches!(
        dtype,
        data_type::FLOAT | data_type::DOUBLE | data_type::FLOAT16 | data_type::BFLOAT16
    )
}

/// The raw little-endian bytes of a tensor stored raw (inline or external), checked to hold
/// exactly its elements; `None` for a tensor stored in a typed field.
fn raw(t: &TensorProto, ext: &External, n: usize) -> Result<Option<Bytes>, OnnxError> {
    let dtype = t.data_type.unwrap_or(0);
    let size = elem_size(dtype)
        .ok_or_else(|| tensor_err(t, TensorFault::NotNumeric(dtype_name(dtype))))?;
    if t.segment.is_some() {
        return Err(tensor_err(t, TensorFault::Segment));
    }
    let len = n
        .checked_mul(size)
        .ok_or_else(|| tensor_err(t, TensorFault::SizeOverflow))?;
    let bytes = if t.data_location == Some(DATA_LOCATION_EXTERNAL) {
        ext.bytes(t, len)?
    } else if let Some(r) = &t.raw_data {
        r.clone()
    } else {
        return Ok(None);
    };
    if bytes.len() != len {
        return Err(tensor_err(
            t,
            TensorFault::DataLength {
                bytes: bytes.len(),
                elements: n,
                dtype: dtype_name(dtype),
            },
        ));
    }
    Ok(Some(bytes))
}

fn typed_len<V>(t: &TensorProto, values: &[V], n: usize) -> Result<(), OnnxError> {
    if values.len() != n {
        return Err(tensor_err(
            t,
            TensorFault::ValueCount {
                values: values.len(),
                elements: n,
            },
        ));
    }
    Ok(())
}

/// A floating-point tensor's values as `T` (`f16` and `bf16` widened), with its shape.
///
/// # Errors
///
/// [`OnnxError::Tensor`] if it is not floating point, its data does not match its shape, or a
/// value is not finite.
pub(crate) fn float_values<T: Real>(
    t: &TensorProto,
    ext: &External,
) -> Result<(Vec<usize>, Vec<T>), OnnxError> {
    let d = dims(t)?;
    let n = numel(&d).expect("checked by dims");
    let dtype = t.data_type.unwrap_or(0);
    if !is_float(dtype) {
        return Err(tensor_err(t, TensorFault::NotFloat(dtype_name(dtype))));
    }
    let values: Vec<T> = match raw(t, ext, n)? {
        Some(b) => match dtype {
            data_type::FLOAT => b
                .chunks_exact(4)
                .map(|c| T::from_f64(f32::from_le_bytes(c.try_into().expect("4")) as f64))
                .collect(),
            data_type::DOUBLE => b
                .chunks_exact(8)
                .map(|c| T::from_f64(f64::from_le_bytes(c.try_into().expect("8"))))
                .collect(),
            data_type::FLOAT16 => b
                .chunks_exact(2)
                .map(|c| T::from_f64(f16::from_le_bytes([c[0], c[1]]).to_f64()))
                .collect(),
            _ => b
                .chunks_exact(2)
                .map(|c| T::from_f64(bf16::from_le_bytes([c[0], c[1]]).to_f64()))
                .collect(),
        },
        None => match dtype {
            data_type::FLOAT => {
                typed_len(t, &t.float_data, n)?;
                t.float_data
                    .iter()
                    .map(|&x| T::from_f64(x as f64))
                    .collect()
            }
            data_type::DOUBLE => {
                typed_len(t, &t.double_data, n)?;
                t.double_data.iter().map(|&x| T::from_f64(x)).collect()
            }
            // float16 and bfloat16 are kept as their bits in int32_data.
            _ => {
                typed_len(t, &t.int32_data, n)?;
                t.int32_data
                    .iter()
                    .map(|&x| {
                        let bits = (x as u32 & 0xffff) as u16;
                        T::from_f64(if dtype == data_type::FLOAT16 {
                            f16::from_bits(bits).to_f64()
                        } else {
                            bf16::from_bits(bits).to_f64()
                        })
                    })
                    .collect()
            }
        },
    };
    if values.iter().any(|x| !x.to_f64().is_finite()) {
        return Err(tensor_err(t, TensorFault::NonFinite));
    }
    Ok((d, values))
}

/// An integer (or boolean) tensor's values as `i64`, with its shape.
///
/// # Errors
///
/// [`OnnxError::Tensor`] if it is not an integer type or its data does not match its shape.
pub(crate) fn int_values(
    t: &TensorProto,
    ext: &External,
) -> Result<(Vec<usize>, Vec<i64>), OnnxError> {
    use data_type::*;
    let d = dims(t)?;
    let n = numel(&d).expect("checked by dims");
    let dtype = t.data_type.unwrap_or(0);
    if !matches!(
        dtype,
        INT64 | INT32 | INT16 | INT8 | UINT8 | UINT16 | UINT32 | UINT64 | BOOL
    ) {
        return Err(tensor_err(t, TensorFault::NotInteger(dtype_name(dtype))));
    }
    let values = match raw(t, ext, n)? {
        Some(b) => match dtype {
            INT64 => b
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().expect("8")))
                .collect(),
            UINT64 => b
                .chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().expect("8")) as i64)
                .collect(),
            INT32 => b
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes(c.try_into().expect("4")) as i64)
                .collect(),
            UINT32 => b
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes(c.try_into().expect("4")) as i64)
                .collect(),
            INT16 => b
                .chunks_exact(2)
                .map(|c| i16::from_le_bytes([c[0], c[1]]) as i64)
                .collect(),
            UINT16 => b
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]) as i64)
                .collect(),
            INT8 => b.iter().map(|&x| x as i8 as i64).collect(),
            _ => b.iter().map(|&x| x as i64).collect(),
        },
        None => match dtype {
            INT64 => {
                typed_len(t, &t.int64_data, n)?;
                t.int64_data.clone()
            }
            UINT64 | UINT32 => {
                typed_len(t, &t.uint64_data, n)?;
                t.uint64_data.iter().map(|&x| x as i64).collect()
            }
            _ => {
                typed_len(t, &t.int32_data, n)?;
                t.int32_data.iter().map(|&x| x as i64).collect()
            }
        },
    };
    Ok((d, values))
}

/// `values` as the little-endian bytes of `dtype` (a floating-point type), `what` naming the
/// tensor in errors.
///
/// # Errors
///
/// [`OnnxError::Tensor`] for a finite value beyond the range of `dtype`.
pub(crate) fn encode_floats(
    what: &str,
    values: impl ExactSizeIterator<Item = f64>,
    dtype: i32,
) -> Result<Vec<u8>, OnnxError> {
    let size = elem_size(dtype).expect("a floating-point type");
    let mut out = Vec::with_capacity(values.len() * size);
    for x in values {
        let finite = match dtype {
            data_type::DOUBLE => {
                out.extend_from_slice(&x.to_le_bytes());
                true
            }
            data_type::FLOAT16 => {
                let h = f16::from_f64(x);
                out.extend_from_slice(&h.to_le_bytes());
                h.is_finite()
            }
            data_type::BFLOAT16 => {
                let h = bf16::from_f64(x);
                out.extend_from_slice(&h.to_le_bytes());
                h.is_finite()
            }
            _ => {
                let h = x as f32;
                out.extend_from_slice(&h.to_le_bytes());
                h.is_finite()
            }
        };
        if !finite || !x.is_finite() {
            return Err(OnnxError::Tensor {
                name: what.to_string(),
                reason: TensorFault::Range {
                    value: x,
                    dtype: dtype_name(dtype),
                },
            });
        }
    }
    Ok(out)
}
