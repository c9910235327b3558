//! Reading: an ONNX graph to a [`Network`] and its [`Binding`]s.
//!
//! The graph is walked from its input along the data flow. A value with one consumer continues
//! the chain; a value with two is a fork, read as a residual block or shortcut (both branches
//! meet at one `Add`), a cluster of elementwise ops computing a known barrier (the `Erf` form
//! of GELU), or WaveNet's gate. Constants (initializers, `Constant` nodes and whatever is
//! computed from them and from shapes alone) are evaluated where a node needs them.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap, HashSet};

use super::consts::{Const, Data, MAX_CONST, axis, sorted_axes};
use super::proto::{AttributeProto, NodeProto, TensorProto, data_type, type_proto};
use super::tensor::{External, dtype_name, float_values, is_float};
use super::{Binding, GraphMap, OnnxError, OnnxModel, OnnxNetwork};
use crate::canonical::{
    Activation, Barrier, CanonicalError, ConvGeometry, Layer, Network, Norm, NormKind, Pool, Real,
    Rows, Weighted,
};

/// How deep residual blocks may nest, and constants be computed from others.
const MAX_DEPTH: usize = 64;

/// The most nodes a cluster of elementwise ops (a barrier) may have.
const MAX_REGION: usize = 32;

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

/// A trailing `Softmax` or `LogSoftmax`, which the canonical scale goes before.
#[derive(Clone, Debug, PartialEq)]
pub struct Head {
    /// `LogSoftmax` rather than `Softmax`.
    pub log: bool,
    /// The axes of one output sample it normalizes over (`from..to`).
    pub axes: std::ops::Range<usize>,
    /// The node's name.
    pub node: String,
}

impl Head {
    /// Applies the head to one output sample of `shape`, in place.
    ///
    /// # Panics
    ///
    /// If `y` does not have `shape`'s size or the axes do not fit it.
    pub fn apply(&self, y: &mut [f64], shape: &[usize]) {
        assert_eq!(y.len(), shape.iter().product::<usize>(), "one sample");
        let outer: usize = shape[..self.axes.start].iter().product();
        let mid: usize = shape[self.axes.clone()].iter().product();
        let inner: usize = shape[self.axes.end..].iter().product();
        for o in 0..outer {
            for i in 0..inner {
                let idx = |m: usize| (o * mid + m) * inner + i;
                let top = (0..mid)
                    .map(|m| y[idx(m)])
                    .fold(f64::NEG_INFINITY, f64::max);
                let sum: f64 = (0..mid).map(|m| (y[idx(m)] - top).exp()).sum();
                for m in 0..mid {
                    let v = y[idx(m)] - top;
                    y[idx(m)] = if self.log {
                        v - sum.ln()
                    } else {
                        v.exp() / sum
                    };
                }
            }
        }
    }
}

fn attr<'a>(n: &'a NodeProto, name: &str) -> Option<&'a AttributeProto> {
    n.attribute.iter().find(|a| a.name.as_deref() == Some(name))
}

fn attr_i(n: &NodeProto, name: &str, default: i64) -> i64 {
    attr(n, name).and_then(|a| a.i).unwrap_or(default)
}

fn attr_f(n: &NodeProto, name: &str, default: f64) -> f64 {
    attr(n, name).and_then(|a| a.f).map_or(default, f64::from)
}

fn attr_ints(n: &NodeProto, name: &str) -> Option<Vec<i64>> {
    attr(n, name).map(|a| a.ints.clone())
}

fn attr_s(n: &NodeProto, name: &str) -> Option<String> {
    attr(n, name)
        .and_then(|a| a.s.as_ref())
        .map(|s| String::from_utf8_lossy(s).into_owned())
}

fn op(n: &NodeProto) -> &str {
    n.op_type.as_deref().unwrap_or("")
}

/// The input `k` of a node, if given (an empty name is an absent optional input).
fn input(n: &NodeProto, k: usize) -> Option<&str> {
    n.input.get(k).map(String::as_str).filter(|s| !s.is_empty())
}

fn is_default_domain(n: &NodeProto) -> bool {
    matches!(n.domain.as_deref(), None | Some("") | Some("ai.onnx"))
}

/// The ops that compute constants from constants (and shapes).
const CONST_OPS: &[&str] = &[
    "Constant",
    "Identity",
    "Cast",
    "Shape",
    "Gather",
    "Unsqueeze",
    "Squeeze",
    "Concat",
    "Slice",
    "Reshape",
    "Add",
    "Sub",
    "Mul",
    "Div",
];

/// Elementwise ops a barrier's cluster may hold (with scalar constants).
const ELEMENTWISE: &[&str] = &[
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Pow",
    "Erf",
    "Tanh",
    "Sigmoid",
    "Exp",
    "Log",
    "Sqrt",
    "Neg",
    "Abs",
    "Reciprocal",
    "Identity",
    "Softplus",
];

/// The graph, indexed.
struct Graph<'m> {
    nodes: &'m [NodeProto],
    inits: HashMap<&'m str, &'m TensorProto>,
    producer: HashMap<&'m str, (usize, usize)>,
    consumers: HashMap<&'m str, Vec<usize>>,
    constant: HashSet<&'m str>,
    input: &'m str,
    output: &'m str,
    batch: Option<i64>,
    opset: i64,
    ext: &'m External,
    memo: RefCell<HashMap<String, Const>>,
    shapes: RefCell<HashMap<String, Vec<usize>>>,
}

type R<T> = Result<T, OnnxError>;

