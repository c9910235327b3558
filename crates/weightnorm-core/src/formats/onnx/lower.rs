//! Per-op lowering: the ONNX graph as a [`Dataflow`] of the core's graph lowering. Each op the
//! calculus knows becomes its layers here (`Gemm`, `MatMul` and the `Add` of its bias, `Conv`,
//! activations, pooling, flatten, `BatchNormalization`, per-channel shifts and multipliers);
//! the walk (forks, residual blocks, barrier clusters, the gate, the head) is the core's.

use super::Binding;
use super::OnnxError;
use super::consts::{Data, axis, sorted_axes};
use super::fault::{NodeFault, TensorFault};
use super::graph::{
    ELEMENTWISE, Graph, R, attr_f, attr_i, attr_ints, attr_s, input, is_default_domain, op,
};
use super::tensor::{float_values, is_float};
use crate::canonical::{Activation, Barrier, Layer, Norm, NormKind, Pool, Real};
use crate::graph::{Dataflow, Elementwise, Head, NodeId, Operand, Step, View};

/// What a bound input of a node holds.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Role {
    /// A weight: `alpha` times the tensor is the layer's rows, stored `[out, in..]` or, if
    /// `transposed`, `[in, out]`.
    Weight { transposed: bool, alpha: f64 },
    /// A bias: `beta` times the tensor.
    Bias { beta: f64 },
    /// A batch norm's `scale` (times `sqrt(1 + eps)` where `eps >= 1`: see `BnVar`).
    BnScale { eps: f64 },
    /// A batch norm's `B`.
    BnBias,
    /// A batch norm's `mean`.
    BnMean,
    /// A batch norm's `var`: `1 - eps`, so that `var + eps = 1`; or, for an `eps` of 1 or
    /// more, 1 (and the scale times `sqrt(1 + eps)`).
    BnVar { eps: f64 },
    /// A shift: added (`Add`), or subtracted (`Sub`, `negate`).
    Shift { negate: bool },
    /// A multiplier: multiplied (`Mul`), or divided by (`Div`, `reciprocal`).
    Multiplier { reciprocal: bool },
}

/// A node input holding a layer's parameter, and how to write it back.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Slot {
    /// The node.
    pub node: usize,
    /// Its input.
    pub input: usize,
    /// What it holds.
    pub role: Role,
    /// The data type to write it in.
    pub dtype: i32,
    /// The shape to write it with.
    pub dims: Vec<i64>,
}

/// Where the output scale goes: the value it multiplies (the graph's output, or the head's
/// input), and the node output producing it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Site {
    pub value: String,
    pub node: usize,
    pub output: usize,
    /// The data type of the network's values.
    pub dtype: i32,
    /// One sample's output shape (for the scale's broadcast shape).
    pub shape: Vec<usize>,
}

/// A parameter's values.
pub(super) struct Param<T> {
    pub(super) name: String,
    pub(super) dims: Vec<usize>,
    pub(super) values: Vec<T>,
    pub(super) dtype: i32,
}

