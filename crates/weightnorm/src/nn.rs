//! Building blocks: mean-only batch normalization and the classic weight-normalized blocks.

use burn::config::Config;
use burn::module::{Flag, Module, Param, RunningState};
use burn::nn::conv::{Conv1d, Conv1dConfig, Conv2d, Conv2dConfig};
use burn::nn::pool::{AdaptiveAvgPool2d, AdaptiveAvgPool2dConfig, MaxPool2d, MaxPool2dConfig};
use burn::nn::{
    BatchNorm, BatchNormConfig, Initializer, Linear, LinearConfig, PaddingConfig1d,
    PaddingConfig2d, Relu,
};
use burn::tensor::activation::{sigmoid, tanh};
use burn::tensor::{Device, Tensor};

use crate::init::{InitError, data_dependent_conv2d, data_dependent_linear};
use crate::live::{Canonicalizable, LiveLayer};
use crate::reparam::{ReparamError, WeightNormConfig, apply_weight_norm};

/// Configuration of [`MeanOnlyBatchNorm`].
#[derive(Config, Debug)]
pub struct MeanOnlyBatchNormConfig {
    /// The number of features (channels), axis 1 of the input.
    pub num_features: usize,
    /// The weight of the newest batch in the running mean.
    #[config(default = 0.1)]
    pub momentum: f64,
}

/// Mean-only batch normalization (Salimans & Kingma 2016, section 2.2): subtracts the mean of
/// each feature and adds a learnable shift, without dividing by a standard deviation; the
/// companion of weight normalization.
///
/// In training (an autodiff device and the training flag on) it subtracts the batch mean per
/// feature and updates `running_mean <- (1 - momentum) running_mean + momentum batch_mean`; in
/// evaluation it subtracts the running mean. The running mean is saved and loaded with the
/// module.
#[derive(Module, Debug)]
pub struct MeanOnlyBatchNorm {
    /// The learnable shift, one per feature.
    pub beta: Param<Tensor<1>>,
    /// Whether training behavior is enabled.
    pub training: Param<Flag>,
    /// The running mean, one per feature.
    pub running_mean: RunningState<Tensor<1>>,
    /// The weight of the newest batch in the running mean.
    pub momentum: f64,
}

impl MeanOnlyBatchNormConfig {
    /// Creates the layer: `beta = 0`, `running_mean = 0`.
    ///
    /// # Panics
    ///
    /// If `num_features` is zero or `momentum` is not within `[0, 1]`.
    pub fn init(&self, device: &Device) -> MeanOnlyBatchNorm {
        assert!(
            self.num_features > 0,
            "num_features must be greater than zero"
        );
        assert!(
            self.momentum.is_finite() && (0.0..=1.0).contains(&self.momentum),
            "momentum must be within [0, 1]"
        );
        MeanOnlyBatchNorm {
            beta: Initializer::Zeros.init([self.num_features], device),
            training: Param::from_bool(true),
            running_mean: RunningState::new(Tensor::zeros([self.num_features], device)),
            momentum: self.momentum,
        }
    }
}

impl MeanOnlyBatchNorm {
    /// Centers each feature and adds the shift.
    ///
    /// # Shapes
    ///
    /// - input: `[batch, num_features, ...]`
    /// - output: the same
    ///
    /// # Panics
    ///
    /// If the input's axis 1 is not `num_features`.
    pub fn forward<const D: usize>(&self, input: Tensor<D>) -> Tensor<D> {
        let [features] = self.beta.dims();
        let dims = input.dims();
        assert!(
            D >= 2 && dims[1] == features,
            "mean-only batch norm: input {dims:?} must have {features} features on axis 1"
        );
        let mut bshape = [1usize; D];
        bshape[1] = features;
        let beta = self.beta.val().reshape(bshape);
        if input.device().is_autodiff() && self.training.is_enabled() {
            let flat: Tensor<2> = input
                .clone()
                .swap_dims(1, D - 1)
                .reshape([-1, features as i64]);
            let mean = flat.mean_dim(0).reshape([features]);
            let running = self.running_mean.value_sync().to_device(&input.device());
            self.running_mean.update(
                running
                    .mul_scalar(1.0 - self.momentum)
                    .add(mean.clone().detach().mul_scalar(self.momentum))
                    .detach(),
            );
            input - mean.reshape(bshape) + beta
        } else {
            let mean = self.running_mean.value_sync().to_device(&input.device());
            input - mean.reshape(bshape) + beta
        }
    }
}

