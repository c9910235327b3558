//! Initialisations of weight-normalized layers.
//!
//! The function-preserving initialisation (`g = ||w||`, `v = w`) and the paper's
//! (`v ~ N(0, 0.05)`, `g = ||v||`) are chosen when weight norm is applied
//! ([`Init`](crate::reparam::Init)). This module adds the data-dependent initialisation of
//! Salimans & Kingma (2016, section 3): on one batch, per output unit,
//!
//! ```text
//! t = v . x / ||v||        (the layer's output with g = 1 and no bias)
//! g = init_scale / std(t)
//! b = -mean(t) * init_scale / std(t)
//! ```
//!
//! so that each unit's pre-activation has mean 0 and standard deviation `init_scale` on that
//! batch. Networks are initialized layer after layer, each layer seeing the outputs of the
//! already-initialized layers before it (the functions here return the layer's new output for
//! that purpose). Statistics are over the batch (and spatial positions for convolutions), with
//! the population standard deviation. A layer without bias gets `g` only: its outputs then have
//! standard deviation `init_scale` but keep their (scaled) mean.

use burn::module::{Module, ModuleMapper, Param, Parameter};
use burn::nn::Linear;
use burn::nn::conv::{Conv1d, Conv2d};
use burn::tensor::Tensor;
use thiserror::Error;

use crate::axis::LayerKind;
use crate::reparam::WeightNorm;

/// Why a data-dependent initialisation could not be done.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum InitError {
    /// The layer's weight has no weight norm.
    #[error(
        "the layer's weight has no weight norm: apply it before the data-dependent initialisation"
    )]
    NoWeightNorm,
    /// Weight norm is not per output unit, so `g` does not scale single outputs.
    #[error(
        "the layer's weight norm is {got}, not per output unit ({want}): the data-dependent initialisation sets one g per output unit"
    )]
    WrongAxis {
        /// The axis weight norm uses.
        got: String,
        /// The output-unit axis.
        want: String,
    },
    /// A unit's output is constant on the batch, so its scale cannot be set.
    #[error(
        "output unit {unit} is constant on the initialisation batch (std 0): use a batch with more variety"
    )]
    DeadUnit {
        /// The unit's index.
        unit: usize,
    },
    /// `init_scale` is not a positive number.
    #[error("init_scale must be finite and positive, got {0}")]
    InvalidScale(f64),
}

/// Replaces the value of the float parameter at `path`, keeping its id and training state.
struct SetParam<'a> {
    path: &'a str,
    value: &'a Tensor<1>,
    stack: Vec<String>,
}

impl ModuleMapper for SetParam<'_> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.stack.push(name.to_string());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.stack.pop();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        if self.stack.join(".") != self.path {
            return param;
        }
        let value = self.value.clone();
        param.map(|old| {
            let new: Tensor<D> = value
                .reshape(old.shape())
                .cast(old.dtype())
                .to_device(&old.device())
                .detach();
            Parameter::set_require_grad(new, old.is_require_grad())
        })
    }
}

fn set_param<M: Module>(module: M, path: &str, value: &Tensor<1>) -> M {
    module.map(&mut SetParam {
        path,
        value,
        stack: Vec::new(),
    })
}

/// Per-unit mean and population standard deviation of `t` along `axis`.
fn unit_stats<const K: usize>(t: Tensor<K>, axis: usize) -> (Tensor<1>, Tensor<1>) {
    let units = t.dims()[axis];
    let flat: Tensor<2> = t.swap_dims(axis, K - 1).reshape([-1, units as i64]);
    let mean = flat.clone().mean_dim(0);
    let var = (flat - mean.clone()).square().mean_dim(0);
    (mean.reshape([units]), var.sqrt().reshape([units]))
}

