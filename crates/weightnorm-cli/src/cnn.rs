//! The CNN classifier `train --model cnn` trains, in every parameterization: plain, or
//! weight-normalized, with batch norms or mean-only batch norms after its layers, described for
//! the canonical form and PCR. (It lived in the library until the library kept only reusable
//! layers: it is this command's model.)

use burn::config::Config;
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{AdaptiveAvgPool2d, AdaptiveAvgPool2dConfig, MaxPool2d, MaxPool2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig, PaddingConfig2d, Relu};
use burn::tensor::{Device, Tensor};
use weightnorm::init::{InitError, data_dependent_conv2d, data_dependent_linear};
use weightnorm::live::{Canonicalizable, LiveLayer};
use weightnorm::nn::{MeanOnlyBatchNorm, MeanOnlyBatchNormConfig};
use weightnorm::{ReparamError, WeightNormConfig, apply_weight_norm};

/// Configuration of [`CnnClassifier`].
#[derive(Config, Debug)]
pub struct CnnClassifierConfig {
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

/// The normalization layers of [`CnnClassifier`].
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum CnnNorm {
    /// No normalization layers.
    None,
    /// Batch normalization.
    Batch,
    /// Mean-only batch normalization (with weight norm: the paper's combination).
    MeanOnly,
}

/// The CNN classifier of `train --model cnn`: three stages of 3x3 convolution (padding 1) and
/// ReLU, max pooling after the first two and global average pooling after the third (or, with
/// [`CnnClassifierConfig::flatten_input`], every position of the third flattened), then
/// `Linear -> ReLU -> Linear` to the class logits. With [`CnnClassifierConfig::weight_norm`]
/// every convolution and linear layer is weight-normalized per output unit; without, the
/// weights are plain (the `plain`, `plain-wd`, `pcr` and `bn` parameterizations).
#[derive(Module, Debug)]
pub struct CnnClassifier {
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
    /// [`CnnClassifierConfig::flatten_input`]): the canonical form's input shape.
    #[module(skip)]
    pub input_hw: Option<[usize; 2]>,
}

impl CnnClassifierConfig {
    /// Creates the classifier.
    ///
    /// # Errors
    ///
    /// A [`ReparamError`] if weight norm cannot be applied.
    ///
    /// # Panics
    ///
    /// If a width, `hidden`, `channels_in` or `num_classes` is zero.
    pub fn init(&self, device: &Device) -> Result<CnnClassifier, ReparamError> {
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
        let model = CnnClassifier {
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
/// [`CnnClassifierConfig::flatten_input`]; with global average pooling the canonical form does
/// not depend on the image size, and the model is described at 4 x 4 (the smallest size its two
/// poolings take).
impl Canonicalizable for CnnClassifier {
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

impl CnnClassifier {
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

#[cfg(test)]
mod tests {
    use burn::tensor::{Device, Distribution, Tensor};
    use weightnorm::live::describe;

    use super::*;

    fn values<const D: usize>(t: &Tensor<D>) -> Vec<f64> {
        t.clone()
            .into_data()
            .convert::<f64>()
            .try_to_vec::<f64>()
            .unwrap()
    }

    #[test]
    #[should_panic(expected = "every width must be positive")]
    fn a_zero_width_panics() {
        let _ = CnnClassifierConfig::new()
            .with_widths([4, 0, 4])
            .init(&Device::flex());
    }

    #[test]
    #[should_panic(expected = "every width must be positive")]
    fn no_classes_panics() {
        let _ = CnnClassifierConfig::new()
            .with_widths([2, 2, 2])
            .with_num_classes(0)
            .init(&Device::flex());
    }

    #[test]
    #[should_panic(expected = "flatten_input must be divisible by 4")]
    fn a_flatten_input_not_divisible_by_4_panics() {
        let _ = CnnClassifierConfig::new()
            .with_widths([2, 2, 2])
            .with_flatten_input(Some([6, 8]))
            .init(&Device::flex());
    }

    #[test]
    fn weight_norm_keeps_the_function_and_data_dependent_init_standardizes_the_logits() {
        let device = Device::flex().autodiff();
        device.seed(1);
        let config = CnnClassifierConfig::new()
            .with_widths([4, 6, 8])
            .with_hidden(12);
        let plain = config
            .clone()
            .with_weight_norm(false)
            .init(&device)
            .unwrap();
        let x = Tensor::<4>::random([6, 1, 12, 12], Distribution::Normal(0.0, 1.0), &device);
        assert_eq!(plain.forward(x.clone()).dims(), [6, 10]);
        let model = apply_weight_norm(plain.clone(), &WeightNormConfig::new()).unwrap();
        let (a, b) = (
            values(&model.forward(x.clone())),
            values(&plain.forward(x.clone())),
        );
        let scale = b.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1.0);
        let err = a
            .iter()
            .zip(&b)
            .fold(0.0f64, |m, (p, q)| m.max((p - q).abs()))
            / scale;
        assert!(err <= 1e-5, "{err:e}");
        let init = model.data_dependent_init(x.clone(), 1.0).unwrap();
        let y = values(&init.forward(x));
        for class in 0..10 {
            let col: Vec<f64> = y.iter().skip(class).step_by(10).copied().collect();
            let mean = col.iter().sum::<f64>() / col.len() as f64;
            let var = col.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / col.len() as f64;
            assert!(
                mean.abs() < 1e-4 && (var.sqrt() - 1.0).abs() < 1e-4,
                "{mean} {var}"
            );
        }
    }

    #[test]
    fn a_classifier_with_batch_norms_is_refused_by_the_canonical_form() {
        let cnn = CnnClassifierConfig::new()
            .with_widths([2, 2, 2])
            .with_hidden(3)
            .with_norm(CnnNorm::Batch)
            .init(&Device::flex())
            .unwrap();
        let e = describe(&cnn).unwrap_err().to_string();
        assert!(e.starts_with("layer 1 (batch_norm)"), "{e}");
    }
}