/// Configuration of [`WaveNetBlock`].
#[derive(Config, Debug)]
pub struct WaveNetBlockConfig {
    /// Channels in and out.
    pub channels: usize,
    /// Kernel size of the dilated convolution (odd keeps the length).
    #[config(default = 3)]
    pub kernel_size: usize,
    /// Dilation of the dilated convolution.
    #[config(default = 1)]
    pub dilation: usize,
}

/// A WaveNet-style residual block (van den Oord et al., 2016) with weight normalization on every
/// convolution: a dilated convolution to `2 * channels`, the gate `tanh(a) * sigmoid(b)`, and
/// 1x1 convolutions to the residual (added to the input) and skip outputs.
#[derive(Module, Debug)]
pub struct WaveNetBlock {
    /// Dilated convolution, `channels -> 2 * channels`.
    pub dilated: Conv1d,
    /// 1x1 residual convolution.
    pub residual: Conv1d,
    /// 1x1 skip convolution.
    pub skip: Conv1d,
}

impl WaveNetBlockConfig {
    /// Creates the block with Burn's default initialisation, then weight norm on every
    /// convolution (per output channel, function-preserving).
    ///
    /// # Errors
    ///
    /// A [`ReparamError`] if weight norm cannot be applied (a zero-norm kernel).
    ///
    /// # Panics
    ///
    /// If `channels`, `kernel_size` or `dilation` is zero.
    pub fn init(&self, device: &Device) -> Result<WaveNetBlock, ReparamError> {
        assert!(
            self.channels > 0 && self.kernel_size > 0 && self.dilation > 0,
            "channels, kernel_size and dilation must be positive"
        );
        let pad = (self.kernel_size - 1) * self.dilation;
        let block = WaveNetBlock {
            dilated: Conv1dConfig::new(self.channels, 2 * self.channels, self.kernel_size)
                .with_dilation(self.dilation)
                .with_padding(PaddingConfig1d::Explicit(pad / 2, pad - pad / 2))
                .init(device),
            residual: Conv1dConfig::new(self.channels, self.channels, 1).init(device),
            skip: Conv1dConfig::new(self.channels, self.channels, 1).init(device),
        };
        apply_weight_norm(block, &WeightNormConfig::new())
    }
}

impl WaveNetBlock {
    /// Returns `(residual, skip)`.
    ///
    /// # Shapes
    ///
    /// - input: `[batch, channels, length]`
    /// - residual, skip: `[batch, channels, length]`
    pub fn forward(&self, x: Tensor<3>) -> (Tensor<3>, Tensor<3>) {
        let h = self.dilated.forward(x.clone());
        let [a, b] = h
            .chunk(2, 1)
            .try_into()
            .expect("2 * channels splits in two");
        let gated = tanh(a) * sigmoid(b);
        (
            self.residual.forward(gated.clone()) + x,
            self.skip.forward(gated),
        )
    }
}

/// Configuration of [`WnCnnClassifier`].
#[derive(Config, Debug)]
pub struct WnCnnClassifierConfig {
    /// Input channels (1 for grey images, 3 for colour).
    #[config(default = 1)]
    pub channels_in: usize,
    /// Number of classes.
    #[config(default = 10)]
    pub num_classes: usize,
    /// Output channels of the three convolution stages.
    #[config(default = "[64, 128, 256]")]
    pub widths: [usize; 3],
    /// Width of the hidden linear layer.
    #[config(default = 128)]
    pub hidden: usize,
    /// Whether to apply weight norm (off gives the same network, plain).
    #[config(default = true)]
    pub weight_norm: bool,
    /// The head's input: `None` for global average pooling of the last stage (the classic
    /// block), or `Some([height, width])` of the input images to flatten every position of the
    /// last stage instead (more capacity; `height` and `width` divisible by 4).
    #[config(default = "None")]
    pub flatten_input: Option<[usize; 2]>,
    /// A normalization after each convolution and after the hidden linear layer (before the
    /// ReLU): none, batch norm, or mean-only batch norm. With either, those layers have no bias
    /// (the norm's shift replaces it).
    #[config(default = "CnnNorm::None")]
    pub norm: CnnNorm,
}

/// The normalization layers of [`WnCnnClassifier`].
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum CnnNorm {
    /// No normalization layers.
    None,
    /// Batch normalization.
    Batch,
    /// Mean-only batch normalization (with weight norm: the paper's combination).
    MeanOnly,
}

