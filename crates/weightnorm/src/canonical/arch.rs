//! Networks from an architecture file and a checkpoint, and canonical weights back to
//! checkpoint tensors under the same keys.
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

use super::network::child;
use super::{
    Activation, Barrier, CanonicalError, ConvGeometry, Layer, Network, Norm, NormKind, Pool, Real,
    Rows, Weighted,
};
use crate::torch::TensorEntry;

/// A tensor's shape and values.
type Shaped<T> = (Vec<usize>, Vec<T>);

/// Tensors by key, for [`from_arch`].
pub type ArchTensors<'a> = BTreeMap<&'a str, &'a TensorEntry>;

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

fn decode<T: Real>(t: &TensorEntry) -> Result<Vec<T>, String> {
    let bytes = t.bytes().map_err(|e| e.to_string())?;
    fn conv<P: bytemuck::Pod, T: Real>(b: &[u8], f: impl Fn(P) -> f64) -> Vec<T> {
        b.chunks_exact(std::mem::size_of::<P>())
            .map(|c| T::from_f64(f(bytemuck::pod_read_unaligned::<P>(c))))
            .collect()
    }
    let out = match t.dtype {
        // Aligned bytes (a memory-mapped file's usually are): one tight loop.
        Dtype::F32 if bytemuck::try_cast_slice::<u8, f32>(&bytes).is_ok() => {
            bytemuck::cast_slice::<u8, f32>(&bytes)
                .iter()
                .map(|&x| T::from_f64(f64::from(x)))
                .collect()
        }
        Dtype::F64 if bytemuck::try_cast_slice::<u8, f64>(&bytes).is_ok() => {
            bytemuck::cast_slice::<u8, f64>(&bytes)
                .iter()
                .map(|&x| T::from_f64(x))
                .collect()
        }
        Dtype::F32 => conv::<f32, T>(&bytes, f64::from),
        Dtype::F64 => conv::<f64, T>(&bytes, |x| x),
        Dtype::F16 => conv::<u16, T>(&bytes, |x| f16::from_bits(x).to_f64()),
        Dtype::BF16 => conv::<u16, T>(&bytes, |x| bf16::from_bits(x).to_f64()),
        d => return Err(format!("a {d:?} tensor, not floating point")),
    };
    drop(bytes);
    t.release();
    Ok(out)
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
        "linear" => {
            s.allow(&["param"])?;
            let p = s.param()?;
            let (shape, w) = s.tensor::<T>(map, &format!("{p}.weight"), true)?.unwrap();
            if shape.len() != 2 {
                return Err(s.err(format!(
                    "`{p}.weight` has shape {shape:?}, expected [out, in]"
                )));
            }
            let b = s.vector(map, &format!("{p}.bias"), Some(shape[0]), false)?;
            Layer::Weighted(Weighted {
                w: Rows::new(shape[0], shape[1], w),
                bias_key: b.is_some(),
                b,
                conv: None,
                torch_shape: shape,
                param: Some(p),
            })
        }
        "conv1d" | "conv2d" => {
            s.allow(&["param", "stride", "padding", "dilation", "groups"])?;
            let dims = if op == "conv1d" { 1 } else { 2 };
            let p = s.param()?;
            let (shape, w) = s.tensor::<T>(map, &format!("{p}.weight"), true)?.unwrap();
            if shape.len() != 2 + dims {
                return Err(s.err(format!(
                    "`{p}.weight` has shape {shape:?}, expected [out, in / groups{}]",
                    ", k".repeat(dims)
                )));
            }
            let groups = s.per_axis("groups", 1, Some(vec![1]), 1)?[0];
            let geometry = ConvGeometry {
                kernel: shape[2..].to_vec(),
                stride: s.per_axis("stride", dims, Some(vec![1; dims]), 1)?,
                padding: s.per_axis("padding", dims, Some(vec![0; dims]), 0)?,
                dilation: s.per_axis("dilation", dims, Some(vec![1; dims]), 1)?,
                groups,
            };
            if geometry.kernel.contains(&0) || shape[1] == 0 {
                return Err(s.err(format!("`{p}.weight` has an empty axis: {shape:?}")));
            }
            let b = s.vector(map, &format!("{p}.bias"), Some(shape[0]), false)?;
            let row_len = shape[1..].iter().product();
            Layer::Weighted(Weighted {
                w: Rows::new(shape[0], row_len, w),
                bias_key: b.is_some(),
                b,
                conv: Some(geometry),
                torch_shape: shape,
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
                .vector(map, &format!("{p}.running_mean"), None, true)?
                .unwrap();
            let n = mean.len();
            let var: Vec<T> = s
                .vector(map, &format!("{p}.running_var"), Some(n), true)?
                .unwrap();
            let gamma: Option<Vec<T>> = s.vector(map, &format!("{p}.weight"), Some(n), false)?;
            let beta: Option<Vec<T>> = s.vector(map, &format!("{p}.bias"), Some(n), false)?;
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
                folded: false,
            })
        }
        "mean_only_batch_norm" => {
            s.allow(&["param"])?;
            let p = s.param()?;
            let mean: Vec<T> = s
                .vector(map, &format!("{p}.running_mean"), None, true)?
                .unwrap();
            let bias: Vec<T> = s
                .vector(map, &format!("{p}.bias"), Some(mean.len()), true)?
                .unwrap();
            Layer::Norm(Norm {
                kind: NormKind::MeanOnly,
                a: None,
                c: bias
                    .iter()
                    .zip(&mean)
                    .map(|(b, m)| T::from_f64(b.to_f64() - m.to_f64()))
                    .collect(),
                param: Some(p),
                folded: false,
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

/// The bytes a field of a layer is written with.
fn field_bytes<T: Real>(layer: &Layer<T>, field: &str, dtype: Dtype) -> Vec<u8> {
    match layer {
        Layer::Weighted(w) => match (field, &w.b) {
            ("weight", _) => encode(&w.w.data, dtype),
            (_, Some(b)) => encode(b, dtype),
            (_, None) => encode(&vec![0.0f64; w.w.out], dtype),
        },
        Layer::Norm(n) => {
            let len = n.c.len();
            match (field, &n.kind, &n.a) {
                ("weight", _, Some(a)) => encode(a, dtype),
                ("weight", _, None) => encode(&vec![1.0f64; len], dtype),
                ("bias", _, _) => encode(&n.c, dtype),
                ("running_mean", _, _) => encode(&vec![0.0f64; len], dtype),
                ("running_var", NormKind::Batch { eps }, _) => encode(&vec![1.0 - eps; len], dtype),
                _ => unreachable!("a normalization field"),
            }
        }
        _ => unreachable!("a layer with tensors"),
    }
}

/// The checkpoint of a (canonical or reconstituted) network: `originals` with every tensor the
/// network holds replaced under the same key, in the same dtype, and every other tensor (such
/// as `num_batches_tracked`) kept as it is; plus `extra` (such as `canonical.scale`). Values are
/// computed when the tensors are written, one at a time.
///
/// A batch norm is written as `weight = a`, `bias = c`, `running_mean = 0`, `running_var = 1 - eps`
/// (so that PyTorch computes `a * x + c`), a mean-only batch norm as `bias = c`,
/// `running_mean = 0`, and a weighted layer whose bias moved into a folded norm gets a zero bias.
///
/// # Errors
///
/// [`CanonicalError::Layer`] if a layer's tensor is missing from `originals` (the network did
/// not come from them), or a batch norm without `weight` must hold a multiplier other than 1.
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
        let name = path
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join(".body.");
        let err = |reason: String| CanonicalError::Layer {
            layer: name.clone(),
            op: layer.op().into(),
            reason,
        };
        let (param, fields): (&Option<String>, Vec<&str>) = match layer {
            Layer::Weighted(w) => (
                &w.param,
                if w.bias_key || w.b.is_some() {
                    vec!["weight", "bias"]
                } else {
                    vec!["weight"]
                },
            ),
            Layer::Norm(n) => (
                &n.param,
                match n.kind {
                    NormKind::Batch { .. } => vec!["weight", "bias", "running_mean", "running_var"],
                    NormKind::MeanOnly => vec!["bias", "running_mean"],
                },
            ),
            _ => unreachable!("collected"),
        };
        let Some(param) = param else {
            return Err(err("has no checkpoint key (`param`)".into()));
        };
        for field in fields {
            let key = format!("{param}.{field}");
            let Some(orig) = by_key.get(key.as_str()) else {
                let needed = match (layer, field) {
                    (Layer::Norm(n), "weight") => {
                        n.a.as_ref()
                            .is_some_and(|a| a.iter().any(|x| x.to_f64() != 1.0))
                    }
                    (Layer::Norm(_), "bias") => true,
                    _ => true,
                };
                if needed {
                    return Err(err(format!(
                        "the checkpoint has no `{key}` to hold the canonical values"
                    )));
                }
                continue;
            };
            let (net, path, field, dtype) = (Arc::clone(&network), path.clone(), field, orig.dtype);
            let field = field.to_string();
            replaced.insert(
                key.clone(),
                TensorEntry::lazy(key, dtype, orig.shape.clone(), move || {
                    Ok(field_bytes(layer_at(&net.layers, &path), &field, dtype))
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
