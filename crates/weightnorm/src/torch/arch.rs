//! Networks for the canonical form from an architecture file and a checkpoint, and canonical
//! weights back to checkpoint tensors under the same keys.
//!
//! The architecture file (JSON) names PyTorch `nn.Sequential` modules:
//!
//! ```json
//! {"input": [784], "layers": [{"op": "linear", "param": "0"}, {"op": "relu"},
//!                             {"op": "linear", "param": "2"}]}
//! ```
//!
//! Ops: `linear`; `conv1d`, `conv2d` (`stride`, `padding`, `dilation`: a number or one per axis;
//! `groups`); `relu`; `leaky_relu` (`negative_slope`, default 0.01); `identity`; `dropout`
//! (`p`, ignored: inference); `max_pool2d`, `avg_pool2d` (`kernel`, `stride` (default the
//! kernel), `padding`); `flatten`; `batch_norm` (`param`, `eps`, default 1e-5);
//! `mean_only_batch_norm` (`param`); `tanh`; `sigmoid`; `gelu`; `gate` (WaveNet's
//! `tanh(a) * sigmoid(b)` over the two halves of the channels); `residual` (`body`: a list of
//! layers, `y = x + body(x)`). `param` is the key prefix of the layer's tensors
//! (`<param>.weight`, `<param>.bias`, `<param>.running_mean`, ..., in PyTorch's layout); it
//! defaults to the layer's position (`"3"`, `"4.body.0"`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use burn::tensor::{bf16, f16};
use safetensors::Dtype;
use serde_json::Value;

use super::TensorEntry;
use super::field::{self, BIAS, RUNNING_MEAN, RUNNING_VAR, WEIGHT};
use crate::LayerKind;
use crate::canonical::{
    Activation, Barrier, CanonicalError, ConvGeometry, Layer, Network, Norm, NormKind, Pool, Real,
    Rows, Weighted, child,
};

/// The key under which a canonical checkpoint holds the output scale.
pub const CANONICAL_SCALE_KEY: &str = "canonical.scale";

// The canonical form's rows are output units: PyTorch's layouts of the weighted kinds keep them
// on the first axis (the layout table says so; checked when compiling).
const _: () = assert!(
    LayerKind::Linear.torch_unit_axes().output == 0
        && LayerKind::Conv1d.torch_unit_axes().output == 0
        && LayerKind::Conv2d.torch_unit_axes().output == 0
);

/// A tensor's shape and values.
type Shaped<T> = (Vec<usize>, Vec<T>);

/// Tensors by key.
type ArchTensors<'a> = BTreeMap<&'a str, &'a TensorEntry>;

/// Builds a network from an architecture file (see the [module](self) docs) and a
/// checkpoint's tensors (weight-norm pairs already fused). Every tensor is converted to `T` and
/// its source released (a memory-mapped file's pages go) as soon as it is read.
///
/// # Errors
///
/// [`CanonicalError::Arch`] for a malformed file; [`CanonicalError::Layer`] naming the layer
/// for an unknown op or field, a missing tensor, a tensor of the wrong shape or type, values
/// that are not finite, and layers that do not fit together.
pub fn from_arch<T: Real>(
    arch: &Value,
    tensors: &[TensorEntry],
) -> Result<Network<T>, CanonicalError> {
    let obj = arch.as_object().ok_or_else(|| {
        CanonicalError::Arch("must be a JSON object with `input` and `layers`".into())
    })?;
    if let Some(k) = obj
        .keys()
        .find(|k| !matches!(k.as_str(), "input" | "layers"))
    {
        return Err(CanonicalError::Arch(format!(
            "unknown field `{k}` (expected `input` and `layers`)"
        )));
    }
    let input = obj
        .get("input")
        .and_then(Value::as_array)
        .and_then(|a| {
            a.iter()
                .map(|v| v.as_u64().filter(|&n| n > 0).map(|n| n as usize))
                .collect::<Option<Vec<_>>>()
        })
        .filter(|s| (1..=3).contains(&s.len()))
        .ok_or_else(|| {
            CanonicalError::Arch(
                "`input` must be one sample's shape: 1 to 3 positive integers ([features], \
                 [channels, length] or [channels, height, width])"
                    .into(),
            )
        })?;
    let layers = obj
        .get("layers")
        .and_then(Value::as_array)
        .ok_or_else(|| CanonicalError::Arch("`layers` must be a list".into()))?;
    let map: ArchTensors<'_> = tensors.iter().map(|t| (t.name.as_str(), t)).collect();
    let layers = parse_layers(layers, "", &map)?;
    Network::new(input, layers)
}

