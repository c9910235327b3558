//! Weight norm attached to an exported model: PyTorch's exporters write `w = g * v / ||v||` as
//! a small subgraph between two initializers (`g`, `v`) and the layer that uses `w`. Both
//! exporters, both PyTorch key schemes: `Mul(Div(v, ReduceL2(v)), g)` (TorchScript),
//! `Mul(v, Div(g, ReduceL2(Cast(v))))` (dynamo), and the older `Pow`/`ReduceSum`/`Sqrt` norm.
//!
//! A subgraph is found by its structure, not its names: a value computed from constants
//! alone, through the ops such a subgraph holds, that a node computing from data uses; whose
//! float constants are two tensors, `v` (the larger) and a `g` shaped as PyTorch shapes it for
//! some axis of `v`; and whose computation includes a norm. It is then confirmed by its
//! numbers: the subgraph is evaluated (in `f64`) and must equal `g v / ||v||` on that axis.
//! Folding replaces it by one initializer holding the fused weight, computed by the exact
//! kernel in `v`'s type, and removes the nodes and initializers only it used.
//!
//! Size: about 1,000 lines, a third of them tests: the structural match, the f64 evaluator
//! over the ops such a subgraph holds and the rewrite are one algorithm with one invariant
//! (a subgraph is folded only when its value is confirmed).

use std::collections::{HashMap, HashSet};

use half::{bf16, f16};

use super::consts::{Const, Data};
use super::fault::TensorFault;
use super::graph::{attr, attr_i, attr_ints, input, is_default_domain, node_name, op};
use super::proto::{GraphProto, NodeProto, TensorProto, data_type};
use super::tensor::{External, dims, dtype_name, encode_floats, float_values, is_float};
use super::{OnnxError, OnnxModel};
use crate::axis::NormAxis;
use crate::kernels;

/// The ops a weight-norm subgraph (and the constants its shapes and axes are computed from)
/// may hold.
const FOLD_OPS: &[&str] = &[
    "Constant",
    "Identity",
    "Cast",
    "CastLike",
    "Reshape",
    "Unsqueeze",
    "Squeeze",
    "Expand",
    "Concat",
    "Shape",
    "Gather",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Pow",
    "Sqrt",
    "Reciprocal",
    "Neg",
    "Abs",
    "ReduceL2",
    "ReduceSum",
    "ReduceSumSquare",
];

/// The ops that compute a norm.
const NORM_OPS: &[&str] = &["ReduceL2", "ReduceSumSquare", "ReduceSum", "Sqrt", "Pow"];

/// How far the subgraph's own value may be from `g v / ||v||`, relative to the largest weight,
/// for it to be taken as weight norm (it is computed in the model's type, here in `f64`).
fn tolerance(dtype: i32) -> f64 {
    match dtype {
        data_type::DOUBLE => 1e-9,
        data_type::FLOAT => 1e-4,
        _ => 2e-2,
    }
}

/// One weight-norm subgraph of a model.
#[derive(Clone, Debug, PartialEq)]
pub struct WeightNormSubgraph {
    /// The value it computes: the weight the layer uses.
    pub weight: String,
    /// The nodes that use it.
    pub consumers: Vec<String>,
    /// The initializer (or constant) holding `g`.
    pub g: String,
    /// The one holding `v`.
    pub v: String,
    /// The axis each norm keeps (PyTorch's `dim`: [`NormAxis::to_torch`]).
    pub axis: NormAxis,
    /// `v`'s shape.
    pub shape: Vec<usize>,
    /// The element type (`float32`, ...).
    pub dtype: String,
    /// The subgraph's nodes, in graph order.
    pub nodes: Vec<String>,
    /// The largest difference between the subgraph's own value and `g v / ||v||`, relative to
    /// the largest weight.
    pub difference: f64,
    /// `g`'s values.
    pub g_values: Vec<f64>,
    /// The norms of `v`'s slices (in `f64`).
    pub v_norms: Vec<f64>,
}

/// A value: shape, elements (integers held exactly up to 2^53), ONNX type.
#[derive(Clone, Debug)]
struct Arr {
    shape: Vec<usize>,
    vals: Vec<f64>,
    dtype: i32,
}

fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

