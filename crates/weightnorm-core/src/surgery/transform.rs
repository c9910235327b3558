//! Fuse, split and convert on tensor lists. Fused and split tensors are computed lazily, when
//! their bytes are asked for (by [`write_safetensors`](crate::formats::write_safetensors), one at a time).

use safetensors::Dtype;

use super::pairs::{Pair, Scheme, detect_pairs, pair_keys};
use crate::NormAxis;
use crate::formats::TensorEntry;
use crate::formats::{Action, Result, TorchError};
use crate::kernels as slices;
use half::{bf16, f16};

/// Options of [`fuse`].
#[derive(Clone, Debug, Default)]
pub struct FuseOptions {
    /// PyTorch's `dim` for every pair instead of inferring it from `g`'s shape
    /// (`Some(None)` for the whole tensor).
    pub dim: Option<Option<i64>>,
}

/// Which tensors [`split`] takes, given name and shape.
pub type Selector<'a> = Box<dyn Fn(&str, &[usize]) -> bool + 'a>;

/// Options of [`split`].
pub struct SplitOptions<'a> {
    /// PyTorch's `dim` (`None` for the whole tensor); PyTorch's default is 0.
    pub dim: Option<i64>,
    /// The scheme of the output keys.
    pub scheme: Scheme,
    /// Which tensors to split, given name and shape; by default every `*.weight` of rank >= 2.
    pub select: Selector<'a>,
}

impl Default for SplitOptions<'_> {
    fn default() -> Self {
        Self {
            dim: Some(0),
            scheme: Scheme::Legacy,
            select: Box::new(|name, shape| {
                (name == "weight" || name.ends_with(".weight")) && shape.len() >= 2
            }),
        }
    }
}

fn is_float(d: Dtype) -> bool {
    matches!(d, Dtype::F64 | Dtype::F32 | Dtype::F16 | Dtype::BF16)
}

/// Decodes little-endian bytes, copying only when they are not aligned for `T`.
fn decode<T: bytemuck::Pod>(bytes: &[u8]) -> std::borrow::Cow<'_, [T]> {
    match bytemuck::try_cast_slice(bytes) {
        Ok(s) => std::borrow::Cow::Borrowed(s),
        Err(_) => std::borrow::Cow::Owned(bytemuck::pod_collect_to_vec(bytes)),
    }
}

fn finite<T: slices::Element>(name: &str, xs: &[T]) -> Result<()> {
    if xs.iter().all(|x| x.to_f64().is_finite()) {
        Ok(())
    } else {
        Err(TorchError::NonFinite {
            name: name.to_string(),
        })
    }
}

/// Refuses a zero-norm slice among non-empty slices: its direction is undefined.
fn check_zero_norms<T: slices::Element>(
    name: &str,
    norms: &[T],
    shape: &[usize],
    axis: NormAxis,
) -> Result<()> {
    let [outer, _, inner] = axis.split_shape(shape);
    if outer * inner == 0 {
        return Ok(());
    }
    match norms.iter().position(|n| n.to_f64() == 0.0) {
        None => Ok(()),
        Some(j) => Err(TorchError::Op {
            name: name.to_string(),
            source: Box::new(crate::Error::ZeroNorm {
                kept: axis.kept(),
                index: j,
            }),
        }),
    }
}

/// `w = g * v / ||v||` for one pair of tensors in PyTorch's layout, `g` shaped as PyTorch
/// shapes it (keep-dims, or 0-dim for the whole tensor). The result has `v`'s dtype; f16 and
/// bf16 are computed in f32, f64 in f64. The data is checked: NaN or infinity in `g` or `v`, or
/// a zero-norm slice of `v`, is an error rather than a NaN in the output.
///
/// # Errors
///
/// [`TorchError::DType`] for non-float or differing dtypes, [`TorchError::ShapeMismatch`],
/// [`TorchError::NonFinite`], [`TorchError::Op`] for a zero-norm slice.
pub fn fuse_tensor(
    name: &str,
    v: &TensorEntry,
    g: &TensorEntry,
    axis: NormAxis,
) -> Result<TensorEntry> {
    check_pair(name, v, g, axis)?;
    let out = fuse_bytes(name, v, g, axis)?;
    TensorEntry::from_bytes(name, v.dtype, v.shape.clone(), out)
}

