//! Reading: an architecture file and a checkpoint's tensors to a [`Network`] and its
//! [`Binding`]s.

use std::collections::BTreeMap;

use safetensors::Dtype;
use serde_json::Value;

use super::spec::{ArchSpec, ConvSpec, LayerSpec, PerAxis, PoolSpec};
use super::{ArchError, ArchFault, ArchNetwork, Binding, BindingKind};
use crate::LayerKind;
use crate::canonical::{
    Activation, Barrier, CanonicalError, ConvGeometry, Layer, Network, Norm, Pool, Real, Rows,
    Weighted, child,
};
use crate::formats::TensorEntry;
use crate::formats::field::{self, BIAS, RUNNING_MEAN, RUNNING_VAR, WEIGHT};

/// Tensors by key.
type ArchTensors<'a> = BTreeMap<&'a str, &'a TensorEntry>;

/// A tensor's shape and values.
type Shaped<T> = (Vec<usize>, Vec<T>);

/// Reads an architecture file's JSON into its schema, naming the layer (`3`, `4.body.0`) and
/// op of every error.
///
/// # Errors
///
/// [`ArchError::NotAnObject`], [`ArchError::UnknownField`], [`ArchError::BadInput`] or
/// [`ArchError::LayersNotAList`] if the file as a whole is malformed; [`ArchError::Layer`] for an
/// unknown op, an unknown or malformed field.
pub fn parse_arch(arch: &Value) -> Result<ArchSpec, ArchError> {
    let obj = arch.as_object().ok_or(ArchError::NotAnObject)?;
    if let Some(k) = obj
        .keys()
        .find(|k| !matches!(k.as_str(), "input" | "layers"))
    {
        return Err(ArchError::UnknownField(k.clone()));
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
        .ok_or(ArchError::BadInput)?;
    let layers = obj
        .get("layers")
        .and_then(Value::as_array)
        .ok_or(ArchError::LayersNotAList)?;
    Ok(ArchSpec {
        input,
        layers: parse_layers(layers, &[])?,
    })
}

fn parse_layers(list: &[Value], path: &[usize]) -> Result<Vec<LayerSpec>, ArchError> {
    list.iter()
        .enumerate()
        .map(|(i, v)| parse_layer(v, &child(path, i)))
        .collect()
}

/// One layer through serde; a residual's body is read layer by layer so that errors inside it
/// name their own position.
fn parse_layer(v: &Value, at: &[usize]) -> Result<LayerSpec, ArchError> {
    let err = |op: &str, fault: ArchFault| ArchError::Layer {
        at: at.to_vec(),
        op: op.into(),
        fault,
    };
    let obj = v
        .as_object()
        .ok_or_else(|| err("?", ArchFault::NotAnObject))?;
    let op = obj
        .get("op")
        .and_then(Value::as_str)
        .ok_or_else(|| err("?", ArchFault::NoOp))?;
    let body = match (op, obj.get("body")) {
        ("residual", Some(Value::Array(body))) => Some(body),
        ("residual", _) => return Err(err(op, ArchFault::BodyNotAList)),
        _ => None,
    };
    let mut shallow = obj.clone();
    if body.is_some() {
        shallow.insert("body".into(), Value::Array(Vec::new()));
    }
    let mut spec: LayerSpec = serde_json::from_value(Value::Object(shallow)).map_err(|e| {
        err(
            op,
            ArchFault::Schema(e.to_string().replacen("unknown variant", "unknown op", 1)),
        )
    })?;
    if let (LayerSpec::Residual { body: parsed }, Some(body)) = (&mut spec, body) {
        *parsed = parse_layers(body, at)?;
    }
    Ok(spec)
}

/// Builds a network from an architecture file (see [`spec`](super::spec)) and a checkpoint's
/// tensors (weight-norm pairs already fused). Every tensor is converted to `T` and its source
/// released (a memory-mapped file's pages go) as soon as it is read.
///
/// # Errors
///
/// The errors of [`parse_arch`] for a malformed file; [`ArchError::Input`] for an input too
/// large; [`ArchError::Layer`] naming the layer for an
/// unknown op or field, a missing tensor, a tensor of the wrong shape or type, values that are
/// not finite; [`ArchError::Network`] for layers that do not fit together.
pub fn from_arch<T: Real>(
    arch: &Value,
    tensors: &[TensorEntry],
) -> Result<ArchNetwork<T>, ArchError> {
    from_spec(&parse_arch(arch)?, tensors)
}

/// Builds a network from a parsed architecture file and a checkpoint's tensors (see
/// [`from_arch`]).
///
/// # Errors
///
/// As [`from_arch`], less the file's syntax.
pub fn from_spec<T: Real>(
    spec: &ArchSpec,
    tensors: &[TensorEntry],
) -> Result<ArchNetwork<T>, ArchError> {
    let mut reader = Reader {
        map: tensors.iter().map(|t| (t.name.as_str(), t)).collect(),
        bindings: Vec::new(),
    };
    let layers = reader.layers(&spec.layers, &mut Vec::new())?;
    let network = Network::new(spec.input.clone(), layers).map_err(|e| match e {
        CanonicalError::Input { .. } => ArchError::Input(e),
        e => ArchError::Network(e),
    })?;
    Ok(ArchNetwork {
        network,
        bindings: reader.bindings,
    })
}

struct Reader<'a> {
    map: ArchTensors<'a>,
    bindings: Vec<Binding>,
}