/// A weight-normalized CNN classifier: three stages of 3x3 convolution (padding 1) and ReLU,
/// max pooling after the first two and global average pooling after the third (or, with
/// [`WnCnnClassifierConfig::flatten_input`], every position of the third flattened), then
/// `Linear -> ReLU -> Linear` to the class logits. Every convolution and linear layer is
/// weight-normalized per output unit.
#[derive(Module, Debug)]
pub struct WnCnnClassifier {
    /// The three convolutions.
    pub convs: Vec<Conv2d>,
    /// 2x2 max pooling.
    pub pool: MaxPool2d,
    /// Global average pooling.
    pub gap: AdaptiveAvgPool2d,
    /// Hidden linear layer.
    pub fc1: Linear,
    /// Output linear layer.
    pub fc2: Linear,
    /// The activation.
    pub relu: Relu,
    /// Whether the head flattens every position (else global average pooling).
    pub flatten: bool,
    /// Batch norms after the three convolutions and the hidden linear layer (or none).
    pub bns: Vec<BatchNorm>,
    /// Mean-only batch norms in the same places (or none).
    pub mobns: Vec<MeanOnlyBatchNorm>,
    /// The input images' `[height, width]` when the head flattens every position (from
    /// [`WnCnnClassifierConfig::flatten_input`]): the canonical form's input shape.
    #[module(skip)]
    pub input_hw: Option<[usize; 2]>,
}

impl WnCnnClassifierConfig {
    /// Creates the classifier.
    ///
    /// # Errors
    ///
    /// A [`ReparamError`] if weight norm cannot be applied.
    ///
    /// # Panics
    ///
    /// If a width, `hidden`, `channels_in` or `num_classes` is zero.
    pub fn init(&self, device: &Device) -> Result<WnCnnClassifier, ReparamError> {
        assert!(
            self.widths.iter().all(|&w| w > 0)
                && self.hidden > 0
                && self.channels_in > 0
                && self.num_classes > 0,
            "every width must be positive"
        );
        let head_in = match self.flatten_input {
            None => self.widths[2],
            Some([h, w]) => {
                assert!(
                    h % 4 == 0 && w % 4 == 0 && h > 0 && w > 0,
                    "flatten_input must be divisible by 4"
                );
                self.widths[2] * (h / 4) * (w / 4)
            }
        };
        let ins = [self.channels_in, self.widths[0], self.widths[1]];
        let bias = self.norm == CnnNorm::None;
        let convs = ins
            .iter()
            .zip(self.widths)
            .map(|(&i, o)| {
                Conv2dConfig::new([i, o], [3, 3])
                    .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                    .with_bias(bias)
                    .init(device)
            })
            .collect();
        let features = [self.widths[0], self.widths[1], self.widths[2], self.hidden];
        let model = WnCnnClassifier {
            convs,
            pool: MaxPool2dConfig::new([2, 2]).with_strides([2, 2]).init(),
            gap: AdaptiveAvgPool2dConfig::new([1, 1]).init(),
            fc1: LinearConfig::new(head_in, self.hidden)
                .with_bias(bias)
                .init(device),
            fc2: LinearConfig::new(self.hidden, self.num_classes).init(device),
            relu: Relu::new(),
            flatten: self.flatten_input.is_some(),
            bns: match self.norm {
                CnnNorm::Batch => features
                    .iter()
                    .map(|&f| BatchNormConfig::new(f).init(device))
                    .collect(),
                _ => Vec::new(),
            },
            mobns: match self.norm {
                CnnNorm::MeanOnly => features
                    .iter()
                    .map(|&f| MeanOnlyBatchNormConfig::new(f).init(device))
                    .collect(),
                _ => Vec::new(),
            },
            input_hw: self.flatten_input,
        };
        if self.weight_norm {
            apply_weight_norm(model, &WeightNormConfig::new())
        } else {
            Ok(model)
        }
    }
}

/// The classifier's layers for the canonical form and PCR: three stages of convolution and
/// ReLU (max pooling after the first two), the head (flatten, or global average pooling), then
/// `Linear -> ReLU -> Linear`. With batch norms or mean-only batch norms (training-mode
/// normalizations) the description names them as [`LiveLayer::Unsupported`], and the canonical
/// form refuses the model.
///
/// The input shape is `[channels_in, height, width]` of
/// [`WnCnnClassifierConfig::flatten_input`]; with global average pooling the canonical form does
/// not depend on the image size, and the model is described at 4 x 4 (the smallest size its two
/// poolings take).
impl Canonicalizable for WnCnnClassifier {
    fn input_shape(&self) -> Vec<usize> {
        let [_, channels, _, _] = self.convs[0].weight.lazy_shape().dims();
        let [h, w] = self.input_hw.unwrap_or([4, 4]);
        vec![channels * self.convs[0].groups, h, w]
    }