fn parse_layers<T: Real>(
    list: &[Value],
    path: &str,
    map: &ArchTensors<'_>,
) -> Result<Vec<Layer<T>>, CanonicalError> {
    list.iter()
        .enumerate()
        .map(|(i, v)| parse_layer(v, &child(path, i), map))
        .collect()
}

struct Spec<'a> {
    v: &'a serde_json::Map<String, Value>,
    name: &'a str,
    op: &'a str,
}

impl Spec<'_> {
    fn err(&self, reason: impl Into<String>) -> CanonicalError {
        CanonicalError::Layer {
            layer: self.name.into(),
            op: self.op.into(),
            reason: reason.into(),
        }
    }

    fn allow(&self, fields: &[&str]) -> Result<(), CanonicalError> {
        match self
            .v
            .keys()
            .find(|k| *k != "op" && !fields.contains(&k.as_str()))
        {
            Some(k) => Err(self.err(format!(
                "unknown field `{k}`{}",
                if fields.is_empty() {
                    " (this op takes none)".to_string()
                } else {
                    format!(" (it takes {})", fields.join(", "))
                }
            ))),
            None => Ok(()),
        }
    }

    fn param(&self) -> Result<String, CanonicalError> {
        match self.v.get("param") {
            None => Ok(self.name.to_string()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(self.err("`param` must be a string")),
        }
    }

    fn number(&self, key: &str, default: f64) -> Result<f64, CanonicalError> {
        match self.v.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_f64()
                .filter(|x| x.is_finite())
                .ok_or_else(|| self.err(format!("`{key}` must be a number"))),
        }
    }

    /// A number or a list of `n` numbers, each at least `min`.
    fn per_axis(
        &self,
        key: &str,
        n: usize,
        default: Option<Vec<usize>>,
        min: usize,
    ) -> Result<Vec<usize>, CanonicalError> {
        let bad = || {
            self.err(format!(
                "`{key}` must be an integer or a list of {n} integers, each at least {min}"
            ))
        };
        let vals = match self.v.get(key) {
            None => return default.ok_or_else(|| self.err(format!("`{key}` is required"))),
            Some(Value::Array(a)) if a.len() == n => a
                .iter()
                .map(|x| x.as_u64().map(|x| x as usize))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(bad)?,
            Some(v) => vec![v.as_u64().ok_or_else(bad)? as usize; n],
        };
        if vals.iter().any(|&x| x < min) {
            return Err(bad());
        }
        Ok(vals)
    }

    fn tensor<T: Real>(
        &self,
        map: &ArchTensors<'_>,
        key: &str,
        required: bool,
    ) -> Result<Option<Shaped<T>>, CanonicalError> {
        let Some(t) = map.get(key) else {
            return if required {
                Err(self.err(format!("the checkpoint has no tensor `{key}`")))
            } else {
                Ok(None)
            };
        };
        let values = decode::<T>(t).map_err(|reason| self.err(format!("`{key}`: {reason}")))?;
        if values.iter().any(|x| !x.to_f64().is_finite()) {
            return Err(self.err(format!("`{key}` holds NaN or infinity")));
        }
        Ok(Some((t.shape.clone(), values)))
    }

    fn vector<T: Real>(
        &self,
        map: &ArchTensors<'_>,
        key: &str,
        len: Option<usize>,
        required: bool,
    ) -> Result<Option<Vec<T>>, CanonicalError> {
        let Some((shape, values)) = self.tensor::<T>(map, key, required)? else {
            return Ok(None);
        };
        if shape.len() != 1 || len.is_some_and(|n| n != shape[0]) {
            return Err(self.err(format!(
                "`{key}` has shape {shape:?}, expected [{}]",
                len.map_or("n".into(), |n| n.to_string())
            )));
        }
        Ok(Some(values))
    }
}

