//! The `Flex` (CPU) backend's weight norm: a thin adapter from Burn's Flex tensors to the
//! backend-free kernels of [`super::cpu`] and back. Dtypes the kernels do not handle take the
//! composed default.

use burn::backend::Bytes;
use burn::tensor::{DType, Shape, bf16, f16};
use burn_flex::{Flex, FlexTensor, Layout};

use super::backend::{WeightNormBackend, composed_backward, composed_forward};
use super::cpu::{self, Element};
use crate::NormAxis;

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
