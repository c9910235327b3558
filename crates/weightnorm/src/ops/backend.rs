//! The weight-norm backend extension and its composed default.
//!
//! [`WeightNormBackend`] has two operations, the forward `w = g * v / max(||v||, eps)` and its
//! analytic backward, and three for the paper-form linear layer: the layer itself, the slice
//! norms and `d - x c`. Their default bodies compose Burn's primitive operations, so every
//! backend can run them; `Flex` (CPU) overrides the forward, the backward, the norms and
//! `d - x c` with fused kernels (see `flex.rs`), the CubeCL backend (CUDA, wgpu; features
//! `cuda`, `wgpu`) the forward and the backward with fused GPU kernels (see `cube/`), and
//! `Autodiff<B, C>` wraps the forward and the linear layer each in one graph node whose
//! backward is the analytic formula (see `autodiff.rs`).
//!
//! With a GPU feature, Burn's `Cube` backend is `Fusion<CubeBackend>` (the features turn Burn's
//! kernel fusion on, as Burn's own GPU defaults do): the macro's `Fusion` selector makes each
//! operation one lazy operation in the fusion stream, which runs `CubeBackend`'s fused kernel.
//!
//! `keep` is the kept axis (`None` = the whole tensor) and `eps` the opt-in epsilon (0 for
//! PyTorch parity). The operations trust their arguments: the checked entry points in
//! [`crate::ops`] validate shapes and dtypes first.

use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, TensorMetadata, backend_extension, get_or_init_device_settings};
use burn::tensor::{DType, FloatDType, Shape};

use crate::NormAxis;

/// The axis the paper-form linear layer keeps in its `v` (`[d_in, d_out]`): the output units, as
/// the layout table says for a `Linear` weight (one norm per column).
pub(crate) const LINEAR_UNITS: crate::NormAxis =
    crate::NormAxis::Keep(crate::LayerKind::Linear.unit_axes().output);

/// [`LINEAR_UNITS`] as the backend methods take it.
pub(crate) const LINEAR_KEEP: Option<usize> = LINEAR_UNITS.kept();

/// Weight normalization as a Burn backend extension.
///
/// The default bodies compose primitive operations and work on every backend; a backend may
/// override them with fused kernels. Half-precision inputs (f16, bf16) are computed in f32 and
/// rounded once at the end.
///
/// # Panics
///
/// The operations assume validated input: `v` of rank 1 to 5, `g` of the keep-dims shape for
/// `keep`, one float dtype, `eps >= 0`. Use the functions of [`crate::ops`], which check all of
/// this and return errors, rather than calling the extension directly. The fused CPU and GPU
/// paths panic if `g` does not hold one value per slice of `v` along `keep`, if `dw` does not
/// hold as many values as `v`, or if `keep` is not an axis of `v`; other backends fail in
/// their own primitive operations.
#[backend_extension(
    Flex,
    Cube: cfg(any(feature = "cuda", feature = "wgpu")),
    Fusion: cfg(any(feature = "cuda", feature = "wgpu")),
    Autodiff
)]
pub trait WeightNormBackend: Backend {
    /// `w = g * v / max(||v||, eps)`, the norm taken per slice along `keep` (or over the whole
    /// tensor for `None`).
    ///
    /// # Shapes
    ///
    /// - `v`: any shape of rank 1 to 5
    /// - `g`: `v`'s size on axis `keep`, 1 on every other axis (all ones for `None`)
    /// - output: `v`'s shape
    #[fusion(dtype = v, shape = v)]
    fn weight_norm_forward(
        v: FloatTensor<Self>,
        g: FloatTensor<Self>,
        keep: Option<usize>,
        eps: f64,
    ) -> FloatTensor<Self> {
        composed_forward::<Self>(v, g, keep, eps)
    }

    /// The gradients `(dv, dg)` of the forward for an upstream gradient `dw`:
    /// with `s = sum(dw * v)` over each slice and `n = ||v||`,
    /// `dg = s / n` and `dv = (g / n) dw - (g s / n^3) v`.
    /// Where `n < eps` the denominator is the constant `eps`, so `dv = (g / eps) dw`.
    ///
    /// # Shapes
    ///
    /// - `v`, `dw`, `dv`: the shape of `v`
    /// - `g`, `dg`: the shape of `g`
    #[fusion(meta = |v, g, _dw, _keep, _eps| (v.clone(), g.clone()))]
    fn weight_norm_backward(
        v: FloatTensor<Self>,
        g: FloatTensor<Self>,
        dw: FloatTensor<Self>,
        keep: Option<usize>,
        eps: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        composed_backward::<Self>(v, g, dw, keep, eps)
    }