    fn layers(&self) -> Vec<LiveLayer<'_>> {
        let norm = |out: &mut Vec<LiveLayer<'_>>| {
            if !self.bns.is_empty() {
                out.push(LiveLayer::Unsupported("batch_norm"));
            } else if !self.mobns.is_empty() {
                out.push(LiveLayer::Unsupported("mean_only_batch_norm"));
            }
        };
        let mut out = Vec::new();
        for (i, conv) in self.convs.iter().enumerate() {
            out.push(LiveLayer::Conv2d(conv));
            norm(&mut out);
            out.push(LiveLayer::Relu);
            if i < 2 {
                out.push(LiveLayer::MaxPool2d(&self.pool));
            }
        }
        if !self.flatten {
            out.push(LiveLayer::AdaptiveAvgPool2d(&self.gap));
        }
        out.push(LiveLayer::Flatten);
        out.push(LiveLayer::Linear(&self.fc1));
        norm(&mut out);
        out.push(LiveLayer::Relu);
        out.push(LiveLayer::Linear(&self.fc2));
        out
    }
}

impl WnCnnClassifier {
    /// The head's input from the last stage's output.
    fn head_input(&self, h: Tensor<4>) -> Tensor<2> {
        if self.flatten {
            h.flatten(1, 3)
        } else {
            self.gap.forward(h).flatten(1, 3)
        }
    }

    /// The normalization of layer `i` (0..3: the convolutions, 3: the hidden linear layer).
    fn norm<const D: usize>(&self, i: usize, h: Tensor<D>) -> Tensor<D> {
        if let Some(bn) = self.bns.get(i) {
            bn.forward(h)
        } else if let Some(bn) = self.mobns.get(i) {
            bn.forward(h)
        } else {
            h
        }
    }

    /// The features before the classifier head.
    fn features(&self, x: Tensor<4>) -> Tensor<2> {
        let mut h = x;
        for (i, conv) in self.convs.iter().enumerate() {
            h = self.relu.forward(self.norm(i, conv.forward(h)));
            if i < 2 {
                h = self.pool.forward(h);
            }
        }
        self.head_input(h)
    }

    /// Class logits.
    ///
    /// # Shapes
    ///
    /// - input: `[batch, channels_in, height, width]` (height and width at least 4)
    /// - output: `[batch, num_classes]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let h = self.features(x);
        let h = self.norm(3, self.fc1.forward(h));
        self.fc2.forward(self.relu.forward(h))
    }

    /// The paper's data-dependent initialisation on one batch, layer after layer, each layer
    /// seeing the outputs of the already-initialized ones.
    ///
    /// # Errors
    ///
    /// An [`InitError`]: the model is not weight-normalized, or a unit is constant on the batch.
    pub fn data_dependent_init(mut self, x: Tensor<4>, init_scale: f64) -> Result<Self, InitError> {
        let mut h = x;
        let convs = std::mem::take(&mut self.convs);
        for (i, conv) in convs.into_iter().enumerate() {
            let (conv, out) = data_dependent_conv2d(conv, h, init_scale)?;
            self.convs.push(conv);
            h = self.relu.forward(self.norm(i, out));
            if i < 2 {
                h = self.pool.forward(h);
            }
        }
        let h = self.head_input(h);
        let (fc1, out) = data_dependent_linear(self.fc1, h, init_scale)?;
        self.fc1 = fc1;
        let out = self.norm(3, out);
        let (fc2, _) = data_dependent_linear(self.fc2, self.relu.forward(out), init_scale)?;
        self.fc2 = fc2;
        Ok(self)
    }
}

/// Configuration of [`WnLinear`].
#[derive(Config, Debug)]
pub struct WnLinearConfig {
    /// The input features.
    pub d_input: usize,
    /// The output units.
    pub d_output: usize,
    /// Whether the layer has a bias.
    #[config(default = true)]
    pub bias: bool,
    /// The epsilon of [`crate::ops::weight_norm_eps`]: the norm is `max(||v||, eps)`.
    #[config(default = 0.0)]
    pub eps: f64,
}