impl<'m> Graph<'m> {
    fn new(model: &'m OnnxModel) -> R<(Self, Vec<usize>, i32)> {
        let p = &model.proto;
        let g = p
            .graph
            .as_ref()
            .ok_or_else(|| OnnxError::Model("the model has no graph".into()))?;
        let opset = p
            .opset_import
            .iter()
            .filter(|o| matches!(o.domain.as_deref(), None | Some("") | Some("ai.onnx")))
            .filter_map(|o| o.version)
            .max()
            .ok_or_else(|| {
                OnnxError::Model("the model imports no version of the default opset".into())
            })?;
        if opset < 7 {
            return Err(OnnxError::Model(format!(
                "opset {opset}: opset 7 or later is needed (re-export the model)"
            )));
        }
        let mut defined: HashSet<&str> = HashSet::new();
        let mut inits = HashMap::new();
        for t in &g.initializer {
            let name = t.name.as_deref().unwrap_or("");
            if name.is_empty() || inits.insert(name, t).is_some() {
                return Err(OnnxError::Model(format!(
                    "two initializers named {name:?} (or one without a name)"
                )));
            }
            defined.insert(name);
        }
        let data_inputs: Vec<_> = g
            .input
            .iter()
            .filter(|i| !inits.contains_key(i.name.as_deref().unwrap_or("")))
            .collect();
        let [input] = data_inputs.as_slice() else {
            return Err(OnnxError::Model(format!(
                "{} graph inputs besides the initializers: the canonical form reads a model \
                 with one input",
                data_inputs.len()
            )));
        };
        let input_name = input.name.as_deref().unwrap_or("");
        defined.insert(input_name);
        let [output] = g.output.as_slice() else {
            return Err(OnnxError::Model(format!(
                "{} graph outputs: the canonical form reads a model with one output",
                g.output.len()
            )));
        };
        let output_name = output.name.as_deref().unwrap_or("");
        // The input: [batch, ..one sample], the sample's axes known.
        let Some(type_proto::Value::TensorType(tt)) =
            input.r#type.as_ref().and_then(|t| t.value.as_ref())
        else {
            return Err(OnnxError::Model(format!(
                "the graph input `{input_name}` is not a tensor"
            )));
        };
        let elem = tt.elem_type.unwrap_or(0);
        if !is_float(elem) {
            return Err(OnnxError::Model(format!(
                "the graph input `{input_name}` is {}, not floating point",
                dtype_name(elem)
            )));
        }
        let dims: Vec<Option<i64>> = tt
            .shape
            .as_ref()
            .ok_or_else(|| {
                OnnxError::Model(format!(
                    "the graph input `{input_name}` has no shape (export it with one)"
                ))
            })?
            .dim
            .iter()
            .map(|d| match d.value {
                Some(super::proto::tensor_shape_proto::dimension::Value::DimValue(v)) => Some(v),
                _ => None,
            })
            .collect();
        if dims.len() < 2 || dims.len() > 4 {
            return Err(OnnxError::Model(format!(
                "the graph input `{input_name}` has rank {}: [batch, features], [batch, \
                 channels, length] or [batch, channels, height, width] is needed",
                dims.len()
            )));
        }
        let sample: Vec<usize> = dims[1..]
            .iter()
            .map(|d| d.filter(|&v| v > 0).map(|v| v as usize))
            .collect::<Option<_>>()
            .ok_or_else(|| {
                OnnxError::Model(format!(
                    "the graph input `{input_name}` has shape {dims:?}: every axis but the batch \
                     must be a known size"
                ))
            })?;
        // Every value is defined once, before it is used.
        let mut producer = HashMap::new();
        let mut consumers: HashMap<&str, Vec<usize>> = HashMap::new();
        let mut constant: HashSet<&str> = inits.keys().copied().collect();
        for (i, n) in g.node.iter().enumerate() {
            let name = node_name(n, i);
            let mut all_const = true;
            for inp in n.input.iter().filter(|s| !s.is_empty()) {
                if !defined.contains(inp.as_str()) {
                    return Err(OnnxError::Node {
                        node: name,
                        op: op(n).into(),
                        reason: format!(
                            "uses `{inp}` before it is computed (the nodes must be in \
                             topological order)"
                        ),
                    });
                }
                all_const &= constant.contains(inp.as_str());
                if !matches!(op(n), "Shape" | "Size") {
                    let c = consumers.entry(inp.as_str()).or_default();
                    if c.last() != Some(&i) {
                        c.push(i);
                    }
                }
            }
            let is_const = is_default_domain(n)
                && (matches!(op(n), "Constant" | "Shape" | "Size")
                    || (all_const && CONST_OPS.contains(&op(n))));
            for (k, out) in n.output.iter().enumerate().filter(|(_, s)| !s.is_empty()) {
                if !defined.insert(out.as_str()) {
                    return Err(OnnxError::Node {
                        node: name,
                        op: op(n).into(),
                        reason: format!("computes `{out}`, which is defined already"),
                    });
                }
                producer.insert(out.as_str(), (i, k));
                if is_const {
                    constant.insert(out.as_str());
                }
            }
        }
        if !defined.contains(output_name) {
            return Err(OnnxError::Model(format!(
                "the graph output `{output_name}` is computed by no node"
            )));
        }
        Ok((
            Self {
                nodes: &g.node,
                inits,
                producer,
                consumers,
                constant,
                input: input_name,
                output: output_name,
                batch: dims[0],
                opset,
                ext: &model.external,
                memo: RefCell::default(),
                shapes: RefCell::default(),
            },
            sample,
            elem,
        ))
    }

    fn consumers(&self, v: &str) -> &[usize] {
        self.consumers.get(v).map_or(&[], Vec::as_slice)
    }

    fn name(&self, i: usize) -> String {
        node_name(&self.nodes[i], i)
    }

    fn err(&self, i: usize, reason: impl Into<String>) -> OnnxError {
        OnnxError::Node {
            node: self.name(i),
            op: op(&self.nodes[i]).into(),
            reason: reason.into(),
        }
    }

    fn is_data(&self, v: &str) -> bool {
        !self.constant.contains(v)
    }

    /// Whether node `i` adds two data values: the join of a fork.
    fn is_merge(&self, i: usize) -> bool {
        let n = &self.nodes[i];
        op(n) == "Add"
            && is_default_domain(n)
            && n.input.len() == 2
            && n.input.iter().all(|s| self.is_data(s))
    }

    /// Checks that the outputs of node `i` after the first are unused.
    fn only_first_output(&self, i: usize) -> R<()> {
        for out in self.nodes[i]
            .output
            .iter()
            .skip(1)
            .filter(|s| !s.is_empty())
        {
            if !self.consumers(out).is_empty() || out == self.output {
                return Err(self.err(
                    i,
                    format!("its output `{out}` is used (only inference is supported)"),
                ));
            }
        }
        Ok(())
    }

    /// The value of a constant input.
    fn constant(&self, name: &str, depth: usize) -> R<Const> {
        if let Some(c) = self.memo.borrow().get(name) {
            return Ok(c.clone());
        }
        let c = self.compute(name, depth)?;
        self.memo.borrow_mut().insert(name.to_string(), c.clone());
        Ok(c)
    }

    fn compute(&self, name: &str, depth: usize) -> R<Const> {
        if let Some(t) = self.inits.get(name) {
            return Const::from_tensor(t, self.ext);
        }
        let Some(&(i, k)) = self.producer.get(name) else {
            return Err(OnnxError::Model(format!(
                "`{name}` is the graph's input, not a constant"
            )));
        };
        if depth > MAX_DEPTH {
            return Err(self.err(i, "constants computed from constants too deep"));
        }
        let n = &self.nodes[i];
        let e = |r: String| self.err(i, r);
        let arg = |j: usize| -> R<Const> {
            let s = input(n, j).ok_or_else(|| e(format!("input {j} is missing")))?;
            self.constant(s, depth + 1)
        };
        let ints_of = |j: usize| -> R<Option<Vec<i64>>> {
            match input(n, j) {
                None => Ok(None),
                Some(_) => Ok(Some(arg(j)?.known_ints().map_err(e)?)),
            }
        };
        if k != 0 && op(n) != "Constant" {
            return Err(e(format!(
                "output {k} is not a constant this reader computes"
            )));
        }
        let out = match op(n) {
            "Constant" => return self.constant_attr(i),
            "Identity" => arg(0)?,
            "Cast" => arg(0)?
                .cast(attr_i(n, "to", data_type::FLOAT as i64) as i32)
                .map_err(e)?,
            "Shape" | "Size" => {
                let v = input(n, 0).ok_or_else(|| e("no input".into()))?;
                let dims = self.full_shape(v).ok_or_else(|| {
                    e(format!(
                        "the shape of `{v}` is not known where it is needed"
                    ))
                })?;
                if op(n) == "Size" {
                    let total = dims
                        .iter()
                        .try_fold(1i64, |a, d| d.and_then(|d| a.checked_mul(d)));
                    Const {
                        shape: vec![],
                        data: Data::Int(vec![total]),
                        dtype: data_type::INT64,
                    }
                } else {
                    let r = dims.len() as i64;
                    let clamp = |x: i64| (if x < 0 { x + r } else { x }).clamp(0, r) as usize;
                    let start = clamp(attr_i(n, "start", 0));
                    let end = clamp(attr_i(n, "end", r));
                    Const::ints(dims[start..end.max(start)].to_vec())
                }
            }
            "Gather" => arg(0)?.gather(&arg(1)?, attr_i(n, "axis", 0)).map_err(e)?,
            "Unsqueeze" => {
                let axes = match ints_of(1)? {
                    Some(a) => a,
                    None => attr_ints(n, "axes").unwrap_or_default(),
                };
                arg(0)?.unsqueeze(&axes).map_err(e)?
            }
            "Squeeze" => {
                let axes = match ints_of(1)? {
                    Some(a) => a,
                    None => attr_ints(n, "axes").unwrap_or_default(),
                };
                arg(0)?.squeeze(&axes).map_err(e)?
            }
            "Concat" => {
                let parts: Vec<Const> = (0..n.input.len()).map(arg).collect::<R<_>>()?;
                Const::concat(&parts, attr_i(n, "axis", 0)).map_err(e)?
            }
            "Slice" => {
                let data = arg(0)?;
                let (starts, ends, axes, steps) = if self.opset < 10 {
                    (
                        attr_ints(n, "starts").unwrap_or_default(),
                        attr_ints(n, "ends").unwrap_or_default(),
                        attr_ints(n, "axes"),
                        None,
                    )
                } else {
                    (
                        ints_of(1)?.unwrap_or_default(),
                        ints_of(2)?.unwrap_or_default(),
                        ints_of(3)?,
                        ints_of(4)?,
                    )
                };
                data.slice(&starts, &ends, axes.as_deref(), steps.as_deref())
                    .map_err(e)?
            }
            "Reshape" => {
                let target = if self.opset < 5 {
                    attr_ints(n, "shape").unwrap_or_default()
                } else {
                    ints_of(1)?.unwrap_or_default()
                };
                arg(0)?
                    .reshape(&target, attr_i(n, "allowzero", 0) != 0)
                    .map_err(e)?
            }
            "Add" | "Sub" | "Mul" | "Div" => arg(0)?.binary(&arg(1)?, op(n)).map_err(e)?,
            other => return Err(e(format!("{other} on constants is not evaluated"))),
        };
        Ok(out)
    }

