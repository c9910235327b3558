//! The network description: layers as output units and input units (a weight is one row per
//! output unit), their shapes, and a reference forward pass in `f64` (one sample at a time,
//! channel-major: `[C]`, `[C, L]` or `[C, H, W]`). Nothing here knows a file format or a
//! framework's parameter names: front-ends (an architecture file and a checkpoint, an ONNX
//! graph, a live Burn module) keep their own names beside the layers' positions
//! ([`LayerPath`]).

use rayon::prelude::*;

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

impl<T: Real> Norm<T> {
    /// `batch_norm` or `mean_only_batch_norm`.
    pub fn op(&self) -> &'static str {
        match self.kind {
            NormKind::Batch => "batch_norm",
            NormKind::MeanOnly => "mean_only_batch_norm",
            NormKind::Scale => "scale",
        }
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

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

fn gelu(x: f64) -> f64 {
    0.5 * x * (1.0 + libm::erf(x / std::f64::consts::SQRT_2))
}

/// The softmax of `x` (shifted by its largest value, so that it does not overflow).
pub(crate) fn softmax(x: &[f64]) -> Vec<f64> {
    let m = x.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = x.iter().map(|v| (v - m).exp()).collect();
    let sum: f64 = e.iter().sum();
    e.iter().map(|v| v / sum).collect()
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
    /// [`CanonicalError::Layer`] (named `path`) if the layer cannot take `shape`.
    pub fn out_shape(&self, shape: &[usize], path: &str) -> Result<Vec<usize>, CanonicalError> {
        let out = self.out_shape_unchecked(shape, path)?;
        if values(&out).is_none_or(|n| n > MAX_VALUES) {
            return Err(CanonicalError::Layer {
                layer: path.to_string(),
                op: self.op().into(),
                reason: too_large(&out),
            });
        }
        Ok(out)
    }

    fn out_shape_unchecked(
        &self,
        shape: &[usize],
        path: &str,
    ) -> Result<Vec<usize>, CanonicalError> {
        let err = |reason: String| CanonicalError::Layer {
            layer: path.to_string(),
            op: self.op().into(),
            reason,
        };
        let channels = *shape
            .first()
            .ok_or_else(|| err("receives a 0-dimensional input".into()))?;
        match self {
            Self::Weighted(l) => {
                let inputs = l.in_channels();
                if let Some(b) = &l.b
                    && b.len() != l.w.out
                {
                    return Err(err(format!(
                        "{} bias values for {} output units",
                        b.len(),
                        l.w.out
                    )));
                }
                match &l.conv {
                    None => {
                        if shape.len() != 1 {
                            return Err(err(format!(
                                "takes a flat input of {inputs} units, receives shape {shape:?} \
                                 (add a flatten before it)"
                            )));
                        }
                        if channels != inputs {
                            return Err(err(format!("takes {inputs} inputs, receives {channels}")));
                        }
                        Ok(vec![l.w.out])
                    }
                    Some(c) => {
                        if shape.len() != 1 + c.kernel.len() {
                            return Err(err(format!(
                                "takes [channels{}], receives shape {shape:?}",
                                ", length".repeat(c.kernel.len())
                            )));
                        }
                        if channels != inputs {
                            return Err(err(format!(
                                "takes {inputs} input channels, receives {channels}"
                            )));
                        }
                        if !l.w.out.is_multiple_of(c.groups) {
                            return Err(err(format!(
                                "{} output channels do not split into {} groups",
                                l.w.out, c.groups
                            )));
                        }
                        let mut out = vec![l.w.out];
                        for (i, &n) in shape[1..].iter().enumerate() {
                            out.push(c.out_len(i, n).ok_or_else(|| {
                                err(format!(
                                    "the kernel ({:?}, dilation {:?}) does not fit the padded \
                                     input {shape:?}",
                                    c.kernel, c.dilation
                                ))
                            })?);
                        }
                        Ok(out)
                    }
                }
            }
            Self::Norm(n) => {
                if n.c.len() != channels || n.a.as_ref().is_some_and(|a| a.len() != channels) {
                    return Err(err(format!(
                        "normalizes {} channels, receives {channels}",
                        n.c.len()
                    )));
                }
                Ok(shape.to_vec())
            }
            Self::Act(_) | Self::Barrier(Barrier::Tanh | Barrier::Sigmoid | Barrier::Gelu) => {
                Ok(shape.to_vec())
            }
            Self::Barrier(Barrier::Softmax) => {
                if shape.len() != 1 {
                    return Err(err(format!("takes a flat input, receives shape {shape:?}")));
                }
                Ok(shape.to_vec())
            }
            Self::PRelu(slopes) => {
                if slopes.len() != channels {
                    return Err(err(format!(
                        "has {} slopes for {channels} channels",
                        slopes.len()
                    )));
                }
                Ok(shape.to_vec())
            }
            Self::Barrier(Barrier::Gate) => {
                if !channels.is_multiple_of(2) {
                    return Err(err(format!(
                        "splits the channels in halves, receives {channels}"
                    )));
                }
                let mut out = shape.to_vec();
                out[0] /= 2;
                Ok(out)
            }
            Self::Pool(p) => {
                if shape.len() != 3 {
                    return Err(err(format!(
                        "takes [channels, height, width], receives shape {shape:?}"
                    )));
                }
                if p.kernel.contains(&0) || p.stride.contains(&0) {
                    return Err(err(format!(
                        "a pooling kernel {:?} or stride {:?} of 0",
                        p.kernel, p.stride
                    )));
                }
                if p.padding[0] * 2 > p.kernel[0] || p.padding[1] * 2 > p.kernel[1] {
                    return Err(err(format!(
                        "padding {:?} exceeds half the kernel {:?}",
                        p.padding, p.kernel
                    )));
                }
                let mut out = vec![channels];
                for i in 0..2 {
                    let padded = shape[1 + i].saturating_add(2 * p.padding[i]);
                    if padded < p.kernel[i] {
                        return Err(err(format!(
                            "the kernel {:?} does not fit the input {shape:?}",
                            p.kernel
                        )));
                    }
                    out.push((padded - p.kernel[i]) / p.stride[i] + 1);
                }
                Ok(out)
            }
            Self::Flatten => Ok(vec![values(shape).ok_or_else(|| err(too_large(shape)))?]),
            Self::Residual(body) => {
                let out = shapes_through(body, shape, &format!("{path}.body"))?;
                if out != shape {
                    return Err(err(format!(
                        "the body produces shape {out:?} but the skip path carries {shape:?}"
                    )));
                }
                Ok(out)
            }
            Self::Shortcut { body, skip } => {
                let out = shapes_through(body, shape, &format!("{path}.body"))?;
                let short = shapes_through(skip, shape, &format!("{path}.skip"))?;
                if out != short {
                    return Err(err(format!(
                        "the body produces shape {out:?} but the skip path {short:?}"
                    )));
                }
                Ok(out)
            }
        }
    }

    /// Applies the layer to one sample of `shape` (checked by [`Network::new`]).
    pub fn forward(&self, x: &[f64], shape: &[usize]) -> Vec<f64> {
        let channels = shape[0];
        let positions = x.len().checked_div(channels).unwrap_or(0);
        match self {
            Self::Weighted(l) => match &l.conv {
                None => linear(l, x),
                Some(c) => conv(l, c, x, shape),
            },
            Self::Norm(n) => x
                .iter()
                .enumerate()
                .map(|(i, &v)| {
                    let ch = i / positions;
                    let a = n.a.as_ref().map_or(1.0, |a| a[ch].to_f64());
                    a * v + n.c[ch].to_f64()
                })
                .collect(),
            Self::Act(a) => x.iter().map(|&v| a.apply(v)).collect(),
            Self::Barrier(b) => match b {
                Barrier::Tanh => x.iter().map(|v| v.tanh()).collect(),
                Barrier::Sigmoid => x.iter().map(|&v| sigmoid(v)).collect(),
                Barrier::Gelu => x.iter().map(|&v| gelu(v)).collect(),
                Barrier::Gate => {
                    let half = x.len() / 2;
                    (0..half)
                        .map(|i| x[i].tanh() * sigmoid(x[half + i]))
                        .collect()
                }
                Barrier::Softmax => softmax(x),
            },
            Self::PRelu(slopes) => x
                .iter()
                .enumerate()
                .map(|(i, &v)| {
                    if v >= 0.0 {
                        v
                    } else {
                        slopes[i / positions] * v
                    }
                })
                .collect(),
            Self::Pool(p) => pool(p, x, shape),
            Self::Flatten => x.to_vec(),
            Self::Residual(body) => {
                let h = forward_sample(body, x, shape);
                h.iter().zip(x).map(|(a, b)| a + b).collect()
            }
            Self::Shortcut { body, skip } => {
                let h = forward_sample(body, x, shape);
                let s = forward_sample(skip, x, shape);
                h.iter().zip(&s).map(|(a, b)| a + b).collect()
            }
        }
    }
}

/// Runs `layers` on one sample of `shape` (checked by [`Network::new`]).
fn forward_sample<T: Real>(layers: &[Layer<T>], x: &[f64], shape: &[usize]) -> Vec<f64> {
    let mut h = x.to_vec();
    let mut s = shape.to_vec();
    for layer in layers {
        let next = layer.out_shape(&s, "").expect("checked by Network::new");
        h = layer.forward(&h, &s);
        s = next;
    }
    h
}

/// A dot product in `f64` with eight running sums (so that it vectorizes).
fn dot<T: Real>(a: &[T], x: &[f64]) -> f64 {
    let mut acc = [0.0f64; 8];
    let (ac, xc) = (a.chunks_exact(8), x.chunks_exact(8));
    let (ar, xr) = (ac.remainder(), xc.remainder());
    for (p, q) in ac.zip(xc) {
        for k in 0..8 {
            acc[k] += p[k].to_f64() * q[k];
        }
    }
    let tail: f64 = ar.iter().zip(xr).map(|(p, q)| p.to_f64() * q).sum();
    acc.iter().sum::<f64>() + tail
}

fn linear<T: Real>(l: &Weighted<T>, x: &[f64]) -> Vec<f64> {
    (0..l.w.out)
        .map(|i| dot(l.w.row(i), x) + l.b.as_ref().map_or(0.0, |b| b[i].to_f64()))
        .collect()
}

/// Lifts a 1-D geometry to 2-D (height 1).
fn geometry_2d(c: &ConvGeometry, shape: &[usize]) -> ([usize; 2], [[usize; 2]; 4]) {
    if c.kernel.len() == 1 {
        (
            [1, shape[1]],
            [
                [1, c.kernel[0]],
                [1, c.stride[0]],
                [0, c.padding[0]],
                [1, c.dilation[0]],
            ],
        )
    } else {
        (
            [shape[1], shape[2]],
            [
                [c.kernel[0], c.kernel[1]],
                [c.stride[0], c.stride[1]],
                [c.padding[0], c.padding[1]],
                [c.dilation[0], c.dilation[1]],
            ],
        )
    }
}

fn conv<T: Real>(l: &Weighted<T>, c: &ConvGeometry, x: &[f64], shape: &[usize]) -> Vec<f64> {
    let ([h, w], [k, s, p, d]) = geometry_2d(c, shape);
    let (ho, wo) = (
        (h + 2 * p[0] - d[0] * (k[0] - 1) - 1) / s[0] + 1,
        (w + 2 * p[1] - d[1] * (k[1] - 1) - 1) / s[1] + 1,
    );
    let out = l.w.out;
    let per_group_in = l.w.row_len / (k[0] * k[1]);
    let per_group_out = out / c.groups;
    let mut y = vec![0.0; out * ho * wo];
    // The output columns `ox` whose input column `ox * s + offset` lies in `[0, w)`.
    let columns = |offset: isize| -> (usize, usize) {
        let lo = if offset >= 0 {
            0
        } else {
            ((-offset) as usize).div_ceil(s[1])
        };
        let hi = if (w as isize) <= offset {
            0
        } else {
            ((w as isize - offset) as usize).div_ceil(s[1]).min(wo)
        };
        (lo, hi.max(lo))
    };
    for (o, plane_out) in y.chunks_mut(ho * wo).enumerate() {
        let row = l.w.row(o);
        let first = (o / per_group_out) * per_group_in;
        plane_out.fill(l.b.as_ref().map_or(0.0, |b| b[o].to_f64()));
        for ci in 0..per_group_in {
            let plane = &x[(first + ci) * h * w..][..h * w];
            for ky in 0..k[0] {
                for kx in 0..k[1] {
                    let wv = row[(ci * k[0] + ky) * k[1] + kx].to_f64();
                    if wv == 0.0 {
                        continue;
                    }
                    let dx = (kx * d[1]) as isize - p[1] as isize;
                    let (lo, hi) = columns(dx);
                    if lo >= hi {
                        continue;
                    }
                    for oy in 0..ho {
                        let iy = (oy * s[0] + ky * d[0]) as isize - p[0] as isize;
                        if iy < 0 || iy >= h as isize {
                            continue;
                        }
                        let input = &plane[iy as usize * w..][..w];
                        let target = &mut plane_out[oy * wo..][..wo];
                        if s[1] == 1 {
                            let start = (lo as isize + dx) as usize;
                            for (t, v) in target[lo..hi].iter_mut().zip(&input[start..]) {
                                *t += wv * v;
                            }
                        } else {
                            for (ox, t) in target.iter_mut().enumerate().take(hi).skip(lo) {
                                *t += wv * input[(ox as isize * s[1] as isize + dx) as usize];
                            }
                        }
                    }
                }
            }
        }
    }
    y
}

fn pool(p: &Pool, x: &[f64], shape: &[usize]) -> Vec<f64> {
    let (c, h, w) = (shape[0], shape[1], shape[2]);
    let [kh, kw] = p.kernel;
    let ho = (h + 2 * p.padding[0] - kh) / p.stride[0] + 1;
    let wo = (w + 2 * p.padding[1] - kw) / p.stride[1] + 1;
    let mut y = Vec::with_capacity(c * ho * wo);
    for ch in 0..c {
        let plane = &x[ch * h * w..][..h * w];
        for oy in 0..ho {
            for ox in 0..wo {
                let (mut best, mut sum) = (f64::NEG_INFINITY, 0.0);
                for ky in 0..kh {
                    let iy = (oy * p.stride[0] + ky) as isize - p.padding[0] as isize;
                    for kx in 0..kw {
                        let ix = (ox * p.stride[1] + kx) as isize - p.padding[1] as isize;
                        if iy >= 0 && iy < h as isize && ix >= 0 && ix < w as isize {
                            let v = plane[iy as usize * w + ix as usize];
                            best = best.max(v);
                            sum += v;
                        }
                    }
                }
                y.push(if p.max { best } else { sum / (kh * kw) as f64 });
            }
        }
    }
    y
}

/// The most values one sample's activation may hold anywhere in a network (2^32): the
/// verification runs the network in `f64`.
pub const MAX_VALUES: usize = 1 << 32;

/// The number of values of `shape` (`None` on overflow).
fn values(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d))
}

