//! Weight normalization in one line, trained, then folded for inference.
//!
//! Run: `cargo run --release --example quickstart -p weightnorm`

use burn::module::Module;
use burn::nn::loss::{MseLoss, Reduction};
use burn::nn::{Linear, LinearConfig, Relu};
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::{Device, Distribution, Tensor};
use weightnorm::{WeightNormConfig, apply_weight_norm, remove_weight_norm};

/// A small MLP: 16 -> 32 -> 32 -> 4.
#[derive(Module, Debug)]
struct Mlp {
    layers: Vec<Linear>,
    relu: Relu,
}

impl Mlp {
    fn new(device: &Device) -> Self {
        let sizes = [16, 32, 32, 4];
        Self {
            layers: sizes
                .windows(2)
                .map(|w| LinearConfig::new(w[0], w[1]).init(device))
                .collect(),
            relu: Relu::new(),
        }
    }

    fn forward(&self, mut x: Tensor<2>) -> Tensor<2> {
        let last = self.layers.len() - 1;
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(x);
            if i < last {
                x = self.relu.forward(x);
            }
        }
        x
    }
}

fn max_abs_diff(a: Tensor<2>, b: Tensor<2>) -> f32 {
    (a - b).abs().max().into_scalar::<f32>()
}

fn main() {
    let device = Device::flex().autodiff();
    device.seed(42);
    let mlp = Mlp::new(&device);
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
