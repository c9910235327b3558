//! Every documented `# Panics` of the library, triggered: each test names the message it expects.

use burn::module::Reparameterization;
use burn::nn::LinearConfig;
use burn::tensor::{Device, FloatDType, Tensor};
use burn_flex::{Flex, FlexTensor};
use weightnorm::canonical::{Activation, Agreement, Layer, Network, Rows};
use weightnorm::nn::{MeanOnlyBatchNormConfig, WaveNetBlockConfig};
use weightnorm::ops::WeightNormBackend;
use weightnorm::{NormAxis, WeightNorm, WeightNormConfig, apply_weight_norm};

// ---- axis ----

#[test]
#[should_panic(expected = "index out of bounds")]
fn g_shape_of_an_axis_out_of_range() {
    NormAxis::Keep(3).g_shape(&[2, 3]);
}

// ---- ops: the backend extension called directly with unvalidated input ----

fn flex(values: &[f32], shape: &[usize]) -> FlexTensor {
    FlexTensor::new(
        burn::backend::Bytes::from_elems(values.to_vec()),
        burn_flex::Layout::contiguous(shape.to_vec().into()),
        burn::tensor::DType::F32,
    )
}

#[test]
#[should_panic(expected = "weight norm: g holds 2 values, but v has 3 slices along the kept axis")]
fn backend_forward_with_g_of_the_wrong_shape() {
    let v = flex(&[1.0; 6], &[3, 2]);
    let g = flex(&[1.0; 2], &[2, 1]);
    Flex::weight_norm_forward(v, g, Some(0), 0.0);
}

#[test]
#[should_panic(expected = "weight norm: g holds 1 values, but v has 2 slices along the kept axis")]
fn backend_backward_with_g_of_the_wrong_shape() {
    let v = flex(&[1.0; 6], &[3, 2]);
    let g = flex(&[1.0], &[1, 1]);
    let dw = flex(&[1.0; 6], &[3, 2]);
    Flex::weight_norm_backward(v, g, dw, Some(1), 0.0);
}

#[test]
#[should_panic(expected = "weight norm: dw holds 5 values, but v holds 6")]
fn backend_backward_with_dw_of_the_wrong_shape() {
    let v = flex(&[1.0; 6], &[3, 2]);
    let g = flex(&[1.0; 3], &[3, 1]);
    let dw = flex(&[1.0; 5], &[5]);
    Flex::weight_norm_backward(v, g, dw, Some(0), 0.0);
}

#[test]
#[should_panic(expected = "out of range for slice of length 2")]
fn backend_forward_with_an_axis_out_of_range() {
    let v = flex(&[1.0; 6], &[3, 2]);
    let g = flex(&[1.0; 3], &[3, 1]);
    Flex::weight_norm_forward(v, g, Some(5), 0.0);
}

// ---- reparam ----

fn normed_linear() -> burn::nn::Linear {
    let device = Device::flex();
    apply_weight_norm(
        LinearConfig::new(4, 5).init(&device),
        &WeightNormConfig::new(),
    )
    .unwrap()
}

#[test]
#[should_panic(expected = "the rank of v")]
fn g_keepdims_of_the_wrong_rank() {
    let layer = normed_linear();
    let wn = layer.weight.reparameterization::<WeightNorm>().unwrap();
    wn.g_keepdims::<3>(&[4, 5]);
}

#[test]
#[should_panic(expected = "weight norm: v and g were validated when it was applied")]
fn apply_to_a_v_that_no_longer_fits_g() {
    let layer = normed_linear();
    let wn = layer.weight.reparameterization::<WeightNorm>().unwrap();
    // The right shape, but no longer g's dtype.
    let v = Tensor::<2>::ones([4, 5], &Device::flex()).cast(FloatDType::F64);
    wn.apply(v);
}

// ---- nn ----

#[test]
#[should_panic(expected = "num_features must be greater than zero")]
fn mean_only_batch_norm_without_features() {
    MeanOnlyBatchNormConfig::new(0).init(&Device::flex());
}

#[test]
#[should_panic(expected = "momentum must be within [0, 1]")]
fn mean_only_batch_norm_with_momentum_above_one() {
    MeanOnlyBatchNormConfig::new(3)
        .with_momentum(1.5)
        .init(&Device::flex());
}

#[test]
#[should_panic(expected = "momentum must be within [0, 1]")]
fn mean_only_batch_norm_with_nan_momentum() {
    MeanOnlyBatchNormConfig::new(3)
        .with_momentum(f64::NAN)
        .init(&Device::flex());
}

#[test]
#[should_panic(expected = "mean-only batch norm: input [2, 3] must have 4 features on axis 1")]
fn mean_only_batch_norm_on_the_wrong_features() {
    let device = Device::flex();
    let bn = MeanOnlyBatchNormConfig::new(4).init(&device);
    bn.forward(Tensor::<2>::zeros([2, 3], &device));
}

#[test]
#[should_panic(expected = "channels, kernel_size and dilation must be positive")]
fn wavenet_block_without_channels() {
    let _ = WaveNetBlockConfig::new(0).init(&Device::flex());
}

#[test]
#[should_panic(expected = "channels, kernel_size and dilation must be positive")]
fn wavenet_block_with_a_zero_kernel() {
    let _ = WaveNetBlockConfig::new(2)
        .with_kernel_size(0)
        .init(&Device::flex());
}

#[test]
#[should_panic(expected = "channels, kernel_size and dilation must be positive")]
fn wavenet_block_with_a_zero_dilation() {
    let _ = WaveNetBlockConfig::new(2)
        .with_dilation(0)
        .init(&Device::flex());
}

// ---- canonical ----

#[test]
#[should_panic(expected = "every sample holds 3 values")]
fn network_forward_on_a_sample_of_the_wrong_size() {
    let net = Network::<f64>::new(vec![3], vec![Layer::Act(Activation::Relu)]).unwrap();
    net.forward(&[vec![1.0, 2.0, 3.0], vec![1.0, 2.0]]);
}

#[test]
#[should_panic(expected = "as many samples")]
fn agreement_between_different_sample_counts() {
    Agreement::between(&[vec![1.0]], &[vec![1.0], vec![2.0]]);
}

#[test]
#[should_panic(expected = "as many outputs")]
fn agreement_between_different_output_sizes() {
    Agreement::between(&[vec![1.0, 2.0]], &[vec![1.0]]);
}

#[test]
#[should_panic(expected = "out * row_len values")]
fn rows_of_the_wrong_length() {
    Rows::new(2, 3, vec![0.0f64; 5]);
}