impl Graph<'_> {
    /// A parameter: the values of node `i`'s input `k`, which must be a floating-point
    /// constant.
    pub(super) fn param<T: Real>(&self, i: usize, k: usize, what: &'static str) -> R<Param<T>> {
        let g = self;
        let name = input(&g.nodes[i], k).ok_or_else(|| g.err(i, NodeFault::NoParam(what)))?;
        if g.is_data(name) {
            return Err(g.err(
                i,
                NodeFault::ParamFromData {
                    what,
                    name: name.to_string(),
                },
            ));
        }
        if let Some(t) = g.inits.get(name) {
            let (dims, values) = float_values::<T>(t, g.ext)?;
            return Ok(Param {
                name: name.to_string(),
                dims,
                values,
                dtype: t.data_type.unwrap_or(0),
            });
        }
        let c = g.constant(name, 0)?;
        if !is_float(c.dtype) || !matches!(c.data, Data::Float(_)) {
            return Err(g.err(
                i,
                NodeFault::ParamNotFloat {
                    what,
                    name: name.to_string(),
                },
            ));
        }
        let values = c.as_floats().map_err(|r| g.err(i, r))?;
        if values.iter().any(|x| !x.is_finite()) {
            return Err(OnnxError::Tensor {
                name: name.to_string(),
                reason: TensorFault::NonFinite,
            });
        }
        Ok(Param {
            name: name.to_string(),
            dims: c.shape.clone(),
            values: values.into_iter().map(T::from_f64).collect(),
            dtype: c.dtype,
        })
    }

    /// A parameter that holds one value per channel of an activation of `shape` (broadcast
    /// from `[batch, C, 1, ..]`, or from one value for every channel): the values, and the
    /// shape to write per-channel values with.
    pub(super) fn channel_vector<T: Real>(
        &self,
        i: usize,
        k: usize,
        shape: &[usize],
        what: &'static str,
    ) -> R<(Param<T>, Vec<T>, Vec<i64>)> {
        let g = self;
        let p = self.param::<T>(i, k, what)?;
        let c = shape[0];
        let rank = shape.len() + 1;
        let bad = || {
            g.err(
                i,
                NodeFault::NotPerChannel {
                    what,
                    name: p.name.clone(),
                    dims: p.dims.clone(),
                    shape: shape.to_vec(),
                },
            )
        };
        if p.dims.len() > rank {
            return Err(bad());
        }
        let mut full = vec![1; rank - p.dims.len()];
        full.extend(&p.dims);
        if full[0] != 1 || full[2..].iter().any(|&d| d != 1) || (full[1] != 1 && full[1] != c) {
            return Err(bad());
        }
        let values = if full[1] == c {
            p.values.clone()
        } else {
            vec![p.values[0]; c]
        };
        let dims = if p.values.len() == c {
            p.dims.iter().map(|&d| d as i64).collect()
        } else {
            let mut d = vec![c as i64];
            d.extend(std::iter::repeat_n(1, rank - 2));
            d
        };
        Ok((p, values, dims))
    }

    /// The layers of one node (or of a node and the `Add` of its bias).
    fn step<T: Real>(&self, i: usize, v: &str, shape: &[usize]) -> R<Step<String, Binding, T>> {
        let g = self;
        let n = &g.nodes[i];
        let out = n.output.first().cloned().unwrap_or_default();
        let one = |layer: Layer<T>| -> R<Step<String, Binding, T>> {
            Ok(Step::one(layer, None, i, out.clone()))
        };
        let binding = |op: &str, param: Option<String>, slots: Vec<Slot>| Binding {
            path: Vec::new(),
            node: g.name(i),
            op: op.to_string(),
            param,
            slots,
        };
        let first_is_v = input(n, 0) == Some(v);
        match op(n) {
            "Gemm" | "MatMul" => self.linear(i, v, shape),
            "Conv" => self.conv(i, v, shape),
            "Relu" => one(Layer::Act(Activation::Relu)),
            "LeakyRelu" => one(Layer::Act(Activation::LeakyRelu(attr_f(n, "alpha", 0.01)))),
            "Identity" => one(Layer::Act(Activation::Identity)),
            "Dropout" => {
                g.only_first_output(i)?;
                if let Some(t) = input(n, 2) {
                    let on = g
                        .constant(t, 0)
                        .ok()
                        .and_then(|c| c.as_floats().ok())
                        .is_none_or(|x| x.iter().any(|&b| b != 0.0));
                    if on {
                        return Err(g.err(i, NodeFault::Training));
                    }
                }
                if g.opset < 7 || attr_i(n, "is_test", 1) == 0 {
                    return Err(g.err(i, NodeFault::Training));
                }
                one(Layer::Act(Activation::Identity))
            }
            "PRelu" => {
                if !first_is_v {
                    return Err(g.err(i, NodeFault::SlopeIsData));
                }
                let (_, slopes, _) = self.channel_vector::<f64>(i, 1, shape, "slope")?;
                if slopes.iter().all(|&s| s == slopes[0]) {
                    one(Layer::Act(Activation::LeakyRelu(slopes[0])))
                } else {
                    one(Layer::PRelu(slopes))
                }
            }
            "Tanh" => one(Layer::Barrier(Barrier::Tanh)),
            "Sigmoid" => one(Layer::Barrier(Barrier::Sigmoid)),
            "Gelu" => match attr_s(n, "approximate").as_deref() {
                None | Some("none") => one(Layer::Barrier(Barrier::Gelu)),
                Some(a) => Err(g.err(i, NodeFault::ApproximateGelu(a.to_string()))),
            },
            "Softmax" => {
                let a = axis(
                    attr_i(n, "axis", if g.opset >= 13 { -1 } else { 1 }),
                    shape.len() + 1,
                )
                .map_err(|r| g.err(i, r))?;
                if shape.len() != 1 || a != 1 {
                    return Err(g.err(i, NodeFault::SoftmaxNotFlat));
                }
                one(Layer::Barrier(Barrier::Softmax))
            }
            "MaxPool" | "AveragePool" => {
                g.only_first_output(i)?;
                one(Layer::Pool(self.pool(i, shape)?))
            }
            "GlobalAveragePool" | "GlobalMaxPool" => {
                if shape.len() != 3 {
                    return Err(g.err(i, NodeFault::Pool2d(shape.to_vec())));
                }
                one(Layer::Pool(Pool {
                    max: op(n) == "GlobalMaxPool",
                    kernel: [shape[1], shape[2]],
                    stride: [1, 1],
                    padding: [0, 0],
                }))
            }
            "ReduceMean" => {
                let axes = match input(n, 1) {
                    Some(x) if g.opset >= 18 => {
                        g.constant(x, 0)?.known_ints().map_err(|r| g.err(i, r))?
                    }
                    _ => attr_ints(n, "axes").unwrap_or_default(),
                };
                let rank = shape.len() + 1;
                let ax = sorted_axes(&axes, rank).map_err(|r| g.err(i, r))?;
                if rank != 4 || ax != [2, 3] {
                    return Err(g.err(i, NodeFault::MeanAxes));
                }
                let pool = Layer::Pool(Pool {
                    max: false,
                    kernel: [shape[1], shape[2]],
                    stride: [1, 1],
                    padding: [0, 0],
                });
                let mut layers = vec![(pool, None)];
                if attr_i(n, "keepdims", 1) == 0 {
                    layers.push((Layer::Flatten, None));
                }
                Ok(Step {
                    node: i,
                    layers,
                    value: out.clone(),
                })
            }
            "Flatten" => {
                let a = axis(attr_i(n, "axis", 1), shape.len() + 2).map_err(|r| g.err(i, r))?;
                if a != 1 {
                    return Err(g.err(i, NodeFault::FlattenAxis(a)));
                }
                one(Layer::Flatten)
            }
            "Reshape" => {
                let target = match input(n, 1) {
                    Some(x) => g.constant(x, 0)?.as_ints().map_err(|r| g.err(i, r))?,
                    None => attr_ints(n, "shape")
                        .unwrap_or_default()
                        .into_iter()
                        .map(Some)
                        .collect(),
                };
                let total: usize = shape.iter().product();
                let allowzero = attr_i(n, "allowzero", 0) != 0;
                let first_ok = |t: Option<i64>| match t {
                    None => true,
                    Some(-1) => true,
                    Some(0) => !allowzero,
                    Some(b) => g.batch == Some(b),
                };
                let flat = target.len() == 2
                    && first_ok(target[0])
                    && match target[1] {
                        Some(-1) => target[0] != Some(-1),
                        Some(f) => f == total as i64,
                        None => false,
                    };
                if !flat {
                    return Err(g.err(
                        i,
                        NodeFault::NotAFlatten {
                            shape: shape.to_vec(),
                            target,
                            total,
                        },
                    ));
                }
                one(Layer::Flatten)
            }
            "Squeeze" => {
                let axes = match input(n, 1) {
                    Some(x) => g.constant(x, 0)?.known_ints().map_err(|r| g.err(i, r))?,
                    None => attr_ints(n, "axes").unwrap_or_default(),
                };
                let rank = shape.len() + 1;
                let ax = sorted_axes(&axes, rank).map_err(|r| g.err(i, r))?;
                let spatial: Vec<usize> = (2..rank).collect();
                if rank < 3 || ax != spatial || shape[1..].iter().any(|&d| d != 1) {
                    return Err(g.err(i, NodeFault::SqueezeNotFlatten));
                }
                one(Layer::Flatten)
            }
            "BatchNormalization" => self.batch_norm(i, shape),
            "Add" | "Sub" | "Mul" | "Div" => {
                let k = if first_is_v { 1 } else { 0 };
                if !first_is_v && matches!(op(n), "Sub" | "Div") {
                    return Err(g.err(
                        i,
                        NodeFault::NotHomogeneous {
                            minus: op(n) == "Sub",
                        },
                    ));
                }
                let (p, vals, dims) = self.channel_vector::<T>(i, k, shape, "constant")?;
                let c = shape[0];
                let (layer, role) = match op(n) {
                    "Add" => (
                        Norm {
                            kind: NormKind::MeanOnly,
                            a: None,
                            c: vals,
                        },
                        Role::Shift { negate: false },
                    ),
                    "Sub" => (
                        Norm {
                            kind: NormKind::MeanOnly,
                            a: None,
                            c: vals.iter().map(|x| T::from_f64(-x.to_f64())).collect(),
                        },
                        Role::Shift { negate: true },
                    ),
                    "Mul" => (
                        Norm {
                            kind: NormKind::Scale,
                            a: Some(vals),
                            c: vec![T::from_f64(0.0); c],
                        },
                        Role::Multiplier { reciprocal: false },
                    ),
                    _ => {
                        if vals.iter().any(|x| x.to_f64() == 0.0) {
                            return Err(g.err(i, NodeFault::DivisionByZero));
                        }
                        (
                            Norm {
                                kind: NormKind::Scale,
                                a: Some(
                                    vals.iter().map(|x| T::from_f64(1.0 / x.to_f64())).collect(),
                                ),
                                c: vec![T::from_f64(0.0); c],
                            },
                            Role::Multiplier { reciprocal: true },
                        )
                    }
                };
                let slot = Slot {
                    node: i,
                    input: k,
                    role,
                    dtype: p.dtype,
                    dims,
                };
                Ok(Step {
                    node: i,
                    layers: vec![(
                        Layer::Norm(layer),
                        Some(binding(op(n), Some(p.name), vec![slot])),
                    )],
                    value: out.clone(),
                })
            }
            _ => Err(g.err(i, NodeFault::Unsupported)),
        }
    }
}

