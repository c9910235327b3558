//! The walk: from the input along the data flow, chain by chain. A value with one consumer
//! continues the chain; a value with two is a fork, read as a residual block or shortcut (both
//! branches meet at one addition), a cluster of elementwise ops computing a known barrier, or
//! WaveNet's gate.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};

use super::{
    Dataflow, Elementwise, Fault, GateFault, Head, Lowered, MAX_DEPTH, MAX_REGION, NodeId, Operand,
    Step, View, WalkError, finite, has_weights, identify,
};
use crate::canonical::{Barrier, CanonicalError, Layer, Network, Real};

type R<T, E> = Result<T, WalkError<E>>;

/// The layers of a chain read from a front-end's graph.
type ChainOf<D, T> = Chain<<D as Dataflow>::Binding, T>;
/// A chain, and how it ended.
type Ended<D, T> = (ChainOf<D, T>, End<<D as Dataflow>::Value>);
/// A block of layers, and the value after it.
type Block<D, T> = (ChainOf<D, T>, <D as Dataflow>::Value);
/// An elementwise op of a cluster: the op, its operands, its output.
type ElementOp<D> = (
    Elementwise,
    Vec<Operand<<D as Dataflow>::Value>>,
    <D as Dataflow>::Value,
);
/// What a walk returns.
pub type Walked<D, T> = Result<
    Lowered<<D as Dataflow>::Value, <D as Dataflow>::Binding, T>,
    WalkError<<D as Dataflow>::Error>,
>;

/// How a chain of layers ended.
enum End<V> {
    /// At the graph's output.
    Output,
    /// At a trailing softmax (the head, its node, and the value it reads).
    Head(Head, NodeId, V),
    /// At the addition joining a fork (the node; the value arriving there).
    Merge(NodeId, V),
}

/// Layers read from the graph, with their bindings and nodes (positions relative to them).
struct Chain<B, T: Real> {
    layers: Vec<Layer<T>>,
    bindings: Vec<(Vec<usize>, B)>,
    nodes: Vec<(Vec<usize>, NodeId)>,
}

impl<B, T: Real> Chain<B, T> {
    fn new() -> Self {
        Self {
            layers: Vec::new(),
            bindings: Vec::new(),
            nodes: Vec::new(),
        }
    }

    /// Pushes a layer standing for `node`.
    fn push(&mut self, layer: Layer<T>, binding: Option<B>, node: NodeId) {
        let at = self.layers.len();
        if let Some(b) = binding {
            self.bindings.push((vec![at], b));
        }
        self.nodes.push((vec![at], node));
        self.layers.push(layer);
    }

    /// Appends the layers of `other`, moving its positions behind this chain's.
    fn append(&mut self, other: Chain<B, T>) {
        let at = self.layers.len();
        self.bindings
            .extend(other.bindings.into_iter().map(|(mut p, b)| {
                p[0] += at;
                (p, b)
            }));
        self.nodes.extend(other.nodes.into_iter().map(|(mut p, n)| {
            p[0] += at;
            (p, n)
        }));
        self.layers.extend(other.layers);
    }

    /// This chain as the children of a block at position 0, starting at child `offset`.
    #[allow(clippy::type_complexity)]
    fn nest(
        self,
        offset: usize,
    ) -> (
        Vec<Layer<T>>,
        Vec<(Vec<usize>, B)>,
        Vec<(Vec<usize>, NodeId)>,
    ) {
        let inner = |mut p: Vec<usize>| {
            p[0] += offset;
            p.insert(0, 0);
            p
        };
        let bindings = self
            .bindings
            .into_iter()
            .map(|(p, b)| (inner(p), b))
            .collect();
        let nodes = self.nodes.into_iter().map(|(p, n)| (inner(p), n)).collect();
        (self.layers, bindings, nodes)
    }
}

struct Walker<'d, D: Dataflow> {
    df: &'d D,
    output: D::Value,
    shapes: RefCell<HashMap<D::Value, Vec<usize>>>,
}