/// The tensor's values in `T`; its source is released (a memory-mapped file's pages go).
fn decode<T: Real>(t: &TensorEntry) -> Result<Vec<T>, String> {
    if !matches!(t.dtype, Dtype::F32 | Dtype::F64 | Dtype::F16 | Dtype::BF16) {
        return Err(format!("a {:?} tensor, not floating point", t.dtype));
    }
    let out = t.values_with(T::from_f64).map_err(|e| e.to_string())?;
    t.release();
    Ok(out)
}

/// A weighted layer's kind, rank and units from its weight's shape, through the layout table.
fn weight_layout(
    s: &Spec<'_>,
    kind: LayerKind,
    key: &str,
    shape: &[usize],
) -> Result<(usize, usize), CanonicalError> {
    let axes = kind.torch_unit_axes();
    if shape.len() != kind.weight_rank() {
        return Err(s.err(format!(
            "`{key}` has shape {shape:?}, expected a rank-{} weight (output units on axis {}, \
             input units on axis {})",
            kind.weight_rank(),
            axes.output,
            axes.input
        )));
    }
    if shape.contains(&0) {
        return Err(s.err(format!("`{key}` has an empty axis: {shape:?}")));
    }
    let out = shape[axes.output];
    Ok((out, shape.iter().product::<usize>() / out))
}

