//! The network description: layers as output units and input units (a weight is one row per
//! output unit), their shapes, and a reference forward pass in `f64` (one sample at a time,
//! channel-major: `[C]`, `[C, L]` or `[C, H, W]`). Nothing here knows a file format or a
//! framework's parameter names: front-ends (an architecture file and a checkpoint, an ONNX
//! graph, a live Burn module) keep their own names beside the layers' positions
//! ([`LayerPath`]).

use super::error::LayerFault;
use super::path::{LayerPath, child};
use super::{Activation, CanonicalError, Real, Rows};

/// The geometry of a convolution (`conv1d`: one spatial axis, `conv2d`: two).
#[derive(Clone, Debug, PartialEq)]
pub struct ConvGeometry {
    /// Kernel size per spatial axis.
    pub kernel: Vec<usize>,
    /// Stride per spatial axis.
    pub stride: Vec<usize>,
    /// Zero padding per spatial axis (both sides).
    pub padding: Vec<usize>,
    /// Dilation per spatial axis.
    pub dilation: Vec<usize>,
    /// Channel groups.
    pub groups: usize,
}

impl ConvGeometry {
    /// Elements of one input channel's kernel.
    pub fn taps(&self) -> usize {
        self.kernel.iter().product()
    }

    /// The output length of spatial axis `i` for input length `n` (`None` if the kernel does
    /// not fit, or the sizes overflow).
    pub fn out_len(&self, i: usize, n: usize) -> Option<usize> {
        let span = self.dilation[i]
            .checked_mul(self.kernel[i].checked_sub(1)?)?
            .checked_add(1)?;
        let padded = self.padding[i].checked_mul(2)?.checked_add(n)?;
        (padded >= span && self.stride[i] > 0).then(|| (padded - span) / self.stride[i] + 1)
    }
}

/// A layer with a weight: linear (`conv == None`) or a convolution.
#[derive(Clone, Debug, PartialEq)]
pub struct Weighted<T: Real = f64> {
    /// One row per output unit or channel.
    pub w: Rows<T>,
    /// The bias, one per output unit.
    pub b: Option<Vec<T>>,
    /// The convolution's geometry; `None` for a linear layer.
    pub conv: Option<ConvGeometry>,
}

impl<T: Real> Weighted<T> {
    /// The number of input channels (units for a linear layer).
    pub fn in_channels(&self) -> usize {
        let conv_taps = self.conv.as_ref().map_or(1, ConvGeometry::taps).max(1);
        self.w.row_len / conv_taps * self.groups()
    }

    /// The weight's shape, one row per output unit: `[out, in]`, or `[out, in / groups, k..]`.
    pub fn shape(&self) -> Vec<usize> {
        match &self.conv {
            None => vec![self.w.out, self.w.row_len],
            Some(c) => {
                let mut shape = vec![self.w.out, self.w.row_len / c.taps().max(1)];
                shape.extend(&c.kernel);
                shape
            }
        }
    }

    /// Channel groups (1 for a linear layer).
    pub fn groups(&self) -> usize {
        self.conv.as_ref().map_or(1, |c| c.groups)
    }

    /// `linear`, `conv1d` or `conv2d`.
    pub fn op(&self) -> &'static str {
        match self.conv.as_ref().map(|c| c.kernel.len()) {
            None => "linear",
            Some(1) => "conv1d",
            Some(_) => "conv2d",
        }
    }
}

/// Batch norm or mean-only batch norm, in evaluation mode: `y = a * x + c` per channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NormKind {
    /// Batch norm: `a = gamma / sqrt(var + eps)`, `c = beta - a * mean` ([`Norm::batch`]).
    Batch,
    /// Mean-only batch norm: `a = 1`, `c = bias - mean` ([`Norm::mean_only`]); also any
    /// per-channel shift by a constant (an ONNX `Add` or `Sub` of one).
    MeanOnly,
    /// A per-channel multiplication by a constant (an ONNX `Mul` or `Div` by one, such as the
    /// `canonical.scale` of a canonical ONNX model): `a` the multiplier, `c` zero. Unlike a
    /// batch norm it is never folded into the layer before it, since a multiplier cannot hold
    /// that layer's bias; it absorbs the scale it receives like any layer with a multiplier.
    Scale,
}

