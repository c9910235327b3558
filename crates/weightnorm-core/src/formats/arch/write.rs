//! Writing: a (canonical or reconstituted) network back to checkpoint tensors under the keys
//! its [`Binding`]s name.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use half::{bf16, f16};
use safetensors::Dtype;

use super::{ArchError, ArchFault, Binding, BindingKind};
use crate::canonical::{Layer, Network, Real};
use crate::formats::field::{self, BIAS, RUNNING_MEAN, RUNNING_VAR, WEIGHT};
use crate::formats::{TensorEntry, TorchError};

/// The key under which a canonical checkpoint holds the output scale.
pub const CANONICAL_SCALE_KEY: &str = "canonical.scale";

/// Encodes values as `dtype`'s little-endian bytes (`f32` for any other dtype).
///
/// # Errors
///
/// [`TorchError::Overflow`] for a finite value that `dtype` cannot hold.
fn encode<T: Real>(name: &str, values: &[T], dtype: Dtype) -> Result<Vec<u8>, TorchError> {
    fn put<const N: usize, T: Real>(
        name: &str,
        values: &[T],
        dtype: &'static str,
        f: impl Fn(f64) -> ([u8; N], bool),
    ) -> Result<Vec<u8>, TorchError> {
        let mut out = vec![0u8; values.len() * N];
        for (chunk, x) in out.chunks_exact_mut(N).zip(values) {
            let (bytes, finite) = f(x.to_f64());
            if !finite && x.to_f64().is_finite() {
                return Err(TorchError::Overflow {
                    name: name.to_string(),
                    value: x.to_f64(),
                    dtype,
                });
            }
            chunk.copy_from_slice(&bytes);
        }
        Ok(out)
    }
    match dtype {
        Dtype::F64 => put(name, values, "f64", |x| (x.to_le_bytes(), true)),
        Dtype::F16 => put(name, values, "f16", |x| {
            let h = f16::from_f64(x);
            (h.to_bits().to_le_bytes(), h.is_finite())
        }),
        Dtype::BF16 => put(name, values, "bf16", |x| {
            let h = bf16::from_f64(x);
            (h.to_bits().to_le_bytes(), h.is_finite())
        }),
        _ => put(name, values, "f32", |x| {
            let h = x as f32;
            (h.to_le_bytes(), h.is_finite())
        }),
    }
}

/// The fields a bound layer is written as.
fn fields(kind: BindingKind) -> &'static [&'static str] {
    match kind {
        BindingKind::Weighted => &[WEIGHT, BIAS],
        BindingKind::BatchNorm { .. } => &[WEIGHT, BIAS, RUNNING_MEAN, RUNNING_VAR],
        BindingKind::MeanOnlyBatchNorm => &[BIAS, RUNNING_MEAN],
    }
}

/// Whether a field's values are what PyTorch assumes when the module has no such tensor (a
/// layer without bias, a batch norm without affine parameters), so that a checkpoint without
/// the key can do without it.
fn absent_ok<T: Real>(layer: &Layer<T>, kind: BindingKind, field: &str) -> bool {
    let all = |v: Option<&[T]>, x: f64| v.is_none_or(|v| v.iter().all(|y| y.to_f64() == x));
    match (layer, kind, field) {
        (Layer::Weighted(w), _, BIAS) => all(w.b.as_deref(), 0.0),
        (Layer::Norm(n), _, WEIGHT) => all(n.a.as_deref(), 1.0),
        (Layer::Norm(n), BindingKind::BatchNorm { .. }, BIAS) => all(Some(&n.c), 0.0),
        _ => false,
    }
}

/// The bytes a field of a bound layer is written with, under `key`.
fn field_bytes<T: Real>(
    layer: &Layer<T>,
    kind: BindingKind,
    field: &str,
    key: &str,
    dtype: Dtype,
) -> Result<Vec<u8>, TorchError> {
    let encode = |values: &[T]| encode(key, values, dtype);
    let constant = |x: f64, n: usize| encode(&vec![T::from_f64(x); n]);
    match (layer, kind, field) {
        (Layer::Weighted(w), _, WEIGHT) => encode(&w.w.data),
        (Layer::Weighted(w), _, _) => match &w.b {
            Some(b) => encode(b),
            None => constant(0.0, w.w.out),
        },
        (Layer::Norm(n), _, WEIGHT) => match &n.a {
            Some(a) => encode(a),
            None => constant(1.0, n.c.len()),
        },
        (Layer::Norm(n), _, BIAS) => encode(&n.c),
        (Layer::Norm(n), _, RUNNING_MEAN) => constant(0.0, n.c.len()),
        (Layer::Norm(n), BindingKind::BatchNorm { eps }, RUNNING_VAR) => {
            constant(1.0 - eps, n.c.len())
        }
        _ => unreachable!("a field of `fields` for a layer its binding fits"),
    }
}