/// One layer being read: its position and op, for errors.
struct At<'s> {
    at: Vec<usize>,
    op: &'s str,
}

impl At<'_> {
    fn err(&self, fault: ArchFault) -> ArchError {
        ArchError::Layer {
            at: self.at.clone(),
            op: self.op.into(),
            fault,
        }
    }

    /// `value` resolved for `n` axes, each at least `min` (`default` when absent).
    fn per_axis(
        &self,
        key: &'static str,
        value: Option<&PerAxis>,
        n: usize,
        default: Option<Vec<usize>>,
        min: usize,
    ) -> Result<Vec<usize>, ArchError> {
        let bad = || self.err(ArchFault::PerAxis { key, axes: n, min });
        let vals = match value {
            None => return default.ok_or_else(|| self.err(ArchFault::Required(key))),
            Some(v) => v.resolve(n).ok_or_else(bad)?,
        };
        if vals.iter().any(|&x| x < min) {
            return Err(bad());
        }
        Ok(vals)
    }

    fn number(
        &self,
        key: &'static str,
        value: Option<f64>,
        default: f64,
    ) -> Result<f64, ArchError> {
        let x = value.unwrap_or(default);
        if x.is_finite() {
            Ok(x)
        } else {
            Err(self.err(ArchFault::NotFinite(key)))
        }
    }
}

