//! A PyTorch weight-norm checkpoint loaded straight into Burn modules, and saved back.

mod common;

use burn::module::Module;
use burn::nn::conv::{Conv1d, Conv1dConfig};
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{DType, TensorData};
use common::*;
use weightnorm::torch::{Checkpoint, Scheme, TensorEntry, load_into_module, save_module};
use weightnorm::{AxisChoice, WeightNormConfig, apply_weight_norm, remove_weight_norm};

#[derive(Module, Debug)]
struct Net {
    linear_d0: Linear,
    linear_d1: Linear,
    conv1d_d0: Conv1d,
    conv1d_dnone: Conv1d,
}

fn net(axis_d1: AxisChoice) -> Net {
    let device = device();
    let net = Net {
        linear_d0: LinearConfig::new(4, 5).init(&device),
        linear_d1: LinearConfig::new(4, 5).init(&device),
        conv1d_d0: Conv1dConfig::new(3, 6, 5).init(&device),
        conv1d_dnone: Conv1dConfig::new(3, 6, 5).init(&device),
    };
    let net = apply_weight_norm(
        net,
        &WeightNormConfig::new().with_paths(["linear_d0.weight", "conv1d_d0.weight"]),
    )
    .unwrap();
    let net = apply_weight_norm(
        net,
        &WeightNormConfig::new()
            .with_paths(["linear_d1.weight"])
            .with_axis(axis_d1),
    )
    .unwrap();
    apply_weight_norm(
        net,
        &WeightNormConfig::new()
            .with_paths(["conv1d_dnone.weight"])
            .with_axis(AxisChoice::Whole),
    )
    .unwrap()
}

fn subset(path: &str) -> Vec<TensorEntry> {
    let ckpt = Checkpoint::open(&fixtures_dir("interop").join(path), None).unwrap();
    ckpt.tensors
        .into_iter()
        .filter(|t| {
            ["linear_d0.", "linear_d1.", "conv1d_d0.", "conv1d_dnone."]
                .iter()
                .any(|p| t.name.starts_with(p))
        })
        .collect()
}

fn f64_of(t: &TensorEntry) -> Vec<f64> {
    let data =
        TensorData::from_bytes_vec(t.bytes().unwrap().into_owned(), vec![t.numel()], DType::F32);
    f64s(&data)
}

#[test]
fn load_fold_and_save_back() {
    for scheme in ["legacy", "parametrizations"] {
        let input = subset(&format!("f32_{scheme}.safetensors"));
        // PyTorch's dim = 1 on a [out, in] Linear weight is Burn's axis 0 of [in, out].
        let loaded = load_into_module(net(AxisChoice::Keep(0)), &input).unwrap();
        // Folded weights equal PyTorch's own removal (transposed back to PyTorch's layout).
        let folded = remove_weight_norm(loaded.clone()).unwrap();
        let plain = save_module(&folded, Scheme::Legacy).unwrap();
        let reference = subset(&format!("f32_{scheme}.fused.safetensors"));
        assert_eq!(plain.len(), reference.len());
        for (a, b) in plain.iter().zip(&reference) {
            assert_eq!((&a.name, &a.shape), (&b.name, &b.shape));
            let err = elementwise_rel_error(&f64_of(a), &f64_of(b));
            assert!(err <= 1e-6, "{scheme} {}: {err:e}", a.name);
        }
        // Saving the weight-normalized module gives back the input, bit for bit.
        let want = if scheme == "legacy" {
            Scheme::Legacy
        } else {
            Scheme::Parametrizations
        };
        let saved = save_module(&loaded, want).unwrap();
        assert_eq!(saved.len(), input.len());
        for (a, b) in saved.iter().zip(&input) {
            assert_eq!((&a.name, a.dtype, &a.shape), (&b.name, b.dtype, &b.shape));
            assert_eq!(a.bytes().unwrap(), b.bytes().unwrap(), "{}", a.name);
        }
    }
}

#[test]
fn a_pair_for_a_plain_parameter_is_fused_on_load() {
    let device = device();
    let plain = Net {
        linear_d0: LinearConfig::new(4, 5).init(&device),
        linear_d1: LinearConfig::new(4, 5).init(&device),
        conv1d_d0: Conv1dConfig::new(3, 6, 5).init(&device),
        conv1d_dnone: Conv1dConfig::new(3, 6, 5).init(&device),
    };
    let loaded = load_into_module(plain, &subset("f32_legacy.safetensors")).unwrap();
    let saved = save_module(&loaded, Scheme::Legacy).unwrap();
    let reference = subset("f32_legacy.fused.safetensors");
    for (a, b) in saved.iter().zip(&reference) {
        assert_eq!(a.name, b.name);
        assert!(
            elementwise_rel_error(&f64_of(a), &f64_of(b)) <= 1e-6,
            "{}",
            a.name
        );
    }
}

#[test]
fn mismatches_are_explained() {
    // The module normalizes linear_d1 per output unit; the checkpoint per input unit.
    let err = load_into_module(
        net(AxisChoice::OutputUnits),
        &subset("f32_legacy.safetensors"),
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("`linear_d1.weight`: the checkpoint normalizes dim Some(1)"),
        "{err}"
    );
    // A tensor the module has no place for.
    let mut extra = subset("f32_legacy.safetensors");
    extra.push(
        TensorEntry::from_bytes("head.bias", safetensors::Dtype::F32, vec![1], vec![0; 4]).unwrap(),
    );
    let err = load_into_module(net(AxisChoice::Keep(0)), &extra).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the module has no place for these checkpoint tensors: head.bias"
    );
    // A missing one.
    let missing: Vec<_> = subset("f32_legacy.safetensors")
        .into_iter()
        .filter(|t| t.name != "conv1d_d0.bias")
        .collect();
    let err = load_into_module(net(AxisChoice::Keep(0)), &missing).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the checkpoint has no tensor `conv1d_d0.bias`"
    );
}

#[derive(Module, Debug)]
struct Normed {
    fc: Linear,
    bn: burn::nn::BatchNorm,
    mobn: weightnorm::nn::MeanOnlyBatchNorm,
}

#[test]
fn batch_norms_use_pytorch_names_both_ways() {
    let device = device();
    let make = || Normed {
        fc: LinearConfig::new(3, 4).init(&device),
        bn: burn::nn::BatchNormConfig::new(4).init(&device),
        mobn: weightnorm::nn::MeanOnlyBatchNormConfig::new(4).init(&device),
    };
    let saved = save_module(&make(), Scheme::Legacy).unwrap();
    let names: Vec<&str> = saved.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "bn.bias",
            "bn.num_batches_tracked",
            "bn.running_mean",
            "bn.running_var",
            "bn.weight",
            "fc.bias",
            "fc.weight",
            "mobn.bias",
            "mobn.running_mean",
        ]
    );
    assert_eq!(saved[6].shape, vec![4, 3], "PyTorch's [out, in]");
    // Loading the state dict into another module gives back the same tensors.
    let loaded = load_into_module(make(), &saved).unwrap();
    for (a, b) in save_module(&loaded, Scheme::Legacy)
        .unwrap()
        .iter()
        .zip(&saved)
    {
        assert_eq!(a.name, b.name);
        assert_eq!(a.bytes().unwrap(), b.bytes().unwrap(), "{}", a.name);
    }
}