fn too_large(shape: &[usize]) -> String {
    format!("an activation of shape {shape:?} is more than 2^32 values per sample")
}

/// The shape after `layers`, checking every layer (named `<path>.<index>`, or `<index>` at
/// the top).
///
/// # Errors
///
/// The first layer that cannot take what it receives.
pub fn shapes_through<T: Real>(
    layers: &[Layer<T>],
    input: &[usize],
    path: &str,
) -> Result<Vec<usize>, CanonicalError> {
    let mut shape = input.to_vec();
    for (i, l) in layers.iter().enumerate() {
        shape = l.out_shape(&shape, &child(path, i))?;
    }
    Ok(shape)
}

/// The display name of a layer's position: `"3"`, `"4.body.0"`. A position inside a
/// [`Layer::Shortcut`]'s skip needs the network to be named: see [`Network::layer_name`].
pub fn path_name(path: &LayerPath) -> String {
    path.iter().fold(String::new(), |name, &i| {
        if name.is_empty() {
            child("", i)
        } else {
            child(&format!("{name}.body"), i)
        }
    })
}

/// The name of layer `i` under `path` (`"3"` at the top, `"4.body.0"` under `"4.body"`).
pub fn child(path: &str, i: usize) -> String {
    if path.is_empty() {
        i.to_string()
    } else {
        format!("{path}.{i}")
    }
}