impl Reader<'_> {
    fn layers<T: Real>(
        &mut self,
        specs: &[LayerSpec],
        path: &mut Vec<usize>,
    ) -> Result<Vec<Layer<T>>, ArchError> {
        let mut out = Vec::with_capacity(specs.len());
        for (i, spec) in specs.iter().enumerate() {
            path.push(i);
            out.push(self.layer(spec, path)?);
            path.pop();
        }
        Ok(out)
    }

    fn tensor<T: Real>(
        &self,
        at: &At<'_>,
        key: &str,
        required: bool,
    ) -> Result<Option<Shaped<T>>, ArchError> {
        let Some(t) = self.map.get(key) else {
            return if required {
                Err(at.err(ArchFault::MissingTensor(key.to_string())))
            } else {
                Ok(None)
            };
        };
        let values = decode::<T>(t, key).map_err(|fault| at.err(fault))?;
        if values.iter().any(|x| !x.to_f64().is_finite()) {
            return Err(at.err(ArchFault::NonFinite(key.to_string())));
        }
        Ok(Some((t.shape.clone(), values)))
    }

    fn vector<T: Real>(
        &self,
        at: &At<'_>,
        key: &str,
        len: Option<usize>,
        required: bool,
    ) -> Result<Option<Vec<T>>, ArchError> {
        let Some((shape, values)) = self.tensor::<T>(at, key, required)? else {
            return Ok(None);
        };
        if shape.len() != 1 || len.is_some_and(|n| n != shape[0]) {
            return Err(at.err(ArchFault::VectorShape {
                key: key.to_string(),
                shape,
                len,
            }));
        }
        Ok(Some(values))
    }

    fn bind(&mut self, path: &[usize], prefix: &str, kind: BindingKind) {
        self.bindings.push(Binding {
            path: path.to_vec(),
            prefix: prefix.to_string(),
            kind,
        });
    }

    fn layer<T: Real>(
        &mut self,
        spec: &LayerSpec,
        path: &mut Vec<usize>,
    ) -> Result<Layer<T>, ArchError> {
        let at = At {
            at: path.clone(),
            op: spec.op(),
        };
        let prefix = spec.param().map(|p| {
            p.clone()
                .unwrap_or_else(|| crate::canonical::path_name(path))
        });
        Ok(match spec {
            LayerSpec::Linear { .. } => {
                let prefix = prefix.expect("a layer with tensors");
                let layer = self.weighted(&at, LayerKind::Linear, &prefix, None)?;
                self.bind(path, &prefix, BindingKind::Weighted);
                layer
            }
            LayerSpec::Conv1d(c) | LayerSpec::Conv2d(c) => {
                let kind = if matches!(spec, LayerSpec::Conv1d(_)) {
                    LayerKind::Conv1d
                } else {
                    LayerKind::Conv2d
                };
                let prefix = prefix.expect("a layer with tensors");
                let layer = self.weighted(&at, kind, &prefix, Some(c))?;
                self.bind(path, &prefix, BindingKind::Weighted);
                layer
            }
            LayerSpec::Relu {} => Layer::Act(Activation::Relu),
            LayerSpec::LeakyRelu { negative_slope } => Layer::Act(Activation::LeakyRelu(
                at.number("negative_slope", *negative_slope, 0.01)?,
            )),
            LayerSpec::Identity {} | LayerSpec::Dropout { .. } => Layer::Act(Activation::Identity),
            LayerSpec::Tanh {} => Layer::Barrier(Barrier::Tanh),
            LayerSpec::Sigmoid {} => Layer::Barrier(Barrier::Sigmoid),
            LayerSpec::Gate {} => Layer::Barrier(Barrier::Gate),
            LayerSpec::Gelu { approximate } => {
                if approximate.as_deref().is_some_and(|a| a != "none") {
                    return Err(at.err(ArchFault::ApproximateGelu));
                }
                Layer::Barrier(Barrier::Gelu)
            }
            LayerSpec::MaxPool2d(p) | LayerSpec::AvgPool2d(p) => {
                Layer::Pool(pool(&at, p, matches!(spec, LayerSpec::MaxPool2d(_)))?)
            }
            LayerSpec::Flatten {} => Layer::Flatten,
            LayerSpec::BatchNorm { eps, .. } => {
                let prefix = prefix.expect("a layer with tensors");
                let eps = at.number("eps", *eps, 1e-5)?;
                let mean: Vec<T> = self
                    .vector(&at, &field::key(&prefix, RUNNING_MEAN), None, true)?
                    .expect("required");
                let n = Some(mean.len());
                let var: Vec<T> = self
                    .vector(&at, &field::key(&prefix, RUNNING_VAR), n, true)?
                    .expect("required");
                let gamma: Option<Vec<T>> =
                    self.vector(&at, &field::key(&prefix, WEIGHT), n, false)?;
                let beta: Option<Vec<T>> =
                    self.vector(&at, &field::key(&prefix, BIAS), n, false)?;
                let norm = Norm::batch(gamma.as_deref(), beta.as_deref(), &mean, &var, eps)
                    .map_err(|e| at.err(ArchFault::Norm(e)))?;
                self.bind(path, &prefix, BindingKind::BatchNorm { eps });
                Layer::Norm(norm)
            }
            LayerSpec::MeanOnlyBatchNorm { .. } => {
                let prefix = prefix.expect("a layer with tensors");
                let mean: Vec<T> = self
                    .vector(&at, &field::key(&prefix, RUNNING_MEAN), None, true)?
                    .expect("required");
                let bias: Vec<T> = self
                    .vector(&at, &field::key(&prefix, BIAS), Some(mean.len()), true)?
                    .expect("required");
                let norm = Norm::mean_only(&bias, &mean).map_err(|e| at.err(ArchFault::Norm(e)))?;
                self.bind(path, &prefix, BindingKind::MeanOnlyBatchNorm);
                Layer::Norm(norm)
            }
            LayerSpec::Residual { body } => Layer::Residual(self.layers(body, path)?),
        })
    }

    fn weighted<T: Real>(
        &self,
        at: &At<'_>,
        kind: LayerKind,
        prefix: &str,
        conv: Option<&ConvSpec>,
    ) -> Result<Layer<T>, ArchError> {
        let key = field::key(prefix, WEIGHT);
        let (shape, w) = self.tensor::<T>(at, &key, true)?.expect("required");
        let (out, row_len) = weight_layout(at, kind, &key, &shape)?;
        let conv = match conv {
            None => None,
            Some(c) => {
                let dims = kind.weight_rank() - 2;
                let groups = c.groups.unwrap_or(1);
                if groups == 0 {
                    return Err(at.err(ArchFault::ZeroGroups));
                }
                if !out.is_multiple_of(groups) {
                    return Err(at.err(ArchFault::Groups { out, groups }));
                }
                Some(ConvGeometry {
                    kernel: shape[2..].to_vec(),
                    stride: at.per_axis(
                        "stride",
                        c.stride.as_ref(),
                        dims,
                        Some(vec![1; dims]),
                        1,
                    )?,
                    padding: at.per_axis(
                        "padding",
                        c.padding.as_ref(),
                        dims,
                        Some(vec![0; dims]),
                        0,
                    )?,
                    dilation: at.per_axis(
                        "dilation",
                        c.dilation.as_ref(),
                        dims,
                        Some(vec![1; dims]),
                        1,
                    )?,
                    groups,
                })
            }
        };
        let b = self.vector(at, &field::key(prefix, BIAS), Some(out), false)?;
        Ok(Layer::Weighted(Weighted {
            w: Rows::new(out, row_len, w),
            b,
            conv,
        }))
    }
}