/// Whether a binding's kind fits the layer at its position.
fn fits<T: Real>(layer: &Layer<T>, kind: BindingKind) -> bool {
    matches!(
        (layer, kind),
        (Layer::Weighted(_), BindingKind::Weighted)
            | (
                Layer::Norm(_),
                BindingKind::BatchNorm { .. } | BindingKind::MeanOnlyBatchNorm
            )
    )
}

/// The checkpoint of a (canonical or reconstituted) network: `originals` with every tensor the
/// network holds replaced under the key its binding names, in the same dtype, and every other
/// tensor (such as `num_batches_tracked`) kept as it is; plus `extra` (such as
/// [`CANONICAL_SCALE_KEY`]). Values are computed when the tensors are written, one at a time.
///
/// A batch norm is written as `weight = a`, `bias = c`, `running_mean = 0`,
/// `running_var = 1 - eps` (so that PyTorch computes `a * x + c`), a mean-only batch norm as
/// `bias = c`, `running_mean = 0`.
///
/// # Errors
///
/// [`ArchError::Layer`] if a binding names no layer of its kind, or a tensor it must write is
/// missing from `originals` (a missing bias is fine while it is zero, a batch norm's missing
/// affine parameters while they are 1 and 0); [`ArchError::DuplicateKey`] if `extra` repeats a key.
pub fn to_tensors<T: Real>(
    network: Arc<Network<T>>,
    bindings: &[Binding],
    originals: &[TensorEntry],
    extra: Vec<TensorEntry>,
) -> Result<Vec<TensorEntry>, ArchError> {
    let by_key: BTreeMap<&str, &TensorEntry> =
        originals.iter().map(|t| (t.name.as_str(), t)).collect();
    let mut replaced: BTreeMap<String, TensorEntry> = BTreeMap::new();
    for binding in bindings {
        let layer = match network.layer(&binding.path) {
            Some(l) if fits(l, binding.kind) => l,
            other => {
                return Err(ArchError::Layer {
                    at: binding.path.clone(),
                    op: other.map_or("?", Layer::op).into(),
                    fault: ArchFault::BindingMismatch(binding.prefix.clone()),
                });
            }
        };
        for &f in fields(binding.kind) {
            let key = field::key(&binding.prefix, f);
            let Some(orig) = by_key.get(key.as_str()) else {
                if absent_ok(layer, binding.kind, f) {
                    continue;
                }
                return Err(ArchError::Layer {
                    at: binding.path.clone(),
                    op: layer.op().into(),
                    fault: ArchFault::NoPlace(key),
                });
            };
            let (net, path, kind, dtype) = (
                Arc::clone(&network),
                binding.path.clone(),
                binding.kind,
                orig.dtype,
            );
            let name = key.clone();
            replaced.insert(
                key.clone(),
                TensorEntry::lazy(key, dtype, orig.shape.clone(), move || {
                    let layer = net.layer(&path).expect("checked above");
                    field_bytes(layer, kind, f, &name, dtype)
                }),
            );
        }
    }
    let extra_keys: BTreeSet<String> = extra.iter().map(|t| t.name.clone()).collect();
    if let Some(k) = originals.iter().find(|t| extra_keys.contains(&t.name)) {
        return Err(ArchError::DuplicateKey(k.name.clone()));
    }
    let mut out: Vec<TensorEntry> = originals
        .iter()
        .map(|t| replaced.remove(&t.name).unwrap_or_else(|| t.clone()))
        .collect();
    out.extend(extra);
    Ok(out)
}

/// `values` as a 1-D tensor named `name` in `dtype` (for `canonical.scale`).
///
/// # Errors
///
/// [`TorchError::Overflow`] for a value that `dtype` cannot hold: a global gain beyond the
/// range of `f32` is refused rather than written as infinity.
pub fn vector_entry(name: &str, values: &[f64], dtype: Dtype) -> Result<TensorEntry, TorchError> {
    TensorEntry::from_bytes(
        name,
        dtype,
        vec![values.len()],
        encode(name, values, dtype)?,
    )
}