/// A layer's position in a network: indices into the top-level list and nested residual bodies
/// (`[3]` is layer 3, `[4, 0]` the first layer of residual block 4's body). Its display name is
/// `"3"` or `"4.body.0"` ([`path_name`]). In a [`Layer::Shortcut`] the skip's layers follow the
/// body's (`[4, n + k]` is layer `k` of the skip when the body has `n` layers, named
/// `"4.skip.k"` by [`Network::layer_name`]).
pub type LayerPath = [usize];

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
        shapes_through(&layers, &input, "")?;
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
        shapes_through(&self.layers, &self.input, "").expect("checked by Network::new")
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

    /// Runs the network on a batch of samples (each flattened, of [`Network::input`]'s size),
    /// in `f64`. Linear layers go through the batch row by row (one read of the weight per
    /// batch); the rest sample by sample, in parallel.
    ///
    /// # Panics
    ///
    /// If a sample does not have the input's size.
    pub fn forward(&self, inputs: &[Vec<f64>]) -> Vec<Vec<f64>> {
        let n: usize = self.input.iter().product();
        assert!(
            inputs.iter().all(|x| x.len() == n),
            "every sample holds {n} values"
        );
        forward_layers(&self.layers, inputs.to_vec(), &self.input)
    }
}

fn forward_layers<T: Real>(
    layers: &[Layer<T>],
    mut h: Vec<Vec<f64>>,
    input: &[usize],
) -> Vec<Vec<f64>> {
    let mut shape = input.to_vec();
    for layer in layers {
        let next = layer
            .out_shape(&shape, "")
            .expect("checked by Network::new");
        h = match layer {
            Layer::Weighted(l) if l.conv.is_none() => {
                // Row-parallel over the whole batch: each row is read once.
                let cols: Vec<Vec<f64>> = (0..l.w.out)
                    .into_par_iter()
                    .map(|i| {
                        let row = l.w.row(i);
                        let b = l.b.as_ref().map_or(0.0, |b| b[i].to_f64());
                        h.iter().map(|x| b + dot(row, x)).collect()
                    })
                    .collect();
                (0..h.len())
                    .map(|s| cols.iter().map(|c| c[s]).collect())
                    .collect()
            }
            Layer::Residual(body) => {
                let out = forward_layers(body, h.clone(), &shape);
                out.into_iter()
                    .zip(&h)
                    .map(|(a, b)| a.iter().zip(b).map(|(p, q)| p + q).collect())
                    .collect()
            }
            Layer::Shortcut { body, skip } => {
                let out = forward_layers(body, h.clone(), &shape);
                let short = forward_layers(skip, h, &shape);
                out.into_iter()
                    .zip(&short)
                    .map(|(a, b)| a.iter().zip(b).map(|(p, q)| p + q).collect())
                    .collect()
            }
            _ => h.par_iter().map(|x| layer.forward(x, &shape)).collect(),
        };
        shape = next;
    }
    h
}