fn round_to(x: f64, dtype: i32) -> f64 {
    match dtype {
        data_type::FLOAT => f64::from(x as f32),
        data_type::FLOAT16 => f16::from_f64(x).to_f64(),
        data_type::BFLOAT16 => bf16::from_f64(x).to_f64(),
        data_type::DOUBLE => x,
        _ => x.trunc(),
    }
}

fn axis_of(a: i64, rank: usize) -> Option<usize> {
    let r = rank as i64;
    (-r..r)
        .contains(&a)
        .then(|| if a < 0 { (a + r) as usize } else { a as usize })
}

fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// NumPy broadcasting of two shapes.
fn broadcast_shape(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let r = a.len().max(b.len());
    (0..r)
        .map(|i| {
            let x = if i + a.len() >= r {
                a[i + a.len() - r]
            } else {
                1
            };
            let y = if i + b.len() >= r {
                b[i + b.len() - r]
            } else {
                1
            };
            match (x, y) {
                _ if x == y => Some(x),
                (1, y) => Some(y),
                (x, 1) => Some(x),
                _ => None,
            }
        })
        .collect()
}

/// The element of `a` (broadcast to `shape`) at flat index `i` of `shape`.
fn gather_index(a: &Arr, shape: &[usize], i: usize) -> usize {
    let r = shape.len();
    let off = r - a.shape.len();
    let st = strides(&a.shape);
    let mut rem = i;
    let mut at = 0;
    let out_st = strides(shape);
    for d in 0..r {
        let idx = rem / out_st[d];
        rem %= out_st[d];
        if d >= off && a.shape[d - off] != 1 {
            at += idx * st[d - off];
        }
    }
    at
}

fn broadcast(a: &Arr, b: &Arr, f: impl Fn(f64, f64) -> f64) -> Option<Arr> {
    let shape = broadcast_shape(&a.shape, &b.shape)?;
    let n = numel(&shape);
    let vals: Vec<f64> = if a.shape == shape && b.shape == shape {
        a.vals.iter().zip(&b.vals).map(|(&x, &y)| f(x, y)).collect()
    } else {
        (0..n)
            .map(|i| {
                f(
                    a.vals[gather_index(a, &shape, i)],
                    b.vals[gather_index(b, &shape, i)],
                )
            })
            .collect()
    };
    let dtype = a.dtype;
    Some(Arr {
        vals: vals.into_iter().map(|x| round_to(x, dtype)).collect(),
        shape,
        dtype,
    })
}

/// Reduces `a` over `axes` (all when empty): `f` maps each element, `finish` the sums.
fn reduce(
    a: &Arr,
    axes: &[usize],
    keep: bool,
    f: impl Fn(f64) -> f64,
    finish: impl Fn(f64) -> f64,
) -> Arr {
    let r = a.shape.len();
    let all: Vec<usize> = if axes.is_empty() {
        (0..r).collect()
    } else {
        axes.to_vec()
    };
    let kept_shape: Vec<usize> = (0..r)
        .map(|d| if all.contains(&d) { 1 } else { a.shape[d] })
        .collect();
    let mut sums = vec![0.0f64; numel(&kept_shape)];
    let st = strides(&a.shape);
    let kst = strides(&kept_shape);
    for (i, &x) in a.vals.iter().enumerate() {
        let mut rem = i;
        let mut at = 0;
        for d in 0..r {
            let idx = rem / st[d];
            rem %= st[d];
            if !all.contains(&d) {
                at += idx * kst[d];
            }
        }
        sums[at] += f(x);
    }
    let shape = if keep {
        kept_shape
    } else {
        (0..r)
            .filter(|d| !all.contains(d))
            .map(|d| a.shape[d])
            .collect()
    };
    Arr {
        shape,
        vals: sums
            .into_iter()
            .map(|s| round_to(finish(s), a.dtype))
            .collect(),
        dtype: a.dtype,
    }
}

/// Evaluates values computed from constants by [`FOLD_OPS`]; `None` for anything else.
struct Evaluator<'a> {
    nodes: &'a [NodeProto],
    inits: HashMap<&'a str, &'a TensorProto>,
    producer: HashMap<&'a str, usize>,
    ext: &'a External,
    memo: HashMap<String, Option<Arr>>,
    /// Elements it may still compute.
    budget: usize,
    opset: i64,
}

impl<'a> Evaluator<'a> {
    fn leaf(&self, t: &TensorProto) -> Result<Option<Arr>, OnnxError> {
        let c = Const::from_tensor(t, self.ext)?;
        Ok(arr_of(c))
    }

