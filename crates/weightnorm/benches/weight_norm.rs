//! The weight-norm operation on the CPU (Flex): the fused kernels against the composed default
//! (the path GPU backends take), forward and forward + backward, beside two copies of the same
//! bytes: into an existing buffer (`copy warm`, the bandwidth reference) and into a fresh
//! allocation (`copy fresh`, what allocating an output costs on top). `weightnorm bench` times
//! the same cases (and more) with the allocator configured; `scripts/bench_torch.py` in PyTorch.
//!
//! Each call allocates its output, and with glibc's default thresholds a large one is mapped and
//! faulted in anew every time (see the `ops` module docs): for the figures `weightnorm bench`
//! gives, run with the same settings,
//! `MALLOC_MMAP_THRESHOLD_=1073741824 MALLOC_TRIM_THRESHOLD_=1073741824 cargo bench -p weightnorm --bench weight_norm`.

use std::hint::black_box;
use std::time::Duration;

use burn::tensor::{Device, Distribution, Tensor};
use burn_flex::{Flex, FlexTensor};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use weightnorm::NormAxis;
use weightnorm::ops::{WeightNormBackend, composed_backward, composed_forward};

struct Case {
    name: &'static str,
    shape: Vec<usize>,
    axis: NormAxis,
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "4096x4096/axis0",
            shape: vec![4096, 4096],
            axis: NormAxis::Keep(0),
        },
        Case {
            name: "4096x4096/whole",
            shape: vec![4096, 4096],
            axis: NormAxis::Whole,
        },
        Case {
            name: "512x256x3x3/axis0",
            shape: vec![512, 256, 3, 3],
            axis: NormAxis::Keep(0),
        },
        Case {
            name: "512x512x7/axis0",
            shape: vec![512, 512, 7],
            axis: NormAxis::Keep(0),
        },
    ]
}

fn flex(shape: &[usize], device: &Device) -> FlexTensor {
    let n: usize = shape.iter().product();
    let t = Tensor::<1>::random([n], Distribution::Normal(0.0, 1.0), device);
    let p = t.try_into_primitive::<Flex>().unwrap();
    FlexTensor::new(
        burn::backend::Bytes::from_bytes_vec(p.bytes().to_vec()),
        burn_flex::Layout::contiguous(shape.to_vec().into()),
        p.dtype(),
    )
}

fn bench(c: &mut Criterion) {
    let device = Device::flex();
    for case in cases() {
        let v = flex(&case.shape, &device);
        let dw = flex(&case.shape, &device);
        let g = flex(&case.axis.g_shape(&case.shape), &device);
        let keep = case.axis.kept();
        let bytes = v.bytes().len() as u64;

        let mut group = c.benchmark_group(case.name);
        group.throughput(Throughput::Bytes(bytes));
        group.sample_size(20);
        group.measurement_time(Duration::from_secs(3));
        group.warm_up_time(Duration::from_millis(500));

        let src = v.bytes().to_vec();
        let mut dst = vec![0u8; src.len()];
        group.bench_function("copy warm", |b| {
            b.iter(|| {
                dst.copy_from_slice(black_box(&src));
                black_box(&mut dst);
            })
        });
        group.bench_function("copy fresh", |b| b.iter(|| black_box(src.to_vec())));
        group.bench_function(BenchmarkId::new("forward", "fused"), |b| {
            b.iter(|| black_box(Flex::weight_norm_forward(v.clone(), g.clone(), keep, 0.0)))
        });
        group.bench_function(BenchmarkId::new("forward", "composed"), |b| {
            b.iter(|| black_box(composed_forward::<Flex>(v.clone(), g.clone(), keep, 0.0)))
        });
        group.bench_function(BenchmarkId::new("forward+backward", "fused"), |b| {
            b.iter(|| {
                let w = Flex::weight_norm_forward(v.clone(), g.clone(), keep, 0.0);
                let grads = Flex::weight_norm_backward(v.clone(), g.clone(), dw.clone(), keep, 0.0);
                black_box((w, grads))
            })
        });
        group.bench_function(BenchmarkId::new("forward+backward", "composed"), |b| {
            b.iter(|| {
                let w = composed_forward::<Flex>(v.clone(), g.clone(), keep, 0.0);
                let grads = composed_backward::<Flex>(v.clone(), g.clone(), dw.clone(), keep, 0.0);
                black_box((w, grads))
            })
        });
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