    /// A `Constant` node's value.
    fn constant_attr(&self, i: usize) -> R<Const> {
        let n = &self.nodes[i];
        let a = n
            .attribute
            .first()
            .ok_or_else(|| self.err(i, "a Constant without a value"))?;
        let scalar = |data: Data, dtype: i32| Const {
            shape: vec![],
            data,
            dtype,
        };
        Ok(match a.name.as_deref().unwrap_or("") {
            "value" => {
                let t =
                    a.t.as_ref()
                        .ok_or_else(|| self.err(i, "`value` holds no tensor"))?;
                Const::from_tensor(t, self.ext)?
            }
            "value_float" => scalar(
                Data::Float(vec![f64::from(a.f.unwrap_or(0.0))]),
                data_type::FLOAT,
            ),
            "value_int" => scalar(Data::Int(vec![Some(a.i.unwrap_or(0))]), data_type::INT64),
            "value_floats" => {
                if a.floats.len() > MAX_CONST {
                    return Err(self.err(i, "too many values"));
                }
                Const {
                    shape: vec![a.floats.len()],
                    data: Data::Float(a.floats.iter().map(|&x| f64::from(x)).collect()),
                    dtype: data_type::FLOAT,
                }
            }
            "value_ints" => Const::ints(a.ints.iter().map(|&x| Some(x)).collect()),
            other => {
                return Err(self.err(i, format!("a Constant `{other}` is not supported")));
            }
        })
    }

    /// A data value's full shape (`None` for an unknown batch size).
    fn full_shape(&self, v: &str) -> Option<Vec<Option<i64>>> {
        let shapes = self.shapes.borrow();
        let s = shapes.get(v)?;
        let mut out = vec![self.batch];
        out.extend(s.iter().map(|&d| Some(d as i64)));
        Some(out)
    }
}

fn node_name(n: &NodeProto, i: usize) -> String {
    match n.name.as_deref() {
        Some(s) if !s.is_empty() => s.to_string(),
        _ => format!("{}#{i}", op(n)),
    }
}

/// How a chain of layers ended.
enum End {
    /// At the graph's output.
    Output,
    /// At a trailing softmax (the node).
    Head(Head, usize),
    /// At the `Add` joining a fork (the node; the value arriving there).
    Merge(usize, String),
}

/// Layers read from the graph, with their bindings and nodes (positions relative to them).
struct Chain<T: Real> {
    layers: Vec<Layer<T>>,
    bindings: Vec<Binding>,
    nodes: Vec<(Vec<usize>, String)>,
}

impl<T: Real> Chain<T> {
    fn new() -> Self {
        Self {
            layers: Vec::new(),
            bindings: Vec::new(),
            nodes: Vec::new(),
        }
    }

    /// Pushes a layer computed by the node `node`.
    fn push(&mut self, layer: Layer<T>, binding: Option<Binding>, node: String) {
        let at = self.layers.len();
        if let Some(mut b) = binding {
            b.path = vec![at];
            self.bindings.push(b);
        }
        self.nodes.push((vec![at], node));
        self.layers.push(layer);
    }

    /// Appends the layers of `other`, moving its positions behind this chain's.
    fn append(&mut self, other: Chain<T>) {
        let at = self.layers.len();
        self.bindings
            .extend(other.bindings.into_iter().map(|mut b| {
                b.path[0] += at;
                b
            }));
        self.nodes.extend(other.nodes.into_iter().map(|(mut p, n)| {
            p[0] += at;
            (p, n)
        }));
        self.layers.extend(other.layers);
    }

    /// This chain as the children of a block at position 0, starting at child `offset`.
    #[allow(clippy::type_complexity)]
    fn nest(self, offset: usize) -> (Vec<Layer<T>>, Vec<Binding>, Vec<(Vec<usize>, String)>) {
        let inner = |mut p: Vec<usize>| {
            p[0] += offset;
            p.insert(0, 0);
            p
        };
        let bindings = self
            .bindings
            .into_iter()
            .map(|mut b| {
                b.path = inner(b.path);
                b
            })
            .collect();
        let nodes = self.nodes.into_iter().map(|(p, n)| (inner(p), n)).collect();
        (self.layers, bindings, nodes)
    }
}

/// One step of a chain: layers, their bindings, the node they stand for, and where the chain
/// goes on.
struct Step<T: Real> {
    layers: Vec<(Layer<T>, Option<Binding>)>,
    value: String,
    node: String,
}

/// A parameter's values.
struct Param<T> {
    name: String,
    dims: Vec<usize>,
    values: Vec<T>,
    dtype: i32,
}

struct Walker<'g, 'm> {
    g: &'g Graph<'m>,
}

impl Walker<'_, '_> {
    /// The shape of one sample of a data value walked already.
    fn shape(&self, v: &str) -> Vec<usize> {
        self.g
            .shapes
            .borrow()
            .get(v)
            .cloned()
            .expect("a walked value")
    }

    fn set_shape(&self, v: &str, s: Vec<usize>) {
        self.g.shapes.borrow_mut().insert(v.to_string(), s);
    }

