//! The graph of an ONNX model, indexed (producers, consumers, which values are constant), and
//! its constants: initializers, `Constant` nodes and whatever is computed from them and from
//! shapes alone (`Shape`, `Gather`, `Concat`, `Unsqueeze`, `Slice`, arithmetic, `Cast`),
//! evaluated where an op needs their values.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};

use super::consts::{Const, Data, MAX_CONST};
use super::fault::{ConstFault, ModelFault, NodeFault};
use super::proto::{AttributeProto, NodeProto, TensorProto, data_type, type_proto};
use super::tensor::{External, dtype_name, is_float};
use super::{OnnxError, OnnxModel};

/// How deep constants may be computed from others.
const MAX_DEPTH: usize = 64;
/// How many elements all the constants a graph computes may hold together, beyond twice its
/// initializers' elements (each constant is also bounded by [`MAX_CONST`]): they are all kept,
/// so without a total a small hostile graph of many large computed constants (a chain of
/// `Concat`s doubling a vector) would take gigabytes. A real graph's shape arithmetic holds a
/// few thousand elements, and its parameters passed through `Cast` or `Unsqueeze` are as large
/// as its initializers.
pub(super) const CONSTS_BASE: usize = 1 << 20;

pub(super) fn attr<'a>(n: &'a NodeProto, name: &str) -> Option<&'a AttributeProto> {
    n.attribute.iter().find(|a| a.name.as_deref() == Some(name))
}

pub(super) fn attr_i(n: &NodeProto, name: &str, default: i64) -> i64 {
    attr(n, name).and_then(|a| a.i).unwrap_or(default)
}

pub(super) fn attr_f(n: &NodeProto, name: &str, default: f64) -> f64 {
    attr(n, name).and_then(|a| a.f).map_or(default, f64::from)
}

pub(super) fn attr_ints(n: &NodeProto, name: &str) -> Option<Vec<i64>> {
    attr(n, name).map(|a| a.ints.clone())
}

pub(super) fn attr_s(n: &NodeProto, name: &str) -> Option<String> {
    attr(n, name)
        .and_then(|a| a.s.as_ref())
        .map(|s| String::from_utf8_lossy(s).into_owned())
}

pub(super) fn op(n: &NodeProto) -> &str {
    n.op_type.as_deref().unwrap_or("")
}

/// The input `k` of a node, if given (an empty name is an absent optional input).
pub(super) fn input(n: &NodeProto, k: usize) -> Option<&str> {
    n.input.get(k).map(String::as_str).filter(|s| !s.is_empty())
}

pub(super) fn is_default_domain(n: &NodeProto) -> bool {
    matches!(n.domain.as_deref(), None | Some("") | Some("ai.onnx"))
}