    /// The L2 norm of every slice of `v` along `keep` (the whole tensor for `None`), not
    /// clamped: `||v||` in `g`'s keep-dims shape. Half types are accumulated in f32.
    #[fusion(dtype = v, shape = Shape::from(NormAxis::from(*keep).g_shape(v)))]
    fn weight_norm_norms(v: FloatTensor<Self>, keep: Option<usize>) -> FloatTensor<Self> {
        let dtype = v.dtype();
        let v = upcast::<Self>(v);
        let sq = sum_except::<Self>(Self::float_mul(v.clone(), v), keep);
        downcast::<Self>(Self::float_sqrt(sq), dtype)
    }

    /// `d - x * c`, `c` holding one value per slice of `x` along `keep`, in `g`'s keep-dims
    /// shape: the last step of [`Self::weight_norm_linear`]'s backward, `dv = G - v * c`.
    /// `d` is taken by value so that a backend may write the result into its buffer when
    /// nothing else holds it (`Flex` does, for f32 and f64: `G` is the fresh output of a
    /// matmul).
    ///
    /// # Shapes
    ///
    /// - `d`, `x`, output: one shape
    /// - `c`: `g`'s keep-dims shape for `keep`
    #[fusion(dtype = d, shape = d)]
    fn weight_norm_sub_scaled(
        d: FloatTensor<Self>,
        x: FloatTensor<Self>,
        c: FloatTensor<Self>,
        keep: Option<usize>,
    ) -> FloatTensor<Self> {
        let _ = keep; // `c`'s keep-dims shape broadcasts over the other axes
        Self::float_sub(d, Self::float_mul(x, c))
    }

    /// A weight-normalized linear layer in the paper's form (Salimans & Kingma 2016, eq. 2):
    /// `y = (x v) * (g / max(||v||, eps))`, the norm of every column of `v` (every output
    /// unit), so the weight `w = g v / ||v||` is never formed. On `Autodiff` this is one graph
    /// node whose backward is `dv = x^T (dy s) - v c` with `s = g / ||v||`,
    /// `c = g (sum_rows dy u) / ||v||^3` and `u = x v` kept from the forward: the weight-sized
    /// work is the two products a plain layer does, one read of `v` for the norms and one pass
    /// for `dv`.
    ///
    /// # Shapes
    ///
    /// - `x`: `[rows, d_in]`
    /// - `v`: `[d_in, d_out]` (Burn's Linear layout)
    /// - `g`: `[1, d_out]`
    /// - output: `[rows, d_out]`
    #[fusion(default)]
    fn weight_norm_linear(
        x: FloatTensor<Self>,
        v: FloatTensor<Self>,
        g: FloatTensor<Self>,
        eps: f64,
    ) -> FloatTensor<Self> {
        let norm = clamp_norm::<Self>(Self::weight_norm_norms(v.clone(), LINEAR_KEEP), eps);
        let s = Self::float_div(g, norm);
        Self::float_mul(Self::float_matmul(x, v), s)
    }
}

/// The dtype arithmetic runs in: f32 for the half types, the tensor's own type otherwise.
pub(crate) fn compute_dtype(dtype: DType) -> Option<FloatDType> {
    match dtype {
        DType::F16 | DType::BF16 => Some(FloatDType::F32),
        _ => None,
    }
}

/// The float dtype of a dtype (f32 for anything that is not another float).
pub(crate) fn float_dtype(dtype: DType) -> FloatDType {
    match dtype {
        DType::F64 => FloatDType::F64,
        DType::F16 => FloatDType::F16,
        DType::BF16 => FloatDType::BF16,
        _ => FloatDType::F32,
    }
}

fn upcast<B: Backend>(x: FloatTensor<B>) -> FloatTensor<B> {
    match compute_dtype(x.dtype()) {
        Some(acc) => B::float_cast(x, acc),
        None => x,
    }
}