    /// Reads a chain from `v`, starting with node `first` if given, until the output, a head
    /// or an `Add` joining a fork.
    fn chain<T: Real>(
        &self,
        mut v: String,
        mut first: Option<usize>,
        depth: usize,
    ) -> R<(Chain<T>, End)> {
        let g = self.g;
        let mut chain = Chain::new();
        loop {
            let i = match first.take() {
                Some(i) => i,
                None => {
                    let cons = g.consumers(&v);
                    if v == g.output {
                        if let Some(&c) = cons.first() {
                            return Err(g.err(
                                c,
                                format!("uses the graph output `{v}`: it must be the last value"),
                            ));
                        }
                        return Ok((chain, End::Output));
                    }
                    match cons {
                        [] => {
                            return Err(OnnxError::Model(format!(
                                "`{v}` is used by no node and is not the graph output"
                            )));
                        }
                        [one] => *one,
                        _ => {
                            let (block, next) = self.fork::<T>(&v, depth)?;
                            chain.append(block);
                            v = next;
                            continue;
                        }
                    }
                }
            };
            let n = &g.nodes[i];
            if !is_default_domain(n) {
                return Err(g.err(
                    i,
                    format!(
                        "op of domain `{}` is not supported",
                        n.domain.as_deref().unwrap_or("")
                    ),
                ));
            }
            if g.is_merge(i) {
                if n.input[0] == v && n.input[1] == v {
                    // x + x: a residual block with an empty body.
                    let shape = self.shape(&v);
                    let out = n.output.first().cloned().unwrap_or_default();
                    self.set_shape(&out, shape);
                    chain.push(Layer::Residual(Vec::new()), None, g.name(i));
                    v = out;
                    continue;
                }
                return Ok((chain, End::Merge(i, v)));
            }
            if matches!(op(n), "Softmax" | "LogSoftmax")
                && n.output.first().map(String::as_str) == Some(g.output)
                && g.consumers(g.output).is_empty()
            {
                let head = self.head(i, &v)?;
                return Ok((chain, End::Head(head, i)));
            }
            if op(n) == "Split" {
                let (layer, next, node) = self.gate::<T>(&v, &[i])?;
                chain.push(layer, None, node);
                v = next;
                continue;
            }
            let step = self.step::<T>(i, &v)?;
            let mut shape = self.shape(&v);
            for (layer, binding) in step.layers {
                if !finite(&layer) {
                    return Err(g.err(
                        i,
                        "a parameter (times alpha, beta, or inverted) exceeds the range of its type",
                    ));
                }
                shape = layer
                    .out_shape(&shape, &g.name(i))
                    .map_err(|e| self.layer_err(i, e))?;
                chain.push(layer, binding, step.node.clone());
            }
            self.set_shape(&step.value, shape);
            v = step.value;
        }
    }

    fn layer_err(&self, i: usize, e: CanonicalError) -> OnnxError {
        match e {
            CanonicalError::Layer { reason, .. } => self.g.err(i, reason),
            e => OnnxError::Network(e),
        }
    }

    fn head(&self, i: usize, v: &str) -> R<Head> {
        let g = self.g;
        let n = &g.nodes[i];
        let shape = self.shape(v);
        let rank = shape.len() + 1;
        let default = if g.opset >= 13 { -1 } else { 1 };
        let a = axis(attr_i(n, "axis", default), rank).map_err(|r| g.err(i, r))?;
        if a == 0 {
            return Err(g.err(i, "a softmax over the batch axis"));
        }
        // Before opset 13, the axes from `axis` on are normalized together.
        let to = if g.opset >= 13 { a } else { rank - 1 };
        Ok(Head {
            log: op(n) == "LogSoftmax",
            axes: a - 1..to,
            node: g.name(i),
        })
    }

    /// A value with several consumers: a residual block or shortcut, a barrier's cluster of
    /// elementwise ops, or WaveNet's gate; as a chain of one layer, and the value after it.
    fn fork<T: Real>(&self, v: &str, depth: usize) -> R<(Chain<T>, String)> {
        let g = self.g;
        if depth >= MAX_DEPTH {
            return Err(OnnxError::Model(format!(
                "residual blocks nested more than {MAX_DEPTH} deep"
            )));
        }
        let cons = g.consumers(v).to_vec();
        if cons
            .iter()
            .any(|&c| matches!(op(&g.nodes[c]), "Split" | "Slice"))
        {
            let (layer, out, node) = self.gate::<T>(v, &cons)?;
            let mut c = Chain::new();
            c.push(layer, None, node);
            return Ok((c, out));
        }
        let residual = self.residual::<T>(v, &cons, depth);
        if residual.is_ok() {
            return residual;
        }
        if let Some((b, out, node)) = self.region(v) {
            let shape = self.shape(v);
            self.set_shape(&out, shape);
            let mut c = Chain::new();
            c.push(Layer::Barrier(b), None, node);
            return Ok((c, out));
        }
        residual
    }