/// The ops that compute constants from constants (and shapes).
const CONST_OPS: &[&str] = &[
    "Constant",
    "Identity",
    "Cast",
    "CastLike",
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
pub(super) const ELEMENTWISE: &[&str] = &[
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
pub(super) struct Graph<'m> {
    pub(super) nodes: &'m [NodeProto],
    pub(super) inits: HashMap<&'m str, &'m TensorProto>,
    pub(super) producer: HashMap<&'m str, (usize, usize)>,
    consumers: HashMap<&'m str, Vec<usize>>,
    constant: HashSet<&'m str>,
    pub(super) input: &'m str,
    pub(super) output: &'m str,
    pub(super) batch: Option<i64>,
    pub(super) opset: i64,
    pub(super) ext: &'m External,
    memo: RefCell<HashMap<String, Const>>,
    /// Elements all computed constants may still hold together (see [`CONSTS_BASE`]).
    const_budget: std::cell::Cell<usize>,
    pub(super) shapes: RefCell<HashMap<String, Vec<usize>>>,
    /// One input sample's shape.
    pub(super) sample: Vec<usize>,
}

pub(super) type R<T> = Result<T, OnnxError>;

impl<'m> Graph<'m> {
    pub(super) fn new(model: &'m OnnxModel) -> R<(Self, Vec<usize>, i32)> {
        let p = &model.proto;
        let g = p
            .graph
            .as_ref()
            .ok_or(OnnxError::Model(ModelFault::NoGraph))?;
        let opset = p
            .opset_import
            .iter()
            .filter(|o| matches!(o.domain.as_deref(), None | Some("") | Some("ai.onnx")))
            .filter_map(|o| o.version)
            .max()
            .ok_or(OnnxError::Model(ModelFault::NoOpset))?;
        if opset < 7 {
            return Err(OnnxError::Model(ModelFault::OldOpset(opset)));
        }
        let mut defined: HashSet<&str> = HashSet::new();
        let mut inits = HashMap::new();
        for t in &g.initializer {
            let name = t.name.as_deref().unwrap_or("");
            if name.is_empty() || inits.insert(name, t).is_some() {
                return Err(OnnxError::Model(ModelFault::DuplicateInitializer(
                    name.to_string(),
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
            return Err(OnnxError::Model(ModelFault::Inputs(data_inputs.len())));
        };
        let input_name = input.name.as_deref().unwrap_or("");
        defined.insert(input_name);
        let [output] = g.output.as_slice() else {
            return Err(OnnxError::Model(ModelFault::Outputs(g.output.len())));
        };
        let output_name = output.name.as_deref().unwrap_or("");
        // The input: [batch, ..one sample], the sample's axes known.
        let Some(type_proto::Value::TensorType(tt)) =
            input.r#type.as_ref().and_then(|t| t.value.as_ref())
        else {
            return Err(OnnxError::Model(ModelFault::InputNotTensor(
                input_name.to_string(),
            )));
        };
        let elem = tt.elem_type.unwrap_or(0);
        if !is_float(elem) {
            return Err(OnnxError::Model(ModelFault::InputNotFloat {
                input: input_name.to_string(),
                dtype: dtype_name(elem),
            }));
        }
        let dims: Vec<Option<i64>> = tt
            .shape
            .as_ref()
            .ok_or_else(|| OnnxError::Model(ModelFault::InputNoShape(input_name.to_string())))?
            .dim
            .iter()
            .map(|d| match d.value {
                Some(super::proto::tensor_shape_proto::dimension::Value::DimValue(v)) => Some(v),
                _ => None,
            })
            .collect();
        if dims.len() < 2 || dims.len() > 4 {
            return Err(OnnxError::Model(ModelFault::InputRank {
                input: input_name.to_string(),
                rank: dims.len(),
            }));
        }
        let sample: Vec<usize> = dims[1..]
            .iter()
            .map(|d| d.filter(|&v| v > 0).map(|v| v as usize))
            .collect::<Option<_>>()
            .ok_or_else(|| {
                OnnxError::Model(ModelFault::InputShape {
                    input: input_name.to_string(),
                    dims: dims.clone(),
                })
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
                        reason: Box::new(NodeFault::UsedBeforeComputed(inp.clone())),
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
                        reason: Box::new(NodeFault::Redefined(out.clone())),
                    });
                }
                producer.insert(out.as_str(), (i, k));
                if is_const {
                    constant.insert(out.as_str());
                }
            }
        }
        let init_elements: usize = g
            .initializer
            .iter()
            .map(|t| {
                t.dims
                    .iter()
                    .try_fold(1usize, |a, &d| a.checked_mul(usize::try_from(d).ok()?))
                    .unwrap_or(0)
            })
            .fold(0usize, usize::saturating_add);
        let const_budget = init_elements.saturating_mul(2).saturating_add(CONSTS_BASE);
        if !defined.contains(output_name) {
            return Err(OnnxError::Model(ModelFault::OutputNotComputed(
                output_name.to_string(),
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
                const_budget: std::cell::Cell::new(const_budget),
                shapes: RefCell::default(),
                sample: sample.clone(),
            },
            sample,
            elem,
        ))
    }

    pub(super) fn consumers(&self, v: &str) -> &[usize] {
        self.consumers.get(v).map_or(&[], Vec::as_slice)
    }

    pub(super) fn name(&self, i: usize) -> String {
        node_name(&self.nodes[i], i)
    }

    pub(super) fn err(&self, i: usize, reason: impl Into<NodeFault>) -> OnnxError {
        OnnxError::Node {
            node: self.name(i),
            op: op(&self.nodes[i]).into(),
            reason: Box::new(reason.into()),
        }
    }

    pub(super) fn is_data(&self, v: &str) -> bool {
        !self.constant.contains(v)
    }

    /// Whether node `i` adds two data values: the join of a fork.
    pub(super) fn is_merge(&self, i: usize) -> bool {
        let n = &self.nodes[i];
        op(n) == "Add"
            && is_default_domain(n)
            && n.input.len() == 2
            && n.input.iter().all(|s| self.is_data(s))
    }

    /// Checks that the outputs of node `i` after the first are unused.
    pub(super) fn only_first_output(&self, i: usize) -> R<()> {
        for out in self.nodes[i]
            .output
            .iter()
            .skip(1)
            .filter(|s| !s.is_empty())
        {
            if !self.consumers(out).is_empty() || out == self.output {
                return Err(self.err(i, NodeFault::ExtraOutputUsed(out.clone())));
            }
        }
        Ok(())
    }

    /// The value of a constant input.
    pub(super) fn constant(&self, name: &str, depth: usize) -> R<Const> {
        if let Some(c) = self.memo.borrow().get(name) {
            return Ok(c.clone());
        }
        let c = self.compute(name, depth)?;
        if !self.inits.contains_key(name) {
            let n = c.len();
            match self.const_budget.get().checked_sub(n) {
                Some(left) => self.const_budget.set(left),
                None => {
                    let at = self.producer.get(name).map_or(0, |&(i, _)| i);
                    return Err(self.err(at, NodeFault::ConstantsTooLarge));
                }
            }
        }
        self.memo.borrow_mut().insert(name.to_string(), c.clone());
        Ok(c)
    }

    fn compute(&self, name: &str, depth: usize) -> R<Const> {
        if let Some(t) = self.inits.get(name) {
            return Const::from_tensor(t, self.ext);
        }
        let Some(&(i, k)) = self.producer.get(name) else {
            return Err(OnnxError::Model(ModelFault::InputNotConstant(
                name.to_string(),
            )));
        };
        if depth > MAX_DEPTH {
            return Err(self.err(i, NodeFault::ConstantsTooDeep));
        }
        let n = &self.nodes[i];
        let e = |r: ConstFault| self.err(i, r);
        let arg = |j: usize| -> R<Const> {
            let s = input(n, j).ok_or_else(|| self.err(i, NodeFault::MissingInput(j)))?;
            self.constant(s, depth + 1)
        };
        let ints_of = |j: usize| -> R<Option<Vec<i64>>> {
            match input(n, j) {
                None => Ok(None),
                Some(_) => Ok(Some(arg(j)?.known_ints().map_err(e)?)),
            }
        };
        if k != 0 && op(n) != "Constant" {
            return Err(self.err(i, NodeFault::ConstantOutput(k)));
        }
        let out = match op(n) {
            "Constant" => return self.constant_attr(i),
            "Identity" => arg(0)?,
            "Cast" => arg(0)?
                .cast(attr_i(n, "to", data_type::FLOAT as i64) as i32)
                .map_err(e)?,
            // The type of the second input (dynamo exports with `optimize=False`).
            "CastLike" => {
                let like = arg(1)?;
                arg(0)?.cast(like.dtype).map_err(e)?
            }
            "Shape" | "Size" => {
                let v = input(n, 0).ok_or_else(|| self.err(i, NodeFault::MissingInput(0)))?;
                let dims = self
                    .full_shape(v)
                    .ok_or_else(|| self.err(i, NodeFault::ShapeUnknown(v.to_string())))?;
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
            other => return Err(self.err(i, NodeFault::NotEvaluated(other.to_string()))),
        };
        Ok(out)
    }

    /// A `Constant` node's value.
    fn constant_attr(&self, i: usize) -> R<Const> {
        let n = &self.nodes[i];
        let a = n
            .attribute
            .first()
            .ok_or_else(|| self.err(i, NodeFault::ConstantWithoutValue))?;
        let scalar = |data: Data, dtype: i32| Const {
            shape: vec![],
            data,
            dtype,
        };
        Ok(match a.name.as_deref().unwrap_or("") {
            "value" => {
                let t =
                    a.t.as_ref()
                        .ok_or_else(|| self.err(i, NodeFault::ValueWithoutTensor))?;
                Const::from_tensor(t, self.ext)?
            }
            "value_float" => scalar(
                Data::Float(vec![f64::from(a.f.unwrap_or(0.0))]),
                data_type::FLOAT,
            ),
            "value_int" => scalar(Data::Int(vec![Some(a.i.unwrap_or(0))]), data_type::INT64),
            "value_floats" => {
                if a.floats.len() > MAX_CONST {
                    return Err(self.err(i, NodeFault::TooManyValues));
                }
                Const {
                    shape: vec![a.floats.len()],
                    data: Data::Float(a.floats.iter().map(|&x| f64::from(x)).collect()),
                    dtype: data_type::FLOAT,
                }
            }
            "value_ints" => Const::ints(a.ints.iter().map(|&x| Some(x)).collect()),
            other => {
                return Err(self.err(i, NodeFault::ConstantKind(other.to_string())));
            }
        })
    }

    /// A data value's full shape (`None` for an unknown batch size).
    pub(super) fn full_shape(&self, v: &str) -> Option<Vec<Option<i64>>> {
        let shapes = self.shapes.borrow();
        let s = shapes.get(v)?;
        let mut out = vec![self.batch];
        out.extend(s.iter().map(|&d| Some(d as i64)));
        Some(out)
    }
}

pub(super) fn node_name(n: &NodeProto, i: usize) -> String {
    match n.name.as_deref() {
        Some(s) if !s.is_empty() => s.to_string(),
        _ => format!("{}#{i}", op(n)),
    }
}
