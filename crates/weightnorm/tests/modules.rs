//! The data-dependent initialisation, mean-only batch norm, batch independence, and the blocks.

mod common;

use burn::module::Module;
use burn::nn::conv::{Conv1d, Conv2dConfig};
use burn::nn::{BatchNormConfig, LinearConfig, PaddingConfig2d, Relu};
use burn::tensor::{Device, Distribution, Tensor};
use common::*;
use weightnorm::init::{InitError, data_dependent_conv2d, data_dependent_linear};
use weightnorm::nn::{MeanOnlyBatchNormConfig, WaveNetBlockConfig};
use weightnorm::reparam::weight_normed_params;
use weightnorm::{AxisChoice, WeightNorm, WeightNormConfig, apply_weight_norm};

fn randn<const D: usize>(shape: [usize; D], device: &Device) -> Tensor<D> {
    Tensor::random(shape, Distribution::Normal(0.5, 2.0), device)
}

/// Per-unit mean and population std of `y` along `axis`, computed on the host.
fn stats<const K: usize>(y: &Tensor<K>, axis: usize) -> Vec<(f64, f64)> {
    let dims = y.dims();
    let vals = values(y);
    let units = dims[axis];
    let inner: usize = dims[axis + 1..].iter().product();
    let mut sums = vec![Vec::new(); units];
    for (i, v) in vals.iter().enumerate() {
        sums[(i / inner) % units].push(*v);
    }
    sums.iter()
        .map(|xs| {
            let m = xs.iter().sum::<f64>() / xs.len() as f64;
            let s = (xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / xs.len() as f64).sqrt();
            (m, s)
        })
        .collect()
}

#[test]
fn data_dependent_init_standardizes_linear_units() {
    for bias in [true, false] {
        let device = device();
        device.seed(11);
        let layer = LinearConfig::new(20, 7).with_bias(bias).init(&device);
        let layer = apply_weight_norm(layer, &WeightNormConfig::new()).unwrap();
        let x = randn([64, 20], &device);
        let (layer, y) = data_dependent_linear(layer, x.clone(), 0.7).unwrap();
        // The returned output is the layer's output.
        assert_eq!(layer.forward(x).into_data(), y.to_data());
        for (unit, (m, s)) in stats(&y, 1).into_iter().enumerate() {
            assert!((s - 0.7).abs() < 1e-4, "bias={bias} unit {unit}: std {s}");
            if bias {
                assert!(m.abs() < 1e-4, "unit {unit}: mean {m}");
            }
        }
    }
}

#[test]
fn data_dependent_init_standardizes_conv2d_channels() {
    for bias in [true, false] {
        let device = device();
        device.seed(12);
        let conv = Conv2dConfig::new([3, 5], [3, 3])
            .with_bias(bias)
            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
            .init(&device);
        let conv = apply_weight_norm(conv, &WeightNormConfig::new()).unwrap();
        let (_, y) = data_dependent_conv2d(conv, randn([8, 3, 6, 6], &device), 1.0).unwrap();
        for (unit, (m, s)) in stats(&y, 1).into_iter().enumerate() {
            assert!(
                (s - 1.0).abs() < 1e-4,
                "bias={bias} channel {unit}: std {s}"
            );
            if bias {
                assert!(m.abs() < 1e-4, "channel {unit}: mean {m}");
            }
        }
    }
}

#[test]
fn data_dependent_init_errors() {
    let device = device();
    let plain = LinearConfig::new(4, 3).init(&device);
    let x = randn([8, 4], &device);
    let err = data_dependent_linear(plain.clone(), x.clone(), 1.0).unwrap_err();
    assert_eq!(err, InitError::NoWeightNorm);
    let whole = apply_weight_norm(
        plain.clone(),
        &WeightNormConfig::new().with_axis(AxisChoice::Whole),
    )
    .unwrap();
    let err = data_dependent_linear(whole, x.clone(), 1.0).unwrap_err();
    assert!(matches!(err, InitError::WrongAxis { .. }), "{err}");
    let wn = apply_weight_norm(plain, &WeightNormConfig::new()).unwrap();
    let err = data_dependent_linear(wn.clone(), Tensor::ones([8, 4], &device), 1.0).unwrap_err();
    assert_eq!(
        err.to_string(),
        "output unit 0 is constant on the initialisation batch (std 0): use a batch with more variety"
    );
    assert_eq!(
        data_dependent_linear(wn, x, -1.0).unwrap_err(),
        InitError::InvalidScale(-1.0)
    );
}

