//! The weight-norm operation: `w = g * v / ||v||`, exactly as PyTorch computes it.
//!
//! - [`norm_except_dim`]: PyTorch's `torch.norm_except_dim`, for any order `p >= 1`.
//! - [`weight_norm`]: PyTorch's `torch._weight_norm`, through the [`WeightNormBackend`]
//!   extension: fused kernels on the CPU (`Flex`) backend and, with the `cuda` or `wgpu` feature,
//!   on the GPU (CubeCL), a composition of primitive operations on every other backend, and one
//!   autodiff node with the analytic backward.
//! - [`weight_norm_eps`]: the same with an opt-in epsilon, `w = g * v / max(||v||, eps)`.
//! - [`weight_norm_checked`]: the entry point for module code, which also refuses a zero-norm
//!   slice (where PyTorch would silently produce NaN).
//! - [`weight_norm_composed`]: the reference composition of Burn tensor operations,
//!   differentiated by Burn's own autodiff; the fused path is tested against it.
//! - [`weight_norm_linear`]: a weight-normalized linear layer in the paper's form,
//!   `y = (x v) * (g / ||v||) + b`, which scales the output instead of forming `w`; one autodiff
//!   node, fused norms and `dv` on the CPU (see "In training" below).
//!
//! All of them validate their input: the axis against the rank (1 to 5), `g`'s shape against
//! `v`'s (PyTorch does not check it), the dtypes and the epsilon.
//!
//! # Numerics
//!
//! f32 and f64 are computed in their own type, f16 and bf16 in f32 and rounded once. With the
//! default epsilon of zero the result is PyTorch's to the last bits on normal input; a zero-norm
//! slice gives NaN there, as in PyTorch, unless the checked entry point or an epsilon is used.
//!
//! # Speed on the CPU
//!
//! The operation moves memory and does little arithmetic: a forward reads `v` and writes `w`, as
//! a copy of the same bytes does, and a backward reads `v` and `dw` and writes `dv`. The fused
//! kernels read each slice once where it fits in the cache (its norm and its output computed
//! while it is there; the backward's two sums in the same pass), sum each leaf of 256 elements
//! front to back in four chains of eight lanes with AVX where the CPU has it (the same bits as
//! the portable code), run tensors of fewer than 64 Ki elements on the calling thread and share
//! larger ones between it and helper threads that join while it works
//! (`rayon::current_num_threads()` threads in all), each thread on the same part of the data
//! call after call. Outputs are written with plain stores; [`set_streaming_stores`] switches
//! large ones to streaming stores (no read of the line before it is written), which may pay on
//! a machine whose memory bandwidth is the limit: measure first (the README's benchmark section
//! has the figures of one machine).
//! `weightnorm bench` (the CLI) times every case beside a copy of the same bytes.
//!
//! ## In training: the paper's form
//!
//! Through [`weight_norm`] (and `apply_weight_norm`), a training step forms `w` and
//! differentiates through it: a forward and a backward over the whole weight on top of the
//! layer's own products. For a linear layer, [`weight_norm_linear`] gets the one sum the
//! backward needs per unit, `sum(dw * v)`, from the batch instead (`sum_rows(dy * x v)`), and
//! adds only a read of `v` (the norms) and one pass updating `G = x^T du` into `dv` in place: on
//! top of a plain layer, two weight-sized passes instead of a forward and a backward over the
//! whole weight (`weightnorm bench --filter "train step"` measures the step's overhead; the
//! README has one machine's figures).
//!
//! ## What your binary should do about the allocator
//!
//! Each call returns a new tensor, and glibc's `malloc` serves a block of 128 KiB or more with
//! a fresh `mmap` (its `mmap_threshold`, raised by itself to 32 MiB at most) and gives it back to
//! the kernel when it is freed; it also returns the free top of its heap once that exceeds
//! 128 KiB (`trim_threshold`). Every call on a large weight then faults its output in page by
//! page: a forward on a 4096x4096 f32 weight takes one page fault per 4 KiB page on every call
//! (none with the settings below), several times slower than a warm copy of the same bytes (the
//! README's benchmark section has the figures). A library
//! cannot choose the process's allocator, so a binary that trains or runs large weights should
//! raise both thresholds first thing in `main`, before any thread starts (the `weightnorm` CLI
//! does, to 1 GiB):
//!
//! ```
//! # #[cfg(all(target_os = "linux", target_env = "gnu"))]
//! # fn main() {
//! // Blocks below 1 GiB come from the heap and stay there when freed: the next step's
//! // tensors of the same sizes reuse them, already mapped.
//! // SAFETY: mallopt only sets two numbers in glibc's allocator; any value is valid.
//! unsafe {
//!     libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
//!     libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
//! }
//! # }
//! # #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
//! # fn main() {}
//! ```
//!
//! or, without touching the code, run it with
//! `MALLOC_MMAP_THRESHOLD_=1073741824 MALLOC_TRIM_THRESHOLD_=1073741824` in its environment.
//! The price is memory: the process keeps its peak heap instead of returning it between steps.
//! Other allocators (mimalloc, jemalloc) keep freed memory by default and need nothing.