impl Graph<'_> {
    /// The two halves of the channels a `Split` makes, if it makes exactly those.
    fn halves(&self, i: usize, shape: &[usize]) -> Option<[String; 2]> {
        let n = &self.nodes[i];
        let c = *shape.first()?;
        let ax = axis(attr_i(n, "axis", 0), shape.len() + 1).ok()?;
        let sizes = match input(n, 1) {
            Some(x) => Some(self.constant(x, 0).ok()?.known_ints().ok()?),
            None => attr_ints(n, "split"),
        };
        let h = (c / 2) as i64;
        let even = sizes.as_ref().is_none_or(|z| z == &[h, h]);
        (ax == 1 && n.output.len() == 2 && even && c.is_multiple_of(2))
            .then(|| [n.output[0].clone(), n.output[1].clone()])
    }

    /// The channels a `Slice` keeps, if it keeps one contiguous range of them and nothing else
    /// changes.
    fn channel_range(&self, i: usize, shape: &[usize]) -> Option<std::ops::Range<usize>> {
        let n = &self.nodes[i];
        let c = *shape.first()?;
        let rank = shape.len() + 1;
        let ints = |k: usize| -> Option<Option<Vec<i64>>> {
            match input(n, k) {
                None => Some(None),
                Some(x) => Some(Some(self.constant(x, 0).ok()?.known_ints().ok()?)),
            }
        };
        let (starts, ends, axes, steps) = if self.opset < 10 {
            (
                attr_ints(n, "starts"),
                attr_ints(n, "ends"),
                attr_ints(n, "axes"),
                None,
            )
        } else {
            (ints(1)?, ints(2)?, ints(3)?, ints(4)?)
        };
        let (s, e) = (starts?, ends?);
        let axes = axes.unwrap_or_else(|| (0..s.len() as i64).collect());
        if s.len() != 1
            || e.len() != 1
            || axes.len() != 1
            || axis(axes[0], rank).ok() != Some(1)
            || steps.is_some_and(|st| st != [1])
        {
            return None;
        }
        let cl = |x: i64| {
            (if x < 0 { x.saturating_add(c as i64) } else { x }).clamp(0, c as i64) as usize
        };
        Some(cl(s[0])..cl(e[0]))
    }
}