#[test]
fn mean_only_batch_norm_matches_a_hand_computation() {
    let device = ad_device();
    let bn = MeanOnlyBatchNormConfig::new(2)
        .with_momentum(0.25)
        .init(&device);
    let x = Tensor::<2>::from_data([[1.0, 10.0], [3.0, 20.0], [5.0, 60.0]], &device);
    // Training: subtract the batch mean (3, 30).
    let y = values(&bn.forward(x.clone()));
    assert_eq!(y, vec![-2.0, -20.0, 0.0, -10.0, 2.0, 30.0]);
    // Running mean: 0.75 * 0 + 0.25 * (3, 30).
    assert_eq!(values(&bn.running_mean.value_sync()), vec![0.75, 7.5]);
    let _ = bn.forward(x.clone());
    // 0.75 * (0.75, 7.5) + 0.25 * (3, 30) = (1.3125, 13.125).
    assert_eq!(values(&bn.running_mean.value_sync()), vec![1.3125, 13.125]);
    // Evaluation (no autodiff): subtract the running mean; beta is added in both.
    let eval = bn.valid();
    let x_plain = Tensor::<2>::from_data([[1.0, 10.0]], &device.clone().inner());
    assert_eq!(
        values(&eval.forward(x_plain)),
        vec![1.0 - 1.3125, 10.0 - 13.125]
    );
    // The running mean is saved with the module.
    let fresh = MeanOnlyBatchNormConfig::new(2).init(&device);
    let loaded = fresh.load_record(bn.clone().into_record());
    assert_eq!(
        values(&loaded.running_mean.value_sync()),
        vec![1.3125, 13.125]
    );
    // The learnable shift gets a gradient.
    let grads = bn.forward(x).sum().backward();
    assert_eq!(values(&bn.beta.val().grad(&grads).unwrap()), vec![3.0, 3.0]);
}

#[test]
fn mean_only_batch_norm_on_images_centers_each_channel() {
    let device = ad_device();
    let bn = MeanOnlyBatchNormConfig::new(3).init(&device);
    let y = bn.forward(randn([4, 3, 5, 5], &device));
    for (m, _) in stats(&y, 1) {
        assert!(m.abs() < 1e-5);
    }
}

/// Weight norm has no batch statistics: a sample's output does not depend on the batch it is in;
/// batch norm's does.
#[test]
fn batch_independence() {
    let device = ad_device();
    device.seed(5);
    let wn = apply_weight_norm(
        (
            LinearConfig::new(64, 32).init(&device),
            LinearConfig::new(32, 10).init(&device),
        ),
        &WeightNormConfig::new(),
    )
    .unwrap();
    let bn = BatchNormConfig::new(32).init(&device);
    let relu = Relu::new();
    let sample = randn([1, 64], &device);
    let mut wn_outs = Vec::new();
    let mut bn_outs = Vec::new();
    for batch in [1usize, 2, 8, 32] {
        let x = if batch == 1 {
            sample.clone()
        } else {
            Tensor::cat(vec![sample.clone(), randn([batch - 1, 64], &device)], 0)
        };
        let h = wn.0.forward(x.clone());
        let y = wn.1.forward(relu.forward(h.clone()));
        wn_outs.push(values(&y.slice([0..1, 0..10])));
        let hb = bn.forward(h);
        bn_outs.push(values(&hb.slice([0..1, 0..32])));
    }
    for (i, out) in wn_outs.iter().enumerate().skip(1) {
        let err = error_at_scale(out, &wn_outs[0], max_abs(&wn_outs[0]));
        assert!(
            err <= 1e-6,
            "batch {i}: weight norm output moved by {err:e}"
        );
    }
    // Batch norm in training: the sample's output moves with its batch (batch 1 is degenerate).
    let moved = error_at_scale(&bn_outs[2], &bn_outs[3], max_abs(&bn_outs[3]));
    assert!(
        moved > 1e-2,
        "batch norm output should depend on the batch ({moved:e})"
    );
}

