//! Mean-only batch normalization (Salimans & Kingma 2016, section 2.2).

use burn::config::Config;
use burn::module::{Flag, Module, Param, RunningState};
use burn::nn::Initializer;
use burn::tensor::{Device, Tensor};

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