mod autodiff;
mod backend;
#[cfg(any(feature = "cuda", feature = "wgpu"))]
mod cube;
mod flex;

/// The CPU kernels on plain slices (from `weightnorm-core`), for code that holds bytes rather
/// than Burn tensors: bit-identical to [`weight_norm`] on the CPU backend.
pub use weightnorm_core::kernels as slices;
use weightnorm_core::kernels as cpu;

pub(crate) use backend::LINEAR_UNITS;
pub use backend::{WeightNormBackend, composed_backward, composed_forward};

/// Writes the CPU kernels' outputs of `min_bytes` bytes and more with streaming (non-temporal)
/// stores, or none with `None` (the default). It applies to the whole process, from the next
/// kernel call on. (The `weightnorm` binary sets it from `WEIGHTNORM_STREAM_MIN_BYTES`.)
///
/// A streaming store writes a whole cache line without reading it from memory first, which
/// saves a third of a forward's memory traffic when the output does not fit in the cache; but
/// the output is then not in the cache for what reads it next, and on the machine this was
/// measured on (a 2-core virtual machine on an AMD EPYC), plain stores were faster at every
/// alignment of the output. What is computed does not depend on it: the results are the same
/// bits either way. `weightnorm bench` prints the setting it ran with.
///
/// ```
/// weightnorm::ops::set_streaming_stores(Some(16 << 20));
/// assert_eq!(weightnorm::ops::streaming_stores(), Some(16 << 20));
/// weightnorm::ops::set_streaming_stores(None);
/// assert_eq!(weightnorm::ops::streaming_stores(), None);
/// ```
pub fn set_streaming_stores(min_bytes: Option<usize>) {
    cpu::set_stream_min_bytes(min_bytes);
}

/// The size from which the CPU kernels write their outputs with streaming stores, if any (see
/// [`set_streaming_stores`]).
pub fn streaming_stores() -> Option<usize> {
    cpu::stream_min_bytes()
}

use backend::{compute_dtype, float_dtype};

use burn::backend::Dispatch;
use burn::tensor::{DType, FloatDType, Tensor};

use crate::axis::NormAxis;
use crate::error::{Error, LinearMismatch, Result};

/// Burn's dtype as [`Error::DTypeMismatch`] names it.
pub(crate) fn dtype_name(d: DType) -> &'static str {
    match d {
        DType::F64 => "f64",
        DType::F32 | DType::Flex32 => "f32",
        DType::F16 => "f16",
        DType::BF16 => "bf16",
        DType::I64 => "i64",
        DType::I32 => "i32",
        DType::I16 => "i16",
        DType::I8 => "i8",
        DType::U64 => "u64",
        DType::U32 => "u32",
        DType::U16 => "u16",
        DType::U8 => "u8",
        DType::Bool(_) => "bool",
        _ => "another dtype",
    }
}

/// Checks everything the operations assume about their input.
fn validate<const D: usize>(v: &Tensor<D>, g: &Tensor<D>, axis: NormAxis, eps: f64) -> Result<()> {
    axis.validate(D)?;
    if !(eps.is_finite() && eps >= 0.0) {
        return Err(Error::InvalidEpsilon { eps });
    }
    let (vt, gt) = (v.dtype(), g.dtype());
    if vt != gt || !vt.is_float() {
        return Err(Error::DTypeMismatch {
            v: dtype_name(vt),
            g: dtype_name(gt),
        });
    }
    let v_shape = v.dims().to_vec();
    let expected = axis.g_shape(&v_shape);
    let got = g.dims().to_vec();
    if got != expected {
        return Err(Error::GShapeMismatch {
            got,
            expected,
            v_shape,
            kept: axis.kept(),
        });
    }
    Ok(())
}

fn is_half(dtype: DType) -> bool {
    compute_dtype(dtype).is_some()
}

/// Sums over every axis but the kept one, keeping dims (the result has `g`'s shape): the
/// composed path's own sum, on the tensor API.
fn sum_except<const D: usize>(x: Tensor<D>, axis: NormAxis) -> Tensor<D> {
    Tensor::from_dispatch(backend::sum_except::<Dispatch>(
        x.into_dispatch(),
        axis.kept(),
    ))
}