    fn value(&mut self, name: &str, depth: usize) -> Result<Option<Arr>, OnnxError> {
        if let Some(v) = self.memo.get(name) {
            return Ok(v.clone());
        }
        let v = if let Some(t) = self.inits.get(name) {
            self.leaf(t)?
        } else if let Some(&i) = self.producer.get(name) {
            if depth > 64 {
                None
            } else {
                self.node(i, depth)?
            }
        } else {
            None
        };
        if let Some(a) = &v {
            self.budget = self.budget.saturating_sub(a.vals.len());
        }
        let v = if self.budget == 0 { None } else { v };
        self.memo.insert(name.to_string(), v.clone());
        Ok(v)
    }

    fn ints(
        &mut self,
        n: &NodeProto,
        k: usize,
        depth: usize,
    ) -> Result<Option<Vec<i64>>, OnnxError> {
        match input(n, k) {
            None => Ok(None),
            Some(s) => Ok(self
                .value(s, depth + 1)?
                .map(|a| a.vals.iter().map(|&x| x as i64).collect())),
        }
    }

    fn node(&mut self, i: usize, depth: usize) -> Result<Option<Arr>, OnnxError> {
        let n = &self.nodes[i];
        if !is_default_domain(n) || !FOLD_OPS.contains(&op(n)) {
            return Ok(None);
        }
        let mut args = Vec::new();
        for k in 0..n.input.len() {
            match input(n, k) {
                Some(s) => match self.value(s, depth + 1)? {
                    Some(a) => args.push(Some(a)),
                    None => return Ok(None),
                },
                None => args.push(None),
            }
        }
        let arg = |k: usize| args.get(k).cloned().flatten();
        let Some(x) = arg(0).or_else(|| {
            (op(n) == "Constant").then(|| Arr {
                shape: vec![],
                vals: vec![],
                dtype: 0,
            })
        }) else {
            return Ok(None);
        };
        let axes_of = |this: &mut Self,
                       attr_name: &str,
                       k: usize,
                       rank: usize|
         -> Result<Option<Vec<usize>>, OnnxError> {
            let raw = match attr_ints(n, attr_name) {
                Some(a) => Some(a),
                None => this.ints(n, k, depth)?,
            };
            Ok(match raw {
                None => Some(Vec::new()),
                Some(a) => a.iter().map(|&a| axis_of(a, rank)).collect(),
            })
        };
        let out = match op(n) {
            "Constant" => constant_value(n, self.ext)?,
            "Identity" => Some(x),
            "Cast" => {
                let to = attr_i(n, "to", data_type::FLOAT as i64) as i32;
                Some(Arr {
                    vals: x.vals.iter().map(|&v| round_to(v, to)).collect(),
                    shape: x.shape,
                    dtype: to,
                })
            }
            "CastLike" => arg(1).map(|like| Arr {
                vals: x.vals.iter().map(|&v| round_to(v, like.dtype)).collect(),
                shape: x.shape.clone(),
                dtype: like.dtype,
            }),
            "Reshape" => {
                let target: Vec<i64> = if self.opset < 5 {
                    attr_ints(n, "shape").unwrap_or_default()
                } else {
                    match arg(1) {
                        Some(s) => s.vals.iter().map(|&v| v as i64).collect(),
                        None => return Ok(None),
                    }
                };
                reshape(x, &target, attr_i(n, "allowzero", 0) != 0)
            }
            "Unsqueeze" => {
                let raw = match attr_ints(n, "axes") {
                    Some(a) => a,
                    None => self.ints(n, 1, depth)?.unwrap_or_default(),
                };
                let rank = x.shape.len() + raw.len();
                let axes: Option<Vec<usize>> = raw.iter().map(|&a| axis_of(a, rank)).collect();
                axes.map(|axes| {
                    let mut shape = Vec::with_capacity(rank);
                    let mut it = x.shape.iter();
                    for d in 0..rank {
                        if axes.contains(&d) {
                            shape.push(1);
                        } else {
                            shape.push(*it.next().unwrap_or(&1));
                        }
                    }
                    Arr { shape, ..x }
                })
            }
            "Squeeze" => {
                let rank = x.shape.len();
                axes_of(self, "axes", 1, rank)?.map(|axes| {
                    let shape = (0..rank)
                        .filter(|d| {
                            if axes.is_empty() {
                                x.shape[*d] != 1
                            } else {
                                !axes.contains(d)
                            }
                        })
                        .map(|d| x.shape[d])
                        .collect();
                    Arr { shape, ..x }
                })
            }
            "Expand" => match arg(1) {
                Some(s) => {
                    let target: Vec<usize> = s.vals.iter().map(|&v| v.max(0.0) as usize).collect();
                    let ones = Arr {
                        shape: target,
                        vals: vec![],
                        dtype: x.dtype,
                    };
                    broadcast_shape(&x.shape, &ones.shape).and_then(|shape| {
                        (numel(&shape) <= self.budget).then(|| Arr {
                            vals: (0..numel(&shape))
                                .map(|i| x.vals[gather_index(&x, &shape, i)])
                                .collect(),
                            shape,
                            dtype: x.dtype,
                        })
                    })
                }
                None => None,
            },
            "Concat" => {
                let parts: Vec<Arr> = args.iter().flatten().cloned().collect();
                (parts.iter().all(|p| p.shape.len() == 1)
                    && attr_i(n, "axis", 0).rem_euclid(1) == 0)
                    .then(|| Arr {
                        shape: vec![parts.iter().map(|p| p.vals.len()).sum()],
                        vals: parts.iter().flat_map(|p| p.vals.clone()).collect(),
                        dtype: x.dtype,
                    })
            }
            "Shape" => Some(Arr {
                vals: x.shape.iter().map(|&d| d as f64).collect(),
                shape: vec![x.shape.len()],
                dtype: data_type::INT64,
            }),
            "Gather" => match arg(1) {
                Some(idx) if x.shape.len() == 1 && attr_i(n, "axis", 0) == 0 => {
                    let len = x.vals.len() as i64;
                    let picked: Option<Vec<f64>> = idx
                        .vals
                        .iter()
                        .map(|&j| {
                            let j = j as i64;
                            let j = if j < 0 { j + len } else { j };
                            (0..len).contains(&j).then(|| x.vals[j as usize])
                        })
                        .collect();
                    picked.map(|vals| Arr {
                        vals,
                        shape: idx.shape.clone(),
                        dtype: x.dtype,
                    })
                }
                _ => None,
            },
            "Add" | "Sub" | "Mul" | "Div" | "Pow" => {
                let Some(y) = arg(1) else { return Ok(None) };
                let f: fn(f64, f64) -> f64 = match op(n) {
                    "Add" => |a, b| a + b,
                    "Sub" => |a, b| a - b,
                    "Mul" => |a, b| a * b,
                    "Div" => |a, b| a / b,
                    _ => f64::powf,
                };
                broadcast(&x, &y, f)
            }
            "Sqrt" | "Reciprocal" | "Neg" | "Abs" => {
                let f: fn(f64) -> f64 = match op(n) {
                    "Sqrt" => f64::sqrt,
                    "Reciprocal" => |a| 1.0 / a,
                    "Neg" => |a| -a,
                    _ => f64::abs,
                };
                let dtype = x.dtype;
                Some(Arr {
                    vals: x.vals.iter().map(|&v| round_to(f(v), dtype)).collect(),
                    ..x
                })
            }
            "ReduceL2" | "ReduceSum" | "ReduceSumSquare" => {
                let rank = x.shape.len();
                let Some(axes) = axes_of(self, "axes", 1, rank)? else {
                    return Ok(None);
                };
                if axes.is_empty() && attr_i(n, "noop_with_empty_axes", 0) != 0 {
                    Some(x)
                } else {
                    let keep = attr_i(n, "keepdims", 1) != 0;
                    Some(match op(n) {
                        "ReduceL2" => reduce(&x, &axes, keep, |v| v * v, f64::sqrt),
                        "ReduceSumSquare" => reduce(&x, &axes, keep, |v| v * v, |s| s),
                        _ => reduce(&x, &axes, keep, |v| v, |s| s),
                    })
                }
            }
            _ => None,
        };
        Ok(out)
    }
}