fn pool(at: &At<'_>, p: &PoolSpec, max: bool) -> Result<Pool, ArchError> {
    let kernel = at.per_axis("kernel", Some(&p.kernel), 2, None, 0)?;
    let stride = at.per_axis("stride", p.stride.as_ref(), 2, Some(kernel.clone()), 0)?;
    let padding = at.per_axis("padding", p.padding.as_ref(), 2, Some(vec![0, 0]), 0)?;
    Ok(Pool {
        max,
        kernel: [kernel[0], kernel[1]],
        stride: [stride[0], stride[1]],
        padding: [padding[0], padding[1]],
    })
}

/// The tensor's values in `T`; its source is released (a memory-mapped file's pages go).
fn decode<T: Real>(t: &TensorEntry, key: &str) -> Result<Vec<T>, ArchFault> {
    if !matches!(t.dtype, Dtype::F32 | Dtype::F64 | Dtype::F16 | Dtype::BF16) {
        return Err(ArchFault::NotFloat {
            key: key.to_string(),
            dtype: format!("{:?}", t.dtype),
        });
    }
    let out = t
        .values_with(T::from_f64)
        .map_err(|e| ArchFault::Unreadable {
            key: key.to_string(),
            source: std::sync::Arc::new(e),
        })?;
    t.release();
    Ok(out)
}

/// A weighted layer's output units and row length from its weight's shape, through the layout
/// table.
fn weight_layout(
    at: &At<'_>,
    kind: LayerKind,
    key: &str,
    shape: &[usize],
) -> Result<(usize, usize), ArchError> {
    let axes = kind.torch_unit_axes();
    if shape.len() != kind.weight_rank() {
        return Err(at.err(ArchFault::WeightRank {
            key: key.to_string(),
            shape: shape.to_vec(),
            rank: kind.weight_rank(),
            output: axes.output,
            input: axes.input,
        }));
    }
    if shape.contains(&0) {
        return Err(at.err(ArchFault::EmptyAxis {
            key: key.to_string(),
            shape: shape.to_vec(),
        }));
    }
    let out = shape[axes.output];
    Ok((out, shape.iter().product::<usize>() / out))
}
