//! The live-module front-end of the canonical form: a Burn module in, a [`Network`] and the
//! [`ParamId`]s of its layers ([`LiveBinding`]s) out; the canonical (or rescaled) weights written
//! back into the module in place, every parameter keeping its id, so that an optimizer's state,
//! which Burn keys by [`ParamId`], still finds it.
//!
//! It is the analogue of the architecture-file front-end ([`crate::torch::arch`]): there a JSON
//! file names the layers and a checkpoint holds their tensors; here the module names its layers
//! itself, by implementing [`Canonicalizable`]: one input sample's shape and its layers in the
//! order its forward pass applies them ([`LiveLayer`]), borrowing Burn's own layer modules. The
//! calculus ([`crate::canonical`]) never sees a Burn type: [`describe`] reads the module into a
//! [`Network`] (host memory, `f64`), [`write`](fn@write) puts a network's weights back.
//!
//! ```
//! use burn::module::Module;
//! use burn::nn::{Linear, LinearConfig};
//! use burn::tensor::{Device, Tensor};
//! use weightnorm::canonical::global_gain;
//! use weightnorm::live::{Canonicalizable, LiveLayer, canonicalize_module};
//!
//! #[derive(Module, Debug)]
//! struct Mlp {
//!     hidden: Linear,
//!     out: Linear,
//! }
//!
//! impl Canonicalizable for Mlp {
//!     fn input_shape(&self) -> Vec<usize> {
//!         vec![4]
//!     }
//!     fn layers(&self) -> Vec<LiveLayer<'_>> {
//!         vec![LiveLayer::Linear(&self.hidden), LiveLayer::Relu, LiveLayer::Linear(&self.out)]
//!     }
//! }
//!
//! impl Mlp {
//!     fn forward(&self, x: Tensor<2>) -> Tensor<2> {
//!         self.out.forward(burn::tensor::activation::relu(self.hidden.forward(x)))
//!     }
//! }
//!
//! let device = Device::flex();
//! let mlp = Mlp {
//!     hidden: LinearConfig::new(4, 8).init(&device),
//!     out: LinearConfig::new(8, 3).init(&device),
//! };
//! let x = Tensor::<2>::ones([2, 4], &device);
//! let (canonical, rescaling) = canonicalize_module(&mlp, None).unwrap();
//! // Same function, same parameter ids; the hidden layer's rows now have unit norm.
//! let diff = (canonical.forward(x.clone()) - mlp.forward(x)).abs().max();
//! assert!(diff.into_scalar::<f32>() < 1e-5);
//! assert_eq!(canonical.hidden.weight.id, mlp.hidden.weight.id);
//! assert_eq!(rescaling.gain_before, rescaling.gain_after);
//! assert!((global_gain(&rescaling.scale_before) - rescaling.gain_before).abs() < 1e-12);
//! ```
//!
//! Which layers: `Linear`, `Conv1d`, `Conv2d` (symmetric padding), ReLU and leaky ReLU,
//! identity (and dropout, which is the identity at inference), max and average pooling (2-D;
//! no dilation, no ceil mode), adaptive average pooling whose output divides its input
//! (global average pooling), flatten, residual blocks and the barriers (tanh, sigmoid, GELU,
//! the WaveNet gate). A batch norm in training mode is not a per-channel affine map: a module
//! with one reports it as [`LiveLayer::Unsupported`] and is refused.
//!
//! Reparameterized weights (weight norm, LoRA) are read through their effective value, so
//! [`describe`] and the gain work on them; [`write`](fn@write) refuses them
//! ([`LiveError::Reparameterized`]): see [`crate::pcr`] for why PCR does not act on weight norm.

mod write;

use std::collections::BTreeSet;

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::nn::conv::{Conv1d, Conv2d};
use burn::nn::pool::{AdaptiveAvgPool2d, AvgPool2d, MaxPool2d};
use burn::nn::{Linear, PaddingConfig1d, PaddingConfig2d};
use burn::tensor::Tensor;
use thiserror::Error;