fn arr_of(c: Const) -> Option<Arr> {
    let vals = match c.data {
        Data::Float(v) => v,
        Data::Int(v) => v
            .into_iter()
            .map(|x| x.map(|x| x as f64))
            .collect::<Option<Vec<f64>>>()?,
    };
    Some(Arr {
        shape: c.shape,
        vals,
        dtype: c.dtype,
    })
}

/// A `Constant` node's value.
fn constant_value(n: &NodeProto, ext: &External) -> Result<Option<Arr>, OnnxError> {
    let Some(a) = n.attribute.first() else {
        return Ok(None);
    };
    Ok(match a.name.as_deref().unwrap_or("") {
        "value" => match &a.t {
            Some(t) => arr_of(Const::from_tensor(t, ext)?),
            None => None,
        },
        "value_float" => Some(Arr {
            shape: vec![],
            vals: vec![f64::from(a.f.unwrap_or(0.0))],
            dtype: data_type::FLOAT,
        }),
        "value_floats" => Some(Arr {
            shape: vec![a.floats.len()],
            vals: a.floats.iter().map(|&x| f64::from(x)).collect(),
            dtype: data_type::FLOAT,
        }),
        "value_int" => Some(Arr {
            shape: vec![],
            vals: vec![a.i.unwrap_or(0) as f64],
            dtype: data_type::INT64,
        }),
        "value_ints" => Some(Arr {
            shape: vec![a.ints.len()],
            vals: a.ints.iter().map(|&x| x as f64).collect(),
            dtype: data_type::INT64,
        }),
        _ => None,
    })
}

