//! `weightnorm demo`: what weight normalization does, shown in a few lines of output.

use anyhow::Result;
use burn::nn::loss::{MseLoss, Reduction};
use burn::nn::{BatchNormConfig, LinearConfig, Relu};
use burn::optim::{GradientsParams, SgdConfig};
use burn::tensor::{Device, Distribution, Tensor};
use weightnorm::reparam::WeightNorm;
use weightnorm::{Init, WeightNormConfig, apply_weight_norm};

/// A demonstration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Demo {
    /// The norms of the g and v gradients, and of g, over SGD steps.
    Decoupling,
    /// One sample's outputs in batches of 1, 2, 8 and 32: identical.
    BatchIndependence,
    /// Output statistics of weight norm and batch norm across batch sizes.
    WnVsBn,
}

/// The options of `demo`.
#[derive(clap::Args)]
#[command(
    after_help = "Demonstrations:\n  decoupling          the norms of the g and v gradients, and of g, over SGD steps\n  batch-independence  one sample's outputs in batches of 1, 2, 8 and 32: identical\n  wn-vs-bn            output statistics of weight norm and batch norm across batch sizes\n\nExample:\n  weightnorm demo batch-independence"
)]
pub struct DemoArgs {
    /// Which demonstration.
    #[arg(value_enum)]
    pub which: Demo,
    /// Seed.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

fn norm2<const D: usize>(t: Tensor<D>) -> f64 {
    t.powi_scalar(2).sum().sqrt().into_scalar::<f64>()
}

/// `weightnorm demo`: runs the demonstration asked for.
pub fn demo(args: DemoArgs) -> Result<()> {
    match args.which {
        Demo::Decoupling => decoupling(args.seed),
        Demo::BatchIndependence => batch_independence(args.seed),
        Demo::WnVsBn => wn_vs_bn(args.seed),
    }
}

/// A weight-normalized Linear(10, 5) trained by SGD: the gradient of g is the projection of
/// the weight gradient on the direction, v's gradient is orthogonal to v.
fn decoupling(seed: u64) -> Result<()> {
    let device = Device::flex().autodiff();
    device.seed(seed);
    let layer = LinearConfig::new(10, 5).init(&device);
    let mut layer = apply_weight_norm(
        layer,
        &WeightNormConfig::new().with_init(Init::Paper { std: 0.05 }),
    )?;
    let x = Tensor::<2>::random([32, 10], Distribution::Normal(0.0, 1.0), &device);
    let target = Tensor::<2>::random([32, 5], Distribution::Normal(0.0, 1.0), &device);
    let mut optim = SgdConfig::new().init();
    println!("Weight norm, Linear(10, 5), SGD lr 0.1 (Salimans & Kingma 2016, section 2.1)");
    println!("step      loss     |grad g|    |grad v|   v . grad v      |g|");
    for step in 0..5 {
        let loss =
            MseLoss::new().forward(layer.forward(x.clone()), target.clone(), Reduction::Mean);
        let grads = loss.backward();
        let wn = layer
            .weight
            .reparameterization::<WeightNorm>()
            .expect("weight norm");
        let v = layer.weight.base();
        let gv = v.grad(&grads).expect("v has a gradient");
        let gg = wn.g.val().grad(&grads).expect("g has a gradient");
        // Per output unit, v's gradient is orthogonal to v: the sum of |v_j . grad_j| is ~0.
        let ortho = (v.clone() * gv.clone())
            .sum_dim(0)
            .abs()
            .sum()
            .into_scalar::<f64>();
        println!(
            "{step:>4}  {:>8.4}  {:>10.6}  {:>10.6}  {ortho:>11.2e}  {:>8.4}",
            loss.clone().into_scalar::<f64>(),
            norm2(gg),
            norm2(gv),
            norm2(wn.g.val())
        );
        let grads = GradientsParams::from_grads(grads, &layer);
        layer = optim.step(0.1, layer, grads);
    }
    Ok(())
}

fn wn_mlp(device: &Device) -> Result<(burn::nn::Linear, burn::nn::Linear)> {
    Ok(apply_weight_norm(
        (
            LinearConfig::new(64, 32).init(device),
            LinearConfig::new(32, 10).init(device),
        ),
        &WeightNormConfig::new(),
    )?)
}

/// One sample's output in batches of 1, 2, 8 and 32: identical, since weight norm uses no
/// batch statistics.
fn batch_independence(seed: u64) -> Result<()> {
    let device = Device::flex();
    device.seed(seed);
    let (l1, l2) = wn_mlp(&device)?;
    let relu = Relu::new();
    let sample = Tensor::<2>::random([1, 64], Distribution::Normal(0.0, 1.0), &device);
    println!("One sample through a weight-normalized MLP 64-32-10, in batches of other samples:");
    let mut first: Option<Vec<f32>> = None;
    let mut worst = 0.0f32;
    for batch in [1usize, 2, 8, 32] {
        let x = if batch == 1 {
            sample.clone()
        } else {
            Tensor::cat(
                vec![
                    sample.clone(),
                    Tensor::random([batch - 1, 64], Distribution::Normal(0.0, 1.0), &device),
                ],
                0,
            )
        };
        let y = l2.forward(relu.forward(l1.forward(x)));
        let row: Vec<f32> = y
            .slice([0..1, 0..10])
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()?;
        let shown: Vec<String> = row[..5].iter().map(|v| format!("{v:+.6}")).collect();
        println!("  batch {batch:>2}: {}", shown.join(" "));
        match &first {
            None => first = Some(row),
            Some(f) => {
                worst = f
                    .iter()
                    .zip(&row)
                    .fold(worst, |m, (a, b)| m.max((a - b).abs()));
            }
        }
    }
    println!("max difference from batch 1: {worst:.3e}");
    Ok(())
}

/// Output statistics of a weight-normalized and a batch-normalized network (training mode)
/// across batch sizes: weight norm's depend only on the inputs, batch norm's on the batch.
fn wn_vs_bn(seed: u64) -> Result<()> {
    let device = Device::flex().autodiff();
    device.seed(seed);
    let wn = apply_weight_norm(
        (
            LinearConfig::new(784, 256).init(&device),
            LinearConfig::new(256, 10).init(&device),
        ),
        &WeightNormConfig::new(),
    )?;
    let bn = (
        LinearConfig::new(784, 256).init(&device),
        BatchNormConfig::new(256).init(&device),
        LinearConfig::new(256, 10).init(&device),
    );
    let relu = Relu::new();
    println!("Output statistics by batch size (batch norm in training mode):");
    println!("batch   WN mean    WN std     BN mean    BN std");
    for batch in [1usize, 4, 16, 64] {
        let x = Tensor::<2>::random([batch, 784], Distribution::Normal(0.0, 1.0), &device);
        let y_wn = wn.1.forward(relu.forward(wn.0.forward(x.clone())));
        let y_bn = bn.2.forward(relu.forward(bn.1.forward(bn.0.forward(x))));
        let stats = |y: Tensor<2>| -> (f64, f64) {
            let v: Vec<f64> = y.into_data().convert::<f64>().try_to_vec::<f64>().unwrap();
            let m = v.iter().sum::<f64>() / v.len() as f64;
            let n = (v.len() as f64 - 1.0).max(1.0);
            (
                m,
                (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / n).sqrt(),
            )
        };
        let ((wm, ws), (bm, bs)) = (stats(y_wn), stats(y_bn));
        println!("{batch:>5}  {wm:>8.4}  {ws:>8.4}   {bm:>8.4}  {bs:>8.4}");
    }
    println!(
        "(batch 1: batch norm subtracts each feature's only value, so every output is its bias)"
    );
    Ok(())
}