use crate::LayerKind;
use crate::canonical::{
    Activation, Barrier, CanonicalError, ConvGeometry, Layer, LayerPath, Namer, Network, Pool,
    Rows, Weighted, child, path_name,
};

pub(crate) use write::check_writable;
pub use write::{LiveFactors, Rescaling, canonicalize_module, write};

/// One layer of a live module as the canonical form sees it, borrowing the Burn module that
/// holds its parameters.
#[derive(Clone, Debug)]
pub enum LiveLayer<'a> {
    /// `burn::nn::Linear` (weight `[d_input, d_output]`).
    Linear(&'a Linear),
    /// `burn::nn::conv::Conv1d`.
    Conv1d(&'a Conv1d),
    /// `burn::nn::conv::Conv2d`.
    Conv2d(&'a Conv2d),
    /// ReLU.
    Relu,
    /// Leaky ReLU with this negative slope (PReLU at inference with its learned slope).
    LeakyRelu(f64),
    /// The identity; also dropout (the canonical form describes the network at inference).
    Identity,
    /// `burn::nn::pool::MaxPool2d`.
    MaxPool2d(&'a MaxPool2d),
    /// `burn::nn::pool::AvgPool2d`.
    AvgPool2d(&'a AvgPool2d),
    /// `burn::nn::pool::AdaptiveAvgPool2d` whose output size divides its input size (global
    /// average pooling is `[1, 1]`).
    AdaptiveAvgPool2d(&'a AdaptiveAvgPool2d),
    /// Flattens `[C, ..]` to one axis, channel-major (`tensor.flatten(1, D - 1)` on a batch).
    Flatten,
    /// A non-homogeneous activation (tanh, sigmoid, GELU, the gate): the scale stops there.
    Barrier(Barrier),
    /// `y = x + body(x)`.
    Residual(Vec<LiveLayer<'a>>),
    /// A layer the calculus cannot pass (a batch norm in training mode, an attention block):
    /// the module is refused, naming it.
    Unsupported(&'static str),
}

/// A Burn module that can name its layers for the canonical form: what a user implements to
/// canonicalize a model, or train it with [PCR](crate::pcr).
///
/// `layers` lists the layers in the order the forward pass applies them, with the activations,
/// pooling and flattening between them; `input_shape` is one sample's shape (`[features]`,
/// `[channels, length]` or `[channels, height, width]`). The description must compute what the
/// module computes: [`describe`] checks that the layers fit together, and
/// [`crate::canonical::verify`] on the described network checks the rest.
pub trait Canonicalizable: Module {
    /// One input sample's shape.
    fn input_shape(&self) -> Vec<usize>;
    /// The layers, in the order the forward pass applies them.
    fn layers(&self) -> Vec<LiveLayer<'_>>;
}

/// Why a live module could not be described, rescaled or written.
#[derive(Debug, Clone, PartialEq, Error)]
#[non_exhaustive]
pub enum LiveError {
    /// A layer the front-end cannot describe.
    #[error("layer {} ({op}): {fault}", path_name(at))]
    Layer {
        /// The layer's position in the description.
        at: Vec<usize>,
        /// Its op.
        op: &'static str,
        /// What is wrong.
        fault: LiveFault,
    },
    /// A parameter to be written carries a reparameterization.
    #[error("layer {}: {}", path_name(at), self.reason())]
    Reparameterized {
        /// The layer's position.
        at: Vec<usize>,
        /// `weight` or `bias`.
        param: &'static str,
        /// The reparameterization's name (`weight_norm`, `lora`).
        reparameterization: String,
    },
    /// A binding names a parameter the module being written does not hold.
    #[error("layer {}: {}", path_name(at), self.reason())]
    MissingParam {
        /// The layer's position.
        at: Vec<usize>,
        /// `weight` or `bias`.
        param: &'static str,
        /// The parameter's id.
        id: u64,
    },
    /// A requested maximum gain that is not positive and finite.
    #[error("the maximum gain must be positive and finite, got {0}")]
    MaxGain(f64),
    /// The calculus refused the network.
    #[error(transparent)]
    Calculus(#[from] CanonicalError),
}

/// What is wrong with one layer of a live module's description ([`LiveError::Layer`]).
#[derive(Debug, Clone, PartialEq, Error)]
#[non_exhaustive]
pub enum LiveFault {
    /// A layer receiving another number of spatial axes than it has.
    #[error("takes [channels{}], receives shape {shape:?}", ", length".repeat(*.spatial))]
    SpatialAxes {
        /// Its spatial axes.
        spatial: usize,
        /// The shape it receives.
        shape: Vec<usize>,
    },
    /// Padding that differs between the two sides of an axis.
    #[error(
        "{axis} padding {sides:?} differs between the two sides; the calculus takes symmetric \
         padding"
    )]
    AsymmetricPadding {
        /// Which axis (`the`, `the vertical`, `the horizontal`).
        axis: &'static str,
        /// The padding before and after.
        sides: (usize, usize),
    },
    /// Max pooling with dilation or ceil mode.
    #[error("dilation and ceil mode are not in the calculus")]
    PoolMode,
    /// Average pooling with ceil mode, or padding left out of the count.
    #[error("ceil mode, and padding left out of the count, are not in the calculus")]
    AvgPoolMode,
    /// Adaptive pooling whose windows are not equal.
    #[error("an output of {output:?} does not divide the input {input:?} into equal windows")]
    AdaptiveWindows {
        /// The pooled size.
        output: [usize; 2],
        /// The input's spatial size.
        input: Vec<usize>,
    },
    /// A residual body changing the shape the skip path carries.
    #[error("the body produces shape {body:?} but the skip path carries {skip:?}")]
    ResidualShape {
        /// The body's output shape.
        body: Vec<usize>,
        /// The block's input shape.
        skip: Vec<usize>,
    },
    /// A layer the calculus cannot pass.
    #[error("not a layer the canonical form can pass (it is not a rescaling-equivariant map)")]
    Unsupported,
    /// A description with no weighted layer.
    #[error("has no weighted layer")]
    NoWeights,
    /// A binding that does not fit the network's layer when writing back.
    #[error("the binding of a {kind:?} weight of shape {shape:?} does not fit this layer")]
    BindingMismatch {
        /// The binding's layer kind.
        kind: LayerKind,
        /// The weight's shape.
        shape: Vec<usize>,
    },
}

impl LiveError {
    /// What is wrong, without the layer's position.
    pub fn reason(&self) -> String {
        match self {
            Self::Layer { fault, .. } => fault.to_string(),
            Self::Reparameterized {
                param,
                reparameterization,
                ..
            } => format!(
                "its `{param}` carries a `{reparameterization}` reparameterization; rescaling \
                 writes plain weights (remove it first, e.g. with `remove_weight_norm`)"
            ),
            Self::MissingParam { param, id, .. } => {
                format!("the module holds no parameter {id} (its `{param}`)")
            }
            Self::Calculus(e) => e.reason(),
            e @ Self::MaxGain(_) => e.to_string(),
        }
    }

    /// The message with the layer named by `namer` (a module's parameter path, say) instead of
    /// its position.
    pub fn render(&self, namer: &dyn Namer) -> String {
        match self {
            Self::Layer { at, op, fault } => format!("layer {} ({op}): {fault}", namer.name(at)),
            Self::Reparameterized { at, .. } | Self::MissingParam { at, .. } => {
                format!("layer {}: {}", namer.name(at), self.reason())
            }
            Self::Calculus(e) => e.render(namer),
            e @ Self::MaxGain(_) => e.to_string(),
        }
    }
}

/// What a layer with parameters is in the live module.
#[derive(Clone, Debug, PartialEq)]
pub struct LiveBinding {
    /// The layer's position in the network.
    pub path: Vec<usize>,
    /// Its kind (the layout table's: [`LayerKind::Linear`], [`LayerKind::Conv1d`],
    /// [`LayerKind::Conv2d`]).
    pub kind: LayerKind,
    /// The weight's id.
    pub weight: ParamId,
    /// The bias's id.
    pub bias: Option<ParamId>,
    /// The weight's shape, in Burn's layout.
    pub shape: Vec<usize>,
    /// Channel groups (1 for a linear layer).
    pub groups: usize,
}

/// A live module read as a network, with the parameter ids of its layers.
#[derive(Clone, Debug, PartialEq)]
pub struct LiveNetwork {
    /// The network (host memory, `f64`).
    pub network: Network<f64>,
    /// One binding per weighted layer, in order (depth first through residual bodies).
    pub bindings: Vec<LiveBinding>,
}

/// A weighted layer of a live module.
#[derive(Clone, Copy, Debug)]
pub(crate) enum WeightedRef<'a> {
    Linear(&'a Linear),
    Conv1d(&'a Conv1d),
    Conv2d(&'a Conv2d),
}

impl WeightedRef<'_> {
    pub(crate) fn kind(self) -> LayerKind {
        match self {
            Self::Linear(_) => LayerKind::Linear,
            Self::Conv1d(_) => LayerKind::Conv1d,
            Self::Conv2d(_) => LayerKind::Conv2d,
        }
    }

    fn ids(self) -> (ParamId, Option<ParamId>) {
        fn bias_id(b: &Option<Param<Tensor<1>>>) -> Option<ParamId> {
            b.as_ref().map(|b| b.id)
        }
        match self {
            Self::Linear(l) => (l.weight.id, bias_id(&l.bias)),
            Self::Conv1d(l) => (l.weight.id, bias_id(&l.bias)),
            Self::Conv2d(l) => (l.weight.id, bias_id(&l.bias)),
        }
    }

    fn shape(self) -> Vec<usize> {
        match self {
            Self::Linear(l) => l.weight.lazy_shape().to_vec(),
            Self::Conv1d(l) => l.weight.lazy_shape().to_vec(),
            Self::Conv2d(l) => l.weight.lazy_shape().to_vec(),
        }
    }

    fn groups(self) -> usize {
        match self {
            Self::Linear(_) => 1,
            Self::Conv1d(l) => l.groups,
            Self::Conv2d(l) => l.groups,
        }
    }

    /// The weight's effective values, in Burn's layout, and the bias's.
    fn values(self) -> (Vec<f64>, Option<Vec<f64>>) {
        fn host<const D: usize>(t: Tensor<D>) -> Vec<f64> {
            t.into_data()
                .try_into_vec_as::<f64>()
                .expect("a float tensor converts to f64")
        }
        let bias = |b: &Option<Param<Tensor<1>>>| b.as_ref().map(|b| host(b.val()));
        match self {
            Self::Linear(l) => (host(l.weight.val()), bias(&l.bias)),
            Self::Conv1d(l) => (host(l.weight.val()), bias(&l.bias)),
            Self::Conv2d(l) => (host(l.weight.val()), bias(&l.bias)),
        }
    }
}

/// The padding of one axis when it is the same on both sides.
fn symmetric(pair: (usize, usize), axis: &'static str) -> Result<usize, LiveFault> {
    if pair.0 == pair.1 {
        Ok(pair.0)
    } else {
        Err(LiveFault::AsymmetricPadding { axis, sides: pair })
    }
}

/// Burn's `Same` padding of one axis (`(start, end)`).
fn same_padding(kernel: usize, stride: usize, size: usize) -> (usize, usize) {
    let out = size.div_ceil(stride.max(1));
    let total = if out > 0 {
        ((out - 1) * stride + kernel).saturating_sub(size)
    } else {
        0
    };
    (total / 2, total - total / 2)
}

fn padding_1d(p: &PaddingConfig1d, n: usize, k: usize, s: usize) -> Result<usize, LiveFault> {
    symmetric(
        match p {
            PaddingConfig1d::Valid => (0, 0),
            PaddingConfig1d::Same => same_padding(k, s, n),
            PaddingConfig1d::Explicit(a, b) => (*a, *b),
        },
        "the",
    )
}

fn padding_2d(
    p: &PaddingConfig2d,
    hw: [usize; 2],
    k: [usize; 2],
    s: [usize; 2],
) -> Result<[usize; 2], LiveFault> {
    let (h, w) = match p {
        PaddingConfig2d::Valid => ((0, 0), (0, 0)),
        PaddingConfig2d::Same => (
            same_padding(k[0], s[0], hw[0]),
            same_padding(k[1], s[1], hw[1]),
        ),
        PaddingConfig2d::Explicit(top, left, bottom, right) => ((*top, *bottom), (*left, *right)),
    };
    Ok([
        symmetric(h, "the vertical")?,
        symmetric(w, "the horizontal")?,
    ])
}

/// One node of a module's plan: its layers with their shapes, before any value is read.
#[derive(Clone, Debug)]
pub(crate) enum Node<'a> {
    /// A weighted layer: its module, its geometry and its output units.
    Weighted {
        layer: WeightedRef<'a>,
        geometry: Option<ConvGeometry>,
        out: usize,
    },
    /// A layer without parameters (activation, pooling, flatten, barrier), as the calculus
    /// describes it, and the shape it receives.
    Plain {
        layer: Layer<f64>,
        input: Vec<usize>,
    },
    /// A residual block.
    Residual(Vec<Node<'a>>),
}

/// A module's layers with their shapes.
#[derive(Clone, Debug)]
pub(crate) struct Plan<'a> {
    pub(crate) input: Vec<usize>,
    pub(crate) nodes: Vec<Node<'a>>,
}

/// The plan of a module: its layers checked to fit together, without reading a value.
pub(crate) fn plan<M: Canonicalizable>(module: &M) -> Result<Plan<'_>, LiveError> {
    let input = module.input_shape();
    if input.is_empty() || input.contains(&0) {
        return Err(CanonicalError::Input { shape: input }.into());
    }
    let (nodes, _) = plan_layers(module.layers(), &input, &[])?;
    Ok(Plan { input, nodes })
}

fn plan_layers<'a>(
    layers: Vec<LiveLayer<'a>>,
    input: &[usize],
    path: &LayerPath,
) -> Result<(Vec<Node<'a>>, Vec<usize>), LiveError> {
    let mut shape = input.to_vec();
    let mut nodes = Vec::with_capacity(layers.len());
    for (i, l) in layers.into_iter().enumerate() {
        let name = child(path, i);
        let (node, next) = plan_one(l, &shape, &name)?;
        nodes.push(node);
        shape = next;
    }
    Ok((nodes, shape))
}

/// The calculus's description of a weighted layer without its values (for shapes only).
fn shell(geometry: Option<ConvGeometry>, out: usize, row_len: usize) -> Layer<f64> {
    Layer::Weighted(Weighted {
        w: Rows {
            out,
            row_len,
            data: Vec::new(),
        },
        b: None,
        conv: geometry,
    })
}

fn plan_one<'a>(
    layer: LiveLayer<'a>,
    shape: &[usize],
    name: &LayerPath,
) -> Result<(Node<'a>, Vec<usize>), LiveError> {
    let err = |op: &'static str, fault: LiveFault| LiveError::Layer {
        at: name.to_vec(),
        op,
        fault,
    };
    let spatial = |n: usize, op: &'static str| -> Result<&[usize], LiveError> {
        if shape.len() == n + 1 {
            Ok(&shape[1..])
        } else {
            Err(err(
                op,
                LiveFault::SpatialAxes {
                    spatial: n,
                    shape: shape.to_vec(),
                },
            ))
        }
    };
    let plain = |layer: Layer<f64>| -> Result<(Node<'a>, Vec<usize>), LiveError> {
        let out = layer.out_shape(shape, name)?;
        Ok((
            Node::Plain {
                layer,
                input: shape.to_vec(),
            },
            out,
        ))
    };
    let pool = |max: bool, kernel: [usize; 2], stride: [usize; 2], padding: [usize; 2]| {
        plain(Layer::Pool(Pool {
            max,
            kernel,
            stride,
            padding,
        }))
    };
    let weighted = |layer: WeightedRef<'a>, geometry: Option<ConvGeometry>| {
        let dims = layer.shape();
        let axes = layer.kind().unit_axes();
        let out = dims[axes.output];
        let row_len = dims.iter().product::<usize>() / out.max(1);
        let description = shell(geometry.clone(), out, row_len);
        let next = description.out_shape(shape, name)?;
        Ok((
            Node::Weighted {
                layer,
                geometry,
                out,
            },
            next,
        ))
    };
    match layer {
        LiveLayer::Linear(l) => weighted(WeightedRef::Linear(l), None),
        LiveLayer::Conv1d(c) => {
            let n = spatial(1, "conv1d")?[0];
            let padding =
                padding_1d(&c.padding, n, c.kernel_size, c.stride).map_err(|r| err("conv1d", r))?;
            weighted(
                WeightedRef::Conv1d(c),
                Some(ConvGeometry {
                    kernel: vec![c.kernel_size],
                    stride: vec![c.stride],
                    padding: vec![padding],
                    dilation: vec![c.dilation],
                    groups: c.groups,
                }),
            )
        }
        LiveLayer::Conv2d(c) => {
            let hw = spatial(2, "conv2d")?;
            let padding = padding_2d(&c.padding, [hw[0], hw[1]], c.kernel_size, c.stride)
                .map_err(|r| err("conv2d", r))?;
            weighted(
                WeightedRef::Conv2d(c),
                Some(ConvGeometry {
                    kernel: c.kernel_size.to_vec(),
                    stride: c.stride.to_vec(),
                    padding: padding.to_vec(),
                    dilation: c.dilation.to_vec(),
                    groups: c.groups,
                }),
            )
        }
        LiveLayer::Relu => plain(Layer::Act(Activation::Relu)),
        LiveLayer::LeakyRelu(slope) => plain(Layer::Act(Activation::LeakyRelu(slope))),
        LiveLayer::Identity => plain(Layer::Act(Activation::Identity)),
        LiveLayer::MaxPool2d(p) => {
            let hw = spatial(2, "max_pool2d")?;
            if p.dilation != [1, 1] || p.ceil_mode {
                return Err(err("max_pool2d", LiveFault::PoolMode));
            }
            let padding = padding_2d(&p.padding, [hw[0], hw[1]], p.kernel_size, p.stride)
                .map_err(|r| err("max_pool2d", r))?;
            pool(true, p.kernel_size, p.stride, padding)
        }
        LiveLayer::AvgPool2d(p) => {
            let hw = spatial(2, "avg_pool2d")?;
            let padding = padding_2d(&p.padding, [hw[0], hw[1]], p.kernel_size, p.stride)
                .map_err(|r| err("avg_pool2d", r))?;
            if p.ceil_mode || (!p.count_include_pad && padding != [0, 0]) {
                return Err(err("avg_pool2d", LiveFault::AvgPoolMode));
            }
            pool(false, p.kernel_size, p.stride, padding)
        }
        LiveLayer::AdaptiveAvgPool2d(p) => {
            let hw = spatial(2, "adaptive_avg_pool2d")?;
            let [oh, ow] = p.output_size;
            if oh == 0 || ow == 0 || hw[0] % oh != 0 || hw[1] % ow != 0 {
                return Err(err(
                    "adaptive_avg_pool2d",
                    LiveFault::AdaptiveWindows {
                        output: p.output_size,
                        input: hw.to_vec(),
                    },
                ));
            }
            let k = [hw[0] / oh, hw[1] / ow];
            pool(false, k, k, [0, 0])
        }
        LiveLayer::Flatten => plain(Layer::Flatten),
        LiveLayer::Barrier(b) => plain(Layer::Barrier(b)),
        LiveLayer::Residual(body) => {
            let (nodes, out) = plan_layers(body, shape, name)?;
            if out != shape {
                return Err(err(
                    "residual",
                    LiveFault::ResidualShape {
                        body: out,
                        skip: shape.to_vec(),
                    },
                ));
            }
            Ok((Node::Residual(nodes), out))
        }
        LiveLayer::Unsupported(what) => Err(err(what, LiveFault::Unsupported)),
    }
}

