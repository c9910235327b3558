//! # weightnorm
//!
//! Weight normalization (Salimans & Kingma, 2016) for the [Burn](https://burn.dev) deep-learning
//! framework: `w = g * v / ||v||`, with PyTorch's exact semantics and a fused CPU forward with an
//! analytic backward; the canonical form of a network under positive rescaling.
//!
//! ## Module map
//!
//! One concept per module; arrows are "uses".
//!
//! | module | holds | uses |
//! |---|---|---|
//! | [`axis`] | [`NormAxis`], PyTorch's `dim` rule ([`NormAxis::from_torch`]), the one table of layer layouts ([`LayerKind::unit_axes`], [`LayerKind::torch_unit_axes`]) | nothing |
//! | [`error`] | [`Error`]: what the operations refuse | nothing |
//! | [`ops`] | [`norm_except_dim`](ops::norm_except_dim), [`weight_norm`](ops::weight_norm): the [`WeightNormBackend`](ops::WeightNormBackend) extension with a composed default (every backend, `ops/backend.rs`), backend-free CPU kernels on slices (`ops/cpu/`: `sums` (accumulators, pairwise sums over leaves each read front to back in four chains with AVX, norms exact for every finite slice, streaming stores), `schedule` (chunking, threads above 64 Ki elements, plain or streaming stores, the AVX2 clones, the `unsafe` buffer fill), `pool` (the parallel loops: the caller and helper threads each claim their own contiguous range of work first, then what the others left), `kernels` (forward, backward, norms, `d - x c` in or out of place)), the thin Flex adapter (`ops/flex.rs`), the fused GPU kernels in CubeCL with their launch plan (`ops/cube/`, features `cuda` and `wgpu`), and the autodiff node with the analytic backward (`ops/autodiff.rs`) | `axis` |
//! | [`reparam`] | [`WeightNorm`] as a Burn `Reparameterization`, [`WeightNormConfig`] (a Burn `Config`), [`apply_weight_norm`], [`remove_weight_norm`] | `ops`, `axis` |
//! | [`init`] | the paper's data-dependent initialisation | `reparam`, `axis` |
//! | [`nn`] | mean-only batch norm, the WaveNet block, the weight-normalized CNN | `reparam`, `init` |
//! | [`canonical`] | the calculus: networks in output and input units ([`canonical::Network`]), the three transforms, batch-norm folding, canonicalize, reconstitute, verify, gains. No file format, no framework names: layers are known by position | nothing |
//! | [`live`] | the live-module front-end of the calculus: [`live::Canonicalizable`] (a module names its layers, [`live::LiveLayer`], borrowing Burn's), [`live::describe`] (module to network, keyed by `ParamId`), [`live::write`] (network back into the module, every `ParamId` kept), [`live::canonicalize_module`] (in place, function kept or gain capped, with the per-element factors applied) | `canonical`, `axis` |
//! | [`pcr`] | Periodic Canonical Regularization: [`pcr::PcrConfig`] (every C steps, [`pcr::Penalty`] none/cap/soft, [`pcr::Transport`]), the differentiable global gain ([`pcr::gain`]), the optimizer-state transport through Burn's optimizer record ([`pcr::transport`]), the driver [`pcr::Pcr`] for hand-written loops and [`pcr::PcrSlot`] / [`pcr::optimize`] for burn-train's `Learner` | `live`, `canonical` |
//! | [`onnx`] | ONNX models: the messages of `onnx.proto` for `prost` ([`onnx::proto`]), tensors inline or external (`tensor.rs`), constants and shape arithmetic (`consts.rs`), the graph read onto the calculus (`read.rs`: chains, forks as residual blocks and shortcuts, barrier clusters, the gate, the head) and canonical weights written back with a `Mul` by `canonical.scale` (`write.rs`) | `canonical` |
//! | [`torch`] | everything that knows PyTorch: checkpoints (`checkpoint.rs`: `.safetensors` memory-mapped, `.pt` through this crate's own zip reader (`zipfile.rs`), the legacy stream of torch < 1.6 (`legacy.rs`) and a restricted unpickler that calls nothing (`pickle.rs`, `pt.rs`)), key schemes and weight-norm pairs (`pairs.rs`), fuse/split/convert (`transform.rs`), Burn modules to and from checkpoints (`module_io.rs`), and the architecture-file front-end of the calculus ([`torch::arch`]: `spec` the serde schema, `read`, `write`) | `ops`, `reparam`, `canonical`, `axis` |
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
//!              Network --canonicalize--> Canonical (unit rows, one output scale, reports)
//!              --verify--> Agreement;  --to_tensors(Bindings)--> checkpoint tensors
//!              Burn module (Canonicalizable) --live::describe--> Network + LiveBindings (ParamIds)
//!              --canonicalize, reconstitute--> --live::write--> the module, rewritten in place
//!              ONNX file --onnx::OnnxModel::open--> ModelProto --network--> Network + GraphMap
//!              canonical Network --onnx::write_model(GraphMap)--> ModelProto --encode--> ONNX file
//! pcr          every C optimizer steps: live::canonicalize_module (factors a per element)
//!              --pcr::transport(a)--> the optimizer's record rewritten (m / a, v / a^2, ...)
//! ```
//!
//! The calculus sits in the middle and speaks of networks only; each front-end keeps its own
//! names beside the layers' positions (a file's keys in [`torch::arch::Binding`], an ONNX graph's
//! nodes and initializers in [`onnx::Binding`], a live module's parameter ids in
//! [`live::LiveBinding`]).
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

pub mod axis;
pub mod canonical;
pub mod error;
pub mod init;
pub mod live;
pub mod nn;
pub mod onnx;
pub mod ops;
pub mod pcr;
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