impl Dataflow for Graph<'_> {
    type Value = String;
    type Binding = Binding;
    type Error = OnnxError;

    fn input(&self) -> (String, Vec<usize>) {
        (self.input.to_string(), self.sample.clone())
    }

    fn output(&self) -> String {
        self.output.to_string()
    }

    fn consumers(&self, v: &String) -> Vec<NodeId> {
        Graph::consumers(self, v).to_vec()
    }

    fn outputs(&self, node: NodeId) -> Vec<String> {
        self.nodes[node].output.clone()
    }

    fn node_name(&self, node: NodeId) -> String {
        self.name(node)
    }

    fn node_label(&self, node: NodeId) -> String {
        format!("{} ({})", self.name(node), op(&self.nodes[node]))
    }

    fn value_name(&self, v: &String) -> String {
        v.clone()
    }

    fn view(&self, i: NodeId, shape: &[usize]) -> View<String> {
        let n = &self.nodes[i];
        if !is_default_domain(n) {
            return View::Op;
        }
        match op(n) {
            "Add" if self.is_merge(i) => View::Merge([n.input[0].clone(), n.input[1].clone()]),
            "Softmax" | "LogSoftmax" => View::Softmax,
            "Split" => View::Split(self.halves(i, shape)),
            "Slice" => View::Slice(self.channel_range(i, shape)),
            _ => View::Op,
        }
    }

    fn elementwise(&self, i: NodeId) -> Option<(Elementwise, Vec<Operand<String>>)> {
        let n = &self.nodes[i];
        if !is_default_domain(n) || !ELEMENTWISE.contains(&op(n)) {
            return None;
        }
        let e = match op(n) {
            "Add" => Elementwise::Add,
            "Sub" => Elementwise::Sub,
            "Mul" => Elementwise::Mul,
            "Div" => Elementwise::Div,
            "Pow" => Elementwise::Pow,
            "Erf" => Elementwise::Erf,
            "Tanh" => Elementwise::Tanh,
            "Sigmoid" => Elementwise::Sigmoid,
            "Exp" => Elementwise::Exp,
            "Log" => Elementwise::Log,
            "Sqrt" => Elementwise::Sqrt,
            "Neg" => Elementwise::Neg,
            "Abs" => Elementwise::Abs,
            "Reciprocal" => Elementwise::Reciprocal,
            "Softplus" => Elementwise::Softplus,
            _ => Elementwise::Identity,
        };
        let args = n
            .input
            .iter()
            .map(|x| {
                if self.is_data(x) {
                    return Operand::Value(x.clone());
                }
                match self
                    .constant(x, 0)
                    .ok()
                    .and_then(|c| (c.len() == 1).then(|| c.as_floats().ok().map(|f| f[0]))?)
                {
                    Some(v) => Operand::Scalar(v),
                    None => Operand::Other,
                }
            })
            .collect();
        Some((e, args))
    }

    fn head(&self, i: NodeId, shape: &[usize]) -> R<Head> {
        let n = &self.nodes[i];
        let rank = shape.len() + 1;
        let default = if self.opset >= 13 { -1 } else { 1 };
        let a = axis(attr_i(n, "axis", default), rank).map_err(|r| self.err(i, r))?;
        if a == 0 {
            return Err(self.err(i, NodeFault::SoftmaxOverBatch));
        }
        // Before opset 13, the axes from `axis` on are normalized together.
        let to = if self.opset >= 13 { a } else { rank - 1 };
        Ok(Head {
            log: op(n) == "LogSoftmax",
            axes: a - 1..to,
            node: self.name(i),
        })
    }

    fn unsupported(&self, i: NodeId) -> OnnxError {
        self.err(i, NodeFault::Unsupported)
    }

    fn lower<T: Real>(
        &self,
        i: NodeId,
        v: &String,
        shape: &[usize],
    ) -> R<Step<String, Binding, T>> {
        let n = &self.nodes[i];
        if !is_default_domain(n) {
            return Err(self.err(
                i,
                NodeFault::Domain(n.domain.as_deref().unwrap_or("").to_string()),
            ));
        }
        self.step::<T>(i, v, shape)
    }

    fn shape_known(&self, v: &String, shape: &[usize]) {
        self.shapes.borrow_mut().insert(v.clone(), shape.to_vec());
    }
}
