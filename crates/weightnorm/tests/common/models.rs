//! The one set of test models, shared by the tests, the benches and the examples (`#[path]`):
//! live Burn models for the canonical form's live front-end and PCR: an MLP (the CLI's shape),
//! a CNN (the CLI's classifier's shape, plain), and two "zoo" networks with every layer kind the
//! calculus passes (grouped and 1-D convolutions, leaky ReLU, pooling, residual blocks,
//! barriers).
#![allow(dead_code)]

use burn::module::Module;
use burn::nn::conv::{Conv1d, Conv1dConfig, Conv2d, Conv2dConfig};
use burn::nn::pool::{AvgPool2d, AvgPool2dConfig, MaxPool2d, MaxPool2dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig1d, PaddingConfig2d};
use burn::tensor::activation::{leaky_relu, relu, sigmoid, tanh};
use burn::tensor::{Device, Tensor};
use weightnorm::canonical::Barrier;
use weightnorm::live::{Canonicalizable, LiveLayer};

/// The CLI's MLP: `Linear -> ReLU` per hidden layer, then a Linear to the classes.
#[derive(Module, Debug)]
pub struct Mlp {
    pub linears: Vec<Linear>,
}

impl Mlp {
    pub fn new(sizes: &[usize], device: &Device) -> Self {
        Self {
            linears: sizes
                .windows(2)
                .map(|w| LinearConfig::new(w[0], w[1]).init(device))
                .collect(),
        }
    }

    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let last = self.linears.len() - 1;
        let mut h = x;
        for (i, l) in self.linears.iter().enumerate() {
            h = l.forward(h);
            if i < last {
                h = relu(h);
            }
        }
        h
    }
}

impl Canonicalizable for Mlp {
    fn input_shape(&self) -> Vec<usize> {
        vec![self.linears[0].weight.lazy_shape().dims::<2>()[0]]
    }

    fn layers(&self) -> Vec<LiveLayer<'_>> {
        let mut out = Vec::new();
        for (i, l) in self.linears.iter().enumerate() {
            if i > 0 {
                out.push(LiveLayer::Relu);
            }
            out.push(LiveLayer::Linear(l));
        }
        out
    }
}

/// A CNN of the CLI classifier's shape, plain: three 3x3 convolutions (padding 1) with ReLU,
/// 2x2 max pooling after the first two, every position of the third flattened, then
/// `Linear -> ReLU -> Linear`.
#[derive(Module, Debug)]
pub struct Cnn {
    pub convs: Vec<Conv2d>,
    pub pool: MaxPool2d,
    pub fc1: Linear,
    pub fc2: Linear,
    #[module(skip)]
    pub input: [usize; 3],
}

impl Cnn {
    /// `channels` input channels of `hw` images (divisible by 4), `widths` of the convolutions,
    /// `hidden` units, `classes` outputs.
    pub fn new(
        [channels, h, w]: [usize; 3],
        widths: [usize; 3],
        hidden: usize,
        classes: usize,
        device: &Device,
    ) -> Self {
        let ins = [channels, widths[0], widths[1]];
        Self {
            convs: ins
                .iter()
                .zip(widths)
                .map(|(&i, o)| {
                    Conv2dConfig::new([i, o], [3, 3])
                        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                        .init(device)
                })
                .collect(),
            pool: MaxPool2dConfig::new([2, 2]).with_strides([2, 2]).init(),
            fc1: LinearConfig::new(widths[2] * (h / 4) * (w / 4), hidden).init(device),
            fc2: LinearConfig::new(hidden, classes).init(device),
            input: [channels, h, w],
        }
    }

    /// Class logits of `[batch, channels, h, w]` images.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let mut h = x;
        for (i, conv) in self.convs.iter().enumerate() {
            h = relu(conv.forward(h));
            if i < 2 {
                h = self.pool.forward(h);
            }
        }
        self.fc2.forward(relu(self.fc1.forward(h.flatten(1, 3))))
    }
}

impl Canonicalizable for Cnn {
    fn input_shape(&self) -> Vec<usize> {
        self.input.to_vec()
    }

    fn layers(&self) -> Vec<LiveLayer<'_>> {
        let mut out = Vec::new();
        for (i, conv) in self.convs.iter().enumerate() {
            out.push(LiveLayer::Conv2d(conv));
            out.push(LiveLayer::Relu);
            if i < 2 {
                out.push(LiveLayer::MaxPool2d(&self.pool));
            }
        }
        out.push(LiveLayer::Flatten);
        out.push(LiveLayer::Linear(&self.fc1));
        out.push(LiveLayer::Relu);
        out.push(LiveLayer::Linear(&self.fc2));
        out
    }
}

/// The CNN at small widths on 8x8 grey images, five classes.
pub fn cnn(device: &Device) -> Cnn {
    Cnn::new([1, 8, 8], [4, 6, 8], 12, 5, device)
}

/// A 1-D network: grouped convolution, leaky ReLU, a residual block, a tanh barrier, a
/// convolution without bias, flatten and two linear layers.
#[derive(Module, Debug)]
pub struct Zoo1d {
    pub grouped: Conv1d,
    pub body_a: Conv1d,
    pub body_b: Conv1d,
    pub after: Conv1d,
    pub fc1: Linear,
    pub fc2: Linear,
}