/// A per-channel affine map in evaluation mode.
#[derive(Clone, Debug, PartialEq)]
pub struct Norm<T: Real = f64> {
    /// Which normalization.
    pub kind: NormKind,
    /// The multiplier per channel; `None` for a shift only (mean-only batch norm, or a batch
    /// norm folded into the layer before it).
    pub a: Option<Vec<T>>,
    /// The shift per channel.
    pub c: Vec<T>,
}

impl NormKind {
    /// `batch_norm`, `mean_only_batch_norm` or `scale`.
    pub fn op(self) -> &'static str {
        match self {
            Self::Batch => "batch_norm",
            Self::MeanOnly => "mean_only_batch_norm",
            Self::Scale => "scale",
        }
    }
}

impl<T: Real> Norm<T> {
    /// `batch_norm`, `mean_only_batch_norm` or `scale`.
    pub fn op(&self) -> &'static str {
        self.kind.op()
    }
}

/// Activations that are not positively homogeneous: the scale cannot pass them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Barrier {
    /// `tanh(x)`.
    Tanh,
    /// `1 / (1 + exp(-x))`.
    Sigmoid,
    /// `x * Phi(x)` (the exact, erf form).
    Gelu,
    /// WaveNet's gate: `tanh(first half of the channels) * sigmoid(second half)`.
    Gate,
    /// The softmax over all of a flat activation's units (`[units]` only).
    Softmax,
}

impl Barrier {
    /// The name in architecture files.
    pub fn name(self) -> &'static str {
        match self {
            Self::Tanh => "tanh",
            Self::Sigmoid => "sigmoid",
            Self::Gelu => "gelu",
            Self::Gate => "gate",
            Self::Softmax => "softmax",
        }
    }
}

/// 2-D pooling, per channel.
#[derive(Clone, Debug, PartialEq)]
pub struct Pool {
    /// Max (padding never wins) or average (zero padding counted, PyTorch's default).
    pub max: bool,
    /// Window.
    pub kernel: [usize; 2],
    /// Step.
    pub stride: [usize; 2],
    /// Padding on both sides.
    pub padding: [usize; 2],
}

impl Pool {
    /// `max_pool2d` or `avg_pool2d`.
    pub fn op(&self) -> &'static str {
        if self.max { "max_pool2d" } else { "avg_pool2d" }
    }
}

/// A layer of a network.
#[derive(Clone, Debug, PartialEq)]
pub enum Layer<T: Real = f64> {
    /// Linear or convolution.
    Weighted(Weighted<T>),
    /// Batch norm or mean-only batch norm (evaluation mode).
    Norm(Norm<T>),
    /// A positively homogeneous activation (ReLU, leaky ReLU, identity, dropout).
    Act(Activation),
    /// A non-homogeneous activation: the scale is multiplied back before it.
    Barrier(Barrier),
    /// Max or average pooling.
    Pool(Pool),
    /// Flattens `[C, ..]` to one axis, channel-major.
    Flatten,
    /// `y = x + body(x)`.
    Residual(Vec<Layer<T>>),
    /// A residual block whose shortcut has layers of its own (a projection shortcut):
    /// `y = skip(x) + body(x)`, both branches producing the same shape. In a [`LayerPath`] the
    /// skip's layers follow the body's: layer `k` of the skip of block `4` whose body has `n`
    /// layers is `[4, n + k]`, named `4.skip.k` ([`Network::layer_name`]).
    Shortcut {
        /// The main branch.
        body: Vec<Layer<T>>,
        /// The shortcut branch.
        skip: Vec<Layer<T>>,
    },
    /// PReLU at inference with one slope per channel (unit, for a flat activation): `x` for
    /// `x >= 0`, `slope[c] * x` otherwise. Positively homogeneous per channel, so a per-channel
    /// scale passes it as it passes a leaky ReLU (one slope for every channel is
    /// [`Activation::LeakyRelu`]).
    PRelu(Vec<f64>),
}

