//! # weightnorm
//!
//! Weight normalization (Salimans & Kingma, 2016) for the [Burn](https://burn.dev) deep-learning
//! framework: `w = g * v / ||v||`, with PyTorch's exact semantics and a fused CPU forward with an
//! analytic backward.
//!
//! - [`axis`]: [`NormAxis`] and PyTorch's `dim` rule ([`NormAxis::from_torch`]), and the one
//!   table of layer layouts ([`LayerKind::unit_axes`]).
//! - [`ops`]: [`norm_except_dim`](ops::norm_except_dim), [`weight_norm`](ops::weight_norm) and
//!   their checked and reference variants, built on the [`WeightNormBackend`](ops::WeightNormBackend)
//!   backend extension.
//! - [`reparam`]: weight norm on any Burn module in one call ([`apply_weight_norm`]), removable
//!   ([`remove_weight_norm`]), as a Burn `Reparameterization`.
//! - [`init`]: the paper's data-dependent initialisation.
//! - [`canonical`]: the canonical form under positive rescaling: the network description
//!   (from architecture files and checkpoints), the transforms, canonicalize, reconstitute,
//!   verify, the global gain.
//! - [`torch`]: PyTorch checkpoints: both weight-norm key schemes, fuse, split, convert.
//! - [`nn`]: mean-only batch normalization, a WaveNet-style residual block and a
//!   weight-normalized CNN classifier.
//!
//! ```
//! use burn::tensor::{Device, Tensor};
//! use weightnorm::{NormAxis, ops};
//!
//! let device = Device::default();
//! // A PyTorch Linear(3, 2) weight, [out, in], normalized per output row (dim = 0).
//! let v = Tensor::<2>::from_data([[1.0, 2.0, 2.0], [0.0, 3.0, 4.0]], &device);
//! let axis = NormAxis::from_torch(Some(0), 2).unwrap();
//! let g = ops::norm_except_dim(v.clone(), 2.0, axis).unwrap(); // [[3.0], [5.0]]
//! let w = ops::weight_norm(v.clone(), g, axis).unwrap();
//! // With g = ||v||, w is v itself: the function-preserving initialisation.
//! let err = (w - v).abs().max().into_scalar::<f32>();
//! assert!(err <= 1e-6);
//! ```

#![warn(missing_docs)]

pub mod axis;
pub mod canonical;
pub mod error;
pub mod init;
pub mod nn;
pub mod ops;
pub mod reparam;
pub mod torch;

pub use axis::{LayerKind, NormAxis, UnitAxes};
pub use error::{Error, Result};
pub use reparam::{
    AxisChoice, Init, ReparamError, WeightNorm, WeightNormConfig, apply_weight_norm,
    remove_weight_norm,
};

/// The README's examples, compiled and run as doc tests.
#[doc = include_str!("../../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
