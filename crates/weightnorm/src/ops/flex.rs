//! The `Flex` (CPU) backend's weight norm: a thin adapter from Burn's Flex tensors to the
//! framework-free kernels of [`weightnorm_core::kernels`] and back. Dtypes the kernels do not handle take the
//! composed default.

use burn::backend::Bytes;
use burn::backend::ops::FloatTensorOps;
use burn::tensor::{DType, Shape, bf16, f16};
use burn_flex::{Flex, FlexTensor, Layout};

use super::backend::{WeightNormBackend, composed_backward, composed_forward};
use super::cpu;
use crate::NormAxis;

/// An element type both the kernels and Burn know: f32, f64, f16, bf16.
trait Element: cpu::Element + burn::tensor::Element {}
impl<T: cpu::Element + burn::tensor::Element> Element for T {}

impl WeightNormBackend for Flex {
    fn weight_norm_forward(
        v: FlexTensor,
        g: FlexTensor,
        keep: Option<usize>,
        eps: f64,
    ) -> FlexTensor {
        match v.dtype() {
            DType::F32 => forward::<f32>(&v, &g, keep, eps),
            DType::F64 => forward::<f64>(&v, &g, keep, eps),
            DType::F16 => forward::<f16>(&v, &g, keep, eps),
            DType::BF16 => forward::<bf16>(&v, &g, keep, eps),
            _ => composed_forward::<Flex>(v, g, keep, eps),
        }
    }

    fn weight_norm_backward(
        v: FlexTensor,
        g: FlexTensor,
        dw: FlexTensor,
        keep: Option<usize>,
        eps: f64,
    ) -> (FlexTensor, FlexTensor) {
        match v.dtype() {
            DType::F32 => backward::<f32>(&v, &g, &dw, keep, eps),
            DType::F64 => backward::<f64>(&v, &g, &dw, keep, eps),
            DType::F16 => backward::<f16>(&v, &g, &dw, keep, eps),
            DType::BF16 => backward::<bf16>(&v, &g, &dw, keep, eps),
            _ => composed_backward::<Flex>(v, g, dw, keep, eps),
        }
    }

    fn weight_norm_norms(v: FlexTensor, keep: Option<usize>) -> FlexTensor {
        match v.dtype() {
            DType::F32 => norms::<f32>(&v, keep),
            DType::F64 => norms::<f64>(&v, keep),
            DType::F16 => norms::<f16>(&v, keep),
            DType::BF16 => norms::<bf16>(&v, keep),
            _ => composed_norms(v, keep),
        }
    }

    fn weight_norm_sub_scaled(
        d: FlexTensor,
        x: FlexTensor,
        c: FlexTensor,
        keep: Option<usize>,
    ) -> FlexTensor {
        match x.dtype() {
            DType::F32 => sub_scaled::<f32>(d, &x, &c, keep),
            DType::F64 => sub_scaled::<f64>(d, &x, &c, keep),
            DType::F16 => sub_scaled::<f16>(d, &x, &c, keep),
            DType::BF16 => sub_scaled::<bf16>(d, &x, &c, keep),
            _ => Flex::float_sub(d, Flex::float_mul(x, c)),
        }
    }
}

/// Contiguous typed data of a Flex tensor (copied only when the tensor is a strided view).
fn contiguous<T: Element>(t: &FlexTensor) -> std::borrow::Cow<'_, [T]> {
    match t.as_slice::<T>() {
        Some(s) => std::borrow::Cow::Borrowed(s),
        None => std::borrow::Cow::Owned(t.to_contiguous().as_slice::<T>().unwrap().to_vec()),
    }
}

fn tensor_from<T: Element>(data: Vec<T>, shape: Shape) -> FlexTensor {
    FlexTensor::new(
        Bytes::from_elems(data),
        Layout::contiguous(shape),
        T::dtype(),
    )
}

/// `v`'s shape and its `[outer, n, inner]` view around `keep`.
fn view(v: &FlexTensor, keep: Option<usize>) -> (Shape, [usize; 3]) {
    let shape = v.layout().shape().clone();
    let split = NormAxis::from(keep).split_shape(&shape);
    (shape, split)
}

fn forward<T: Element>(
    v: &FlexTensor,
    g: &FlexTensor,
    keep: Option<usize>,
    eps: f64,
) -> FlexTensor {
    let (shape, split) = view(v, keep);
    let w = cpu::forward::<T>(&contiguous::<T>(v), &contiguous::<T>(g), split, eps);
    tensor_from(w, shape)
}