fn reshape(x: Arr, target: &[i64], allow_zero: bool) -> Option<Arr> {
    let n = x.vals.len();
    let mut shape = Vec::with_capacity(target.len());
    let mut infer = None;
    for (i, &t) in target.iter().enumerate() {
        match t {
            -1 if infer.is_none() => {
                infer = Some(i);
                shape.push(1);
            }
            0 if !allow_zero => shape.push(*x.shape.get(i)?),
            t if t >= 0 => shape.push(t as usize),
            _ => return None,
        }
    }
    if let Some(i) = infer {
        let rest: usize = shape.iter().product();
        if rest == 0 || !n.is_multiple_of(rest) {
            return None;
        }
        shape[i] = n / rest;
    }
    (numel(&shape) == n).then_some(Arr { shape, ..x })
}

/// A `g` that fits: the difference, the leaf, its axis, its values, `v`'s norms.
type Match<'l> = (f64, &'l Leaf, NormAxis, Vec<f64>, Vec<f64>);

/// A float leaf of a subgraph: an initializer or a `Constant` node's value.
struct Leaf {
    name: String,
    shape: Vec<usize>,
    dtype: i32,
}

impl OnnxModel {
    /// The weight-norm subgraphs of the model (see the [module docs](self)), in graph order.
    ///
    /// # Errors
    ///
    /// [`OnnxError::Model`] without a graph; [`OnnxError::Tensor`] for a malformed constant the
    /// subgraphs read.
    pub fn weight_norms(&self) -> Result<Vec<WeightNormSubgraph>, OnnxError> {
        let Some(g) = &self.proto.graph else {
            return Err(OnnxError::Model(super::ModelFault::NoGraph));
        };
        Ok(find(g, &self.external, opset_of(self))?
            .into_iter()
            .map(|(s, _)| s)
            .collect())
    }