fn check_pair(name: &str, v: &TensorEntry, g: &TensorEntry, axis: NormAxis) -> Result<()> {
    if !is_float(v.dtype) || v.dtype != g.dtype {
        return Err(TorchError::DType {
            name: name.to_string(),
            reason: format!(
                "g and v must be floating point of one dtype, got g: {:?}, v: {:?}",
                g.dtype, v.dtype
            ),
        });
    }
    axis.validate(v.shape.len())
        .map_err(|source| TorchError::Op {
            name: name.to_string(),
            source: Box::new(source),
        })?;
    let g_ok = (axis == NormAxis::Whole && g.shape.is_empty()) || g.shape == axis.g_shape(&v.shape);
    if !g_ok {
        return Err(TorchError::ShapeMismatch {
            name: name.to_string(),
            g: g.shape.clone(),
            v: v.shape.clone(),
        });
    }
    Ok(())
}

fn fuse_bytes(name: &str, v: &TensorEntry, g: &TensorEntry, axis: NormAxis) -> Result<Vec<u8>> {
    fn run<T: slices::Element>(
        name: &str,
        v: &[u8],
        g: &[u8],
        shape: &[usize],
        axis: NormAxis,
    ) -> Result<Vec<u8>> {
        let (v, g) = (decode::<T>(v), decode::<T>(g));
        finite(&format!("{name} (v)"), &v)?;
        finite(&format!("{name} (g)"), &g)?;
        check_zero_norms(name, &slices::norms(&v, shape, axis), shape, axis)?;
        let w = slices::weight_norm(&v, &g, shape, axis, 0.0);
        Ok(bytemuck::cast_slice(&w).to_vec())
    }
    let (vb, gb) = (v.bytes()?, g.bytes()?);
    match v.dtype {
        Dtype::F32 => run::<f32>(name, &vb, &gb, &v.shape, axis),
        Dtype::F64 => run::<f64>(name, &vb, &gb, &v.shape, axis),
        Dtype::F16 => run::<f16>(name, &vb, &gb, &v.shape, axis),
        Dtype::BF16 => run::<bf16>(name, &vb, &gb, &v.shape, axis),
        other => Err(TorchError::DType {
            name: name.to_string(),
            reason: format!("{other:?} is not a floating-point type"),
        }),
    }
}

/// `(g, v)` from a weight `w` in PyTorch's layout: `g = ||w||` over every axis but `axis`
/// (PyTorch's shape: keep-dims, 0-dim for the whole tensor), `v = w` bit for bit.
///
/// # Errors
///
/// A non-float dtype, a bad axis, NaN or infinity in `w`, or a zero-norm slice (its `g` would
/// be 0 and fusing it back would give NaN).
pub fn split_tensor(
    name: &str,
    w: &TensorEntry,
    axis: NormAxis,
) -> Result<(TensorEntry, TensorEntry)> {
    let g = split_g(name, w, axis)?;
    let g = TensorEntry::from_bytes(name, g.dtype, g.shape.clone(), g.bytes()?.into_owned())?;
    Ok((g, w.renamed(name)))
}

