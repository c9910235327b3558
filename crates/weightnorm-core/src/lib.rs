//! # weightnorm-core
//!
//! Weight normalization (Salimans & Kingma, 2016), `w = g * v / ||v||`, and the canonical form
//! of a network under positive rescaling, with no deep-learning framework: plain arithmetic on
//! slices and bytes. The `weightnorm` crate puts Burn around it (the backend extension, layers,
//! the live-module front-end, PCR for Burn's optimizers), the `weightnorm` command line and the
//! Python package `weightnorm` use it directly. Nothing here knows Burn, PyTorch's runtime, a
//! terminal or a command-line flag.
//!
//! ## Module map
//!
//! One concept per module; arrows are "uses". No module uses one below it in this table except
//! as its row says, so there is no cycle.
//!
//! | module | holds | uses |
//! |---|---|---|
//! | [`axis`] | [`NormAxis`], PyTorch's `dim` rule ([`NormAxis::from_torch`]), the one table of layer layouts ([`LayerKind::unit_axes`], [`LayerKind::torch_unit_axes`]) | [`error`] |
//! | [`error`] | [`Error`]: what the weight-norm operations refuse | [`axis`] (for the slice it names) |
//! | [`kernels`] | forward, backward and norms on slices (f32, f64; f16 and bf16 summed in f32), exact for every finite input, threaded above 64 Ki elements | [`axis`] |
//! | [`canonical`] | the calculus: networks in output and input units ([`canonical::Network`]), the three transforms, batch-norm folding, canonicalize, reconstitute, verify, gains, the per-unit factors of every rescaling, typed notes ([`canonical::Note`]) and positions ([`canonical::LayerPath`], [`canonical::Namer`]); the f64 interpreter in its own file | nothing |
//! | [`graph`] | one lowering of a dataflow graph onto the calculus (chains, residual forks, shortcuts, barrier clusters, WaveNet's gate, the head), parameterized by a front-end ([`graph::Dataflow`]) that lowers its own ops and names its own positions | [`canonical`] |
//! | [`rng`] | SplitMix64: the one deterministic generator of test data, data orders and random verification inputs | nothing |
//! | [`transport`] | an optimizer's moments carried across a rescaling, element by element, on plain slices: covariant, weight-scaled, reset, keep | nothing |
//! | [`formats`] (feature `formats`) | checkpoints: `.safetensors` memory-mapped, `.pt` (zip and legacy) through a restricted unpickler that calls nothing; atomic writers; architecture files ([`formats::arch`]); ONNX models ([`formats::onnx`], feature `onnx`: protobuf, constants, per-op lowering through [`graph`], writing back) | [`canonical`], [`graph`], [`axis`] |
//! | [`surgery`] (feature `formats`) | weight-norm pairs in both PyTorch key schemes; fuse, split, convert and their statistics on tensor maps | [`formats`], [`kernels`], [`axis`] |
//! | [`files`] (feature `onnx`) | surgery from file to file as the CLI and the Python package do it: [`files::Outputs`] (staged, atomic, never over an input), fuse, split, convert and ONNX folding on files, [`files::FileError`] | [`formats`], [`surgery`] |
//!
//! ## Features
//!
//! - `formats` (default): checkpoints, architecture files, surgery (`safetensors`, `memmap2`,
//!   `serde_json`).
//! - `onnx` (default): ONNX models (`prost`, `bytes`); implies `formats`.
//!
//! With `default-features = false` the crate holds the axes, the kernels, the calculus, the
//! graph lowering and the transport: what the Burn layers need, and nothing that reads files.
//!
//! ```
//! use weightnorm_core::{NormAxis, kernels};
//!
//! // A PyTorch Linear(3, 2) weight, [out, in], normalized per output row (dim = 0).
//! let v = [1.0f32, 2.0, 2.0, 0.0, 3.0, 4.0];
//! let axis = NormAxis::from_torch(Some(0), 2).unwrap();
//! let g = kernels::norms(&v, &[2, 3], axis); // [3, 5]
//! assert_eq!(g, vec![3.0, 5.0]);
//! // With g = ||v||, w is v itself: the function-preserving initialisation.
//! assert_eq!(kernels::weight_norm(&v, &g, &[2, 3], axis, 0.0), v.to_vec());
//! ```

#![warn(missing_docs)]

pub mod axis;
pub mod canonical;
pub mod error;
#[cfg(feature = "onnx")]
pub mod files;
#[cfg(feature = "formats")]
pub mod formats;
pub mod graph;
pub mod kernels;
pub mod rng;
#[cfg(feature = "formats")]
pub mod surgery;
pub mod transport;

pub use axis::{LayerKind, NormAxis, UnitAxes};
pub use error::{Error, LinearMismatch, Result};