/// Takes the max over every axis but the kept one, keeping dims.
fn max_except<const D: usize>(x: Tensor<D>, axis: NormAxis) -> Tensor<D> {
    let dims = x.dims();
    let [outer, n, inner] = axis.split_shape(&dims);
    let g_shape: [usize; D] = axis.g_shape(&dims).try_into().expect("rank D");
    x.reshape([outer, n, inner])
        .max_dim(2)
        .max_dim(0)
        .reshape(g_shape)
}

/// The `p`-norm of `v` over every axis but `axis`: PyTorch's `torch.norm_except_dim(v, p, dim)`.
///
/// # Shapes
///
/// - `v`: any shape of rank 1 to 5
/// - output: `v`'s size on the kept axis and 1 elsewhere; `[1, 1, ..]` (one element) for
///   [`NormAxis::Whole`], where PyTorch returns a 0-dim tensor
///
/// `p` is any order `>= 1`, `f64::INFINITY` for the max norm. Half types are accumulated in f32;
/// the result has `v`'s dtype.
///
/// # Errors
///
/// [`Error::InvalidNormOrder`] for `p < 1` or NaN; [`Error::UnsupportedRank`] or
/// [`Error::AxisOutOfRange`] for a bad axis.
///
/// ```
/// use burn::tensor::{Device, Tensor};
/// use weightnorm::{NormAxis, ops::norm_except_dim};
///
/// let device = Device::flex();
/// let v = Tensor::<2>::from_data([[3.0, 4.0], [6.0, 8.0]], &device);
/// let rows = norm_except_dim(v.clone(), 2.0, NormAxis::Keep(0)).unwrap();
/// assert_eq!(rows.dims(), [2, 1]);
/// assert_eq!(rows.into_data().try_to_vec::<f32>().unwrap(), vec![5.0, 10.0]);
/// let l1 = norm_except_dim(v, 1.0, NormAxis::Whole).unwrap();
/// assert_eq!(l1.into_data().try_to_vec::<f32>().unwrap(), vec![21.0]);
/// ```
pub fn norm_except_dim<const D: usize>(v: Tensor<D>, p: f64, axis: NormAxis) -> Result<Tensor<D>> {
    axis.validate(D)?;
    if p.is_nan() || p < 1.0 {
        return Err(Error::InvalidNormOrder { p });
    }
    let dtype = v.dtype();
    let x = if is_half(dtype) {
        v.cast(FloatDType::F32)
    } else {
        v
    };
    let norm = if x.dims().contains(&0) {
        // The norm of nothing is zero, whatever the order.
        let g_shape: [usize; D] = axis.g_shape(&x.dims()).try_into().expect("rank D");
        Tensor::zeros(g_shape, (&x.device(), x.dtype()))
    } else if p == 2.0 {
        l2_except(x, axis)
    } else if p == 1.0 {
        sum_except(x.abs(), axis)
    } else if p.is_infinite() {
        max_except(x.abs(), axis)
    } else {
        sum_except(x.abs().powf_scalar(p), axis).powf_scalar(1.0 / p)
    };
    Ok(if is_half(dtype) {
        norm.cast(float_dtype(dtype))
    } else {
        norm
    })
}

/// The L2 norm over every axis but `axis`: `sqrt(sum(v^2))` (PyTorch's bits) where that is
/// exact, and `m * sqrt(sum((v / m)^2))` with `m = max |v|` where the sum of squares overflows
/// or underflows, so that every finite `v` has its finite norm.
fn l2_except<const D: usize>(x: Tensor<D>, axis: NormAxis) -> Tensor<D> {
    let plain = sum_except(x.clone() * x.clone(), axis).sqrt();
    // Below this a sum of squares may have lost squares to underflow (see cpu::sums::Acc::TINY).
    let tiny = if x.dtype() == DType::F64 {
        1e-140
    } else {
        1e-15
    };
    let redo = plain
        .clone()
        .is_inf()
        .bool_or(plain.clone().lower_elem(tiny));
    let m = max_except(x.clone().abs(), axis);
    let safe = m
        .clone()
        .mask_where(m.clone().equal_elem(0.0), m.ones_like());
    let y = x / safe.clone();
    let scaled = sum_except(y.clone() * y, axis).sqrt() * safe;
    plain.mask_where(redo, scaled)
}