fn backward<T: Element>(
    v: &FlexTensor,
    g: &FlexTensor,
    dw: &FlexTensor,
    keep: Option<usize>,
    eps: f64,
) -> (FlexTensor, FlexTensor) {
    let (shape, split) = view(v, keep);
    let g_shape = g.layout().shape().clone();
    let (dv, dg) = cpu::backward::<T>(
        &contiguous::<T>(v),
        &contiguous::<T>(g),
        &contiguous::<T>(dw),
        split,
        eps,
    );
    (tensor_from(dv, shape), tensor_from(dg, g_shape))
}

/// The norms of a dtype the kernels do not handle: the trait's composed default.
fn composed_norms(v: FlexTensor, keep: Option<usize>) -> FlexTensor {
    let sq = super::backend::sum_except::<Flex>(Flex::float_mul(v.clone(), v), keep);
    Flex::float_sqrt(sq)
}

fn norms<T: Element>(v: &FlexTensor, keep: Option<usize>) -> FlexTensor {
    let shape = v.layout().shape().clone();
    let axis = NormAxis::from(keep);
    let n = cpu::norms::<T>(&contiguous::<T>(v), &shape, axis);
    tensor_from(n, Shape::from(axis.g_shape(&shape)))
}

/// `d - x c`, written into `d`'s own buffer when `d` is a contiguous tensor of `x`'s shape
/// that nothing else holds (the matmul output of the paper-form layer's backward), else into a
/// new one.
fn sub_scaled<T: Element>(
    mut d: FlexTensor,
    x: &FlexTensor,
    c: &FlexTensor,
    keep: Option<usize>,
) -> FlexTensor {
    let (shape, split) = view(x, keep);
    let numel = shape.num_elements();
    let (xs, cs) = (contiguous::<T>(x), contiguous::<T>(c));
    if d.dtype() == x.dtype()
        && *d.layout().shape() == shape
        && d.layout().contiguous_offsets() == Some((0, numel))
        && let Some(storage) = d.try_storage_mut::<T>()
        && storage.len() >= numel
        && cpu::sub_scaled_in_place::<T>(&mut storage[..numel], &xs, &cs, split)
    {
        return d;
    }
    let out = cpu::sub_scaled::<T>(&contiguous::<T>(&d), &xs, &cs, split);
    tensor_from(out, shape)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(data: Vec<f32>, shape: [usize; 2]) -> FlexTensor {
        tensor_from(data, Shape::from(shape.to_vec()))
    }

    fn data_of(t: &FlexTensor) -> &[f32] {
        t.as_slice::<f32>().expect("contiguous f32")
    }

    /// `d - x c` per column: into `d`'s own buffer when nothing else holds `d`, into a new
    /// buffer (leaving `d` as it was) when it is shared or a strided view; the same values
    /// every way.
    #[test]
    fn sub_scaled_updates_an_unshared_d_in_place_and_never_a_shared_one() {
        let (rows, cols) = (37, 5);
        let d: Vec<f32> = (0..rows * cols).map(|i| i as f32 * 0.25 - 3.0).collect();
        let x: Vec<f32> = (0..rows * cols).map(|i| (i % 7) as f32 - 2.5).collect();
        let c = vec![0.5f32, -1.0, 2.0, 0.0, 3.25];
        let minus = |d: &[f32]| -> Vec<f32> {
            (0..rows * cols)
                .map(|i| d[i] - x[i] * c[i % cols])
                .collect()
        };
        let (xt, ct) = (
            tensor(x.clone(), [rows, cols]),
            tensor(c.clone(), [1, cols]),
        );
        let sub = |d: FlexTensor| Flex::weight_norm_sub_scaled(d, xt.clone(), ct.clone(), Some(1));

        let unshared = tensor(d.clone(), [rows, cols]);
        let at = data_of(&unshared).as_ptr();
        let out = sub(unshared);
        assert_eq!(
            data_of(&out).as_ptr(),
            at,
            "an unshared d is updated in place"
        );
        assert_eq!(data_of(&out), minus(&d).as_slice());

        let shared = tensor(d.clone(), [rows, cols]);
        let kept = shared.clone();
        let out = sub(shared);
        assert_eq!(data_of(&out), minus(&d).as_slice());
        assert_eq!(data_of(&kept), d.as_slice(), "a shared d is left as it was");

        // The transpose of a contiguous [cols, rows] tensor: a strided view, read, not written.
        let base = tensor(d.clone(), [cols, rows]);
        let out = sub(Flex::float_transpose(base.clone()));
        let transposed: Vec<f32> = (0..rows * cols)
            .map(|i| d[(i % cols) * rows + i / cols])
            .collect();
        assert_eq!(data_of(&out), minus(&transposed).as_slice());
        assert_eq!(
            data_of(&base),
            d.as_slice(),
            "a view's buffer is left as it was"
        );
    }
}