/// The data-dependent initialisation of one weight-normalized layer, generic over the forward.
fn ddi<M: Module, X: Clone, const K: usize>(
    layer: M,
    has_bias: bool,
    units: usize,
    x: X,
    unit_axis: usize,
    init_scale: f64,
    forward: impl Fn(&M, X) -> Tensor<K>,
) -> Result<(M, Tensor<K>), InitError> {
    if !(init_scale.is_finite() && init_scale > 0.0) {
        return Err(InitError::InvalidScale(init_scale));
    }
    let device = {
        let mut devices = layer.devices();
        devices.remove(0)
    };
    // t = v . x / ||v||: the output with g = 1 and a zero bias.
    let ones = Tensor::<1>::ones([units], &device);
    let zeros = Tensor::<1>::zeros([units], &device);
    let mut probe = set_param(layer.clone(), "weight.weight_norm.g", &ones);
    if has_bias {
        probe = set_param(probe, "bias", &zeros);
    }
    let t = forward(&probe, x.clone()).detach();
    let (mean, std) = unit_stats(t, unit_axis);
    let host = |t: &Tensor<1>| {
        t.to_data()
            .convert::<f64>()
            .try_to_vec::<f64>()
            .unwrap_or_default()
    };
    // A unit is constant when its spread is at the level of rounding error of its mean.
    let (std_values, mean_values) = (host(&std), host(&mean));
    let dead = std_values
        .iter()
        .zip(&mean_values)
        .position(|(s, m)| !s.is_finite() || *s <= 1e-6 * m.abs() || *s == 0.0);
    if let Some(unit) = dead {
        return Err(InitError::DeadUnit { unit });
    }
    let g = std.recip().mul_scalar(init_scale);
    let mut layer = set_param(layer, "weight.weight_norm.g", &g);
    if has_bias {
        let b = (mean * g).neg();
        layer = set_param(layer, "bias", &b);
    }
    let y = forward(&layer, x);
    Ok((layer, y))
}

fn weight_norm_of<const D: usize>(
    weight: &Param<Tensor<D>>,
    kind: LayerKind,
) -> Result<usize, InitError> {
    let wn = weight
        .reparameterization::<WeightNorm>()
        .ok_or(InitError::NoWeightNorm)?;
    if wn.axis() != kind.output_axis() {
        return Err(InitError::WrongAxis {
            got: wn.axis().describe(),
            want: kind.output_axis().describe(),
        });
    }
    Ok(wn.g.dims()[0])
}

/// Defines a public data-dependent initialisation for one layer type: the layer's weight-norm
/// check, then [`ddi`] with the layer's own forward.
macro_rules! data_dependent {
    ($(#[$doc:meta])* $name:ident, $layer:ident, $rank:literal) => {
        $(#[$doc])*
        pub fn $name(
            layer: $layer,
            x: Tensor<$rank>,
            init_scale: f64,
        ) -> Result<($layer, Tensor<$rank>), InitError> {
            let units = weight_norm_of(&layer.weight, LayerKind::$layer)?;
            let has_bias = layer.bias.is_some();
            ddi(layer, has_bias, units, x, 1, init_scale, |l, x| {
                l.forward(x)
            })
        }
    };
}

data_dependent!(
    /// Data-dependent initialisation of a weight-normalized [`Linear`] on the batch `x`.
    /// Returns the initialized layer and its output on `x`.
    ///
    /// # Shapes
    ///
    /// - `x`: `[batch, d_input]`
    /// - output: `[batch, d_output]`
    ///
    /// # Errors
    ///
    /// [`InitError`]: no weight norm, weight norm not per output unit, a unit constant on the
    /// batch, or a bad `init_scale`.
    data_dependent_linear,
    Linear,
    2
);

data_dependent!(
    /// Data-dependent initialisation of a weight-normalized [`Conv1d`] on the batch `x`
    /// (statistics over the batch and the positions).
    ///
    /// # Shapes
    ///
    /// - `x`: `[batch, channels_in, length]`
    /// - output: `[batch, channels_out, length_out]`
    ///
    /// # Errors
    ///
    /// As [`data_dependent_linear`].
    data_dependent_conv1d,
    Conv1d,
    3
);

data_dependent!(
    /// Data-dependent initialisation of a weight-normalized [`Conv2d`] on the batch `x`
    /// (statistics over the batch and the spatial positions).
    ///
    /// # Shapes
    ///
    /// - `x`: `[batch, channels_in, height, width]`
    /// - output: `[batch, channels_out, height_out, width_out]`
    ///
    /// # Errors
    ///
    /// As [`data_dependent_linear`].
    data_dependent_conv2d,
    Conv2d,
    4
);