/// A weight in Burn's layout as the calculus's rows (one per output unit).
pub(crate) fn to_rows(kind: LayerKind, shape: &[usize], data: Vec<f64>) -> Rows<f64> {
    let axes = kind.unit_axes();
    let out = shape[axes.output];
    let row_len = data.len() / out.max(1);
    if axes.output == 0 {
        Rows::new(out, row_len, data)
    } else {
        assert_eq!(
            shape.len(),
            2,
            "only rank-2 weights keep output units on axis 1"
        );
        Rows::new(out, row_len, transpose(&data, shape[0], shape[1]))
    }
}

/// Rows back to Burn's layout.
pub(crate) fn from_rows(kind: LayerKind, shape: &[usize], rows: &[f64]) -> Vec<f64> {
    if kind.unit_axes().output == 0 {
        rows.to_vec()
    } else {
        transpose(rows, shape[1], shape[0])
    }
}

/// `[r, c]` row-major to `[c, r]` row-major.
fn transpose(data: &[f64], r: usize, c: usize) -> Vec<f64> {
    // In tiles of 32 x 32 (8 KiB each way), so that neither side strides through memory.
    const TILE: usize = 32;
    let mut out = vec![0.0; data.len()];
    for i0 in (0..r).step_by(TILE) {
        for j0 in (0..c).step_by(TILE) {
            for i in i0..(i0 + TILE).min(r) {
                for j in j0..(j0 + TILE).min(c) {
                    out[j * r + i] = data[i * c + j];
                }
            }
        }
    }
    out
}