fn split_g(name: &str, w: &TensorEntry, axis: NormAxis) -> Result<TensorEntry> {
    if !is_float(w.dtype) {
        return Err(TorchError::DType {
            name: name.to_string(),
            reason: format!("{:?} is not a floating-point type", w.dtype),
        });
    }
    axis.validate(w.shape.len())
        .map_err(|source| TorchError::Op {
            name: name.to_string(),
            source: Box::new(source),
        })?;
    let g_shape = match axis {
        NormAxis::Whole => Vec::new(),
        k => k.g_shape(&w.shape),
    };
    let w2 = w.clone();
    let label = name.to_string();
    Ok(TensorEntry::lazy(name, w.dtype, g_shape, move || {
        fn run<T: slices::Element>(
            name: &str,
            w: &[u8],
            shape: &[usize],
            axis: NormAxis,
            dtype: &'static str,
        ) -> Result<Vec<u8>> {
            let w = decode::<T>(w);
            finite(name, &w)?;
            let norms = slices::norms(&w, shape, axis);
            check_zero_norms(name, &norms, shape, axis)?;
            // g holds the norms: one beyond the type's range cannot be stored.
            if let Some(slice) = norms.iter().position(|n| !n.to_f64().is_finite()) {
                return Err(TorchError::NormOverflow {
                    name: name.to_string(),
                    slice,
                    norm: slices::norms_f64(&w, shape, axis)[slice],
                    dtype,
                });
            }
            Ok(bytemuck::cast_slice(&norms).to_vec())
        }
        let bytes = w2.bytes()?;
        let g = match w2.dtype {
            Dtype::F32 => run::<f32>(&label, &bytes, &w2.shape, axis, "f32"),
            Dtype::F64 => run::<f64>(&label, &bytes, &w2.shape, axis, "f64"),
            Dtype::F16 => run::<f16>(&label, &bytes, &w2.shape, axis, "f16"),
            _ => run::<bf16>(&label, &bytes, &w2.shape, axis, "bf16"),
        };
        drop(bytes);
        w2.release();
        g
    }))
}

/// Replaces every weight-norm pair by its fused tensor under the plain name; every other
/// tensor is kept as it is (bit for bit). Returns the new tensor list (fused tensors computed
/// when their bytes are read) and the pairs found.
///
/// # Errors
///
/// [`TorchError::NothingTo`] when there is no pair, and the errors of
/// [`detect_pairs`](super::detect_pairs) and of the pairs' shapes and dtypes. Errors in the data
/// (NaN, zero norms) come when the fused tensors are computed.
pub fn fuse(
    tensors: &[TensorEntry],
    options: &FuseOptions,
) -> Result<(Vec<TensorEntry>, Vec<Pair>)> {
    let shapes: Vec<_> = tensors
        .iter()
        .map(|t| (t.name.clone(), t.shape.clone()))
        .collect();
    let pairs = detect_pairs(&shapes, options.dim)?;
    if pairs.is_empty() {
        return Err(TorchError::NothingTo(Action::Fuse));
    }
    let by_name: std::collections::HashMap<&str, &TensorEntry> =
        tensors.iter().map(|t| (t.name.as_str(), t)).collect();
    let find = |k: &str| *by_name.get(k).expect("detected");
    let mut consumed = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for p in &pairs {
        let (g, v) = (find(&p.g_key).clone(), find(&p.v_key).clone());
        if by_name.contains_key(p.name.as_str()) {
            return Err(TorchError::Collision {
                action: Action::Fuse,
                key: p.name.clone(),
            });
        }
        check_pair(&p.name, &v, &g, p.axis)?;
        consumed.insert(p.g_key.clone());
        consumed.insert(p.v_key.clone());
        let (name, axis) = (p.name.clone(), p.axis);
        out.push(
            TensorEntry::lazy(&p.name, v.dtype, v.shape.clone(), move || {
                let w = fuse_bytes(&name, &v, &g, axis);
                // The inputs are not needed again: let a memory-mapped file's pages go.
                v.release();
                g.release();
                w
            })
            .with_origin(&p.v_key),
        );
    }
    out.extend(
        tensors
            .iter()
            .filter(|t| !consumed.contains(&t.name))
            .cloned(),
    );
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok((out, pairs))
}