    /// The model with every weight-norm subgraph folded into one initializer holding the
    /// fused weight (`g v / ||v||` by the exact kernel, in `v`'s type), the nodes and
    /// initializers only the subgraphs used removed; and the subgraphs folded. The model is
    /// returned unchanged (and the list empty) when it has none.
    ///
    /// # Errors
    ///
    /// As [`OnnxModel::weight_norms`], and [`OnnxError::Tensor`] for a `g` or `v` holding NaN
    /// or infinity or a slice of zero norm (the graph itself would compute NaN there).
    pub fn fold_weight_norms(&self) -> Result<(OnnxModel, Vec<WeightNormSubgraph>), OnnxError> {
        let Some(g) = &self.proto.graph else {
            return Err(OnnxError::Model(super::ModelFault::NoGraph));
        };
        let found = find(g, &self.external, opset_of(self))?;
        if found.is_empty() {
            return Ok((self.clone(), Vec::new()));
        }
        let mut graph = g.clone();
        let mut new_inits = Vec::new();
        for (s, dtype) in &found {
            new_inits.push(fused_initializer(g, &self.external, s, *dtype)?);
        }
        // The subgraphs' nodes go; then whatever only they used.
        let folded: HashSet<&str> = found.iter().map(|(s, _)| s.weight.as_str()).collect();
        let sub_nodes: HashSet<String> = found.iter().flat_map(|(s, _)| s.nodes.clone()).collect();
        let mut keep = vec![true; graph.node.len()];
        // A subgraph node is dropped when nothing kept uses its outputs.
        loop {
            let used: HashSet<&str> = graph
                .node
                .iter()
                .zip(&keep)
                .filter(|(_, k)| **k)
                .flat_map(|(n, _)| n.input.iter().map(String::as_str))
                .chain(graph.output.iter().filter_map(|o| o.name.as_deref()))
                .collect();
            let mut changed = false;
            for (i, n) in graph.node.iter().enumerate() {
                if keep[i]
                    && sub_nodes.contains(&node_name(n, i))
                    && (n
                        .output
                        .iter()
                        .all(|o| !used.contains(o.as_str()) || folded.contains(o.as_str())))
                {
                    keep[i] = false;
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
        // What the removed nodes read: initializers only they used go with them.
        let removed_inputs: HashSet<String> = graph
            .node
            .iter()
            .zip(&keep)
            .filter(|(_, k)| !**k)
            .flat_map(|(n, _)| n.input.iter().cloned())
            .collect();
        let mut k = keep.into_iter();
        graph.node.retain(|_| k.next().unwrap_or(true));
        let used: HashSet<String> = graph
            .node
            .iter()
            .flat_map(|n| n.input.iter().cloned())
            .chain(graph.output.iter().filter_map(|o| o.name.clone()))
            .collect();
        let leaves: HashSet<String> = found
            .iter()
            .flat_map(|(s, _)| [s.g.clone(), s.v.clone()])
            .chain(removed_inputs)
            .collect();
        graph.initializer.retain(|t| {
            let name = t.name.clone().unwrap_or_default();
            !leaves.contains(&name) || used.contains(&name)
        });
        let inits: HashSet<String> = graph
            .initializer
            .iter()
            .filter_map(|t| t.name.clone())
            .collect();
        graph.input.retain(|i| {
            let name = i.name.clone().unwrap_or_default();
            !leaves.contains(&name) || inits.contains(&name) || used.contains(&name)
        });
        graph
            .value_info
            .retain(|v| !folded.contains(v.name.as_deref().unwrap_or("")));
        graph.initializer.extend(new_inits);
        let mut proto = self.proto.clone();
        proto.graph = Some(graph);
        let model = OnnxModel {
            proto,
            dir: self.dir.clone(),
            external: self.external.clone(),
        };
        Ok((model, found.into_iter().map(|(s, _)| s).collect()))
    }
}

fn opset_of(m: &OnnxModel) -> i64 {
    m.proto
        .opset_import
        .iter()
        .filter(|o| matches!(o.domain.as_deref(), None | Some("") | Some("ai.onnx")))
        .filter_map(|o| o.version)
        .max()
        .unwrap_or(1)
}

/// The subgraphs of `g`, each with its value's type.
fn find(
    g: &GraphProto,
    ext: &External,
    opset: i64,
) -> Result<Vec<(WeightNormSubgraph, i32)>, OnnxError> {
    let inits: HashMap<&str, &TensorProto> = g
        .initializer
        .iter()
        .filter_map(|t| t.name.as_deref().map(|n| (n, t)))
        .collect();
    let mut producer: HashMap<&str, usize> = HashMap::new();
    for (i, n) in g.node.iter().enumerate() {
        for o in n.output.iter().filter(|o| !o.is_empty()) {
            producer.entry(o.as_str()).or_insert(i);
        }
    }
    // Values computed from constants alone through the fold ops.
    let mut derived: HashSet<&str> = inits.keys().copied().collect();
    let mut derived_nodes = vec![false; g.node.len()];
    for (i, n) in g.node.iter().enumerate() {
        let ok = is_default_domain(n)
            && FOLD_OPS.contains(&op(n))
            && n.input
                .iter()
                .filter(|s| !s.is_empty())
                .all(|s| derived.contains(s.as_str()));
        if ok {
            derived_nodes[i] = true;
            derived.extend(
                n.output
                    .iter()
                    .filter(|o| !o.is_empty())
                    .map(String::as_str),
            );
        }
    }
    // Where such a value meets data: a node that is not itself derived uses it.
    let graph_outputs: HashSet<&str> = g.output.iter().filter_map(|o| o.name.as_deref()).collect();
    let mut boundary: Vec<(&str, Vec<String>)> = Vec::new();
    for (i, n) in g.node.iter().enumerate() {
        if derived_nodes[i] {
            continue;
        }
        for s in n.input.iter().filter(|s| !s.is_empty()) {
            let s = s.as_str();
            if derived.contains(s) && producer.contains_key(s) {
                match boundary.iter_mut().find(|(b, _)| *b == s) {
                    Some((_, users)) => users.push(node_name(n, i)),
                    None => boundary.push((s, vec![node_name(n, i)])),
                }
            }
        }
    }
    for o in &graph_outputs {
        if derived.contains(o) && producer.contains_key(o) && !boundary.iter().any(|(b, _)| b == o)
        {
            boundary.push((o, Vec::new()));
        }
    }
    let total: usize = g
        .initializer
        .iter()
        .map(|t| dims(t).map(|d| numel(&d)).unwrap_or(0))
        .sum();
    let mut eval = Evaluator {
        nodes: &g.node,
        inits: inits.clone(),
        producer: producer.clone(),
        ext,
        memo: HashMap::new(),
        budget: total.saturating_mul(16).saturating_add(1 << 20),
        opset,
    };
    let mut out = Vec::new();
    for (value, consumers) in boundary {
        // The subgraph: the derived nodes value depends on, and their constant leaves.
        let mut nodes: Vec<usize> = Vec::new();
        let mut leaves: Vec<&str> = Vec::new();
        let mut stack = vec![value];
        let mut seen: HashSet<&str> = HashSet::new();
        while let Some(v) = stack.pop() {
            if !seen.insert(v) {
                continue;
            }
            if inits.contains_key(v) {
                leaves.push(v);
                continue;
            }
            let Some(&i) = producer.get(v) else { continue };
            if !nodes.contains(&i) {
                nodes.push(i);
            }
            if op(&g.node[i]) == "Constant" {
                leaves.push(v);
            }
            stack.extend(
                g.node[i]
                    .input
                    .iter()
                    .filter(|s| !s.is_empty())
                    .map(String::as_str),
            );
        }
        nodes.sort_unstable();
        if !nodes.iter().any(|&i| NORM_OPS.contains(&op(&g.node[i]))) {
            continue;
        }
        // Its float constants: v the largest, g one that PyTorch would shape for it.
        let mut floats: Vec<Leaf> = Vec::new();
        for &l in &leaves {
            let shape_dtype = match inits.get(l) {
                Some(t) => Some((dims(t)?, t.data_type.unwrap_or(0))),
                None => match eval.value(l, 0)? {
                    Some(a) => Some((a.shape.clone(), a.dtype)),
                    None => None,
                },
            };
            if let Some((shape, dtype)) = shape_dtype
                && is_float(dtype)
            {
                floats.push(Leaf {
                    name: l.to_string(),
                    shape,
                    dtype,
                });
            }
        }
        floats.sort_by_key(|l| std::cmp::Reverse(numel(&l.shape)));
        let [v, rest @ ..] = floats.as_slice() else {
            continue;
        };
        if rest
            .first()
            .is_some_and(|r| numel(&r.shape) == numel(&v.shape) && numel(&v.shape) > 1)
        {
            continue; // two weight-sized constants: not one v
        }
        let Some(graph_value) = eval.value(value, 0)? else {
            continue;
        };
        if graph_value.shape != v.shape {
            continue;
        }
        let Some(v_arr) = eval.value(&v.name, 0)? else {
            continue;
        };
        let mut best: Option<Match<'_>> = None;
        for gl in rest {
            let Some(axis) = NormAxis::implied_by(&gl.shape, &v.shape) else {
                continue;
            };
            if axis.validate(v.shape.len()).is_err() {
                continue;
            }
            let Some(g_arr) = eval.value(&gl.name, 0)? else {
                continue;
            };
            let norms = kernels::norms_f64(&v_arr.vals, &v.shape, axis);
            let w = kernels::weight_norm(&v_arr.vals, &g_arr.vals, &v.shape, axis, 0.0);
            let scale = w
                .iter()
                .fold(0.0f64, |m, x| m.max(x.abs()))
                .max(f64::MIN_POSITIVE);
            let diff = w
                .iter()
                .zip(&graph_value.vals)
                .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()))
                / scale;
            if diff.is_finite()
                && diff <= tolerance(v.dtype)
                && best.as_ref().is_none_or(|(d, ..)| diff < *d)
            {
                best = Some((diff, gl, axis, g_arr.vals.clone(), norms));
            }
        }
        let Some((difference, gl, axis, g_values, v_norms)) = best else {
            continue;
        };
        out.push((
            WeightNormSubgraph {
                weight: value.to_string(),
                consumers,
                g: gl.name.clone(),
                v: v.name.clone(),
                axis,
                shape: v.shape.clone(),
                dtype: dtype_name(graph_value.dtype),
                nodes: nodes.iter().map(|&i| node_name(&g.node[i], i)).collect(),
                difference,
                g_values,
                v_norms,
            },
            graph_value.dtype,
        ));
    }
    Ok(out)
}

/// The fused weight of `s` as an initializer named as the value it replaces, in `dtype`.
fn fused_initializer(
    g: &GraphProto,
    ext: &External,
    s: &WeightNormSubgraph,
    dtype: i32,
) -> Result<TensorProto, OnnxError> {
    let bad = |reason: TensorFault| OnnxError::Tensor {
        name: s.weight.clone(),
        reason,
    };
    let tensor = |name: &str| -> Option<TensorProto> {
        if let Some(t) = g
            .initializer
            .iter()
            .find(|t| t.name.as_deref() == Some(name))
        {
            return Some(t.clone());
        }
        g.node
            .iter()
            .filter(|n| op(n) == "Constant" && n.output.iter().any(|o| o == name))
            .find_map(|n| attr(n, "value").and_then(|a| a.t.clone()))
    };
    let (vv, gv) = match (tensor(&s.v), tensor(&s.g)) {
        (Some(vt), Some(gt)) => (
            (float_values::<f64>(&vt, ext)?.1, vt.data_type),
            (float_values::<f64>(&gt, ext)?.1, gt.data_type),
        ),
        // A `value_float(s)` constant: the values found when it was evaluated.
        _ => {
            return Err(bad(TensorFault::NotFloat(
                "a constant without a tensor".into(),
            )));
        }
    };
    let ((v, v_type), (gvals, g_type)) = (vv, gv);
    if v.iter().chain(&gvals).any(|x| !x.is_finite()) {
        return Err(bad(TensorFault::NonFinite));
    }
    let norms = kernels::norms_f64(&v, &s.shape, s.axis);
    if let Some(slice) = norms.iter().position(|&n| n == 0.0)
        && !v.is_empty()
    {
        return Err(bad(TensorFault::ZeroNorm(slice)));
    }
    // The exact kernel in v's own type when g, v and the weight share it (their values are
    // that type's, so converting them is exact); else in f64, rounded once to the weight's.
    fn run<T: kernels::Element>(
        v: &[f64],
        g: &[f64],
        s: &WeightNormSubgraph,
        of: impl Fn(f64) -> T,
    ) -> Vec<f64> {
        let (v, g): (Vec<T>, Vec<T>) = (
            v.iter().map(|&x| of(x)).collect(),
            g.iter().map(|&x| of(x)).collect(),
        );
        kernels::weight_norm(&v, &g, &s.shape, s.axis, 0.0)
            .iter()
            .map(|x| x.to_f64())
            .collect()
    }
    let same = v_type == Some(dtype) && g_type == Some(dtype);
    let w: Vec<f64> = match (same, dtype) {
        (true, data_type::FLOAT) => run(&v, &gvals, s, |x| x as f32),
        (true, data_type::FLOAT16) => run(&v, &gvals, s, f16::from_f64),
        (true, data_type::BFLOAT16) => run(&v, &gvals, s, bf16::from_f64),
        _ => kernels::weight_norm(&v, &gvals, &s.shape, s.axis, 0.0),
    };
    let raw = encode_floats(&s.weight, w.into_iter(), dtype)?;
    Ok(TensorProto {
        name: Some(s.weight.clone()),
        dims: s.shape.iter().map(|&d| d as i64).collect(),
        data_type: Some(dtype),
        raw_data: Some(raw.into()),
        ..TensorProto::default()
    })
}