impl<T: Real> Layer<T> {
    /// The layer's op name in architecture files.
    pub fn op(&self) -> &'static str {
        match self {
            Self::Weighted(w) => w.op(),
            Self::Norm(n) => n.op(),
            Self::Act(a) => a.name(),
            Self::Barrier(b) => b.name(),
            Self::Pool(p) => p.op(),
            Self::Flatten => "flatten",
            Self::Residual(_) => "residual",
            Self::Shortcut { .. } => "shortcut",
            Self::PRelu(_) => "prelu",
        }
    }

    /// The shape of the output for an input of `shape`.
    ///
    /// # Errors
    ///
    /// [`CanonicalError::Layer`] (at `path`) if the layer cannot take `shape`.
    pub fn out_shape(
        &self,
        shape: &[usize],
        path: &LayerPath,
    ) -> Result<Vec<usize>, CanonicalError> {
        let out = self
            .out_shape_unchecked(shape, path)
            .map_err(|fault| match fault {
                Fault::Layer(fault) => CanonicalError::Layer {
                    at: path.to_vec(),
                    op: self.op(),
                    fault,
                },
                Fault::Nested(e) => e,
            })?;
        if values(&out).is_none_or(|n| n > MAX_VALUES) {
            return Err(CanonicalError::Layer {
                at: path.to_vec(),
                op: self.op(),
                fault: LayerFault::TooLarge { shape: out },
            });
        }
        Ok(out)
    }

    fn out_shape_unchecked(&self, shape: &[usize], path: &LayerPath) -> Result<Vec<usize>, Fault> {
        let err = Fault::Layer;
        let channels = *shape.first().ok_or(err(LayerFault::NoAxes))?;
        match self {
            Self::Weighted(l) => {
                let inputs = l.in_channels();
                if let Some(b) = &l.b
                    && b.len() != l.w.out
                {
                    return Err(err(LayerFault::BiasLength {
                        bias: b.len(),
                        units: l.w.out,
                    }));
                }
                match &l.conv {
                    None => {
                        if shape.len() != 1 {
                            return Err(err(LayerFault::NotFlat {
                                inputs,
                                shape: shape.to_vec(),
                            }));
                        }
                        if channels != inputs {
                            return Err(err(LayerFault::Inputs {
                                expected: inputs,
                                got: channels,
                            }));
                        }
                        Ok(vec![l.w.out])
                    }
                    Some(c) => {
                        if shape.len() != 1 + c.kernel.len() {
                            return Err(err(LayerFault::ConvAxes {
                                spatial: c.kernel.len(),
                                shape: shape.to_vec(),
                            }));
                        }
                        if channels != inputs {
                            return Err(err(LayerFault::Channels {
                                expected: inputs,
                                got: channels,
                            }));
                        }
                        if !l.w.out.is_multiple_of(c.groups) {
                            return Err(err(LayerFault::Groups {
                                out: l.w.out,
                                groups: c.groups,
                            }));
                        }
                        let mut out = vec![l.w.out];
                        for (i, &n) in shape[1..].iter().enumerate() {
                            out.push(c.out_len(i, n).ok_or_else(|| {
                                err(LayerFault::KernelTooLarge {
                                    kernel: c.kernel.clone(),
                                    dilation: c.dilation.clone(),
                                    shape: shape.to_vec(),
                                })
                            })?);
                        }
                        Ok(out)
                    }
                }
            }
            Self::Norm(n) => {
                if n.c.len() != channels || n.a.as_ref().is_some_and(|a| a.len() != channels) {
                    return Err(err(LayerFault::NormChannels {
                        expected: n.c.len(),
                        got: channels,
                    }));
                }
                Ok(shape.to_vec())
            }
            Self::Act(_) | Self::Barrier(Barrier::Tanh | Barrier::Sigmoid | Barrier::Gelu) => {
                Ok(shape.to_vec())
            }
            Self::Barrier(Barrier::Softmax) => {
                if shape.len() != 1 {
                    return Err(err(LayerFault::SoftmaxNotFlat {
                        shape: shape.to_vec(),
                    }));
                }
                Ok(shape.to_vec())
            }
            Self::PRelu(slopes) => {
                if slopes.len() != channels {
                    return Err(err(LayerFault::Slopes {
                        slopes: slopes.len(),
                        channels,
                    }));
                }
                Ok(shape.to_vec())
            }
            Self::Barrier(Barrier::Gate) => {
                if !channels.is_multiple_of(2) {
                    return Err(err(LayerFault::OddChannels { channels }));
                }
                let mut out = shape.to_vec();
                out[0] /= 2;
                Ok(out)
            }
            Self::Pool(p) => {
                if shape.len() != 3 {
                    return Err(err(LayerFault::PoolAxes {
                        shape: shape.to_vec(),
                    }));
                }
                if p.kernel.contains(&0) || p.stride.contains(&0) {
                    return Err(err(LayerFault::PoolZero {
                        kernel: p.kernel,
                        stride: p.stride,
                    }));
                }
                if p.padding[0] * 2 > p.kernel[0] || p.padding[1] * 2 > p.kernel[1] {
                    return Err(err(LayerFault::PoolPadding {
                        padding: p.padding,
                        kernel: p.kernel,
                    }));
                }
                let mut out = vec![channels];
                for i in 0..2 {
                    let padded = shape[1 + i].saturating_add(2 * p.padding[i]);
                    if padded < p.kernel[i] {
                        return Err(err(LayerFault::PoolKernelTooLarge {
                            kernel: p.kernel,
                            shape: shape.to_vec(),
                        }));
                    }
                    out.push((padded - p.kernel[i]) / p.stride[i] + 1);
                }
                Ok(out)
            }
            Self::Flatten => Ok(vec![values(shape).ok_or_else(|| {
                err(LayerFault::TooLarge {
                    shape: shape.to_vec(),
                })
            })?]),
            Self::Residual(body) => {
                let out = shapes_through(body, shape, path).map_err(Fault::Nested)?;
                if out != shape {
                    return Err(err(LayerFault::ResidualShape {
                        body: out,
                        skip: shape.to_vec(),
                    }));
                }
                Ok(out)
            }
            Self::Shortcut { body, skip } => {
                let out = shapes_through(body, shape, path).map_err(Fault::Nested)?;
                let short = shapes_from(skip, body.len(), shape, path).map_err(Fault::Nested)?;
                if out != short {
                    return Err(err(LayerFault::ShortcutShape {
                        body: out,
                        skip: short,
                    }));
                }
                Ok(out)
            }
        }
    }
}