fn downcast<B: Backend>(x: FloatTensor<B>, dtype: DType) -> FloatTensor<B> {
    if x.dtype() == dtype {
        x
    } else {
        B::float_cast(x, float_dtype(dtype))
    }
}

/// Sums `x` over every axis but `keep`, keeping dims: the result has the shape of `g`.
pub(crate) fn sum_except<B: Backend>(x: FloatTensor<B>, keep: Option<usize>) -> FloatTensor<B> {
    let dims = x.shape().to_vec();
    let axis = NormAxis::from(keep);
    let [outer, n, inner] = axis.split_shape(&dims);
    let g_shape = Shape::from(axis.g_shape(&dims));
    if outer * n * inner == 0 {
        // A sum over nothing is zero.
        return B::float_zeros(g_shape, &x.device(), float_dtype(x.dtype()));
    }
    let x = B::float_reshape(x, Shape::from(vec![outer, n, inner]));
    B::float_reshape(B::float_sum_dim(B::float_sum_dim(x, 2), 0), g_shape)
}

/// The forward of [`WeightNormBackend`] from primitive operations, in PyTorch's order:
/// `v * (g / norm)`.
pub fn composed_forward<B: Backend>(
    v: FloatTensor<B>,
    g: FloatTensor<B>,
    keep: Option<usize>,
    eps: f64,
) -> FloatTensor<B> {
    let dtype = v.dtype();
    let v = upcast::<B>(v);
    let g = upcast::<B>(g);
    let norm = B::float_sqrt(sum_except::<B>(B::float_mul(v.clone(), v.clone()), keep));
    let w = B::float_mul(v, B::float_div(g, clamp_norm::<B>(norm, eps)));
    downcast::<B>(w, dtype)
}

/// `max(norm, eps)`: the norm a weight-normalized weight is divided by (`norm` itself without an
/// epsilon).
pub(crate) fn clamp_norm<B: Backend>(norm: FloatTensor<B>, eps: f64) -> FloatTensor<B> {
    if eps > 0.0 {
        B::float_clamp_min(norm, eps.into())
    } else {
        norm
    }
}

/// The coefficient of `v` in the backward, `g s / n^3` (`n` the clamped norm, `s` the slice's
/// `sum(dw * v)`), zero where the raw norm is below `eps`: `n = eps` does not depend on `v`
/// there. Shared by the composed backward and the paper-form linear layer's node.
pub(crate) fn v_coefficient<B: Backend>(
    g: FloatTensor<B>,
    s: FloatTensor<B>,
    n: FloatTensor<B>,
    raw: FloatTensor<B>,
    eps: f64,
) -> FloatTensor<B> {
    let n3 = B::float_mul(B::float_mul(n.clone(), n.clone()), n);
    let c = B::float_div(B::float_mul(g, s), n3);
    if eps > 0.0 {
        let bool_dtype = get_or_init_device_settings::<B>(&raw.device()).bool_dtype;
        let below = B::float_lower_elem(raw, eps.into(), bool_dtype);
        B::float_mask_fill(c, below, 0.0.into())
    } else {
        c
    }
}

/// The analytic backward of [`WeightNormBackend`] from primitive operations.
pub fn composed_backward<B: Backend>(
    v: FloatTensor<B>,
    g: FloatTensor<B>,
    dw: FloatTensor<B>,
    keep: Option<usize>,
    eps: f64,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let dtype = v.dtype();
    let v = upcast::<B>(v);
    let g = upcast::<B>(g);
    let dw = upcast::<B>(dw);
    let raw = B::float_sqrt(sum_except::<B>(B::float_mul(v.clone(), v.clone()), keep));
    let s = sum_except::<B>(B::float_mul(dw.clone(), v.clone()), keep);
    let norm = clamp_norm::<B>(raw.clone(), eps);
    let dg = B::float_div(s.clone(), norm.clone());
    let a = B::float_div(g.clone(), norm.clone());
    let b = v_coefficient::<B>(g, s, norm, raw, eps);
    let dv = B::float_sub(B::float_mul(dw, a), B::float_mul(v, b));
    (downcast::<B>(dv, dtype), downcast::<B>(dg, dtype))
}
