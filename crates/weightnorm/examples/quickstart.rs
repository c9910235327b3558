//! Weight normalization in one line, trained, then folded for inference.
//!
//! Run: `cargo run --release --example quickstart -p weightnorm`

use burn::nn::loss::{MseLoss, Reduction};
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::{Device, Distribution, Tensor};
use weightnorm::{WeightNormConfig, apply_weight_norm, remove_weight_norm};

/// The model: the MLP of the project's tests (`Linear -> ReLU` per hidden layer, then a Linear
/// to the outputs), here 16 -> 32 -> 32 -> 4.
#[path = "../tests/common/models.rs"]
mod models;
use models::Mlp;

fn max_abs_diff(a: Tensor<2>, b: Tensor<2>) -> f32 {
    (a - b).abs().max().into_scalar::<f32>()
}

fn main() {
    let device = Device::flex().autodiff();
    device.seed(42);
    let mlp = Mlp::new(&[16, 32, 32, 4], &device);
    let x = Tensor::<2>::random([64, 16], Distribution::Normal(0.0, 1.0), &device);
    let target = Tensor::<2>::random([64, 4], Distribution::Normal(0.0, 1.0), &device);

    // One call: every Linear weight becomes g * v / ||v||, per output unit, function-preserving.
    let y_plain = mlp.forward(x.clone());
    let mut model = apply_weight_norm(mlp, &WeightNormConfig::new()).expect("weight norm");
    let y_wn = model.forward(x.clone());
    println!("max |y_wn - y_plain| = {:.3e}", max_abs_diff(y_wn, y_plain));

    // Train a few Adam steps: the optimizer updates v and g.
    let mut optim = AdamConfig::new().init();
    for step in 1..=5 {
        let loss =
            MseLoss::new().forward(model.forward(x.clone()), target.clone(), Reduction::Mean);
        println!(
            "step {step}: loss = {:.5}",
            loss.clone().into_scalar::<f32>()
        );
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(1e-2, model, grads);
    }

    // Fold for inference: plain weights, the same outputs.
    let y_wn = model.forward(x.clone());
    let folded = remove_weight_norm(model).expect("weight norm is there");
    let y_folded = folded.forward(x);
    println!(
        "max |y_folded - y_wn| = {:.3e}",
        max_abs_diff(y_folded, y_wn)
    );
}