/// The most values one sample's activation may hold anywhere in a network (2^32): the
/// verification runs the network in `f64`.
pub const MAX_VALUES: usize = 1 << 32;

/// The number of values of `shape` (`None` on overflow).
fn values(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d))
}

/// What went wrong in a layer's shape: its own fault, or one of a nested layer (with its own
/// position).
enum Fault {
    Layer(LayerFault),
    Nested(CanonicalError),
}

/// The shape after `layers`, the children of the block at `path` (or the network's top-level
/// layers for an empty `path`), checking every layer.
///
/// # Errors
///
/// The first layer that cannot take what it receives.
pub fn shapes_through<T: Real>(
    layers: &[Layer<T>],
    input: &[usize],
    path: &LayerPath,
) -> Result<Vec<usize>, CanonicalError> {
    let mut shape = input.to_vec();
    for (i, l) in layers.iter().enumerate() {
        shape = l.out_shape(&shape, &child(path, i))?;
    }
    Ok(shape)
}

/// [`shapes_through`] for a shortcut's skip, whose positions follow the body's `n_body`.
pub(crate) fn shapes_from<T: Real>(
    layers: &[Layer<T>],
    n_body: usize,
    input: &[usize],
    path: &LayerPath,
) -> Result<Vec<usize>, CanonicalError> {
    let mut shape = input.to_vec();
    for (i, l) in layers.iter().enumerate() {
        shape = l.out_shape(&shape, &child(path, n_body + i))?;
    }
    Ok(shape)
}

/// The layer at index `i` of a residual block's or shortcut's children, and the name of the list
/// it is in (`body` or `skip`) with its index there.
fn nested<T: Real>(layer: &Layer<T>, i: usize) -> Option<(&Layer<T>, &'static str, usize)> {
    match layer {
        Layer::Residual(body) => body.get(i).map(|l| (l, "body", i)),
        Layer::Shortcut { body, skip } => match body.get(i) {
            Some(l) => Some((l, "body", i)),
            None => skip
                .get(i - body.len())
                .map(|l| (l, "skip", i - body.len())),
        },
        _ => None,
    }
}