fn parse_layer<T: Real>(
    v: &Value,
    name: &str,
    map: &ArchTensors<'_>,
) -> Result<Layer<T>, CanonicalError> {
    let obj = v.as_object().ok_or_else(|| CanonicalError::Layer {
        layer: name.into(),
        op: "?".into(),
        reason: "must be a JSON object with an `op`".into(),
    })?;
    let op = obj
        .get("op")
        .and_then(Value::as_str)
        .ok_or_else(|| CanonicalError::Layer {
            layer: name.into(),
            op: "?".into(),
            reason: "has no `op` string".into(),
        })?;
    let s = Spec { v: obj, name, op };
    Ok(match op {
        "linear" | "conv1d" | "conv2d" => {
            let kind = match op {
                "linear" => LayerKind::Linear,
                "conv1d" => LayerKind::Conv1d,
                _ => LayerKind::Conv2d,
            };
            let dims = kind.weight_rank() - 2;
            if kind == LayerKind::Linear {
                s.allow(&["param"])?;
            } else {
                s.allow(&["param", "stride", "padding", "dilation", "groups"])?;
            }
            let p = s.param()?;
            let key = field::key(&p, WEIGHT);
            let (shape, w) = s.tensor::<T>(map, &key, true)?.expect("required");
            let (out, row_len) = weight_layout(&s, kind, &key, &shape)?;
            let conv = if kind == LayerKind::Linear {
                None
            } else {
                let groups = s.per_axis("groups", 1, Some(vec![1]), 1)?[0];
                if !out.is_multiple_of(groups) {
                    return Err(s.err(format!(
                        "{out} output channels do not split into {groups} groups"
                    )));
                }
                Some(ConvGeometry {
                    kernel: shape[2..].to_vec(),
                    stride: s.per_axis("stride", dims, Some(vec![1; dims]), 1)?,
                    padding: s.per_axis("padding", dims, Some(vec![0; dims]), 0)?,
                    dilation: s.per_axis("dilation", dims, Some(vec![1; dims]), 1)?,
                    groups,
                })
            };
            let b = s.vector(map, &field::key(&p, BIAS), Some(out), false)?;
            Layer::Weighted(Weighted {
                w: Rows::new(out, row_len, w),
                b,
                conv,
                param: Some(p),
            })
        }
        "relu" => {
            s.allow(&[])?;
            Layer::Act(Activation::Relu)
        }
        "leaky_relu" => {
            s.allow(&["negative_slope"])?;
            Layer::Act(Activation::LeakyRelu(s.number("negative_slope", 0.01)?))
        }
        "identity" => {
            s.allow(&[])?;
            Layer::Act(Activation::Identity)
        }
        "dropout" => {
            s.allow(&["p"])?;
            Layer::Act(Activation::Identity)
        }
        "tanh" | "sigmoid" | "gelu" | "gate" => {
            if op == "gelu" {
                s.allow(&["approximate"])?;
                if let Some(a) = obj.get("approximate")
                    && a.as_str() != Some("none")
                {
                    return Err(s.err("only the exact GELU (`approximate`: \"none\") is supported"));
                }
            } else {
                s.allow(&[])?;
            }
            Layer::Barrier(match op {
                "tanh" => Barrier::Tanh,
                "sigmoid" => Barrier::Sigmoid,
                "gelu" => Barrier::Gelu,
                _ => Barrier::Gate,
            })
        }
        "max_pool2d" | "avg_pool2d" => {
            s.allow(&["kernel", "stride", "padding"])?;
            let kernel = s.per_axis("kernel", 2, None, 0)?;
            let stride = s.per_axis("stride", 2, Some(kernel.clone()), 0)?;
            let padding = s.per_axis("padding", 2, Some(vec![0, 0]), 0)?;
            Layer::Pool(Pool {
                max: op == "max_pool2d",
                kernel: [kernel[0], kernel[1]],
                stride: [stride[0], stride[1]],
                padding: [padding[0], padding[1]],
            })
        }
        "flatten" => {
            s.allow(&[])?;
            Layer::Flatten
        }
        "batch_norm" => {
            s.allow(&["param", "eps"])?;
            let p = s.param()?;
            let eps = s.number("eps", 1e-5)?;
            if eps < 0.0 {
                return Err(s.err("`eps` must not be negative"));
            }
            let mean: Vec<T> = s
                .vector(map, &field::key(&p, RUNNING_MEAN), None, true)?
                .expect("required");
            let n = mean.len();
            let var: Vec<T> = s
                .vector(map, &field::key(&p, RUNNING_VAR), Some(n), true)?
                .expect("required");
            let gamma: Option<Vec<T>> = s.vector(map, &field::key(&p, WEIGHT), Some(n), false)?;
            let beta: Option<Vec<T>> = s.vector(map, &field::key(&p, BIAS), Some(n), false)?;
            let mut a = Vec::with_capacity(n);
            let mut c = Vec::with_capacity(n);
            for i in 0..n {
                let denom = (var[i].to_f64() + eps).sqrt();
                if denom.is_nan() || denom <= 0.0 {
                    return Err(s.err(format!("running_var + eps is not positive for channel {i}")));
                }
                let ai = gamma.as_ref().map_or(1.0, |g| g[i].to_f64()) / denom;
                a.push(T::from_f64(ai));
                c.push(T::from_f64(
                    beta.as_ref().map_or(0.0, |b| b[i].to_f64()) - ai * mean[i].to_f64(),
                ));
            }
            Layer::Norm(Norm {
                kind: NormKind::Batch { eps },
                a: Some(a),
                c,
                param: Some(p),
            })
        }
        "mean_only_batch_norm" => {
            s.allow(&["param"])?;
            let p = s.param()?;
            let mean: Vec<T> = s
                .vector(map, &field::key(&p, RUNNING_MEAN), None, true)?
                .expect("required");
            let bias: Vec<T> = s
                .vector(map, &field::key(&p, BIAS), Some(mean.len()), true)?
                .expect("required");
            Layer::Norm(Norm {
                kind: NormKind::MeanOnly,
                a: None,
                c: bias
                    .iter()
                    .zip(&mean)
                    .map(|(b, m)| T::from_f64(b.to_f64() - m.to_f64()))
                    .collect(),
                param: Some(p),
            })
        }
        "residual" => {
            s.allow(&["body"])?;
            let body = obj
                .get("body")
                .and_then(Value::as_array)
                .ok_or_else(|| s.err("`body` must be a list of layers"))?;
            Layer::Residual(parse_layers(body, &format!("{name}.body"), map)?)
        }
        other => {
            return Err(s.err(format!(
                "unknown op `{other}` (known: linear, conv1d, conv2d, relu, leaky_relu, \
                 identity, dropout, max_pool2d, avg_pool2d, flatten, batch_norm, \
                 mean_only_batch_norm, tanh, sigmoid, gelu, gate, residual)"
            )));
        }
    })
}

