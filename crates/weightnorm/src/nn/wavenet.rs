//! WaveNet's residual block with weight norm on every convolution.

use burn::config::Config;
use burn::module::Module;
use burn::nn::PaddingConfig1d;
use burn::nn::conv::{Conv1d, Conv1dConfig};
use burn::tensor::activation::{sigmoid, tanh};
use burn::tensor::{Device, Tensor};

use crate::reparam::{ReparamError, WeightNormConfig, apply_weight_norm};

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