/// A network: the shape of one input sample (`[features]`, `[C, L]` or `[C, H, W]`) and its
/// layers, checked to fit together.
///
/// The fields are private so that a network that exists has been checked: build one with
/// [`Network::new`], read it with [`Network::input`] and [`Network::layers`].
#[derive(Clone, Debug, PartialEq)]
pub struct Network<T: Real = f64> {
    pub(crate) input: Vec<usize>,
    pub(crate) layers: Vec<Layer<T>>,
}

impl<T: Real> Network<T> {
    /// A network, after checking that every layer takes what the one before it produces.
    ///
    /// # Errors
    ///
    /// [`CanonicalError::Input`] for an input shape without axes or of more than
    /// [`MAX_VALUES`] values; [`CanonicalError::Layer`] naming the first layer that does not fit.
    pub fn new(input: Vec<usize>, layers: Vec<Layer<T>>) -> Result<Self, CanonicalError> {
        if input.is_empty() || values(&input).is_none_or(|n| n > MAX_VALUES) {
            return Err(CanonicalError::Input { shape: input });
        }
        shapes_through(&layers, &input, &[])?;
        Ok(Self { input, layers })
    }

    /// One input sample's shape.
    pub fn input(&self) -> &[usize] {
        &self.input
    }

    /// The layers.
    pub fn layers(&self) -> &[Layer<T>] {
        &self.layers
    }

    /// The input shape and the layers, giving the network up.
    pub fn into_parts(self) -> (Vec<usize>, Vec<Layer<T>>) {
        (self.input, self.layers)
    }

    /// The layer at `path`, if there is one.
    pub fn layer(&self, path: &LayerPath) -> Option<&Layer<T>> {
        let (&first, rest) = path.split_first()?;
        let mut layer = self.layers.get(first)?;
        for &i in rest {
            layer = nested(layer, i)?.0;
        }
        Some(layer)
    }

    /// The display name of the layer at `path` (`"3"`, `"4.body.0"`, `"4.skip.1"`), the name
    /// [`canonicalize`](super::canonicalize)'s reports give it; `None` if there is no such layer.
    pub fn layer_name(&self, path: &LayerPath) -> Option<String> {
        let (&first, rest) = path.split_first()?;
        let mut layer = self.layers.get(first)?;
        let mut name = first.to_string();
        for &i in rest {
            let (next, list, k) = nested(layer, i)?;
            name = format!("{name}.{list}.{k}");
            layer = next;
        }
        Some(name)
    }

    /// The positions of every weighted layer and normalization, in order (depth first through
    /// residual bodies): the layers that hold parameters.
    pub fn parameter_layers(&self) -> Vec<Vec<usize>> {
        fn walk<T: Real>(layers: &[Layer<T>], prefix: &mut Vec<usize>, out: &mut Vec<Vec<usize>>) {
            for (i, l) in layers.iter().enumerate() {
                prefix.push(i);
                match l {
                    Layer::Residual(body) => walk(body, prefix, out),
                    Layer::Shortcut { body, skip } => {
                        walk(body, prefix, out);
                        // The skip's positions follow the body's.
                        let mut inner = Vec::new();
                        walk(skip, &mut Vec::new(), &mut inner);
                        for mut p in inner {
                            p[0] += body.len();
                            let mut full = prefix.clone();
                            full.extend(p);
                            out.push(full);
                        }
                    }
                    Layer::Weighted(_) | Layer::Norm(_) => out.push(prefix.clone()),
                    _ => {}
                }
                prefix.pop();
            }
        }
        let mut out = Vec::new();
        walk(&self.layers, &mut Vec::new(), &mut out);
        out
    }

    /// The shape of one output sample.
    pub fn output_shape(&self) -> Vec<usize> {
        shapes_through(&self.layers, &self.input, &[]).expect("checked by Network::new")
    }

    /// The number of weights, biases and normalization parameters.
    pub fn parameters(&self) -> usize {
        fn count<T: Real>(layers: &[Layer<T>]) -> usize {
            layers
                .iter()
                .map(|l| match l {
                    Layer::Weighted(w) => w.w.data.len() + w.b.as_ref().map_or(0, Vec::len),
                    Layer::Norm(n) => n.c.len() + n.a.as_ref().map_or(0, Vec::len),
                    Layer::Residual(b) => count(b),
                    Layer::Shortcut { body, skip } => count(body) + count(skip),
                    _ => 0,
                })
                .sum()
        }
        count(&self.layers)
    }
}