/// Encodes values as `dtype`'s little-endian bytes.
fn encode<T: Real>(values: &[T], dtype: Dtype) -> Vec<u8> {
    fn put<const N: usize, T: Real>(values: &[T], f: impl Fn(f64) -> [u8; N]) -> Vec<u8> {
        let mut out = vec![0u8; values.len() * N];
        for (chunk, x) in out.chunks_exact_mut(N).zip(values) {
            chunk.copy_from_slice(&f(x.to_f64()));
        }
        out
    }
    match dtype {
        Dtype::F64 => put(values, f64::to_le_bytes),
        Dtype::F16 => put(values, |x| f16::from_f64(x).to_bits().to_le_bytes()),
        Dtype::BF16 => put(values, |x| bf16::from_f64(x).to_bits().to_le_bytes()),
        _ => put(values, |x| (x as f32).to_le_bytes()),
    }
}

/// Where a layer sits: indices into nested residual bodies.
type Path = Vec<usize>;

fn layer_at<'a, T: Real>(layers: &'a [Layer<T>], path: &[usize]) -> &'a Layer<T> {
    match (&layers[path[0]], path.len()) {
        (l, 1) => l,
        (Layer::Residual(body), _) => layer_at(body, &path[1..]),
        _ => unreachable!("a path into residual bodies"),
    }
}

fn collect_paths<T: Real>(layers: &[Layer<T>], prefix: &Path, out: &mut Vec<Path>) {
    for (i, l) in layers.iter().enumerate() {
        let mut p = prefix.clone();
        p.push(i);
        match l {
            Layer::Residual(body) => collect_paths(body, &p, out),
            Layer::Weighted(_) | Layer::Norm(_) => out.push(p),
            _ => {}
        }
    }
}

/// The fields a layer is written as.
fn fields<T: Real>(layer: &Layer<T>) -> &'static [&'static str] {
    match layer {
        Layer::Weighted(_) => &[WEIGHT, BIAS],
        Layer::Norm(Norm {
            kind: NormKind::Batch { .. },
            ..
        }) => &[WEIGHT, BIAS, RUNNING_MEAN, RUNNING_VAR],
        Layer::Norm(_) => &[BIAS, RUNNING_MEAN],
        _ => &[],
    }
}

/// Whether a field's values are what PyTorch assumes when the module has no such tensor (a
/// layer without bias, a batch norm without affine parameters), so that a checkpoint without
/// the key can do without it.
fn absent_ok<T: Real>(layer: &Layer<T>, field: &str) -> bool {
    let all = |v: Option<&[T]>, x: f64| v.is_none_or(|v| v.iter().all(|y| y.to_f64() == x));
    match (layer, field) {
        (Layer::Weighted(w), BIAS) => all(w.b.as_deref(), 0.0),
        (Layer::Norm(n), WEIGHT) => all(n.a.as_deref(), 1.0),
        (
            Layer::Norm(Norm {
                kind: NormKind::Batch { .. },
                c,
                ..
            }),
            BIAS,
        ) => all(Some(c), 0.0),
        _ => false,
    }
}

/// The bytes a field of a layer is written with.
fn field_bytes<T: Real>(layer: &Layer<T>, field: &str, dtype: Dtype) -> Vec<u8> {
    match (layer, field) {
        (Layer::Weighted(w), WEIGHT) => encode(&w.w.data, dtype),
        (Layer::Weighted(w), _) => match &w.b {
            Some(b) => encode(b, dtype),
            None => encode(&vec![0.0f64; w.w.out], dtype),
        },
        (Layer::Norm(n), WEIGHT) => match &n.a {
            Some(a) => encode(a, dtype),
            None => encode(&vec![1.0f64; n.c.len()], dtype),
        },
        (Layer::Norm(n), BIAS) => encode(&n.c, dtype),
        (Layer::Norm(n), RUNNING_MEAN) => encode(&vec![0.0f64; n.c.len()], dtype),
        (
            Layer::Norm(Norm {
                kind: NormKind::Batch { eps },
                c,
                ..
            }),
            RUNNING_VAR,
        ) => encode(&vec![1.0 - eps; c.len()], dtype),
        _ => unreachable!("a field of `fields`"),
    }
}

