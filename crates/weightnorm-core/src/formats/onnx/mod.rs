//! The ONNX front-end of the canonical form: an ONNX model in, a [`Network`] of the calculus and
//! the places of its parameters in the graph ([`Binding`]s) out; the canonical (or
//! reconstituted) weights back into the same graph, with one `Mul` by `canonical.scale` before
//! its output.
//!
//! ONNX files are read and written through `prost` and ONNX's published schema ([`proto`]: every
//! message and field of `onnx.proto`, so that nothing of a model is lost on the way through).
//! Weights kept beside the graph (external data) are read, from files under the model's
//! directory only.
//!
//! # What the graph may hold
//!
//! The graph runs from one input (`[batch, ..one sample]`, the sample's shape known) to one
//! output, and is read as a chain of layers from the input on:
//!
//! | ONNX | the calculus |
//! |---|---|
//! | `Gemm` (`transA = 0`, either `transB`, any `alpha`, `beta`), `MatMul` (optionally followed by an `Add` of the bias) | a linear layer |
//! | `Conv` (1-D and 2-D: strides, symmetric pads, dilations, groups, `auto_pad`) | a convolution |
//! | `Relu`, `LeakyRelu`, `PRelu` (one slope, or one per channel), `Identity`, `Dropout` (inference) | homogeneous activations |
//! | `MaxPool`, `AveragePool` (2-D; padding counted), `GlobalAveragePool`, `GlobalMaxPool`, `ReduceMean` over the spatial axes | pooling |
//! | `Flatten` (axis 1), a `Reshape` to `[batch, -1]` (its shape computed or constant), a `Squeeze` of `[N, C, 1, 1]` | flatten |
//! | `BatchNormalization` (inference) | a batch norm, folded into the layer before it |
//! | `Add`, `Sub` of a per-channel constant; `Mul`, `Div` by one | a shift; a multiplier |
//! | `Add` of two branches | a residual block, or a shortcut (`y = skip(x) + body(x)`, a projection shortcut) |
//! | `Tanh`, `Sigmoid`, `Gelu`, any cluster of elementwise ops computing one of them (the `Erf` form of GELU), WaveNet's gate (`Split` or two `Slice`s, `Tanh`, `Sigmoid`, `Mul`), `Softmax` on a flat activation | barriers |
//! | a trailing `Softmax` or `LogSoftmax` | the head: the scale goes before it |
//!
//! Shape computations (`Shape`, `Gather`, `Concat`, `Unsqueeze`, `Slice`, arithmetic, `Cast`,
//! `Constant`) are evaluated where an op needs their values. Anything else on the way from the
//! input to the output is an [`OnnxError::Node`] naming the node and its op type, with a typed
//! reason ([`NodeFault`]).
//!
//! # Files
//!
//! `proto.rs` the messages; `tensor.rs` tensors inline or external; `graph.rs` the graph
//! indexed and its constants evaluated (`consts.rs` the arithmetic); `lower.rs` this
//! front-end's [`Dataflow`](crate::graph::Dataflow) for the core's graph lowering
//! ([`crate::graph::lower`], which walks forks, residual blocks, barrier clusters, the gate and
//! the head for every front-end) and the per-op lowering of layers without parameters;
//! `layers.rs` the layers with parameters; `read.rs` the two together; `write.rs` canonical
//! weights back into the graph; `fault.rs` the typed reasons.
//!
//! # Writing
//!
//! [`write_model`] copies the model with every bound initializer replaced (an initializer
//! shared with other nodes, or computed in the graph, gets a fresh name for this node), and,
//! for the canonical form, the output rewired through `Mul(.., canonical.scale)` (before the
//! head where there is one): any ONNX runtime computes the original outputs from it. A batch
//! norm is written as `scale = a`, `B = c`, `mean = 0`, `var = 1 - epsilon`.
//!
//! ```no_run
//! use weightnorm_core::canonical::canonicalize;
//! use weightnorm_core::formats::onnx::{OnnxModel, write_model};
//!
//! let model = OnnxModel::open("model.onnx".as_ref()).unwrap();
//! let read = model.network::<f32>().unwrap();
//! let c = canonicalize(read.network.clone()).unwrap();
//! let out = write_model(&model, &read.graph, c.network(), Some(c.scale())).unwrap();
//! std::fs::write("canonical.onnx", weightnorm_core::formats::onnx::encode(&out).unwrap()).unwrap();
//! ```