/// `w = g * v / ||v||` with the norm taken over every axis but `axis`: PyTorch's
/// `torch._weight_norm(v, g, dim)`, fused on the CPU and differentiated by the analytic formula.
///
/// # Shapes
///
/// - `v`: any shape of rank 1 to 5
/// - `g`: `v`'s size on the kept axis and 1 elsewhere (all ones for [`NormAxis::Whole`])
/// - output: `v`'s shape
///
/// # Errors
///
/// A bad axis or rank, `g` of the wrong shape, or `v` and `g` of different dtypes. A zero-norm
/// slice is not detected here: it gives NaN, as in PyTorch (see [`weight_norm_checked`]).
///
/// ```
/// use burn::tensor::{Device, Tensor};
/// use weightnorm::{NormAxis, ops::weight_norm};
///
/// let device = Device::flex();
/// let v = Tensor::<2>::from_data([[3.0, 4.0], [0.0, 2.0]], &device);
/// let g = Tensor::<2>::from_data([[10.0], [3.0]], &device);
/// let w = weight_norm(v, g, NormAxis::Keep(0)).unwrap();
/// assert_eq!(w.into_data().try_to_vec::<f32>().unwrap(), vec![6.0, 8.0, 0.0, 3.0]);
/// ```
pub fn weight_norm<const D: usize>(
    v: Tensor<D>,
    g: Tensor<D>,
    axis: NormAxis,
) -> Result<Tensor<D>> {
    weight_norm_eps(v, g, axis, 0.0)
}

/// [`weight_norm`] with an epsilon: `w = g * v / max(||v||, eps)`, the convention of
/// `torch.nn.functional.normalize`. Where a slice's norm is below `eps` its gradient with
/// respect to `v` is `(g / eps) dw`, so a zero slice trains instead of producing NaN.
///
/// # Errors
///
/// As [`weight_norm`], and [`Error::InvalidEpsilon`] for a negative or non-finite `eps`.
pub fn weight_norm_eps<const D: usize>(
    v: Tensor<D>,
    g: Tensor<D>,
    axis: NormAxis,
    eps: f64,
) -> Result<Tensor<D>> {
    validate(&v, &g, axis, eps)?;
    let w = Dispatch::weight_norm_forward(v.into_dispatch(), g.into_dispatch(), axis.kept(), eps);
    Ok(Tensor::from_dispatch(w))
}

/// Checks that every slice of `v` has a finite norm, and (without an epsilon) a non-zero one.
///
/// This reads the norms back from the device, so it belongs where weights come from outside
/// (applying weight norm, loading a checkpoint), not in every forward pass.
///
/// # Errors
///
/// [`Error::ZeroNorm`] naming the first zero-norm slice when `eps == 0`,
/// [`Error::NonFiniteNorm`] for a NaN or infinite norm, and the axis errors of
/// [`norm_except_dim`].
pub fn check_norms<const D: usize>(v: &Tensor<D>, axis: NormAxis, eps: f64) -> Result<()> {
    let dims = v.dims();
    let [outer, _, inner] = axis.split_shape(&dims);
    let norms = norm_except_dim(v.clone(), 2.0, axis)?;
    if outer * inner == 0 {
        return Ok(()); // empty slices: nothing is divided
    }
    let norms = norms
        .into_data()
        .convert::<f64>()
        .try_to_vec::<f64>()
        .expect("converted to f64");
    for (index, &n) in norms.iter().enumerate() {
        if !n.is_finite() {
            return Err(Error::NonFiniteNorm {
                kept: axis.kept(),
                index,
            });
        }
        if n == 0.0 && eps == 0.0 {
            return Err(Error::ZeroNorm {
                kept: axis.kept(),
                index,
            });
        }
    }
    Ok(())
}

/// [`weight_norm_eps`] that also refuses a slice of `v` with a zero (or non-finite) norm instead
/// of producing NaN: the entry point for module code at apply and load time.
///
/// # Errors
///
/// As [`weight_norm_eps`] and [`check_norms`].
pub fn weight_norm_checked<const D: usize>(
    v: Tensor<D>,
    g: Tensor<D>,
    axis: NormAxis,
    eps: f64,
) -> Result<Tensor<D>> {
    validate(&v, &g, axis, eps)?;
    check_norms(&v, axis, eps)?;
    weight_norm_eps(v, g, axis, eps)
}

