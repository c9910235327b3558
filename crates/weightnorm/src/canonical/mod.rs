//! The canonical form of a network under positive rescaling.
//!
//! A ReLU-like network keeps free magnitudes in its weights: scaling a unit's incoming weights by
//! `s > 0` and its outgoing weights by `1 / s` changes nothing. Three transforms remove them:
//!
//! - **I, decomposition** ([`decompose`]): `linear(W, b) = unit_row_linear(V, b / g)` followed by
//!   `scale_vector(g)`, with `g_i = ||row_i(W)||` and `row_i(V) = row_i(W) / g_i` (for a
//!   convolution a row is one output channel's kernel, all input channels and taps).
//! - **II, commutation** ([`Activation::commute`]): `scale_vector(g)` then `f` equals `f` then
//!   `scale_vector(g)` for positively homogeneous `f` and `g >= 0`: ReLU, leaky ReLU (any slope),
//!   identity, dropout at inference, max and average pooling per channel, zero padding.
//! - **III, absorption** ([`absorb`]): `scale_vector(g_in)` then `linear(W)` equals
//!   `unit_row_linear(V_out)` then `scale_vector(g_out)`, with `row_i(W_temp) = row_i(W) * g_in`
//!   (per input unit or channel), `g_out_i = ||row_i(W_temp)||` and `V_out = W_temp / g_out`.
//!
//! Flatten repeats each channel's scale over its positions ([`flatten_scale`]); biases are
//! carried (divided by the layer's scale); a zero row keeps scale 1 and is reported.
//!
//! [`canonicalize`] runs them over a [`Network`] until one scale vector remains at the output;
//! its norm is the [`global_gain`], its direction the [`gain_direction`]. Beyond the write-up
//! this implements: batch norm and mean-only batch norm in evaluation mode (folded into the
//! weighted layer before them, or, with nothing to fold into, treated as a per-channel layer),
//! per-channel multipliers (never folded), residual blocks `y = x + F(x)` (the body is brought
//! to the skip path's scale, the ratio kept in the body's last weighted layer) and shortcuts
//! `y = S(x) + F(x)` (a projection shortcut: the skip hands on its own scale and the body is
//! brought to it), PReLU with a slope per channel, and non-homogeneous activations (tanh,
//! sigmoid, GELU, the WaveNet gate, softmax) as barriers, where the scale is multiplied back
//! into the last weighted layer before them and propagation restarts. [`reconstitute`] turns a
//! canonical form (with its own or a changed scale) back into a normal network, and [`verify`]
//! compares outputs.
//!
//! The calculus speaks of networks only: a weight is one row per output unit (its input units,
//! times the taps of a convolution, along the row), stored as `f32` or `f64` ([`Real`]), summed
//! in `f64`; a layer is known by its position ([`LayerPath`]). File formats are front-ends
//! around it: an architecture file and a checkpoint are read by
//! [`torch::from_arch`](crate::torch::from_arch) and written back by
//! [`torch::to_tensors`](crate::torch::to_tensors), which keep the checkpoint keys beside the
//! layers' positions; an ONNX graph is read by
//! [`onnx::OnnxModel::network`](crate::onnx::OnnxModel::network) and written back by
//! [`onnx::write_model`](crate::onnx::write_model), which keep the graph's nodes and
//! initializers beside them; a live Burn module is read by [`live::describe`](crate::live::describe)
//! and rewritten in place by [`live::write`](crate::live::write), which keep its parameter ids.
//! Every rescaling reports the per-unit factors it applied ([`LayerFactors`]).
//!
//! ```
//! use weightnorm::canonical::{Activation, Layer, Network, Rows, Weighted, canonicalize, verify};
//!
//! let linear = |out, inp, data: Vec<f64>| {
//!     Layer::Weighted(Weighted {
//!         w: Rows::new(out, inp, data),
//!         b: None,
//!         conv: None,
//!     })
//! };
//! let net = Network::new(
//!     vec![2],
//!     vec![
//!         linear(2, 2, vec![3.0, 4.0, 1.0, 0.0]),
//!         Layer::Act(Activation::Relu),
//!         linear(1, 2, vec![2.0, -1.0]),
//!     ],
//! )
//! .unwrap();
//! let c = canonicalize(net.clone()).unwrap();
//! // g2 = || [2 * 5, -1 * 1] || = sqrt(101)
//! assert!((c.global_gain() - 101f64.sqrt()).abs() < 1e-12);
//! let agreement = verify(&net, &c, &[vec![1.0, 2.0], vec![-3.0, 0.5]]);
//! assert!(agreement.max_rel_error < 1e-12);
//! ```

mod calculus;
mod fold;
mod form;
mod network;

use thiserror::Error;

pub use calculus::{
    Absorbed, Activation, Decomposed, Real, Rows, absorb, absorb_in_place, decompose,
    flatten_scale, gain_direction, global_gain, hadamard_norm,
};
pub use fold::NormError;
pub use form::{
    Agreement, Canonical, LayerFactors, LayerReport, Reconstituted, argmax, canonicalize,
    reconstitute, reconstitute_with_factors, verify,
};
pub use network::{
    Barrier, ConvGeometry, Layer, LayerPath, MAX_VALUES, Network, Norm, NormKind, Pool, Weighted,
    child, path_name, shapes_through,
};

/// Why a network could not be described or put in canonical form.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum CanonicalError {
    /// A layer (named by its position, `"3"` or `"4.body.0"`) does not fit, or its description
    /// or tensors are wrong.
    #[error("layer {layer} ({op}): {reason}")]
    Layer {
        /// The layer's position.
        layer: String,
        /// Its op.
        op: String,
        /// What is wrong.
        reason: String,
    },
    /// A scale with a negative entry cannot pass an activation.
    #[error("layer {layer}: a scale with negative entries cannot commute with {activation}")]
    NegativeScale {
        /// The layer's position.
        layer: String,
        /// The activation.
        activation: String,
    },
    /// A value of the result exceeds the range of its type: the exact canonical form is not
    /// representable.
    #[error("layer {layer}: {what}")]
    Overflow {
        /// The layer's position.
        layer: String,
        /// Which value.
        what: String,
    },
    /// An input shape without axes, or of more than [`MAX_VALUES`] values per sample.
    #[error("an input of shape {shape:?}: it needs at least one axis and at most 2^32 values")]
    Input {
        /// The shape as given.
        shape: Vec<usize>,
    },
}

#[cfg(test)]
mod tests;