mod consts;
mod fault;
mod fold;
mod graph;
mod layers;
mod lower;
pub mod proto;
mod read;
mod tensor;
mod write;

use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::canonical::{CanonicalError, Network, Real};

pub use crate::graph::Head;
/// The bytes a model is decoded from (views of one buffer, cheap to clone).
pub use bytes::Bytes;
pub use fault::{ConstFault, ModelFault, NodeFault, TensorFault};
pub use fold::WeightNormSubgraph;
pub use write::{CANONICAL_SCALE, encode, write_model};

/// Why an ONNX model could not be read, mapped onto the calculus, or written.
#[derive(Debug, Clone, Error)]
#[non_exhaustive]
pub enum OnnxError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The system's error.
        #[source]
        source: std::sync::Arc<std::io::Error>,
    },
    /// The bytes are not an ONNX model (a protobuf decoding error).
    #[error("not an ONNX model: {0}")]
    Decode(#[source] prost::DecodeError),
    /// The model as a whole cannot be read as a network (no graph, several inputs or outputs,
    /// an old opset, a graph out of order), or written.
    #[error(transparent)]
    Model(ModelFault),
    /// A node cannot be mapped onto the calculus.
    #[error("node {node} ({op}): {reason}")]
    Node {
        /// The node's name (`<op>#<index>` for a node without one).
        node: String,
        /// Its op type.
        op: String,
        /// What is wrong (boxed: it is the largest variant).
        reason: Box<NodeFault>,
    },
    /// A tensor (initializer or constant) is malformed.
    #[error("tensor `{name}`: {reason}")]
    Tensor {
        /// The tensor's name.
        name: String,
        /// What is wrong.
        reason: TensorFault,
    },
    /// The layers do not fit together, or the canonical values do not fit their types.
    #[error(transparent)]
    Network(Box<CanonicalError>),
    /// The graph's topology cannot be read as a network (the core's graph lowering).
    #[error(transparent)]
    Graph(Box<crate::graph::Fault>),
}

impl From<CanonicalError> for OnnxError {
    fn from(e: CanonicalError) -> Self {
        Self::Network(Box::new(e))
    }
}

impl From<crate::graph::Fault> for OnnxError {
    fn from(f: crate::graph::Fault) -> Self {
        Self::Graph(Box::new(f))
    }
}

/// Where a layer's parameters live in the graph.
#[derive(Clone, Debug, PartialEq)]
pub struct Binding {
    /// The layer's position in the network.
    pub path: Vec<usize>,
    /// The name of the node that computes the layer (`<op>#<index>` for a node without one).
    pub node: String,
    /// Its op type (`MatMul+Add` for a matrix product and its bias).
    pub op: String,
    /// The initializer holding the weight (or the multiplier, or the shift), where there is one.
    pub param: Option<String>,
    pub(crate) slots: Vec<lower::Slot>,
}

/// Where a network's layers live in its ONNX graph: the nodes, the initializers of their
/// parameters, the head, and the place for the output scale.
#[derive(Clone, Debug, PartialEq)]
pub struct GraphMap {
    /// One binding per layer with parameters, in the order of the graph.
    pub bindings: Vec<Binding>,
    /// The node of every layer (by position; a residual block's is its `Add`, a barrier's the
    /// last node of its cluster).
    pub nodes: Vec<(Vec<usize>, String)>,
    /// A trailing `Softmax` or `LogSoftmax`, which the network leaves out.
    pub head: Option<Head>,
    /// The name of the graph's input.
    pub input_name: String,
    /// The name of the graph's output.
    pub output_name: String,
    pub(crate) site: lower::Site,
}