/// A weight-normalized linear layer in the paper's form (Salimans & Kingma 2016, eq. 2):
/// `y = (x v) * (g / max(||v||, eps)) + bias`, with the norm of every column of `v` (every
/// output unit of Burn's `[d_in, d_out]` layout, `NormAxis::Keep(1)`). The result equals
/// `linear(x, weight_norm(v, g), bias)` up to rounding, but the weight is never formed: the
/// scale is applied to the output instead. With autodiff the layer is one graph node with an
/// analytic backward, so a training step does a plain layer's two weight-sized products plus one
/// read of `v` for the norms and one pass for `dv`, where the weight-norm reparameterization
/// (`apply_weight_norm`) does a forward and a backward over the whole weight on top.
/// [`crate::nn::WnLinear`] is the module around it.
///
/// # Shapes
///
/// - `x`: `[..., d_in]` (rank 1 or more)
/// - `v`: `[d_in, d_out]`
/// - `g`: `[d_out]`
/// - `bias`: `[d_out]`
/// - output: `[..., d_out]`
///
/// # Errors
///
/// [`Error::LinearShapeMismatch`] when the shapes do not fit, [`Error::DTypeMismatch`] for
/// operands of different dtypes, [`Error::InvalidEpsilon`]. A zero column of `v` gives NaN
/// without an epsilon, as [`weight_norm`] does.
///
/// ```
/// use burn::tensor::{Device, Tensor};
/// use weightnorm::{NormAxis, ops::{weight_norm, weight_norm_linear}};
///
/// let device = Device::flex();
/// let x = Tensor::<2>::from_data([[1.0, 2.0], [0.5, -1.0]], &device);
/// let v = Tensor::<2>::from_data([[3.0, 0.0, 1.0], [4.0, 2.0, -1.0]], &device);
/// let g = Tensor::<1>::from_data([10.0, 3.0, 0.5], &device);
/// let y = weight_norm_linear(x.clone(), v.clone(), g.clone(), None, 0.0).unwrap();
/// let w = weight_norm(v, g.reshape([1, 3]), NormAxis::Keep(1)).unwrap();
/// let expected = x.matmul(w);
/// y.into_data().assert_approx_eq::<f32>(&expected.into_data(), Default::default());
/// ```
pub fn weight_norm_linear<const D: usize>(
    x: Tensor<D>,
    v: Tensor<2>,
    g: Tensor<1>,
    bias: Option<Tensor<1>>,
    eps: f64,
) -> Result<Tensor<D>> {
    if !(eps.is_finite() && eps >= 0.0) {
        return Err(Error::InvalidEpsilon { eps });
    }
    let dims = x.dims();
    let [d_in, d_out] = v.dims();
    let mismatch = |what: LinearMismatch| Error::LinearShapeMismatch {
        what,
        x: dims.to_vec(),
        v: [d_in, d_out],
        g: g.dims().to_vec(),
        bias: bias.as_ref().map(|b| b.dims().to_vec()),
    };
    if D == 0 || dims[D - 1] != d_in {
        return Err(mismatch(LinearMismatch::Input));
    }
    if g.dims() != [d_out] {
        return Err(mismatch(LinearMismatch::Gain));
    }
    if bias.as_ref().is_some_and(|b| b.dims() != [d_out]) {
        return Err(mismatch(LinearMismatch::Bias));
    }
    let (xt, vt, gt) = (x.dtype(), v.dtype(), g.dtype());
    if vt != gt || !vt.is_float() {
        return Err(Error::DTypeMismatch {
            v: dtype_name(vt),
            g: dtype_name(gt),
        });
    }
    if xt != vt {
        return Err(Error::DTypeMismatch {
            v: dtype_name(vt),
            g: dtype_name(xt),
        });
    }
    let rows = dims[..D - 1].iter().product::<usize>();
    let x2 = x.reshape([rows, d_in]);
    let y = Dispatch::weight_norm_linear(
        x2.into_dispatch(),
        v.into_dispatch(),
        g.reshape([1, d_out]).into_dispatch(),
        eps,
    );
    let y = Tensor::<2>::from_dispatch(y);
    let y = match bias {
        Some(b) => y + b.unsqueeze::<2>(),
        None => y,
    };
    let mut out = dims;
    out[D - 1] = d_out;
    Ok(y.reshape(out))
}

/// The reference path: `v * (g / max(||v||, eps))` composed of Burn tensor operations and
/// differentiated by Burn's autodiff, not by this crate's backward. Slower than [`weight_norm`];
/// useful to cross-check it and on backends without the extension.
///
/// # Errors
///
/// As [`weight_norm_eps`].
pub fn weight_norm_composed<const D: usize>(
    v: Tensor<D>,
    g: Tensor<D>,
    axis: NormAxis,
    eps: f64,
) -> Result<Tensor<D>> {
    validate(&v, &g, axis, eps)?;
    // The backend extension's default body, run on the tensors' own backend: with autodiff,
    // each primitive operation is recorded and differentiated by Burn.
    let w = composed_forward::<Dispatch>(v.into_dispatch(), g.into_dispatch(), axis.kept(), eps);
    Ok(Tensor::from_dispatch(w))
}