/// The checkpoint of a (canonical or reconstituted) network: `originals` with every tensor the
/// network holds replaced under the same key, in the same dtype, and every other tensor (such
/// as `num_batches_tracked`) kept as it is; plus `extra` (such as [`CANONICAL_SCALE_KEY`]).
/// Values are computed when the tensors are written, one at a time.
///
/// A batch norm is written as `weight = a`, `bias = c`, `running_mean = 0`,
/// `running_var = 1 - eps` (so that PyTorch computes `a * x + c`), a mean-only batch norm as
/// `bias = c`, `running_mean = 0`.
///
/// # Errors
///
/// [`CanonicalError::Layer`] if a layer has no `param`, or a tensor it must write is missing
/// from `originals` (a missing bias is fine while it is zero, a batch norm's missing affine
/// parameters while they are 1 and 0); [`CanonicalError::Arch`] if `extra` repeats a key.
pub fn to_tensors<T: Real>(
    network: Arc<Network<T>>,
    originals: &[TensorEntry],
    extra: Vec<TensorEntry>,
) -> Result<Vec<TensorEntry>, CanonicalError> {
    let by_key: BTreeMap<&str, &TensorEntry> =
        originals.iter().map(|t| (t.name.as_str(), t)).collect();
    let mut replaced: BTreeMap<String, TensorEntry> = BTreeMap::new();
    let mut paths = Vec::new();
    collect_paths(&network.layers, &Vec::new(), &mut paths);
    for path in paths {
        let layer = layer_at(&network.layers, &path);
        let err = |reason: String| CanonicalError::Layer {
            layer: path.iter().fold(String::new(), |name, &i| {
                child(
                    &if name.is_empty() {
                        name
                    } else {
                        name + ".body"
                    },
                    i,
                )
            }),
            op: layer.op().into(),
            reason,
        };
        let param = match layer {
            Layer::Weighted(w) => &w.param,
            Layer::Norm(n) => &n.param,
            _ => unreachable!("collected"),
        };
        let Some(param) = param else {
            return Err(err("has no checkpoint key (`param`)".into()));
        };
        for &f in fields(layer) {
            let key = field::key(param, f);
            let Some(orig) = by_key.get(key.as_str()) else {
                if absent_ok(layer, f) {
                    continue;
                }
                return Err(err(format!(
                    "the checkpoint has no `{key}` to hold the canonical values"
                )));
            };
            let (net, path, dtype) = (Arc::clone(&network), path.clone(), orig.dtype);
            replaced.insert(
                key.clone(),
                TensorEntry::lazy(key, dtype, orig.shape.clone(), move || {
                    Ok(field_bytes(layer_at(&net.layers, &path), f, dtype))
                }),
            );
        }
    }
    let extra_keys: BTreeSet<String> = extra.iter().map(|t| t.name.clone()).collect();
    if let Some(k) = originals.iter().find(|t| extra_keys.contains(&t.name)) {
        return Err(CanonicalError::Arch(format!(
            "the checkpoint already holds `{}`",
            k.name
        )));
    }
    let mut out: Vec<TensorEntry> = originals
        .iter()
        .map(|t| replaced.remove(&t.name).unwrap_or_else(|| t.clone()))
        .collect();
    out.extend(extra);
    Ok(out)
}

