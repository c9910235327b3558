//! # weightnorm
//!
//! Weight normalization (Salimans & Kingma, 2016) for the [Burn](https://burn.dev) deep-learning
//! framework: `w = g * v / ||v||`, with PyTorch's exact semantics and a fused CPU forward with an
//! analytic backward; the canonical form of a network under positive rescaling.
//!
//! The framework-free parts (the layout table, the kernels on slices, the canonical calculus,
//! the graph lowering, the transport of optimizer state, the file formats and checkpoint
//! surgery) live in [`weightnorm_core`] and are re-exported here where a Burn user looks for
//! them; this crate holds what needs Burn.
//!
//! ## Module map
//!
//! One concept per module; arrows are "uses". Re-exported from the core: [`axis`], [`error`],
//! [`canonical`], [`graph`], [`transport`].
//!
//! | module | holds | uses |
//! |---|---|---|
//! | [`axis`] (core) | [`NormAxis`], PyTorch's `dim` rule ([`NormAxis::from_torch`]), the one table of layer layouts ([`LayerKind::unit_axes`], [`LayerKind::torch_unit_axes`]) | nothing |
//! | [`error`] (core) | [`Error`]: what the operations refuse | `axis` |
//! | [`ops`] | [`norm_except_dim`](ops::norm_except_dim), [`weight_norm`](ops::weight_norm), [`weight_norm_linear`](ops::weight_norm_linear): the [`WeightNormBackend`](ops::WeightNormBackend) extension with a composed default (every backend, `ops/backend.rs`), the thin Flex adapter onto the core's kernels (`ops/flex.rs`; [`ops::slices`] re-exports them), the fused GPU kernels in CubeCL with their launch plan (`ops/cube/`, features `cuda` and `wgpu`), and the autodiff node with the analytic backward (`ops/autodiff.rs`) | `axis`, core `kernels` |
//! | [`reparam`] | [`WeightNorm`] as a Burn `Reparameterization`, [`WeightNormConfig`] (a Burn `Config`), [`apply_weight_norm`], [`remove_weight_norm`] | `ops`, `axis` |
//! | [`init`] | the paper's data-dependent initialisation | `reparam`, `axis` |
//! | [`nn`] | one layer a file: [`nn::WnLinear`] (the paper's form), [`nn::MeanOnlyBatchNorm`], [`nn::WaveNetBlock`] | `ops`, `reparam`, `init`, `live` |
//! | [`canonical`] (core) | the calculus: networks in output and input units, the three transforms, folding, canonicalize, reconstitute, verify, gains, typed notes and positions | nothing |
//! | [`graph`] (core) | one lowering of a dataflow graph onto the calculus, parameterized by a front-end | `canonical` |
//! | [`transport`] (core) | moments carried across a rescaling, element by element | nothing |
//! | [`live`] | the live-module front-end of the calculus: [`live::Canonicalizable`] (a module names its layers, [`live::LiveLayer`], borrowing Burn's), [`live::describe`] (module to network, keyed by `ParamId`), [`live::write`] (network back into the module, every `ParamId` kept), [`live::canonicalize_module`] (in place, function kept or gain capped, with the per-element factors applied) | `canonical`, `axis` |
//! | [`pcr`] (feature `pcr`) | Periodic Canonical Regularization: [`pcr::PcrConfig`], the differentiable global gain ([`pcr::gain`]), the optimizer-state transport through Burn's optimizer record ([`pcr::transport`], on the core's [`transport`]), the driver [`pcr::Pcr`] for hand-written loops and [`pcr::PcrSlot`] / [`pcr::optimize`] for burn-train's `Learner` | `live`, `canonical`, `transport` |
//! | [`torch`] (feature `checkpoints`) | PyTorch checkpoints from the core ([`weightnorm_core::formats`], [`weightnorm_core::surgery`]: readers, writers, pairs, fuse/split/convert, architecture files), and Burn modules to and from checkpoints ([`torch::load_into_module`], [`torch::save_module`]) | core `formats`, `surgery`, `reparam` |
//! | [`onnx`] (feature `onnx`) | the ONNX front-end of the calculus, from the core ([`weightnorm_core::formats::onnx`]) | core |
//!
//! ## Features
//!
//! `checkpoints`, `onnx` and `pcr` are on by default; with `default-features = false` the crate
//! is the operation, the layers, reparameterization, initialisation and the canonical form of
//! live modules, and compiles no file format. `cuda` and `wgpu` add the GPU kernels.
//!
//! ## How data flows
//!
//! ```text
//! training     Burn module --apply_weight_norm--> parameters v (+ g in the reparameterization)
//!              forward: param.val() = ops::weight_norm(v, g) (fused on the CPU and CubeCL GPUs)
//!              backward: the autodiff node's analytic gradients for v and g
//! checkpoints  file --torch::Checkpoint (bounded, typed errors)--> TensorEntry list --detect_pairs-->
//!              fuse | split | convert --write_safetensors(_with)--> file (atomic)
//!              Burn module <--load_into_module / save_module--> tensors
//! canonical    arch JSON --torch::arch::parse_arch--> ArchSpec --from_spec(+ tensors)--> Network + Bindings
//!              Network --canonicalize--> Canonical (unit rows, one output scale, notes)
//!              --verify--> Agreement;  --to_tensors(Bindings)--> checkpoint tensors
//!              Burn module (Canonicalizable) --live::describe--> Network + LiveBindings (ParamIds)
//!              --canonical::rescale--> --live::write--> the module, rewritten in place
//!              ONNX file --onnx::OnnxModel::open--> ModelProto --graph lowering--> Network + GraphMap
//!              canonical Network --onnx::write_model(GraphMap)--> ModelProto --encode--> ONNX file
//! pcr          every C optimizer steps: live::canonicalize_module (factors a per element)
//!              --pcr::transport(a)--> the optimizer's record rewritten (m / a, v / a^2, ...)
//! ```
//!
//! The calculus sits in the middle and speaks of networks only; each front-end keeps its own
//! names beside the layers' positions (a file's keys in [`torch::arch::Binding`], an ONNX graph's
//! nodes and initializers in [`onnx::Binding`], a live module's parameter ids in
//! [`live::LiveBinding`]) and names positions in messages ([`canonical::Namer`]).
//!
//! ```
//! use burn::tensor::{Device, Tensor};
//! use weightnorm::{NormAxis, ops};
//!
//! let device = Device::flex();
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

pub use weightnorm_core;
pub use weightnorm_core::{axis, canonical, error, graph, transport};

pub mod init;
pub mod live;
pub mod nn;
#[cfg(feature = "onnx")]
pub mod onnx;
pub mod ops;
#[cfg(feature = "pcr")]
pub mod pcr;
pub mod reparam;
#[cfg(feature = "checkpoints")]
pub mod torch;

pub use axis::{LayerKind, NormAxis, UnitAxes};
pub use error::{Error, LinearMismatch, Result};
pub use reparam::{
    AxisChoice, Init, ReparamError, WeightNorm, WeightNormConfig, apply_weight_norm,
    remove_weight_norm,
};

/// The README's examples, compiled and run as doc tests.
#[doc = include_str!("../../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