    /// Two branches from `v` joined by an `Add`: a residual block, or a shortcut.
    fn residual<T: Real>(&self, v: &str, cons: &[usize], depth: usize) -> R<(Chain<T>, String)> {
        let g = self.g;
        if cons.len() != 2 {
            return Err(OnnxError::Model(format!(
                "`{v}` is used by {} nodes ({}): only two branches joined by an Add are read",
                cons.len(),
                cons.iter()
                    .map(|&c| g.name(c))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let mut branches = Vec::new();
        for &c in cons {
            if g.is_merge(c) {
                branches.push((Chain::new(), c, v.to_string()));
                continue;
            }
            let (chain, end) = self.chain::<T>(v.to_string(), Some(c), depth + 1)?;
            match end {
                End::Merge(m, arrived) => branches.push((chain, m, arrived)),
                _ => {
                    return Err(g.err(
                        c,
                        format!("a branch from `{v}` that reaches the output without joining"),
                    ));
                }
            }
        }
        let (b, a) = (branches.pop().expect("two"), branches.pop().expect("two"));
        if a.1 != b.1 {
            return Err(g.err(
                a.1,
                format!(
                    "the branches from `{v}` join at different nodes ({} and {})",
                    g.name(a.1),
                    g.name(b.1)
                ),
            ));
        }
        let m = a.1;
        let n = &g.nodes[m];
        let mut arrived = [a.2.as_str(), b.2.as_str()];
        let mut inputs = [n.input[0].as_str(), n.input[1].as_str()];
        arrived.sort_unstable();
        inputs.sort_unstable();
        if arrived != inputs {
            return Err(g.err(m, format!("does not join the two branches from `{v}`")));
        }
        let weighted = |c: &Chain<T>| {
            c.layers
                .iter()
                .filter(|l| matches!(l, Layer::Weighted(_)))
                .count()
        };
        let (body, skip) = match (a.0.layers.is_empty(), b.0.layers.is_empty()) {
            (true, true) => (a.0, None),
            (true, false) => (b.0, None),
            (false, true) => (a.0, None),
            // The skip is the branch with fewer weighted layers (fewer layers at a tie).
            _ if (weighted(&b.0), b.0.layers.len()) <= (weighted(&a.0), a.0.layers.len()) => {
                (a.0, Some(b.0))
            }
            _ => (b.0, Some(a.0)),
        };
        let n_body = body.layers.len();
        let (body_layers, mut bindings, mut nodes) = body.nest(0);
        let layer = match skip {
            None => Layer::Residual(body_layers),
            Some(skip) => {
                let (skip_layers, b, n) = skip.nest(n_body);
                bindings.extend(b);
                nodes.extend(n);
                Layer::Shortcut {
                    body: body_layers,
                    skip: skip_layers,
                }
            }
        };
        let shape = layer
            .out_shape(&self.shape(v), &g.name(m))
            .map_err(|e| self.layer_err(m, e))?;
        let out = n.output.first().cloned().unwrap_or_default();
        self.set_shape(&out, shape);
        nodes.push((vec![0], g.name(m)));
        let block = Chain {
            layers: vec![layer],
            bindings,
            nodes,
        };
        Ok((block, out))
    }

    /// A cluster of elementwise ops from `v` (its only input) to one value, computing a
    /// barrier the calculus knows: the barrier and that value.
    fn region(&self, v: &str) -> Option<(Barrier, String, String)> {
        let g = self.g;
        let mut nodes: BTreeSet<usize> = BTreeSet::new();
        let mut values: Vec<&str> = vec![v];
        while nodes.len() < MAX_REGION {
            let next = values
                .iter()
                .flat_map(|x| g.consumers(x).iter().copied())
                .filter(|c| !nodes.contains(c))
                .min()?;
            let n = &g.nodes[next];
            if !ELEMENTWISE.contains(&op(n)) || !is_default_domain(n) || n.output.len() != 1 {
                return None;
            }
            for inp in n.input.iter() {
                if values.contains(&inp.as_str()) {
                    continue;
                }
                if g.is_data(inp) || g.constant(inp, 0).ok()?.len() != 1 {
                    return None;
                }
            }
            nodes.insert(next);
            values.push(n.output[0].as_str());
            let live: Vec<&str> = values
                .iter()
                .copied()
                .filter(|x| *x == g.output || g.consumers(x).iter().any(|c| !nodes.contains(c)))
                .collect();
            if let [only] = live.as_slice()
                && *only != v
                && let Some(b) = self.identify(v, &nodes, only)
            {
                let last = *nodes.last().expect("a node");
                return Some((b, only.to_string(), g.name(last)));
            }
        }
        None
    }

    /// The barrier the cluster `nodes` computes from `v` to `out`, if it is one the calculus
    /// knows (compared on a grid of inputs).
    fn identify(&self, v: &str, nodes: &BTreeSet<usize>, out: &str) -> Option<Barrier> {
        let g = self.g;
        let xs: Vec<f64> = (-80..=80).map(|k| k as f64 * 0.1).collect();
        let mut vals: HashMap<&str, Vec<f64>> = HashMap::new();
        vals.insert(v, xs.clone());
        for &i in nodes {
            let n = &g.nodes[i];
            let arg = |k: usize| -> Option<Vec<f64>> {
                let s = n.input.get(k)?.as_str();
                match vals.get(s) {
                    Some(x) => Some(x.clone()),
                    None => Some(vec![g.constant(s, 0).ok()?.as_floats().ok()?[0]; xs.len()]),
                }
            };
            let a = arg(0)?;
            let unary = |f: fn(f64) -> f64| a.iter().map(|&x| f(x)).collect::<Vec<_>>();
            let y: Vec<f64> = match op(n) {
                "Add" | "Sub" | "Mul" | "Div" | "Pow" => {
                    let b = arg(1)?;
                    a.iter()
                        .zip(&b)
                        .map(|(&x, &y)| match op(n) {
                            "Add" => x + y,
                            "Sub" => x - y,
                            "Mul" => x * y,
                            "Div" => x / y,
                            _ => x.powf(y),
                        })
                        .collect()
                }
                "Erf" => unary(libm::erf),
                "Tanh" => unary(f64::tanh),
                "Sigmoid" => unary(|x| 1.0 / (1.0 + (-x).exp())),
                "Exp" => unary(f64::exp),
                "Log" => unary(f64::ln),
                "Sqrt" => unary(f64::sqrt),
                "Neg" => unary(|x| -x),
                "Abs" => unary(f64::abs),
                "Reciprocal" => unary(|x| 1.0 / x),
                "Softplus" => unary(|x| x.exp().ln_1p()),
                _ => a,
            };
            vals.insert(n.output[0].as_str(), y);
        }
        let got = vals.get(out)?;
        [Barrier::Gelu, Barrier::Tanh, Barrier::Sigmoid]
            .into_iter()
            .find(|b| {
                let layer: Layer<f64> = Layer::Barrier(*b);
                let want = layer.forward(&xs, &[xs.len()]);
                want.iter()
                    .zip(got)
                    .all(|(w, y)| (w - y).abs() <= 1e-6 * (1.0 + w.abs()))
            })
    }

    /// WaveNet's gate: `v` split in halves along the channels (one `Split`, or two `Slice`s),
    /// `Tanh` of the first, `Sigmoid` of the second, their product.
    fn gate<T: Real>(&self, v: &str, cons: &[usize]) -> R<(Layer<T>, String, String)> {
        let g = self.g;
        let shape = self.shape(v);
        let rank = shape.len() + 1;
        let c = shape[0];
        let fail = |i: usize, why: &str| {
            g.err(
                i,
                format!("splits `{v}`, but not as WaveNet's gate (tanh of the first half of the channels times sigmoid of the second): {why}"),
            )
        };
        let halves: [String; 2] = match cons {
            [s] if op(&g.nodes[*s]) == "Split" => {
                let n = &g.nodes[*s];
                let ax = axis(attr_i(n, "axis", 0), rank).map_err(|r| g.err(*s, r))?;
                let sizes = match input(n, 1) {
                    Some(x) => Some(g.constant(x, 0)?.known_ints().map_err(|r| g.err(*s, r))?),
                    None => attr_ints(n, "split"),
                };
                let h = (c / 2) as i64;
                let even = sizes.as_ref().is_none_or(|z| z == &[h, h]);
                if ax != 1 || n.output.len() != 2 || !even || !c.is_multiple_of(2) {
                    return Err(fail(*s, "not two equal halves of the channels"));
                }
                [n.output[0].clone(), n.output[1].clone()]
            }
            [a, b] if op(&g.nodes[*a]) == "Slice" && op(&g.nodes[*b]) == "Slice" => {
                let range = |i: usize| -> R<Option<(usize, usize)>> {
                    let n = &g.nodes[i];
                    let ints = |k: usize| -> R<Option<Vec<i64>>> {
                        match input(n, k) {
                            None => Ok(None),
                            Some(x) => Ok(Some(
                                g.constant(x, 0)?.known_ints().map_err(|r| g.err(i, r))?,
                            )),
                        }
                    };
                    let (starts, ends, axes, steps) = if g.opset < 10 {
                        (
                            attr_ints(n, "starts"),
                            attr_ints(n, "ends"),
                            attr_ints(n, "axes"),
                            None,
                        )
                    } else {
                        (ints(1)?, ints(2)?, ints(3)?, ints(4)?)
                    };
                    let (Some(s), Some(e)) = (starts, ends) else {
                        return Ok(None);
                    };
                    let axes = axes.unwrap_or_else(|| (0..s.len() as i64).collect());
                    if s.len() != 1
                        || e.len() != 1
                        || axes.len() != 1
                        || axis(axes[0], rank).ok() != Some(1)
                        || steps.is_some_and(|st| st != [1])
                    {
                        return Ok(None);
                    }
                    let cl = |x: i64| {
                        (if x < 0 { x.saturating_add(c as i64) } else { x }).clamp(0, c as i64)
                            as usize
                    };
                    Ok(Some((cl(s[0]), cl(e[0]))))
                };
                let (ra, rb) = (range(*a)?, range(*b)?);
                let h = c / 2;
                let (first, second) = match (ra, rb) {
                    (Some(x), Some(y)) if x == (0, h) && y == (h, c) => (*a, *b),
                    (Some(x), Some(y)) if y == (0, h) && x == (h, c) => (*b, *a),
                    _ => {
                        return Err(fail(
                            *a,
                            "the slices are not the two halves of the channels",
                        ));
                    }
                };
                if !c.is_multiple_of(2) {
                    return Err(fail(*a, "an odd number of channels"));
                }
                [
                    g.nodes[first].output[0].clone(),
                    g.nodes[second].output[0].clone(),
                ]
            }
            _ => return Err(fail(cons[0], "other nodes use it too")),
        };
        let only = |x: &str, want: &str| -> Option<usize> {
            match g.consumers(x) {
                [i] if op(&g.nodes[*i]) == want && x != g.output => Some(*i),
                _ => None,
            }
        };
        let (Some(t), Some(s)) = (only(&halves[0], "Tanh"), only(&halves[1], "Sigmoid")) else {
            return Err(fail(cons[0], "the halves do not go to Tanh and Sigmoid"));
        };
        let (to, so) = (&g.nodes[t].output[0], &g.nodes[s].output[0]);
        let (Some(m), Some(m2)) = (only(to, "Mul"), only(so, "Mul")) else {
            return Err(fail(cons[0], "Tanh and Sigmoid are not multiplied"));
        };
        if m != m2 {
            return Err(fail(
                cons[0],
                "Tanh and Sigmoid are not multiplied together",
            ));
        }
        let out = g.nodes[m].output[0].clone();
        let mut half = shape.clone();
        half[0] = c / 2;
        self.set_shape(&out, half);
        Ok((Layer::Barrier(Barrier::Gate), out, g.name(m)))
    }

    /// A parameter: the values of node `i`'s input `k`, which must be a floating-point
    /// constant.
    fn param<T: Real>(&self, i: usize, k: usize, what: &str) -> R<Param<T>> {
        let g = self.g;
        let name = input(&g.nodes[i], k).ok_or_else(|| g.err(i, format!("has no {what}")))?;
        if g.is_data(name) {
            return Err(g.err(
                i,
                format!("its {what} `{name}` is computed from the graph's input, not a constant"),
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
            return Err(g.err(i, format!("its {what} `{name}` is not floating point")));
        }
        let values = c.as_floats().map_err(|r| g.err(i, r))?;
        if values.iter().any(|x| !x.is_finite()) {
            return Err(OnnxError::Tensor {
                name: name.to_string(),
                reason: "holds NaN or infinity".into(),
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
    fn channel_vector<T: Real>(
        &self,
        i: usize,
        k: usize,
        shape: &[usize],
        what: &str,
    ) -> R<(Param<T>, Vec<T>, Vec<i64>)> {
        let g = self.g;
        let p = self.param::<T>(i, k, what)?;
        let c = shape[0];
        let rank = shape.len() + 1;
        let bad = || {
            g.err(
                i,
                format!(
                    "its {what} `{}` of shape {:?} is not one value per channel of {:?}",
                    p.name, p.dims, shape
                ),
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
    fn step<T: Real>(&self, i: usize, v: &str) -> R<Step<T>> {
        let g = self.g;
        let n = &g.nodes[i];
        let shape = self.shape(v);
        let out = n.output.first().cloned().unwrap_or_default();
        let one = |layer: Layer<T>| -> R<Step<T>> {
            Ok(Step {
                node: g.name(i),
                layers: vec![(layer, None)],
                value: out.clone(),
            })
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
            "Gemm" | "MatMul" => self.linear(i, v, &shape),
            "Conv" => self.conv(i, v, &shape),
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
                        return Err(g.err(i, "in training mode (only inference is supported)"));
                    }
                }
                if g.opset < 7 || attr_i(n, "is_test", 1) == 0 {
                    return Err(g.err(i, "in training mode (only inference is supported)"));
                }
                one(Layer::Act(Activation::Identity))
            }
            "PRelu" => {
                if !first_is_v {
                    return Err(g.err(i, "the slope is the data"));
                }
                let (_, slopes, _) = self.channel_vector::<f64>(i, 1, &shape, "slope")?;
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
                Some(a) => Err(g.err(
                    i,
                    format!(
                        "the `{a}` approximation of GELU is not supported (only the exact one)"
                    ),
                )),
            },
            "Softmax" => {
                let a = axis(
                    attr_i(n, "axis", if g.opset >= 13 { -1 } else { 1 }),
                    shape.len() + 1,
                )
                .map_err(|r| g.err(i, r))?;
                if shape.len() != 1 || a != 1 {
                    return Err(g.err(
                        i,
                        "a softmax inside the network is read on a flat activation only",
                    ));
                }
                one(Layer::Barrier(Barrier::Softmax))
            }
            "MaxPool" | "AveragePool" => {
                g.only_first_output(i)?;
                one(Layer::Pool(self.pool(i, &shape)?))
            }
            "GlobalAveragePool" | "GlobalMaxPool" => {
                if shape.len() != 3 {
                    return Err(g.err(i, format!("pools 2-D activations only, receives {shape:?}")));
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
                    return Err(g.err(
                        i,
                        "a mean over other axes than the two spatial ones is not supported",
                    ));
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
                    node: g.name(i),
                    layers,
                    value: out.clone(),
                })
            }
            "Flatten" => {
                let a = axis(attr_i(n, "axis", 1), shape.len() + 2).map_err(|r| g.err(i, r))?;
                if a != 1 {
                    return Err(g.err(
                        i,
                        format!("a flatten from axis {a} (only axis 1 keeps the batch)"),
                    ));
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
                        format!(
                            "a reshape of [batch, {}] to {:?} is not a flatten [batch, {total}]",
                            shape
                                .iter()
                                .map(usize::to_string)
                                .collect::<Vec<_>>()
                                .join(", "),
                            target
                        ),
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
                    return Err(g.err(
                        i,
                        "only a squeeze of [batch, C, 1, ..] to [batch, C] is read",
                    ));
                }
                one(Layer::Flatten)
            }
            "BatchNormalization" => self.batch_norm(i, &shape),
            "Add" | "Sub" | "Mul" | "Div" => {
                let k = if first_is_v { 1 } else { 0 };
                if !first_is_v && matches!(op(n), "Sub" | "Div") {
                    return Err(g.err(
                        i,
                        format!(
                            "a constant {} the activation is not homogeneous",
                            if op(n) == "Sub" {
                                "minus"
                            } else {
                                "divided by"
                            }
                        ),
                    ));
                }
                let (p, vals, dims) = self.channel_vector::<T>(i, k, &shape, "constant")?;
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
                            return Err(g.err(i, "a division by zero"));
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
                    node: g.name(i),
                    layers: vec![(
                        Layer::Norm(layer),
                        Some(binding(op(n), Some(p.name), vec![slot])),
                    )],
                    value: out.clone(),
                })
            }
            other => {
                if ELEMENTWISE.contains(&other)
                    && let Some((b, out, node)) = self.region(v)
                {
                    return one(Layer::Barrier(b)).map(|mut s| {
                        s.value = out;
                        s.node = node;
                        s
                    });
                }
                Err(g.err(i, "this op is not supported by the canonical form (see `weightnorm canonicalize --help`)"))
            }
        }
    }

    /// `Gemm`, or `MatMul` and the `Add` of its bias.
    fn linear<T: Real>(&self, i: usize, v: &str, shape: &[usize]) -> R<Step<T>> {
        let g = self.g;
        let n = &g.nodes[i];
        if input(n, 0) != Some(v) {
            return Err(g.err(i, "the activation must be the first operand"));
        }
        if shape.len() != 1 {
            return Err(g.err(
                i,
                format!("takes [batch, features], receives [batch, {shape:?}] (flatten it first)"),
            ));
        }
        let gemm = op(n) == "Gemm";
        if gemm && attr_i(n, "transA", 0) != 0 {
            return Err(g.err(
                i,
                "transA = 1 is not supported (the batch must be the rows)",
            ));
        }
        let trans_b = gemm && attr_i(n, "transB", 0) != 0;
        let alpha = if gemm { attr_f(n, "alpha", 1.0) } else { 1.0 };
        let beta = if gemm { attr_f(n, "beta", 1.0) } else { 1.0 };
        if alpha == 0.0 || !alpha.is_finite() || !beta.is_finite() {
            return Err(g.err(i, format!("alpha = {alpha}, beta = {beta}")));
        }
        let w = self.param::<T>(i, 1, "weight")?;
        if w.dims.len() != 2 || w.dims.contains(&0) {
            return Err(g.err(
                i,
                format!("a weight `{}` of shape {:?}, not a matrix", w.name, w.dims),
            ));
        }
        let (out_units, in_units) = if trans_b {
            (w.dims[0], w.dims[1])
        } else {
            (w.dims[1], w.dims[0])
        };
        if in_units != shape[0] {
            return Err(g.err(
                i,
                format!(
                    "a weight `{}` of shape {:?} for {} input features",
                    w.name, w.dims, shape[0]
                ),
            ));
        }
        let mut rows: Vec<T> = if trans_b {
            w.values
        } else {
            let mut t = vec![T::from_f64(0.0); w.values.len()];
            for r in 0..in_units {
                for c in 0..out_units {
                    t[c * in_units + r] = w.values[r * out_units + c];
                }
            }
            t
        };
        if alpha != 1.0 {
            for x in &mut rows {
                *x = T::from_f64(x.to_f64() * alpha);
            }
        }
        let mut slots = vec![Slot {
            node: i,
            input: 1,
            role: Role::Weight {
                transposed: !trans_b,
                alpha,
            },
            dtype: w.dtype,
            dims: w.dims.iter().map(|&d| d as i64).collect(),
        }];
        let mut value = n.output.first().cloned().unwrap_or_default();
        let mut bias = None;
        let mut name = op(n).to_string();
        // The bias: Gemm's C, or the Add after a MatMul.
        let bias_at = if gemm {
            input(n, 2).filter(|_| beta != 0.0).map(|_| (i, 2))
        } else {
            match g.consumers(&value) {
                [j] if op(&g.nodes[*j]) == "Add"
                    && value != g.output
                    && !g.is_merge(*j)
                    && is_default_domain(&g.nodes[*j]) =>
                {
                    let k = if g.nodes[*j].input.first() == Some(&value) {
                        1
                    } else {
                        0
                    };
                    Some((*j, k))
                }
                _ => None,
            }
        };
        if let Some((j, k)) = bias_at {
            let (p, vals, dims) = self.channel_vector::<T>(j, k, &[out_units], "bias")?;
            bias = Some(
                vals.iter()
                    .map(|x| T::from_f64(x.to_f64() * beta))
                    .collect(),
            );
            slots.push(Slot {
                node: j,
                input: k,
                role: Role::Bias { beta },
                dtype: p.dtype,
                dims,
            });
            if j != i {
                value = g.nodes[j].output.first().cloned().unwrap_or_default();
                name = "MatMul+Add".into();
            }
        }
        let layer = Layer::Weighted(Weighted {
            w: Rows::new(out_units, in_units, rows),
            b: bias,
            conv: None,
        });
        Ok(Step {
            node: g.name(i),
            layers: vec![(
                layer,
                Some(Binding {
                    path: Vec::new(),
                    node: g.name(i),
                    op: name,
                    param: Some(w.name),
                    slots,
                }),
            )],
            value,
        })
    }

    /// The pads of a convolution or pooling: symmetric, from `pads` or `auto_pad`.
    fn pads(
        &self,
        i: usize,
        shape: &[usize],
        kernel: &[usize],
        stride: &[usize],
        dilation: &[usize],
    ) -> R<Vec<usize>> {
        let g = self.g;
        let n = &g.nodes[i];
        let dims = kernel.len();
        match attr_s(n, "auto_pad").as_deref() {
            None | Some("NOTSET") | Some("") => {
                let pads = attr_ints(n, "pads").unwrap_or_else(|| vec![0; 2 * dims]);
                if pads.len() != 2 * dims || pads.iter().any(|&p| p < 0) {
                    return Err(g.err(i, format!("pads {pads:?} for {dims} spatial axes")));
                }
                if pads[..dims] != pads[dims..] {
                    return Err(g.err(
                        i,
                        format!("asymmetric padding {pads:?} (the calculus pads both sides alike)"),
                    ));
                }
                Ok(pads[..dims].iter().map(|&p| p as usize).collect())
            }
            Some("VALID") => Ok(vec![0; dims]),
            Some(mode @ ("SAME_UPPER" | "SAME_LOWER")) => (0..dims)
                .map(|a| {
                    let n_in = shape[1 + a];
                    let out = n_in.div_ceil(stride[a]);
                    let span = dilation[a] * (kernel[a] - 1) + 1;
                    let total = ((out - 1) * stride[a] + span).saturating_sub(n_in);
                    if total % 2 == 1 {
                        Err(g.err(i, format!("{mode} pads one side more than the other here")))
                    } else {
                        Ok(total / 2)
                    }
                })
                .collect(),
            Some(other) => Err(g.err(i, format!("auto_pad {other:?}"))),
        }
    }

    fn conv<T: Real>(&self, i: usize, v: &str, shape: &[usize]) -> R<Step<T>> {
        let g = self.g;
        let n = &g.nodes[i];
        if input(n, 0) != Some(v) {
            return Err(g.err(i, "the activation must be the first operand"));
        }
        let w = self.param::<T>(i, 1, "weight")?;
        let dims = w.dims.len().saturating_sub(2);
        if !(1..=2).contains(&dims) || w.dims.contains(&0) {
            return Err(g.err(
                i,
                format!(
                    "a weight `{}` of shape {:?}: 1-D and 2-D convolutions are read",
                    w.name, w.dims
                ),
            ));
        }
        if shape.len() != dims + 1 {
            return Err(g.err(
                i,
                format!("a {dims}-D convolution of an activation of shape {shape:?}"),
            ));
        }
        let positive = |name: &str| -> R<Vec<usize>> {
            let v = attr_ints(n, name).unwrap_or_else(|| vec![1; dims]);
            if v.len() != dims || v.iter().any(|&x| x < 1) {
                return Err(g.err(i, format!("{name} {v:?}")));
            }
            Ok(v.iter().map(|&x| x as usize).collect())
        };
        let stride = positive("strides")?;
        let dilation = positive("dilations")?;
        let kernel = w.dims[2..].to_vec();
        if let Some(k) = attr_ints(n, "kernel_shape")
            && k.iter().map(|&x| x as usize).ne(kernel.iter().copied())
        {
            return Err(g.err(
                i,
                format!("kernel_shape {k:?} but a weight of shape {:?}", w.dims),
            ));
        }
        let groups = attr_i(n, "group", 1);
        if groups < 1 || !w.dims[0].is_multiple_of(groups as usize) {
            return Err(g.err(
                i,
                format!("group {groups} for {} output channels", w.dims[0]),
            ));
        }
        let padding = self.pads(i, shape, &kernel, &stride, &dilation)?;
        let out = w.dims[0];
        let row_len = w.values.len() / out;
        let mut slots = vec![Slot {
            node: i,
            input: 1,
            role: Role::Weight {
                transposed: false,
                alpha: 1.0,
            },
            dtype: w.dtype,
            dims: w.dims.iter().map(|&d| d as i64).collect(),
        }];
        let bias = match input(n, 2) {
            Some(_) => {
                let b = self.param::<T>(i, 2, "bias")?;
                if b.values.len() != out {
                    return Err(g.err(
                        i,
                        format!("a bias of shape {:?} for {out} channels", b.dims),
                    ));
                }
                slots.push(Slot {
                    node: i,
                    input: 2,
                    role: Role::Bias { beta: 1.0 },
                    dtype: b.dtype,
                    dims: b.dims.iter().map(|&d| d as i64).collect(),
                });
                Some(b.values)
            }
            None => None,
        };
        let layer = Layer::Weighted(Weighted {
            w: Rows::new(out, row_len, w.values),
            b: bias,
            conv: Some(ConvGeometry {
                kernel,
                stride,
                padding,
                dilation,
                groups: groups as usize,
            }),
        });
        Ok(Step {
            node: g.name(i),
            layers: vec![(
                layer,
                Some(Binding {
                    path: Vec::new(),
                    node: g.name(i),
                    op: "Conv".into(),
                    param: Some(w.name),
                    slots,
                }),
            )],
            value: n.output.first().cloned().unwrap_or_default(),
        })
    }

    fn pool(&self, i: usize, shape: &[usize]) -> R<Pool> {
        let g = self.g;
        let n = &g.nodes[i];
        if shape.len() != 3 {
            return Err(g.err(i, format!("pools 2-D activations only, receives {shape:?}")));
        }
        let kernel: Vec<usize> = attr_ints(n, "kernel_shape")
            .filter(|k| k.len() == 2 && k.iter().all(|&x| x >= 1))
            .ok_or_else(|| g.err(i, "needs a kernel_shape of two positive sizes"))?
            .iter()
            .map(|&x| x as usize)
            .collect();
        let stride: Vec<usize> = match attr_ints(n, "strides") {
            None => vec![1, 1],
            Some(s) if s.len() == 2 && s.iter().all(|&x| x >= 1) => {
                s.iter().map(|&x| x as usize).collect()
            }
            Some(s) => return Err(g.err(i, format!("strides {s:?}"))),
        };
        if attr_ints(n, "dilations").is_some_and(|d| d.iter().any(|&x| x != 1)) {
            return Err(g.err(i, "dilated pooling is not supported"));
        }
        if attr_i(n, "ceil_mode", 0) != 0 {
            return Err(g.err(i, "ceil_mode = 1 is not supported"));
        }
        let padding = self.pads(i, shape, &kernel, &stride, &[1, 1])?;
        let max = op(n) == "MaxPool";
        if !max && padding.iter().any(|&p| p > 0) && attr_i(n, "count_include_pad", 0) == 0 {
            return Err(g.err(
                i,
                "count_include_pad = 0 with padding is not supported (the calculus counts the \
                 padding, as PyTorch does by default)",
            ));
        }
        Ok(Pool {
            max,
            kernel: [kernel[0], kernel[1]],
            stride: [stride[0], stride[1]],
            padding: [padding[0], padding[1]],
        })
    }

    fn batch_norm<T: Real>(&self, i: usize, shape: &[usize]) -> R<Step<T>> {
        let g = self.g;
        let n = &g.nodes[i];
        g.only_first_output(i)?;
        if attr_i(n, "training_mode", 0) != 0 || (g.opset < 9 && attr_i(n, "spatial", 1) != 1) {
            return Err(g.err(
                i,
                "in training mode or not spatial (only inference is supported)",
            ));
        }
        let eps = attr_f(n, "epsilon", 1e-5);
        let c = shape[0];
        let mut params = Vec::new();
        for (k, what) in [(1, "scale"), (2, "B"), (3, "mean"), (4, "var")] {
            let p = self.param::<T>(i, k, what)?;
            if p.values.len() != c {
                return Err(g.err(
                    i,
                    format!(
                        "its {what} `{}` has {} values for {c} channels",
                        p.name,
                        p.values.len()
                    ),
                ));
            }
            params.push(p);
        }
        let norm = Norm::batch(
            Some(&params[0].values),
            Some(&params[1].values),
            &params[2].values,
            &params[3].values,
            eps,
        )
        .map_err(|e| g.err(i, e.to_string()))?;
        let roles = [
            Role::BnScale { eps },
            Role::BnBias,
            Role::BnMean,
            Role::BnVar { eps },
        ];
        let slots = params
            .iter()
            .zip(roles)
            .enumerate()
            .map(|(k, (p, role))| Slot {
                node: i,
                input: k + 1,
                role,
                dtype: p.dtype,
                dims: p.dims.iter().map(|&d| d as i64).collect(),
            })
            .collect();
        Ok(Step {
            node: g.name(i),
            layers: vec![(
                Layer::Norm(norm),
                Some(Binding {
                    path: Vec::new(),
                    node: g.name(i),
                    op: "BatchNormalization".into(),
                    param: Some(params[0].name.clone()),
                    slots,
                }),
            )],
            value: n.output.first().cloned().unwrap_or_default(),
        })
    }
}

/// Reads a model's graph as a network.
pub(crate) fn read<T: Real>(model: &OnnxModel) -> R<OnnxNetwork<T>> {
    let (g, sample, elem) = Graph::new(model)?;
    let w = Walker { g: &g };
    w.set_shape(g.input, sample.clone());
    let (chain, end) = w.chain::<T>(g.input.to_string(), None, 0)?;
    let (head, site_value) = match end {
        End::Output => (None, g.output.to_string()),
        End::Head(h, i) => (Some(h), g.nodes[i].input[0].clone()),
        End::Merge(m, _) => {
            return Err(g.err(m, "adds a value that no fork of the graph's input leads to"));
        }
    };
    if !chain.layers.iter().any(has_weights) {
        return Err(OnnxError::Model(
            "the graph has no layer with weights (Gemm, MatMul, Conv) on the way to its output"
                .into(),
        ));
    }
    let &(node, output) = g
        .producer
        .get(site_value.as_str())
        .ok_or_else(|| OnnxError::Model(format!("`{site_value}` is computed by no node")))?;
    let network = Network::new(sample, chain.layers).map_err(|e| match e {
        CanonicalError::Input { .. } => OnnxError::Model(format!("the graph input: {e}")),
        e => OnnxError::Network(e),
    })?;
    let shape = network.output_shape();
    if let Some(h) = &head
        && h.axes.end > shape.len()
    {
        return Err(OnnxError::Model(format!(
            "the head {} does not fit the output",
            h.node
        )));
    }
    let dtype = chain
        .bindings
        .iter()
        .rev()
        .find_map(|b| b.slots.first())
        .map(|s| s.dtype)
        .unwrap_or(elem);
    Ok(OnnxNetwork {
        network,
        graph: GraphMap {
            bindings: chain.bindings,
            nodes: chain.nodes,
            head,
            input_name: g.input.to_string(),
            output_name: g.output.to_string(),
            site: Site {
                value: site_value,
                node,
                output,
                dtype,
                shape,
            },
        },
    })
}

/// Whether every parameter of a (non-block) layer is finite.
fn finite<T: Real>(l: &Layer<T>) -> bool {
    let all = |v: &[T]| v.iter().all(|x| x.to_f64().is_finite());
    match l {
        Layer::Weighted(w) => all(&w.w.data) && w.b.as_deref().is_none_or(all),
        Layer::Norm(n) => all(&n.c) && n.a.as_deref().is_none_or(all),
        Layer::PRelu(s) => s.iter().all(|x| x.is_finite()),
        Layer::Act(Activation::LeakyRelu(s)) => s.is_finite(),
        _ => true,
    }
}

fn has_weights<T: Real>(l: &Layer<T>) -> bool {
    match l {
        Layer::Weighted(_) => true,
        Layer::Residual(b) => b.iter().any(has_weights),
        Layer::Shortcut { body, skip } => body.iter().chain(skip).any(has_weights),
        _ => false,
    }
}