/// `values` as a 1-D tensor named `name` in `dtype` (for `canonical.scale`).
pub fn vector_entry(name: &str, values: &[f64], dtype: Dtype) -> TensorEntry {
    TensorEntry::from_bytes(name, dtype, vec![values.len()], encode(values, dtype))
        .expect("sized to the values")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::canonical::{Agreement, canonicalize, verify};

    fn entry(name: &str, shape: Vec<usize>, values: &[f32]) -> TensorEntry {
        TensorEntry::from_bytes(
            name,
            Dtype::F32,
            shape,
            bytemuck::cast_slice(values).to_vec(),
        )
        .unwrap()
    }

    /// Deterministic values in (-1, 1).
    fn vals(n: usize, seed: usize) -> Vec<f32> {
        (0..n)
            .map(|i| ((i * 7919 + seed * 104_729) as f32 * 0.618_034).sin())
            .collect()
    }

    fn small_checkpoint() -> Vec<TensorEntry> {
        let mut seed = 0;
        let mut v = |n: usize| {
            seed += 1;
            vals(n, seed)
        };
        vec![
            entry("0.weight", vec![4, 2, 3, 3], &v(72)),
            entry("1.weight", vec![4], &v(4)),
            entry("1.bias", vec![4], &v(4)),
            entry("1.running_mean", vec![4], &v(4)),
            entry(
                "1.running_var",
                vec![4],
                &v(4).iter().map(|x| x.abs() + 0.5).collect::<Vec<_>>(),
            ),
            TensorEntry::from_bytes("1.num_batches_tracked", Dtype::I64, vec![], vec![7; 8])
                .unwrap(),
            entry("3.body.0.weight", vec![4, 4, 1, 1], &v(16)),
            entry("3.body.0.bias", vec![4], &v(4)),
            entry("6.weight", vec![3, 16], &v(48)),
            entry("6.bias", vec![3], &v(3)),
        ]
    }

    fn small_arch() -> serde_json::Value {
        json!({"input": [2, 6, 6], "layers": [
            {"op": "conv2d", "padding": 1},
            {"op": "batch_norm"},
            {"op": "relu"},
            {"op": "residual", "body": [{"op": "conv2d"}]},
            {"op": "max_pool2d", "kernel": 3},
            {"op": "flatten"},
            {"op": "linear"}
        ]})
    }

    #[test]
    fn from_an_architecture_file_and_back_to_tensors() {
        let tensors = small_checkpoint();
        let net: Network<f32> = from_arch(&small_arch(), &tensors).unwrap();
        assert_eq!(net.output_shape(), vec![3]);
        let c = canonicalize(net.clone()).unwrap();
        let scale = vector_entry(CANONICAL_SCALE_KEY, &c.scale, Dtype::F32);
        let out = to_tensors(Arc::new(c.network.clone()), &tensors, vec![scale]).unwrap();
        let names: Vec<&str> = out.iter().map(|t| t.name.as_str()).collect();
        let mut expected: Vec<&str> = tensors.iter().map(|t| t.name.as_str()).collect();
        expected.push(CANONICAL_SCALE_KEY);
        assert_eq!(names, expected, "same keys, same order, plus the scale");
        // Untouched tensors are kept bit for bit; the folded norm reads as a shift.
        assert_eq!(out[5].bytes().unwrap().as_ref(), &[7u8; 8]);
        let var: &[f32] = bytemuck::cast_slice(&out[4].bytes().unwrap())
            .to_vec()
            .leak();
        assert!(var.iter().all(|&v| v == (1.0 - 1e-5f64) as f32));
        // Reading the canonical checkpoint gives the canonical network's function.
        let reread: Network<f32> = from_arch(&small_arch(), &out).unwrap();
        let xs: Vec<Vec<f64>> = (0..3)
            .map(|k| {
                vals(72, 50 + k)
                    .iter()
                    .map(|&x| f64::from(x) * 2.0)
                    .collect()
            })
            .collect();
        let a = Agreement::between(&c.network.forward(&xs), &reread.forward(&xs));
        assert!(a.max_rel_error < 1e-6, "{a:?}");
        assert!(verify(&net, &c, &xs).max_rel_error < 1e-5);
    }

    #[test]
    fn bad_architectures_name_the_layer() {
        let tensors = small_checkpoint();
        let err =
            |arch: serde_json::Value| from_arch::<f32>(&arch, &tensors).unwrap_err().to_string();
        let mut a = small_arch();
        a["layers"][2]["op"] = json!("swish");
        assert!(err(a).starts_with("layer 2 (swish): unknown op `swish`"));
        let mut a = small_arch();
        a["layers"][6]["param"] = json!("9");
        assert!(err(a).contains("layer 6 (linear): the checkpoint has no tensor `9.weight`"));
        let mut a = small_arch();
        a["layers"][4]["kernel"] = json!(2);
        let e = err(a);
        assert!(
            e.starts_with("layer 6 (linear): takes 16 inputs, receives 36"),
            "{e}"
        );
        let mut a = small_arch();
        a["layers"][4]["kernel"] = json!(0);
        assert!(err(a).starts_with("layer 4 (max_pool2d): a pooling kernel [0, 0]"));
        let mut a = small_arch();
        a["layers"][3]["body"] = json!([{"op": "conv2d"}, {"op": "max_pool2d", "kernel": 2}]);
        let e = err(a);
        assert!(e.starts_with("layer 3 (residual): the body produces shape [4, 3, 3] but the skip path carries [4, 6, 6]"), "{e}");
        let mut a = small_arch();
        a["layers"][0]["strides"] = json!(2);
        assert!(err(a).starts_with("layer 0 (conv2d): unknown field `strides`"));
        assert!(err(json!({"layers": []})).starts_with("architecture: `input`"));
    }
}
