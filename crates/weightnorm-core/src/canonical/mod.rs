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
//! in `f64`; a layer is known by its position ([`LayerPath`]). Reports, notes ([`Note`]) and
//! errors ([`CanonicalError`]) carry positions and typed reasons; a front-end's [`Namer`] turns
//! positions into its own names when they are shown ([`Positions`] is the calculus's own). File
//! formats and frameworks are front-ends around it: an architecture file and a checkpoint
//! (`formats::arch`), an ONNX graph (`formats::onnx`, through [`crate::graph`]), a live Burn
//! module (the `weightnorm` crate), a traced torch module (the Python package); each keeps its
//! own names beside the layers' positions. Every rescaling reports the per-unit factors it
//! applied ([`LayerFactors`]); [`rescale`] composes a whole canonicalization that keeps the
//! function (or caps the gain) into one set of factors, what PCR transports optimizer state by.
//!
//! The reference forward pass in `f64` (`eval.rs`: one sample at a time, channel-major) is
//! what [`verify`] compares.
//!
//! ```
//! use weightnorm_core::canonical::{Activation, Layer, Network, Rows, Weighted, canonicalize, verify};
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
mod error;
mod eval;
mod fold;
mod form;
mod network;
mod path;
mod position;

pub use calculus::{
    Absorbed, Activation, Decomposed, Real, Rows, absorb, absorb_in_place, decompose,
    flatten_scale, gain_direction, global_gain, hadamard_norm,
};
pub use error::{CanonicalError, LayerFault, Overflow};
pub use fold::NormError;
pub use form::{
    Agreement, Canonical, LayerFactors, LayerReport, Reconstituted, Rescaled, argmax, canonicalize,
    reconstitute, reconstitute_with_factors, rescale, verify,
};
pub use network::{
    Barrier, ConvGeometry, Layer, MAX_VALUES, Network, Norm, NormKind, Pool, Weighted,
    shapes_through,
};
pub use path::{LayerPath, Namer, child, path_name};
pub use position::{Carry, Note, NoteKind, Positions};

#[cfg(test)]
mod tests;