/// Reads a live module into a network (every weight and bias copied to host memory as `f64`)
/// and the ids of its parameters.
///
/// # Errors
///
/// [`LiveError::Layer`] for a layer the front-end cannot describe (naming its position), or
/// [`LiveError::Calculus`] if the layers do not fit together.
pub fn describe<M: Canonicalizable>(module: &M) -> Result<LiveNetwork, LiveError> {
    let plan = plan(module)?;
    let mut bindings = Vec::new();
    let layers = read_nodes(&plan.nodes, &mut Vec::new(), &mut bindings);
    let network = Network::new(plan.input, layers)?;
    Ok(LiveNetwork { network, bindings })
}

fn read_nodes(
    nodes: &[Node<'_>],
    path: &mut Vec<usize>,
    bindings: &mut Vec<LiveBinding>,
) -> Vec<Layer<f64>> {
    let mut layers = Vec::with_capacity(nodes.len());
    for (i, node) in nodes.iter().enumerate() {
        path.push(i);
        layers.push(match node {
            Node::Weighted {
                layer, geometry, ..
            } => {
                let shape = layer.shape();
                let (w, b) = layer.values();
                let (weight, bias) = layer.ids();
                bindings.push(LiveBinding {
                    path: path.clone(),
                    kind: layer.kind(),
                    weight,
                    bias,
                    shape: shape.clone(),
                    groups: layer.groups(),
                });
                Layer::Weighted(Weighted {
                    w: to_rows(layer.kind(), &shape, w),
                    b,
                    conv: geometry.clone(),
                })
            }
            Node::Plain { layer, .. } => layer.clone(),
            Node::Residual(body) => Layer::Residual(read_nodes(body, path, bindings)),
        });
        path.pop();
    }
    layers
}

/// The ids of a module's float parameters, and of those that carry a reparameterization
/// (with its name).
#[derive(Default)]
pub(crate) struct ParamSurvey {
    pub(crate) all: BTreeSet<ParamId>,
    pub(crate) reparameterized: Vec<(ParamId, String)>,
    last: Option<ParamId>,
    depth: usize,
}

impl ModuleVisitor for ParamSurvey {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        if container_type == "Reparameterization" {
            if self.depth == 0
                && let Some(id) = self.last
            {
                self.reparameterized.push((id, name.to_string()));
            }
            self.depth += 1;
        }
    }

    fn exit_module(&mut self, _name: &str, container_type: &str) {
        if container_type == "Reparameterization" {
            self.depth -= 1;
        }
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if self.depth == 0 {
            self.all.insert(param.id);
            self.last = Some(param.id);
        }
    }
}

/// The float parameters of `module` and which of them are reparameterized.
pub(crate) fn survey_params<M: Module>(module: &M) -> ParamSurvey {
    let mut s = ParamSurvey::default();
    module.visit(&mut s);
    s
}