impl<D: Dataflow> Walker<'_, D> {
    fn name(&self, n: NodeId) -> String {
        self.df.node_label(n)
    }

    fn value_name(&self, v: &D::Value) -> String {
        self.df.value_name(v)
    }

    /// The shape of one sample of a data value walked already.
    fn shape(&self, v: &D::Value) -> Vec<usize> {
        self.shapes
            .borrow()
            .get(v)
            .cloned()
            .expect("a walked value")
    }

    fn set_shape(&self, v: &D::Value, s: Vec<usize>) {
        self.df.shape_known(v, &s);
        self.shapes.borrow_mut().insert(v.clone(), s);
    }

    fn first_output(&self, n: NodeId) -> Option<D::Value> {
        self.df.outputs(n).into_iter().next()
    }

    /// Reads a chain from `v`, starting with node `first` if given, until the output, a head
    /// or an addition joining a fork.
    fn chain<T: Real>(
        &self,
        mut v: D::Value,
        mut first: Option<NodeId>,
        depth: usize,
    ) -> R<Ended<D, T>, D::Error> {
        let df = self.df;
        let mut chain = Chain::new();
        loop {
            let i = match first.take() {
                Some(i) => i,
                None => {
                    let cons = df.consumers(&v);
                    if v == self.output {
                        if let Some(&c) = cons.first() {
                            return Err(Fault::OutputUsed {
                                node: self.name(c),
                                value: self.value_name(&v),
                            }
                            .into());
                        }
                        return Ok((chain, End::Output));
                    }
                    match cons.as_slice() {
                        [] => {
                            return Err(Fault::Unused {
                                value: self.value_name(&v),
                            }
                            .into());
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
            let shape = self.shape(&v);
            match df.view(i, &shape) {
                View::Merge([a, b]) => {
                    if a == v && b == v {
                        // x + x: a residual block with an empty body.
                        let out = self.first_output(i).expect("an addition has an output");
                        self.set_shape(&out, shape);
                        chain.push(Layer::Residual(Vec::new()), None, i);
                        v = out;
                        continue;
                    }
                    return Ok((chain, End::Merge(i, v)));
                }
                View::Softmax
                    if self.first_output(i).as_ref() == Some(&self.output)
                        && df.consumers(&self.output).is_empty() =>
                {
                    let head = df.head(i, &shape).map_err(WalkError::Frontend)?;
                    return Ok((chain, End::Head(head, i, v)));
                }
                View::Split(_) => {
                    let (layer, next, node) = self.gate::<T>(&v, &[i])?;
                    chain.push(layer, None, node);
                    v = next;
                    continue;
                }
                _ => {}
            }
            let step = match df.lower::<T>(i, &v, &shape) {
                Ok(step) => step,
                Err(e) => match df.elementwise(i).and_then(|_| self.region(&v)) {
                    // An elementwise op that is part of a barrier's cluster.
                    Some((b, out, node)) => Step::one(Layer::Barrier(b), None, node, out),
                    None => return Err(WalkError::Frontend(e)),
                },
            };
            let mut shape = shape;
            for (layer, binding) in step.layers {
                if !finite(&layer) {
                    return Err(Fault::NotFinite {
                        node: self.name(step.node),
                    }
                    .into());
                }
                shape = layer
                    .out_shape(&shape, &[])
                    .map_err(|source| Fault::Layer {
                        node: self.name(step.node),
                        source,
                    })?;
                chain.push(layer, binding, step.node);
            }
            self.set_shape(&step.value, shape);
            v = step.value;
        }
    }

    /// A value with several consumers: a residual block or shortcut, a barrier's cluster of
    /// elementwise ops, or WaveNet's gate; as a chain of one layer, and the value after it.
    fn fork<T: Real>(&self, v: &D::Value, depth: usize) -> R<Block<D, T>, D::Error> {
        if depth >= MAX_DEPTH {
            return Err(Fault::TooDeep { limit: MAX_DEPTH }.into());
        }
        let cons = self.df.consumers(v);
        let shape = self.shape(v);
        if cons
            .iter()
            .any(|&c| matches!(self.df.view(c, &shape), View::Split(_) | View::Slice(_)))
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
            self.set_shape(&out, shape);
            let mut c = Chain::new();
            c.push(Layer::Barrier(b), None, node);
            return Ok((c, out));
        }
        residual
    }

    /// Two branches from `v` joined by an addition: a residual block, or a shortcut.
    fn residual<T: Real>(
        &self,
        v: &D::Value,
        cons: &[NodeId],
        depth: usize,
    ) -> R<Block<D, T>, D::Error> {
        let df = self.df;
        let shape = self.shape(v);
        if cons.len() != 2 {
            return Err(Fault::Fanout {
                value: self.value_name(v),
                nodes: cons.iter().map(|&c| self.name(c)).collect(),
            }
            .into());
        }
        let mut branches = Vec::new();
        for &c in cons {
            if let View::Merge(_) = df.view(c, &shape) {
                branches.push((Chain::new(), c, v.clone()));
                continue;
            }
            let (chain, end) = self.chain::<T>(v.clone(), Some(c), depth + 1)?;
            match end {
                End::Merge(m, arrived) => branches.push((chain, m, arrived)),
                _ => {
                    return Err(Fault::BranchEscapes {
                        node: self.name(c),
                        value: self.value_name(v),
                    }
                    .into());
                }
            }
        }
        let (b, a) = (branches.pop().expect("two"), branches.pop().expect("two"));
        if a.1 != b.1 {
            return Err(Fault::BranchesApart {
                node: self.name(a.1),
                other: self.name(b.1),
                value: self.value_name(v),
            }
            .into());
        }
        let m = a.1;
        let View::Merge(inputs) = df.view(m, &shape) else {
            unreachable!("a chain ends at a merge")
        };
        let same = (a.2 == inputs[0] && b.2 == inputs[1]) || (a.2 == inputs[1] && b.2 == inputs[0]);
        if !same {
            return Err(Fault::NotTheJoin {
                node: self.name(m),
                value: self.value_name(v),
            }
            .into());
        }
        let weighted = |c: &ChainOf<D, T>| {
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
            .out_shape(&shape, &[])
            .map_err(|source| Fault::Layer {
                node: self.name(m),
                source,
            })?;
        let out = self.first_output(m).expect("an addition has an output");
        self.set_shape(&out, shape);
        nodes.push((vec![0], m));
        let block = Chain {
            layers: vec![layer],
            bindings,
            nodes,
        };
        Ok((block, out))
    }

    /// A cluster of elementwise ops from `v` (its only input) to one value, computing a
    /// barrier the calculus knows: the barrier, that value, and the cluster's last node.
    fn region(&self, v: &D::Value) -> Option<(Barrier, D::Value, NodeId)> {
        let df = self.df;
        let mut nodes: BTreeSet<NodeId> = BTreeSet::new();
        let mut ops: HashMap<NodeId, ElementOp<D>> = HashMap::new();
        let mut values: Vec<D::Value> = vec![v.clone()];
        while nodes.len() < MAX_REGION {
            let next = values
                .iter()
                .flat_map(|x| df.consumers(x))
                .filter(|c| !nodes.contains(c))
                .min()?;
            let (op, args) = df.elementwise(next)?;
            let [out] = df.outputs(next).try_into().ok()?;
            for a in &args {
                match a {
                    Operand::Value(x) if values.contains(x) => {}
                    Operand::Scalar(_) => {}
                    _ => return None,
                }
            }
            nodes.insert(next);
            ops.insert(next, (op, args, out.clone()));
            values.push(out);
            let live: Vec<&D::Value> = values
                .iter()
                .filter(|x| {
                    **x == self.output || df.consumers(x).iter().any(|c| !nodes.contains(c))
                })
                .collect();
            if let [only] = live.as_slice()
                && *only != v
                && let Some(b) = Self::evaluate(v, &nodes, &ops, only)
            {
                let last = *nodes.last().expect("a node");
                return Some((b, (*only).clone(), last));
            }
        }
        None
    }

    /// The barrier the cluster computes from `v` to `out`, if it is one the calculus knows
    /// (compared on a grid of inputs).
    fn evaluate(
        v: &D::Value,
        nodes: &BTreeSet<NodeId>,
        ops: &HashMap<NodeId, ElementOp<D>>,
        out: &D::Value,
    ) -> Option<Barrier> {
        let xs: Vec<f64> = (-80..=80).map(|k| k as f64 * 0.1).collect();
        let mut vals: HashMap<&D::Value, Vec<f64>> = HashMap::new();
        vals.insert(v, xs.clone());
        for i in nodes {
            let (op, args, y) = &ops[i];
            let arg = |k: usize| -> Option<Vec<f64>> {
                match args.get(k)? {
                    Operand::Value(x) => vals.get(x).cloned(),
                    Operand::Scalar(c) => Some(vec![*c; xs.len()]),
                    Operand::Other => None,
                }
            };
            let a = arg(0)?;
            let b = if args.len() > 1 {
                arg(1)?
            } else {
                vec![0.0; xs.len()]
            };
            let r: Vec<f64> = a.iter().zip(&b).map(|(&x, &z)| op.apply(x, z)).collect();
            vals.insert(y, r);
        }
        identify(&xs, vals.get(out)?)
    }

    /// WaveNet's gate: `v` split in halves along the channels (one split, or two slices), the
    /// tanh of the first, the sigmoid of the second, their product.
    fn gate<T: Real>(
        &self,
        v: &D::Value,
        cons: &[NodeId],
    ) -> R<(Layer<T>, D::Value, NodeId), D::Error> {
        let df = self.df;
        let shape = self.shape(v);
        let c = shape[0];
        let fail = |i: NodeId, why: GateFault| -> WalkError<D::Error> {
            Fault::NotAGate {
                node: self.name(i),
                value: self.value_name(v),
                why,
            }
            .into()
        };
        let halves: [D::Value; 2] = match cons {
            [s] => match df.view(*s, &shape) {
                View::Split(Some(halves)) if c.is_multiple_of(2) => halves,
                View::Split(_) => return Err(fail(*s, GateFault::NotHalves)),
                _ => return Err(fail(*s, GateFault::SharedInput)),
            },
            [a, b] => {
                let h = c / 2;
                let range = |i: NodeId| match df.view(i, &shape) {
                    View::Slice(r) => r,
                    _ => None,
                };
                let (first, second) = match (range(*a), range(*b)) {
                    (Some(x), Some(y)) if x == (0..h) && y == (h..c) => (*a, *b),
                    (Some(x), Some(y)) if y == (0..h) && x == (h..c) => (*b, *a),
                    (Some(_), Some(_)) => return Err(fail(*a, GateFault::NotHalves)),
                    _ => return Err(fail(cons[0], GateFault::SharedInput)),
                };
                if !c.is_multiple_of(2) {
                    return Err(fail(*a, GateFault::OddChannels));
                }
                let out = |i: NodeId| self.first_output(i).expect("a slice has an output");
                [out(first), out(second)]
            }
            _ => return Err(fail(cons[0], GateFault::SharedInput)),
        };
        let only = |x: &D::Value, want: Elementwise| -> Option<NodeId> {
            match df.consumers(x).as_slice() {
                [i] if df.elementwise(*i).is_some_and(|(op, _)| op == want)
                    && *x != self.output =>
                {
                    Some(*i)
                }
                _ => None,
            }
        };
        let (Some(t), Some(s)) = (
            only(&halves[0], Elementwise::Tanh),
            only(&halves[1], Elementwise::Sigmoid),
        ) else {
            return Err(fail(cons[0], GateFault::NotTanhSigmoid));
        };
        let (to, so) = (
            self.first_output(t).expect("an output"),
            self.first_output(s).expect("an output"),
        );
        let (Some(m), Some(m2)) = (only(&to, Elementwise::Mul), only(&so, Elementwise::Mul)) else {
            return Err(fail(cons[0], GateFault::NotMultiplied));
        };
        if m != m2 {
            return Err(fail(cons[0], GateFault::NotMultiplied));
        }
        let out = self.first_output(m).expect("a product has an output");
        let mut half = shape.clone();
        half[0] = c / 2;
        self.set_shape(&out, half);
        Ok((Layer::Barrier(Barrier::Gate), out, m))
    }
}

/// Lowers a front-end's graph onto the calculus: a network, the bindings of its parameter
/// layers, the node of every layer, the head.
///
/// # Errors
///
/// [`WalkError::Frontend`] with what the front-end said of a node it cannot lower;
/// [`WalkError::Graph`] for a topology the calculus cannot read ([`Fault`]).
pub fn lower<D: Dataflow, T: Real>(df: &D) -> Walked<D, T> {
    let (input, sample) = df.input();
    let w = Walker {
        df,
        output: df.output(),
        shapes: RefCell::default(),
    };
    w.set_shape(&input, sample.clone());
    let (chain, end) = w.chain::<T>(input, None, 0)?;
    let (head, site) = match end {
        End::Output => (None, df.output()),
        End::Head(h, i, v) => (Some((h, i)), v),
        End::Merge(m, _) => return Err(Fault::StrayJoin { node: w.name(m) }.into()),
    };
    if !chain.layers.iter().any(has_weights) {
        return Err(Fault::NoWeights.into());
    }
    let network = Network::new(sample, chain.layers).map_err(|e| match e {
        CanonicalError::Input { .. } => Fault::Input(e),
        e => Fault::Network(e),
    })?;
    if let Some((h, _)) = &head
        && h.axes.end > network.output_shape().len()
    {
        return Err(Fault::HeadMismatch {
            node: h.node.clone(),
        }
        .into());
    }
    Ok(Lowered {
        network,
        bindings: chain.bindings,
        nodes: chain.nodes,
        head,
        site,
    })
}