/// Splits the selected weights into weight-norm pairs (`g = ||w||`, `v = w`) named in
/// `options.scheme`; every other tensor is kept as it is.
///
/// # Errors
///
/// [`TorchError::NothingTo`] when nothing is selected; a bad `dim` or non-float dtype for a
/// selected tensor; an output key that already exists. Errors in the data come when the `g`
/// tensors are computed.
pub fn split(
    tensors: &[TensorEntry],
    options: &SplitOptions<'_>,
) -> Result<(Vec<TensorEntry>, Vec<Pair>)> {
    let mut out = Vec::new();
    let mut pairs = Vec::new();
    for t in tensors {
        if !is_float(t.dtype) || !(options.select)(&t.name, &t.shape) {
            out.push(t.clone());
            continue;
        }
        let axis =
            NormAxis::from_torch(options.dim, t.shape.len()).map_err(|source| TorchError::Op {
                name: t.name.clone(),
                source: Box::new(source),
            })?;
        let (g_key, v_key) = pair_keys(&t.name, options.scheme);
        out.push(split_g(&t.name, t, axis)?.renamed(&g_key));
        out.push(t.renamed(&v_key));
        pairs.push(Pair {
            name: t.name.clone(),
            scheme: options.scheme,
            g_key,
            v_key,
            axis,
        });
    }
    if pairs.is_empty() {
        return Err(TorchError::NothingTo(Action::Split));
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    if let Some(w) = out.windows(2).find(|w| w[0].name == w[1].name) {
        return Err(TorchError::Collision {
            action: Action::Split,
            key: w[0].name.clone(),
        });
    }
    Ok((out, pairs))
}

/// Renames every weight-norm pair into `scheme`; the data is unchanged.
///
/// # Errors
///
/// [`TorchError::NothingTo`] when there is no pair; the errors of pair detection.
pub fn convert(tensors: &[TensorEntry], scheme: Scheme) -> Result<(Vec<TensorEntry>, Vec<Pair>)> {
    let shapes: Vec<_> = tensors
        .iter()
        .map(|t| (t.name.clone(), t.shape.clone()))
        .collect();
    let pairs = detect_pairs(&shapes, None)?;
    if pairs.is_empty() {
        return Err(TorchError::NothingTo(Action::Convert));
    }
    let mut rename = std::collections::BTreeMap::new();
    for p in &pairs {
        let (g, v) = pair_keys(&p.name, scheme);
        rename.insert(p.g_key.clone(), g);
        rename.insert(p.v_key.clone(), v);
    }
    let mut out: Vec<TensorEntry> = tensors
        .iter()
        .map(|t| match rename.get(&t.name) {
            Some(n) => t.renamed(n),
            None => t.clone(),
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    if let Some(w) = out.windows(2).find(|w| w[0].name == w[1].name) {
        return Err(TorchError::Collision {
            action: Action::Convert,
            key: w[0].name.clone(),
        });
    }
    Ok((out, pairs))
}

/// Minimum, maximum and mean of some values.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stats {
    /// The smallest value.
    pub min: f64,
    /// The largest value.
    pub max: f64,
    /// The mean.
    pub mean: f64,
}

impl Stats {
    fn of(xs: &[f64]) -> Option<Self> {
        if xs.is_empty() {
            return None;
        }
        let (min, max) = xs
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| {
                (a.min(x), b.max(x))
            });
        Some(Self {
            min,
            max,
            mean: xs.iter().sum::<f64>() / xs.len() as f64,
        })
    }
}

/// The statistics `inspect` reports for a pair: of `g`, and of the norms of
/// `v`'s slices along the pair's axis. `None` for empty tensors.
///
/// # Errors
///
/// A non-float dtype, or the errors of reading the tensors.
pub fn pair_stats(
    v: &TensorEntry,
    g: &TensorEntry,
    axis: NormAxis,
) -> Result<(Option<Stats>, Option<Stats>)> {
    fn run<T: slices::Element>(
        v: &[u8],
        g: &[u8],
        shape: &[usize],
        axis: NormAxis,
    ) -> (Vec<f64>, Vec<f64>) {
        let (v, g) = (decode::<T>(v), decode::<T>(g));
        (
            g.iter().map(|x| x.to_f64()).collect(),
            slices::norms_f64(&v, shape, axis),
        )
    }
    let name = v.name.clone();
    let (vb, gb) = (v.bytes()?, g.bytes()?);
    let (gs, ns) = match v.dtype {
        Dtype::F32 => run::<f32>(&vb, &gb, &v.shape, axis),
        Dtype::F64 => run::<f64>(&vb, &gb, &v.shape, axis),
        Dtype::F16 => run::<f16>(&vb, &gb, &v.shape, axis),
        Dtype::BF16 => run::<bf16>(&vb, &gb, &v.shape, axis),
        other => {
            return Err(TorchError::DType {
                name,
                reason: format!("{other:?} is not a floating-point type"),
            });
        }
    };
    Ok((Stats::of(&gs), Stats::of(&ns)))
}