impl GraphMap {
    /// The node of the layer at `path`.
    pub fn node_at(&self, path: &[usize]) -> Option<&str> {
        self.nodes
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, n)| n.as_str())
    }

    /// The binding of the layer at `path`, if it has parameters.
    pub fn binding_at(&self, path: &[usize]) -> Option<&Binding> {
        self.bindings.iter().find(|b| b.path == path)
    }

    /// The graph's outputs from a network's outputs of one sample's shape `shape`: the head
    /// applied, where there is one.
    ///
    /// # Panics
    ///
    /// If an output does not have `shape`'s size.
    pub fn with_head(&self, mut outputs: Vec<Vec<f64>>, shape: &[usize]) -> Vec<Vec<f64>> {
        if let Some(h) = &self.head {
            for y in &mut outputs {
                h.apply(y, shape);
            }
        }
        outputs
    }
}

/// A network read from an ONNX graph, and where its layers live in the graph.
#[derive(Clone, Debug, PartialEq)]
pub struct OnnxNetwork<T: Real = f64> {
    /// The network (one sample's shape, without the batch axis).
    pub network: Network<T>,
    /// Its nodes and parameters in the graph.
    pub graph: GraphMap,
}

impl<T: Real> OnnxNetwork<T> {
    /// What the graph computes on a batch of samples (each flattened, of the input's size):
    /// the network, then the head.
    ///
    /// # Panics
    ///
    /// If a sample does not have the input's size.
    pub fn forward(&self, inputs: &[Vec<f64>]) -> Vec<Vec<f64>> {
        let shape = self.network.output_shape();
        self.graph.with_head(self.network.forward(inputs), &shape)
    }
}

/// An ONNX model, decoded, with the directory its external data is read from.
#[derive(Clone)]
pub struct OnnxModel {
    /// The model.
    pub proto: proto::ModelProto,
    dir: Option<PathBuf>,
    external: tensor::External,
}

impl std::fmt::Debug for OnnxModel {
    /// A summary: the producer, the sizes of the graph, the directory (not the weights).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let g = self.proto.graph.as_ref();
        f.debug_struct("OnnxModel")
            .field("ir_version", &self.proto.ir_version)
            .field("producer_name", &self.proto.producer_name)
            .field("nodes", &g.map_or(0, |g| g.node.len()))
            .field("initializers", &g.map_or(0, |g| g.initializer.len()))
            .field("dir", &self.dir)
            .finish()
    }
}

