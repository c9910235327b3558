//! One training step (forward, backward, Adam) of an MLP 784-1024-1024-10, plain against
//! weight-normalized, at batch 16 and 128: the overhead weight norm adds to training. Also
//! forward + backward alone, which isolates weight norm's own cost from the optimizer's.
//!
//! glibc returns and re-faults mid-size buffers between steps unless told to keep them, which
//! dominates these timings; run with the settings of the `weightnorm` binary,
//! `MALLOC_MMAP_THRESHOLD_=1073741824 MALLOC_TRIM_THRESHOLD_=1073741824`, and one configuration
//! per process (`--bench 'train_step/plain/step/16$'`) for stable figures; or use
//! `weightnorm bench --filter "train step"`, which does both.
//!
//! Run: `cargo bench -p weightnorm --bench train_step`

use std::time::Duration;

use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::{Device, Distribution, Int, Tensor};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use weightnorm::{WeightNormConfig, apply_weight_norm};

/// The shared test models.
#[path = "../tests/common/models.rs"]
mod models;
use models::Mlp;

fn bench(c: &mut Criterion) {
    let device = Device::flex().autodiff();
    device.seed(0);
    let loss_fn = CrossEntropyLossConfig::new().init(&device);
    let mut group = c.benchmark_group("train_step");
    group.sample_size(30);
    group.measurement_time(Duration::from_secs(6));
    for batch in [16usize, 128] {
        let x = Tensor::<2>::random([batch, 784], Distribution::Normal(0.0, 1.0), &device);
        let labels: Vec<i64> = (0..batch as i64).map(|i| i % 10).collect();
        let y = Tensor::<1, Int>::from_data(labels.as_slice(), &device);
        for wn in [false, true] {
            let mut model = Mlp::new(&[784, 1024, 1024, 10], &device);
            if wn {
                model = apply_weight_norm(model, &WeightNormConfig::new()).unwrap();
            }
            let name = if wn { "weight_norm" } else { "plain" };
            // Forward and backward alone: what weight norm itself adds, without the optimizer.
            group.bench_function(
                BenchmarkId::new(format!("{name}/forward+backward"), batch),
                |b| {
                    b.iter(|| {
                        let loss = loss_fn.forward(model.forward(x.clone()), y.clone());
                        GradientsParams::from_grads(loss.backward(), &model)
                    })
                },
            );
            let mut optim = AdamConfig::new().init();
            let mut slot = Some(model);
            group.bench_function(BenchmarkId::new(format!("{name}/step"), batch), |b| {
                b.iter(|| {
                    let model = slot.take().unwrap();
                    let loss = loss_fn.forward(model.forward(x.clone()), y.clone());
                    let grads = GradientsParams::from_grads(loss.backward(), &model);
                    slot = Some(optim.step(1e-3, model, grads));
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