/// A weight-normalized 1-d convolution's `(w, bias, out_channels, in_channels, kernel)` on the
/// host, with `w = g * v / ||v||` per output channel computed here from the stored `v` and `g`.
fn conv_on_host(conv: &Conv1d) -> (Vec<f64>, Vec<f64>, [usize; 3]) {
    let v = conv.weight.base();
    let [out, cin, k] = v.dims();
    let g = values(
        &conv
            .weight
            .reparameterization::<WeightNorm>()
            .expect("weight-normalized")
            .g
            .val(),
    );
    let v = values(&v);
    let row = cin * k;
    let mut w = vec![0.0; v.len()];
    for ((wo, vo), go) in w.chunks_mut(row).zip(v.chunks(row)).zip(&g) {
        let norm = vo.iter().map(|x| x * x).sum::<f64>().sqrt();
        for (wi, vi) in wo.iter_mut().zip(vo) {
            *wi = go * vi / norm;
        }
    }
    let bias = values(&conv.bias.as_ref().expect("a bias").val());
    (w, bias, [out, cin, k])
}

/// `y[b, o, t] = bias[o] + sum_{c, j} w[o, c, j] x[b, c, t + j * dilation - left]`, zero outside
/// the input, the output as long as the input.
fn conv1d_on_host(
    x: &[f64],
    [batch, len]: [usize; 2],
    (w, bias, [out, cin, k]): &(Vec<f64>, Vec<f64>, [usize; 3]),
    dilation: usize,
    left: usize,
) -> Vec<f64> {
    let mut y = vec![0.0; batch * out * len];
    for b in 0..batch {
        for o in 0..*out {
            for t in 0..len {
                let mut s = bias[o];
                for c in 0..*cin {
                    for j in 0..*k {
                        let pos = (t + j * dilation) as i64 - left as i64;
                        if (0..len as i64).contains(&pos) {
                            s += w[(o * cin + c) * k + j] * x[(b * cin + c) * len + pos as usize];
                        }
                    }
                }
                y[(b * out + o) * len + t] = s;
            }
        }
    }
    y
}

#[test]
fn wavenet_block() {
    let device = ad_device();
    for (channels, kernel_size, dilation) in [(4, 3, 2), (3, 2, 3), (2, 1, 1)] {
        let block = WaveNetBlockConfig::new(channels)
            .with_kernel_size(kernel_size)
            .with_dilation(dilation)
            .init(&device)
            .unwrap();
        let mut normed = weight_normed_params(&block);
        normed.sort();
        assert_eq!(normed, ["dilated.weight", "residual.weight", "skip.weight"]);
        let (batch, len) = (2, 16);
        let x = randn([batch, channels, len], &device).require_grad();
        let (res, skip) = block.forward(x.clone());
        assert_eq!(res.dims(), [batch, channels, len]);
        assert_eq!(skip.dims(), [batch, channels, len]);

        // The same block on the host, from its stored v, g and biases: the dilated convolution
        // (padded by (k - 1) * dilation, the smaller half on the left), the gate
        // tanh(a) * sigmoid(b) on its two halves of channels, the 1x1 convolutions.
        let xs = values(&x);
        let pad = (kernel_size - 1) * dilation;
        let h = conv1d_on_host(
            &xs,
            [batch, len],
            &conv_on_host(&block.dilated),
            dilation,
            pad / 2,
        );
        let mut gated = vec![0.0; batch * channels * len];
        for b in 0..batch {
            for c in 0..channels {
                for t in 0..len {
                    let a = h[(b * 2 * channels + c) * len + t];
                    let s = h[(b * 2 * channels + channels + c) * len + t];
                    gated[(b * channels + c) * len + t] = a.tanh() / (1.0 + (-s).exp());
                }
            }
        }
        let expected_skip = conv1d_on_host(&gated, [batch, len], &conv_on_host(&block.skip), 1, 0);
        let expected_res: Vec<f64> =
            conv1d_on_host(&gated, [batch, len], &conv_on_host(&block.residual), 1, 0)
                .iter()
                .zip(&xs)
                .map(|(r, x)| r + x)
                .collect();
        let what = format!("channels {channels}, kernel {kernel_size}, dilation {dilation}");
        assert_close(
            &format!("skip, {what}"),
            &values(&skip),
            &expected_skip,
            1e-5,
        );
        assert_close(
            &format!("residual, {what}"),
            &values(&res),
            &expected_res,
            1e-5,
        );

        // Both outputs depend on the input through the weight-normed convolutions.
        let grads = (res.sum() + skip.sum()).backward();
        assert!(x.grad(&grads).is_some());
    }
}
