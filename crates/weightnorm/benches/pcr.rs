//! The cost of Periodic Canonical Regularization against the training step it rides on: one
//! Adam step (forward, backward, update) of the CLI's MLP 784-256-128-10 at batch 128; one
//! canonicalization with the covariant transport of Adam's state (what PCR adds every C steps:
//! its overhead at C = 100 is `canonicalize / (100 * step)`); and the soft penalty's extra cost
//! per step (a step with `lambda * G^2` added to the loss against one without). The CLI's CNN
//! (widths 64-128-256, 28 x 28 images, flattened head) is canonicalized too; and the two
//! halves of the canonicalization apart (`mlp/rescale`: the module; `mlp/transport`: Adam's
//! state). glibc's allocator is set as the `weightnorm` binary sets it.
//!
//! Run: `cargo bench -p weightnorm --bench pcr`

use std::time::Duration;

use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Distribution, Int, Tensor};
use criterion::{Criterion, criterion_group, criterion_main};
use weightnorm::pcr::{Pcr, PcrConfig, Penalty, Transport, transport};

/// The shared test models.
#[path = "../tests/common/models.rs"]
mod models;
use models::{Cnn, Mlp};

/// A model and Adam after a few steps (so that Adam has a state to carry).
fn warmed(device: &Device, steps: usize) -> (Mlp, ModuleOptimizer, Tensor<2>, Tensor<1, Int>) {
    let loss_fn = CrossEntropyLossConfig::new().init(device);
    let x = Tensor::<2>::random([128, 784], Distribution::Normal(0.0, 1.0), device);
    let labels: Vec<i64> = (0..128).map(|i| i % 10).collect();
    let y = Tensor::<1, Int>::from_data(labels.as_slice(), device);
    let mut model = Mlp::new(&[784, 256, 128, 10], device);
    let mut optim = AdamConfig::new().init();
    for _ in 0..steps {
        let loss = loss_fn.forward(model.forward(x.clone()), y.clone());
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(1e-3, model, grads);
    }
    (model, optim, x, y)
}

fn bench(c: &mut Criterion) {
    // The allocator as the `weightnorm` binary sets it (see `weightnorm::ops`): freed blocks
    // stay mapped, so that a step does not fault its buffers in again.
    // SAFETY: mallopt only sets two numbers in glibc's allocator; any value is valid.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
    let device = Device::flex().autodiff();
    device.seed(0);
    let loss_fn = CrossEntropyLossConfig::new().init(&device);
    let mut group = c.benchmark_group("pcr");
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(5));

    for soft in [false, true] {
        let (model, mut optim, x, y) = warmed(&device, 3);
        let penalty = if soft {
            Penalty::Soft { lambda: 1e-3 }
        } else {
            Penalty::None
        };
        let pcr = Pcr::new(PcrConfig::new(100).with_penalty(penalty)).unwrap();
        let mut slot = Some(model);
        let name = if soft { "mlp/step+soft" } else { "mlp/step" };
        group.bench_function(name, |b| {
            b.iter(|| {
                let model = slot.take().unwrap();
                let mut loss = loss_fn.forward(model.forward(x.clone()), y.clone());
                if let Some(p) = pcr.penalty(&model).unwrap() {
                    loss = loss + p;
                }
                let grads = GradientsParams::from_grads(loss.backward(), &model);
                slot = Some(optim.step(1e-3, model, grads));
            })
        });
    }

    let (model, optim, _, _) = warmed(&device, 3);
    let mut pcr = Pcr::new(PcrConfig::new(100)).unwrap();
    group.bench_function("mlp/canonicalize+transport", |b| {
        b.iter(|| {
            let mut o = optim.clone();
            pcr.canonicalize(&mut o, &model, None::<fn(&Mlp) -> f64>)
                .unwrap()
        })
    });

    // The two halves of it: the module rescaled, and the optimizer's state transported.
    group.bench_function("mlp/rescale", |b| b.iter(|| pcr.rescale(&model).unwrap()));
    let (_, rescaling) = pcr.rescale(&model).unwrap();
    let factors = rescaling.by_param();
    group.bench_function("mlp/transport", |b| {
        b.iter(|| {
            let mut o = optim.clone();
            transport(&mut o, &factors, Transport::Covariant).unwrap();
            o
        })
    });

    let cnn = Cnn::new([1, 28, 28], [64, 128, 256], 128, 10, &device);
    let mut optim = AdamConfig::new().init();
    let x = Tensor::<4>::random([8, 1, 28, 28], Distribution::Normal(0.0, 1.0), &device);
    let y = Tensor::<1, Int>::from_data([0i64, 1, 2, 3, 4, 5, 6, 7].as_slice(), &device);
    let grads = GradientsParams::from_grads(loss_fn.forward(cnn.forward(x), y).backward(), &cnn);
    let cnn = optim.step(1e-3, cnn, grads);
    group.bench_function("cnn/canonicalize+transport", |b| {
        b.iter(|| {
            let mut o = optim.clone();
            pcr.canonicalize(&mut o, &cnn, None::<fn(&_) -> f64>)
                .unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
