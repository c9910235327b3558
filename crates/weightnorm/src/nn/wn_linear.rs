//! The weight-normalized linear layer in the paper's form.

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Device, Tensor};

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