/// A weight-normalized linear layer in the paper's form, `y = (x v) * (g / ||v||) + b`
/// (Salimans & Kingma 2016, eq. 2), through [`crate::ops::weight_norm_linear`].
///
/// It computes what a Burn `Linear` with [`apply_weight_norm`] computes (the same `v`, `g` and
/// bias give the same outputs up to rounding), with the norm per output unit, but scales the
/// layer's output instead of forming the weight `w = g v / ||v||`, and its backward is one
/// analytic node: a training step moves about half the weight-sized memory of the
/// reparameterization on top of a plain layer's. Use it where a weight-normalized Linear is
/// trained and speed matters; use [`apply_weight_norm`] for any other layer, for PyTorch's
/// checkpoint keys and for the canonical-form tools, which read `Linear` modules.
/// [`WnLinear::from_linear`] and [`WnLinear::into_linear`] convert between the two.
///
/// Record paths: `v` (`[d_in, d_out]`, Burn's Linear layout), `g` (`[d_out]`) and `bias`.
#[derive(Module, Debug)]
pub struct WnLinear {
    /// The direction, `[d_input, d_output]`.
    pub v: Param<Tensor<2>>,
    /// The magnitude of every output unit, `[d_output]`.
    pub g: Param<Tensor<1>>,
    /// The bias, `[d_output]`.
    pub bias: Option<Param<Tensor<1>>>,
    /// The epsilon of the norm.
    pub eps: f64,
}

impl WnLinearConfig {
    /// Creates the layer from Burn's default `Linear` initialisation, function-preserving
    /// (`v = w`, `g = ||w||` per output unit).
    ///
    /// # Panics
    ///
    /// If `eps` is negative or not finite, or a sized dimension is zero.
    pub fn init(&self, device: &Device) -> WnLinear {
        assert!(
            self.eps.is_finite() && self.eps >= 0.0,
            "eps must be finite and at least 0"
        );
        assert!(
            self.d_input > 0 && self.d_output > 0,
            "d_input and d_output must be greater than zero"
        );
        let linear = LinearConfig::new(self.d_input, self.d_output)
            .with_bias(self.bias)
            .init(device);
        WnLinear::from_linear(linear, self.eps)
            .expect("a Kaiming-uniform weight has no zero column")
    }
}

impl WnLinear {
    /// The function-preserving conversion: `v = w`, `g = ||w||` per output unit (column), the
    /// bias kept. A `Linear` that already has weight norm attached converts through its weight
    /// `w`.
    ///
    /// # Errors
    ///
    /// [`crate::Error::ZeroNorm`] for a zero column of `w` without an epsilon,
    /// [`crate::Error::NonFiniteNorm`] for a column holding NaN or infinity,
    /// [`crate::Error::InvalidEpsilon`].
    pub fn from_linear(linear: Linear, eps: f64) -> crate::Result<Self> {
        if !(eps.is_finite() && eps >= 0.0) {
            return Err(crate::Error::InvalidEpsilon { eps });
        }
        let w = linear.weight.val().detach();
        let axis = crate::ops::LINEAR_UNITS;
        crate::ops::check_norms(&w, axis, eps)?;
        let [_, d_out] = w.dims();
        let g = crate::ops::norm_except_dim(w.clone(), 2.0, axis)?
            .reshape([d_out])
            .detach();
        Ok(Self {
            v: Param::from_tensor(w),
            g: Param::from_tensor(g),
            bias: linear.bias.map(|b| Param::from_tensor(b.val().detach())),
            eps,
        })
    }

    /// The weight `w = g v / max(||v||, eps)` (`[d_input, d_output]`), by the fused operation.
    pub fn weight(&self) -> Tensor<2> {
        let [_, d_out] = self.v.dims();
        crate::ops::weight_norm_eps(
            self.v.val(),
            self.g.val().reshape([1, d_out]),
            crate::ops::LINEAR_UNITS,
            self.eps,
        )
        .expect("v and g keep the shapes the layer was made with")
    }

    /// A plain `Linear` computing the same function, for inference or export: its weight is
    /// [`Self::weight`], its bias this layer's.
    pub fn into_linear(self) -> Linear {
        Linear {
            weight: Param::from_tensor(self.weight().detach()),
            bias: self.bias.map(|b| Param::from_tensor(b.val().detach())),
        }
    }

    /// `[..., d_input]` to `[..., d_output]`.
    ///
    /// # Panics
    ///
    /// If the input's last axis is not `d_input` (see [`crate::ops::weight_norm_linear`]).
    pub fn forward<const D: usize>(&self, input: Tensor<D>) -> Tensor<D> {
        crate::ops::weight_norm_linear(
            input,
            self.v.val(),
            self.g.val(),
            self.bias.as_ref().map(Param::val),
            self.eps,
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }
}