impl OnnxModel {
    /// Opens an ONNX file (memory-mapped: the weights are views of the file) and checks that
    /// the locations of its external data name files under its directory.
    ///
    /// # Errors
    ///
    /// [`OnnxError::Io`] if the file cannot be read; [`OnnxError::Decode`] if it is not a
    /// protobuf `ModelProto`; [`OnnxError::Tensor`] for an external-data location outside the
    /// model's directory.
    pub fn open(path: &Path) -> Result<Self, OnnxError> {
        let bytes = tensor::map_file(path)?;
        let dir = path
            .parent()
            .map(|p| {
                if p.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    p
                }
            })
            .unwrap_or(Path::new("."))
            .to_path_buf();
        Self::decode(bytes, Some(dir))
    }

    /// A model from its bytes; external data is read from `dir` (refused without one).
    ///
    /// # Errors
    ///
    /// As [`OnnxModel::open`].
    pub fn decode(bytes: bytes::Bytes, dir: Option<PathBuf>) -> Result<Self, OnnxError> {
        let proto =
            <proto::ModelProto as prost::Message>::decode(bytes).map_err(OnnxError::Decode)?;
        let external = tensor::External::new(dir.clone());
        let model = Self {
            proto,
            dir,
            external,
        };
        model.external_files()?;
        Ok(model)
    }

    /// The files any tensor's external data lies in (each once): initializers, sparse
    /// initializers, and the tensors of nodes' attributes (a `Constant` node's value), in
    /// subgraphs too; checked to be under the model's directory. They are inputs as much as the
    /// model itself is.
    ///
    /// # Errors
    ///
    /// [`OnnxError::Tensor`] for a location that is absolute, leaves the directory, or is given
    /// without a directory to read it from.
    pub fn external_files(&self) -> Result<Vec<PathBuf>, OnnxError> {
        let mut files: Vec<PathBuf> = Vec::new();
        if let Some(g) = &self.proto.graph {
            let mut err = None;
            each_tensor(g, &mut |t| {
                if err.is_some() {
                    return;
                }
                match self.external.location(t) {
                    Ok(Some(f)) if !files.contains(&f) => files.push(f),
                    Ok(_) => {}
                    Err(e) => err = Some(e),
                }
            });
            if let Some(e) = err {
                return Err(e);
            }
        }
        Ok(files)
    }

    /// `proto` with every tensor's external data (initializers, sparse initializers, nodes'
    /// attributes, subgraphs) read in from this model's files: a model that stands on its own,
    /// wherever it is written.
    ///
    /// # Errors
    ///
    /// The errors of reading the external data.
    pub fn standalone(&self, mut proto: proto::ModelProto) -> Result<proto::ModelProto, OnnxError> {
        if let Some(g) = &mut proto.graph {
            each_tensor_mut(g, &mut |t| {
                *t = tensor::inlined(t, &self.external)?;
                Ok(())
            })?;
        }
        Ok(proto)
    }

    /// The directory external data is read from.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// Whether a weight is stored in `f64`: the network is then best read as `f64`.
    pub fn has_f64_weights(&self) -> bool {
        self.proto.graph.as_ref().is_some_and(|g| {
            g.initializer
                .iter()
                .any(|t| t.data_type == Some(proto::data_type::DOUBLE))
        })
    }

    /// Maps the graph onto the calculus (see the [module docs](self) for what it may hold).
    /// Weights are converted to `T` as they are read.
    ///
    /// # Errors
    ///
    /// [`OnnxError::Model`] for a graph that is not one chain from one input to one output;
    /// [`OnnxError::Node`] naming the first node that cannot be mapped (an unsupported op, a
    /// weight that is not a constant, attributes the calculus cannot express);
    /// [`OnnxError::Tensor`] for a malformed or non-finite tensor; [`OnnxError::Network`] for
    /// layers that do not fit together.
    pub fn network<T: Real>(&self) -> Result<OnnxNetwork<T>, OnnxError> {
        read::read(self)
    }
}

/// Calls `f` on every tensor `g` holds: initializers, sparse initializers' values and indices,
/// and the tensors of its nodes' attributes, in subgraphs too.
fn each_tensor<'a>(g: &'a proto::GraphProto, f: &mut dyn FnMut(&'a proto::TensorProto)) {
    for t in &g.initializer {
        f(t);
    }
    for s in &g.sparse_initializer {
        s.values.iter().chain(&s.indices).for_each(&mut *f);
    }
    for n in &g.node {
        for a in &n.attribute {
            a.t.iter().chain(&a.tensors).for_each(&mut *f);
            for s in a.sparse_tensor.iter().chain(&a.sparse_tensors) {
                s.values.iter().chain(&s.indices).for_each(&mut *f);
            }
            for sub in a.g.iter().chain(&a.graphs) {
                each_tensor(sub, f);
            }
        }
    }
}

/// [`each_tensor`], mutably, stopping at the first error.
fn each_tensor_mut(
    g: &mut proto::GraphProto,
    f: &mut dyn FnMut(&mut proto::TensorProto) -> Result<(), OnnxError>,
) -> Result<(), OnnxError> {
    for t in &mut g.initializer {
        f(t)?;
    }
    for s in &mut g.sparse_initializer {
        for t in s.values.iter_mut().chain(s.indices.iter_mut()) {
            f(t)?;
        }
    }
    for n in &mut g.node {
        for a in &mut n.attribute {
            for t in a.t.iter_mut().chain(a.tensors.iter_mut()) {
                f(t)?;
            }
            for s in a
                .sparse_tensor
                .iter_mut()
                .chain(a.sparse_tensors.iter_mut())
            {
                for t in s.values.iter_mut().chain(s.indices.iter_mut()) {
                    f(t)?;
                }
            }
            for sub in a.g.iter_mut().chain(a.graphs.iter_mut()) {
                each_tensor_mut(sub, f)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