impl Zoo1d {
    pub fn new(device: &Device) -> Self {
        Self {
            grouped: Conv1dConfig::new(4, 6, 3)
                .with_groups(2)
                .with_padding(PaddingConfig1d::Explicit(1, 1))
                .init(device),
            body_a: Conv1dConfig::new(6, 6, 3)
                .with_padding(PaddingConfig1d::Same)
                .init(device),
            body_b: Conv1dConfig::new(6, 6, 1).init(device),
            after: Conv1dConfig::new(6, 5, 3)
                .with_stride(2)
                .with_dilation(2)
                .with_bias(false)
                .init(device),
            fc1: LinearConfig::new(5 * 3, 7).init(device),
            fc2: LinearConfig::new(7, 3).init(device),
        }
    }

    pub fn forward(&self, x: Tensor<3>) -> Tensor<2> {
        let h = leaky_relu(self.grouped.forward(x), 0.2);
        let body = self.body_b.forward(relu(self.body_a.forward(h.clone())));
        let h = tanh(h + body);
        let h = relu(self.after.forward(h)).flatten(1, 2);
        self.fc2.forward(relu(self.fc1.forward(h)))
    }
}

impl Canonicalizable for Zoo1d {
    fn input_shape(&self) -> Vec<usize> {
        vec![4, 10]
    }

    fn layers(&self) -> Vec<LiveLayer<'_>> {
        vec![
            LiveLayer::Conv1d(&self.grouped),
            LiveLayer::LeakyRelu(0.2),
            LiveLayer::Residual(vec![
                LiveLayer::Conv1d(&self.body_a),
                LiveLayer::Relu,
                LiveLayer::Conv1d(&self.body_b),
            ]),
            LiveLayer::Barrier(Barrier::Tanh),
            LiveLayer::Conv1d(&self.after),
            LiveLayer::Relu,
            LiveLayer::Flatten,
            LiveLayer::Linear(&self.fc1),
            LiveLayer::Relu,
            LiveLayer::Linear(&self.fc2),
        ]
    }
}

/// A 2-D network: convolution, average pooling, a residual block, a sigmoid barrier inside a
/// second residual block's body, flatten, linear.
#[derive(Module, Debug)]
pub struct Zoo2d {
    pub conv: Conv2d,
    pub pool: AvgPool2d,
    pub res_a: Conv2d,
    pub res_b: Conv2d,
    pub gated: Conv2d,
    pub head: Linear,
}

impl Zoo2d {
    pub fn new(device: &Device) -> Self {
        Self {
            conv: Conv2dConfig::new([2, 4], [3, 3])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(device),
            pool: AvgPool2dConfig::new([2, 2]).with_strides([2, 2]).init(),
            res_a: Conv2dConfig::new([4, 4], [3, 3])
                .with_padding(PaddingConfig2d::Same)
                .init(device),
            res_b: Conv2dConfig::new([4, 4], [1, 1]).init(device),
            gated: Conv2dConfig::new([4, 4], [1, 1]).init(device),
            head: LinearConfig::new(4 * 3 * 3, 3).init(device),
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let h = self.pool.forward(relu(self.conv.forward(x)));
        let h = h.clone() + self.res_b.forward(relu(self.res_a.forward(h)));
        let h = h.clone() + self.gated.forward(sigmoid(h));
        self.head.forward(h.flatten(1, 3))
    }
}

impl Canonicalizable for Zoo2d {
    fn input_shape(&self) -> Vec<usize> {
        vec![2, 6, 6]
    }

    fn layers(&self) -> Vec<LiveLayer<'_>> {
        vec![
            LiveLayer::Conv2d(&self.conv),
            LiveLayer::Relu,
            LiveLayer::AvgPool2d(&self.pool),
            LiveLayer::Residual(vec![
                LiveLayer::Conv2d(&self.res_a),
                LiveLayer::Relu,
                LiveLayer::Conv2d(&self.res_b),
            ]),
            LiveLayer::Residual(vec![
                LiveLayer::Barrier(Barrier::Sigmoid),
                LiveLayer::Conv2d(&self.gated),
            ]),
            LiveLayer::Flatten,
            LiveLayer::Linear(&self.head),
        ]
    }
}

/// A tensor's values as `f64`.
pub fn values<const D: usize>(t: Tensor<D>) -> Vec<f64> {
    t.into_data().try_into_vec_as::<f64>().unwrap()
}

/// The largest absolute difference over the largest absolute value of `a`.
pub fn rel_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let big = a.iter().fold(0f64, |m, x| m.max(x.abs()));
    let d = a.iter().zip(b).fold(0f64, |m, (x, y)| m.max((x - y).abs()));
    d / big.max(f64::MIN_POSITIVE)
}

/// `n` deterministic values in [-1, 1) from SplitMix64 (Steele, Lea and Flood, 2014): test data
/// that does not depend on Burn's global generator, which tests running in parallel share.
pub fn uniform(n: usize, seed: u64) -> Vec<f32> {
    use weightnorm::weightnorm_core::rng::{GOLDEN, SplitMix64};
    let mut rng = SplitMix64(seed.wrapping_mul(GOLDEN));
    (0..n).map(|_| rng.uniform_f32()).collect()
}
