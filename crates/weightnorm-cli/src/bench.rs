//! `weightnorm bench`: the weight-norm operation (fused and composed, forward and forward +
//! backward) beside two copies of the same bytes, one training step of an MLP plain and
//! weight-normalized, and canonicalization of a 10M- and a 100M-parameter MLP; medians of
//! several runs, as a table or JSON. `scripts/bench_torch.py` times the same cases in PyTorch
//! with the same names, and `scripts/bench_side_by_side.sh` prints both tables side by side.
//!
//! Size: about 900 lines because every case's definition, its timing discipline and its
//! table row sit together, so that a case and the PyTorch script's twin are read side by side.

use std::hint::black_box;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use burn::backend::Bytes;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer};
use burn::tensor::{DType, Device, Distribution, Int, Tensor, TensorData};
use burn_flex::{Flex, FlexTensor, Layout};
use rayon::prelude::*;
use safetensors::Dtype;
use serde_json::json;
use weightnorm::NormAxis;
use weightnorm::canonical::canonicalize;
use weightnorm::nn::{WnLinear, WnLinearConfig};
use weightnorm::ops::{
    WeightNormBackend, composed_backward, composed_forward, norm_except_dim, streaming_stores,
    weight_norm, weight_norm_composed,
};
use weightnorm::torch::{TensorEntry, from_arch};

use crate::device::{Backend, DeviceArg, DeviceParser};
use crate::model::{Mlp, Param};
use crate::{Failure, data, malloc};

const AFTER_HELP: &str = "\
Cases (each timed as the median of several runs, after a warm-up run; all f32):

  For each weight: 4096x4096 (norm per row, axis 0; per column, axis 1, the layout of Burn's
  Linear weight [d_in, d_out] normalized per output unit; and one norm over the whole tensor),
  512x256x3x3, 512x512x7 and 784x128 (axis 0, PyTorch's default dim):
    copy warm                a copy of the weight's bytes into an existing buffer (on every
                             thread from 1 Mi elements, else on one): the bandwidth the
                             operation is measured against
    copy fresh               a copy into a freshly allocated buffer, freed after each run: what
                             allocating a new output costs on top (page faults, unless the
                             allocator keeps freed blocks; see below)
    fused forward            w = g * v / ||v||, this crate's fused CPU kernel (a new w per run)
    fused forward+backward   the forward, then the analytic backward (dv, dg) for a given dw
    fused backward           the analytic backward alone (it finds the norms itself)
    composed forward         the same from Burn's primitive tensor operations (the path other
                             backends take)
    composed forward+backward
                             the composed forward and its backward, also composed
  bytes: the least memory traffic of each: 2x the weight for a copy and a forward (read v,
  write w), 3x for a backward (read v and dw, write dv), 5x for forward+backward; GB/s is
  bytes / median.

  train step plain bB, train step wn bB, train step wn-linear bB   (B = 16 and 128)
                             one step (forward, cross-entropy, backward, Adam) of an MLP
                             784-1024-1024-10 at batch 16 and 128, on a cycle of 16 batches of
                             Gaussian noise (no bytes: compute-bound): `plain` Burn's Linear,
                             `wn` Linear with weight norm attached (apply_weight_norm, the
                             reparameterization PyTorch's parametrizations mirror: w is formed
                             each step), `wn-linear` the paper-form layer nn::WnLinear (the
                             output scaled, w never formed). The steps of a batch size run in
                             rounds, one of each per round, the first rotating (up to 61
                             rounds), so that a change in the machine's speed falls on all; each
                             overhead printed is the median of the rounds' ratios to plain

  canonicalize 10M, canonicalize 100M
                             the canonical form (unit-norm rows, one output scale) of a plain MLP
                             of 6 hidden layers of 1280 or 4096 units (9.9M or 100.7M
                             parameters), through the library's canonical calculus as
                             `weightnorm canonicalize` runs it (the network already read; bytes:
                             every weight read and written once)

On a GPU (--device cuda or wgpu): the same weights and names, each run ended by a device
synchronization; `copy warm` is one elementwise kernel reading and writing every value once
(a GPU allocation comes from Burn's pool, so there is no `copy fresh`; nor is there a `fused
backward`, the backward being reached through autodiff there), `fused` is this crate's
CubeCL kernel, `composed` Burn's operations on the device, the forward+backward's dw is all
ones; the training steps run on the device; canonicalization runs on the CPU as
`weightnorm canonicalize` does.

The allocator: every command of this binary raises glibc's mmap_threshold and trim_threshold
(see the first line of the output); `WEIGHTNORM_MALLOC=default weightnorm bench` measures glibc's
defaults instead. `--threads N` sizes rayon's pool, which Burn's CPU backend (matrix products
included) uses; the fused kernels use as many threads (the caller and helpers). The kernels
write with plain stores; WEIGHTNORM_STREAM_MIN_BYTES=N streams outputs of N bytes and more
(the first line says which).

JSON (--json): {\"device\", \"threads\": N, \"allocator\": {...}, \"streaming_stores_from\":
bytes or null, \"cases\": [{\"name\", \"shape\",
\"median_ms\", \"runs\", \"bytes\", \"gbps\"}, ...], \"train_overheads\": [{\"batch\", \"kind\"
(wn or wn-linear), \"percent\", \"pairs\" (the rounds)}, ...]} (bytes and gbps null for the
training steps).

Examples:
  weightnorm bench
  weightnorm bench --threads 1 --filter 4096
  weightnorm bench --device wgpu --quick
  weightnorm bench --json > rust.json";

/// The options of `bench`.
#[derive(clap::Args)]
#[command(after_help = AFTER_HELP)]
pub struct BenchArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// One run per case and no warm-up: checks that every case runs, measures nothing.
    #[arg(long, conflicts_with = "runs")]
    pub quick: bool,
    /// Exactly this many timed runs per case. Without it: 15, more (up to 1001) while a case has
    /// run for less than 0.25 s, fewer (at least 3) for a case whose runs take more than 3 s in
    /// all.
    #[arg(long)]
    pub runs: Option<usize>,
    /// Only the cases whose name and shape, as `NAME SHAPE` (e.g. `fused forward 4096x4096
    /// axis0`), contain this text.
    #[arg(long)]
    pub filter: Option<String>,
    /// Where the operation and the training steps run: the CPU, or a GPU through the CubeCL
    /// backend (`cuda[:N]` and `wgpu[:N]` need the binary built with the cargo feature of the
    /// same name).
    #[arg(long, value_parser = DeviceParser, default_value = "cpu")]
    pub device: DeviceArg,
}

/// One measured case.
struct Measured {
    name: String,
    shape: String,
    median_ms: f64,
    runs: usize,
    bytes: Option<u64>,
}

impl Measured {
    fn gbps(&self) -> Option<f64> {
        self.bytes.map(|b| b as f64 / (self.median_ms * 1e-3) / 1e9)
    }
}

/// How many runs, and whether to warm up first.
#[derive(Clone, Copy)]
struct Plan {
    runs: usize,
    /// Whether to stop early: once [`Plan::BUDGET`] is spent and [`Plan::MIN_RUNS`] made.
    adaptive: bool,
    warm_up: bool,
}

impl Plan {
    const BUDGET: Duration = Duration::from_secs(3);
    const MIN_RUNS: usize = 3;
    const MAX_RUNS: usize = 15;
    /// A fast case keeps running past [`Plan::MAX_RUNS`] until this much time is spent (up to
    /// [`Plan::MANY_RUNS`] runs): its median then spans the machine's slower swings (another
    /// process, the clock) rather than a few milliseconds of them.
    const MIN_TIME: Duration = Duration::from_millis(250);
    const MANY_RUNS: usize = 1001;
    /// Rounds of the paired training steps: more, as the overhead is a small difference.
    const PAIRS: usize = 61;
}

/// The median of `xs` (sorted in place).
fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

/// Times `run` on what `setup` prepares (setup untimed): the median in ms, and the runs made.
fn time_with<S>(plan: Plan, mut setup: impl FnMut() -> S, mut run: impl FnMut(S)) -> (f64, usize) {
    if plan.warm_up {
        run(setup());
    }
    let mut times = Vec::new();
    let started = Instant::now();
    let more = |made: usize, spent: Duration| {
        if !plan.adaptive {
            return made < plan.runs.max(1);
        }
        (made < plan.runs || (spent < Plan::MIN_TIME && made < Plan::MANY_RUNS))
            && !(made >= Plan::MIN_RUNS && spent > Plan::BUDGET)
    };
    while more(times.len(), started.elapsed()) {
        let s = setup();
        let t0 = Instant::now();
        run(s);
        times.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    (median(&mut times), times.len())
}

/// Times the steps `fs` in rounds, one run of each per round, the first step of round `k`
/// being `fs[k % n]` (for two: `a` first in even rounds and `b` in odd ones), so that a change
/// in the machine's speed (another process, the clock) falls on all alike: the medians in ms,
/// the medians of the rounds' ratios `fs[i] / fs[0]`, and the rounds made. Without `--runs`,
/// up to [`Plan::PAIRS`] rounds, fewer (at least [`Plan::MIN_RUNS`]) once `n` times
/// [`Plan::BUDGET`] is spent.
fn time_group(plan: Plan, fs: &mut [&mut dyn FnMut()]) -> (Vec<f64>, Vec<f64>, usize) {
    let n = fs.len();
    if plan.warm_up {
        fs.iter_mut().for_each(|f| f());
    }
    let rounds = if plan.adaptive {
        Plan::PAIRS
    } else {
        plan.runs.max(1)
    };
    let mut times = vec![Vec::new(); n];
    let mut ratios = vec![Vec::new(); n];
    let started = Instant::now();
    let budget = Plan::BUDGET * n as u32;
    let mut made = 0;
    while made < rounds && !(plan.adaptive && made >= Plan::MIN_RUNS && started.elapsed() > budget)
    {
        let mut round = vec![0.0; n];
        for k in 0..n {
            let i = (made + k) % n;
            let t0 = Instant::now();
            fs[i]();
            round[i] = t0.elapsed().as_secs_f64() * 1e3;
        }
        for i in 0..n {
            times[i].push(round[i]);
            ratios[i].push(round[i] / round[0]);
        }
        made += 1;
    }
    let medians = times.iter_mut().map(|t| median(t)).collect();
    let ratio_medians = ratios.iter_mut().map(|r| median(r)).collect();
    (medians, ratio_medians, made)
}

/// A weight-norm training-step overhead, from steps timed in rounds (see [`time_group`]).
struct Overhead {
    batch: usize,
    /// Which weight-normalized step: `wn` (the reparameterization) or `wn-linear` (the
    /// paper-form layer).
    kind: &'static str,
    /// The median of the pairs' `wn / plain - 1`, in percent.
    percent: f64,
    pairs: usize,
}

/// The cases measured so far, and which to run.
struct Bench {
    plan: Plan,
    filter: Option<String>,
    cases: Vec<Measured>,
    overheads: Vec<Overhead>,
    json: bool,
}

impl Bench {
    fn wanted(&self, name: &str, shape: &str) -> bool {
        self.filter
            .as_deref()
            .is_none_or(|f| format!("{name} {shape}").contains(f))
    }

    /// Times `run` after an untimed `setup` per run, and records it.
    fn case_with<S>(
        &mut self,
        name: &str,
        shape: &str,
        bytes: Option<u64>,
        setup: impl FnMut() -> S,
        run: impl FnMut(S),
    ) {
        if !self.wanted(name, shape) {
            return;
        }
        let (median_ms, runs) = time_with(self.plan, setup, run);
        let m = Measured {
            name: name.to_string(),
            shape: shape.to_string(),
            median_ms,
            runs,
            bytes,
        };
        if !self.json {
            print_row(&m);
        }
        self.cases.push(m);
    }

    fn case(&mut self, name: &str, shape: &str, bytes: Option<u64>, mut run: impl FnMut()) {
        self.case_with(name, shape, bytes, || (), |()| run());
    }

    /// A plain training step and weight-normalized ones at `batch`, timed in rounds: records
    /// every case (`steps`: the name, the kind for the overhead, and the step; the plain one
    /// first) and the overhead of each weight-normalized one against the plain one.
    fn group(&mut self, shape: &str, batch: usize, steps: Vec<(String, &'static str, Step<'_>)>) {
        let (names, kinds, mut fs): (Vec<_>, Vec<_>, Vec<_>) = steps.into_iter().fold(
            (Vec::new(), Vec::new(), Vec::new()),
            |(mut n, mut k, mut f), (name, kind, step)| {
                n.push(name);
                k.push(kind);
                f.push(step);
                (n, k, f)
            },
        );
        let mut refs: Vec<&mut dyn FnMut()> = fs.iter_mut().map(|f| &mut **f as _).collect();
        let (medians, ratios, rounds) = time_group(self.plan, &mut refs);
        for (name, &median_ms) in names.into_iter().zip(&medians) {
            let m = Measured {
                name,
                shape: shape.to_string(),
                median_ms,
                runs: rounds,
                bytes: None,
            };
            if !self.json {
                print_row(&m);
            }
            self.cases.push(m);
        }
        for (kind, ratio) in kinds.into_iter().zip(ratios).skip(1) {
            self.overheads.push(Overhead {
                batch,
                kind,
                percent: 100.0 * (ratio - 1.0),
                pairs: rounds,
            });
        }
    }
}

/// One training step, boxed.
type Step<'a> = Box<dyn FnMut() + 'a>;

fn print_row(m: &Measured) {
    let gbps = m.gbps().map_or(String::new(), |g| format!("{g:8.2}"));
    println!(
        "{:<28} {:<24} {:>11.4} {:>8} {:>5}",
        m.name, m.shape, m.median_ms, gbps, m.runs
    );
}

/// Deterministic values in `[-1, 1)` (SplitMix64, one stream per block, filled in parallel).
fn values(len: usize, seed: u64) -> Vec<f32> {
    const BLOCK: usize = 1 << 16;
    let mut out = vec![0f32; len];
    out.par_chunks_mut(BLOCK).enumerate().for_each(|(b, c)| {
        let mut rng = data::SplitMix64(seed ^ (b as u64).wrapping_mul(0xA24B_AED4_963E_E407));
        for x in c {
            *x = (rng.next_f64() * 2.0 - 1.0) as f32;
        }
    });
    out
}

fn flex(data: Vec<f32>, shape: &[usize]) -> FlexTensor {
    FlexTensor::new(
        Bytes::from_elems(data),
        Layout::contiguous(shape.to_vec().into()),
        DType::F32,
    )
}

/// A weight of the bench: its dims, axis and name.
struct Weight {
    dims: &'static [usize],
    axis: NormAxis,
    label: &'static str,
}

const WEIGHTS: [Weight; 6] = [
    Weight {
        dims: &[4096, 4096],
        axis: NormAxis::Keep(0),
        label: "4096x4096 axis0",
    },
    Weight {
        dims: &[4096, 4096],
        axis: NormAxis::Keep(1),
        label: "4096x4096 axis1",
    },
    Weight {
        dims: &[4096, 4096],
        axis: NormAxis::Whole,
        label: "4096x4096 whole",
    },
    Weight {
        dims: &[512, 256, 3, 3],
        axis: NormAxis::Keep(0),
        label: "512x256x3x3 axis0",
    },
    Weight {
        dims: &[512, 512, 7],
        axis: NormAxis::Keep(0),
        label: "512x512x7 axis0",
    },
    Weight {
        dims: &[784, 128],
        axis: NormAxis::Keep(0),
        label: "784x128 axis0",
    },
];

/// The names of the cases of one weight.
const WEIGHT_CASES: [&str; 7] = [
    "copy warm",
    "copy fresh",
    "fused forward",
    "fused forward+backward",
    "fused backward",
    "composed forward",
    "composed forward+backward",
];

/// The cases of one weight; the copies too if `copies` (once per distinct dims).
fn weight_cases(b: &mut Bench, w: &Weight, copies: bool) {
    if !WEIGHT_CASES.iter().any(|n| b.wanted(n, w.label)) {
        return;
    }
    let numel: usize = w.dims.iter().product();
    let size = (numel * 4) as u64;
    let v_data = values(numel, 1);
    // g = ||v||: the function-preserving start, norms of a realistic size.
    let split = w.axis.split_shape(w.dims);
    let g_data: Vec<f32> = (0..split[1])
        .map(|j| {
            let [outer, n, inner] = split;
            (0..outer)
                .flat_map(|o| &v_data[(o * n + j) * inner..][..inner])
                .map(|&x| f64::from(x) * f64::from(x))
                .sum::<f64>()
                .sqrt() as f32
        })
        .collect();
    let (v, g, dw) = (
        flex(v_data.clone(), w.dims),
        flex(g_data, &w.axis.g_shape(w.dims)),
        flex(values(numel, 2), w.dims),
    );
    let keep = w.axis.kept();
    if copies {
        let copy_shape = w.label.split(' ').next().unwrap_or(w.label);
        let mut dst = vec![0f32; numel];
        // On every thread of the pool, in one contiguous part per thread, for a weight of
        // 1 Mi elements or more (the bandwidth of every core: the kernels share such a weight
        // between threads too, and on 16 cores a one-thread copy of 512x512x7 took 6x the fused
        // forward); a smaller one on the calling thread, where rayon's hand-off (microseconds)
        // would cost more than the copy.
        let parts = if numel < 1 << 20 {
            1
        } else {
            rayon::current_num_threads()
        };
        let part = numel.div_ceil(parts).max(1);
        b.case("copy warm", copy_shape, Some(2 * size), || {
            if parts == 1 {
                dst.copy_from_slice(black_box(&v_data));
            } else {
                dst.par_chunks_mut(part)
                    .zip(black_box(&v_data).par_chunks(part))
                    .for_each(|(d, s)| d.copy_from_slice(s));
            }
            black_box(&mut dst);
        });
        b.case("copy fresh", copy_shape, Some(2 * size), || {
            black_box(black_box(&v_data).to_vec());
        });
    }
    b.case("fused forward", w.label, Some(2 * size), || {
        black_box(Flex::weight_norm_forward(v.clone(), g.clone(), keep, 0.0));
    });
    b.case("fused forward+backward", w.label, Some(5 * size), || {
        let out = Flex::weight_norm_forward(v.clone(), g.clone(), keep, 0.0);
        let grads = Flex::weight_norm_backward(v.clone(), g.clone(), dw.clone(), keep, 0.0);
        black_box((out, grads));
    });
    b.case("fused backward", w.label, Some(3 * size), || {
        black_box(Flex::weight_norm_backward(
            v.clone(),
            g.clone(),
            dw.clone(),
            keep,
            0.0,
        ));
    });
    b.case("composed forward", w.label, Some(2 * size), || {
        black_box(composed_forward::<Flex>(v.clone(), g.clone(), keep, 0.0));
    });
    b.case("composed forward+backward", w.label, Some(5 * size), || {
        let out = composed_forward::<Flex>(v.clone(), g.clone(), keep, 0.0);
        let grads = composed_backward::<Flex>(v.clone(), g.clone(), dw.clone(), keep, 0.0);
        black_box((out, grads));
    });
}

/// The cases of one weight on a GPU `device` (see [`AFTER_HELP`]): every run ends with the
/// device synchronized, its outputs still alive (so that no lazy operation is skipped).
fn device_weight_cases(b: &mut Bench, w: &Weight, copies: bool, device: &Device) -> Result<()> {
    match w.dims.len() {
        2 => device_weight_rank::<2>(b, w, copies, device),
        3 => device_weight_rank::<3>(b, w, copies, device),
        4 => device_weight_rank::<4>(b, w, copies, device),
        r => bail!("no bench weight has rank {r}"),
    }
}

fn device_weight_rank<const D: usize>(
    b: &mut Bench,
    w: &Weight,
    copies: bool,
    device: &Device,
) -> Result<()> {
    if !WEIGHT_CASES.iter().any(|n| b.wanted(n, w.label)) {
        return Ok(());
    }
    let numel: usize = w.dims.iter().product();
    let size = (numel * 4) as u64;
    let shape: [usize; D] = w.dims.try_into().expect("the rank was matched");
    let v = Tensor::<D>::from_data(TensorData::new(values(numel, 1), shape), device);
    // g = ||v||: the function-preserving start, norms of a realistic size.
    let g = norm_except_dim(v.clone(), 2.0, w.axis)?;
    let axis = w.axis;
    let sync = || device.sync().expect("the device synchronizes");
    if copies {
        let copy_shape = w.label.split(' ').next().unwrap_or(w.label);
        b.case("copy warm", copy_shape, Some(2 * size), || {
            let out = v.clone().add_scalar(1.0);
            sync();
            drop(out);
        });
    }
    for (name, composed) in [("fused forward", false), ("composed forward", true)] {
        b.case(name, w.label, Some(2 * size), || {
            let out = if composed {
                weight_norm_composed(v.clone(), g.clone(), axis, 0.0)
            } else {
                weight_norm(v.clone(), g.clone(), axis)
            };
            sync();
            drop(out.expect("validated"));
        });
    }
    let (va, ga) = (
        v.clone().autodiff().require_grad(),
        g.clone().autodiff().require_grad(),
    );
    for (name, composed) in [
        ("fused forward+backward", false),
        ("composed forward+backward", true),
    ] {
        b.case(name, w.label, Some(5 * size), || {
            let out = if composed {
                weight_norm_composed(va.clone(), ga.clone(), axis, 0.0)
            } else {
                weight_norm(va.clone(), ga.clone(), axis)
            };
            let grads = out.expect("validated").backward();
            sync();
            drop(grads);
        });
    }
    Ok(())
}

/// The MLP of the training-step cases.
const MLP: [usize; 4] = [784, 1024, 1024, 10];

/// The training steps cycle through this many batches.
const TRAIN_BATCHES: usize = 16;

fn train_cases(b: &mut Bench, device: &Device) -> Result<()> {
    let device = device.clone().autodiff();
    device.seed(0);
    let shape = format!(
        "mlp {}",
        MLP.iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join("-")
    );
    for batch in [16usize, 128] {
        let kinds = [StepKind::Plain, StepKind::Wn, StepKind::WnLinear];
        let wanted: Vec<StepKind> = kinds
            .into_iter()
            .filter(|k| b.wanted(&k.case(batch), &shape))
            .collect();
        if wanted.is_empty() {
            continue;
        }
        // A cycle of batches of noise with labels in turn: a model trained on one batch over
        // and over memorizes it, its gradients fall into the subnormals, and on CPUs that take
        // a slow path for those (Intel's: a plain step at batch 16 took 2x after 60 steps) the
        // step times measure that instead.
        let batches: Vec<(Tensor<2>, Tensor<1, Int>)> = (0..TRAIN_BATCHES)
            .map(|k| {
                let x =
                    Tensor::<2>::random([batch, MLP[0]], Distribution::Normal(0.0, 1.0), &device);
                let labels: Vec<i64> = (0..batch).map(|i| ((i + 3 * k) % 10) as i64).collect();
                (x, Tensor::<1, Int>::from_data(labels.as_slice(), &device))
            })
            .collect();
        let loss_fn = CrossEntropyLossConfig::new().init(&device);
        let mut steps = Vec::new();
        for kind in &wanted {
            let (batches, loss_fn, device) = (&batches, &loss_fn, &device);
            let step: Step<'_> = match kind {
                StepKind::Plain | StepKind::Wn => {
                    let param = if *kind == StepKind::Plain {
                        Param::Plain
                    } else {
                        Param::Wn
                    };
                    let model = Mlp::new(&MLP, param, device)?;
                    train_step(model, Mlp::forward, batches, loss_fn, device)
                }
                StepKind::WnLinear => {
                    let model = WnLinearMlp::new(&MLP, device);
                    train_step(model, WnLinearMlp::forward, batches, loss_fn, device)
                }
            };
            steps.push((kind.case(batch), kind.name(), step));
        }
        if wanted.len() > 1 && wanted[0] == StepKind::Plain {
            b.group(&shape, batch, steps);
        } else {
            // Without the plain step there is nothing to compare with: each is timed alone.
            for (name, _, mut step) in steps {
                b.case(&name, &shape, None, &mut *step);
            }
        }
    }
    Ok(())
}

/// The training steps of the bench.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StepKind {
    /// Burn's `Linear`, plain weights.
    Plain,
    /// `Linear` with weight norm attached by `apply_weight_norm` (the reparameterization).
    Wn,
    /// The paper-form layer `weightnorm::nn::WnLinear`.
    WnLinear,
}

impl StepKind {
    fn name(self) -> &'static str {
        match self {
            Self::Plain => "plain",
            Self::Wn => "wn",
            Self::WnLinear => "wn-linear",
        }
    }

    fn case(self, batch: usize) -> String {
        format!("train step {} b{batch}", self.name())
    }
}

/// One step (forward, cross-entropy, backward, Adam) of `model` per call, on the batches in turn.
fn train_step<'a, M: burn::module::Module + 'a>(
    model: M,
    forward: fn(&M, Tensor<2>) -> Tensor<2>,
    batches: &'a [(Tensor<2>, Tensor<1, Int>)],
    loss_fn: &'a burn::nn::loss::CrossEntropyLoss,
    device: &'a Device,
) -> Step<'a> {
    let mut optim: ModuleOptimizer = AdamConfig::new().init();
    let mut slot = Some(model);
    let mut next = (0..batches.len()).cycle();
    Box::new(move || {
        let (x, y) = &batches[next.next().expect("a cycle never ends")];
        let model = slot.take().expect("the model is put back after each step");
        let loss = loss_fn.forward(forward(&model, x.clone()), y.clone());
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        slot = Some(optim.step(1e-3, model, grads));
        device.sync().expect("the device synchronizes");
    })
}

/// The bench's MLP with the paper-form layer [`WnLinear`] for every Linear.
#[derive(burn::module::Module, Debug)]
struct WnLinearMlp {
    layers: Vec<WnLinear>,
    relu: burn::nn::Relu,
}

impl WnLinearMlp {
    fn new(sizes: &[usize], device: &Device) -> Self {
        Self {
            layers: sizes
                .windows(2)
                .map(|w| WnLinearConfig::new(w[0], w[1]).init(device))
                .collect(),
            relu: burn::nn::Relu::new(),
        }
    }

    fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let last = self.layers.len() - 1;
        let mut h = x;
        for (i, l) in self.layers.iter().enumerate() {
            h = l.forward(h);
            if i < last {
                h = self.relu.forward(h);
            }
        }
        h
    }
}

/// A plain MLP of `hidden` layers of `width` units and 10 outputs, as an architecture file
/// and checkpoint tensors (PyTorch `nn.Sequential` keys): what `weightnorm canonicalize` reads.
fn big_mlp(width: usize, hidden: usize) -> (serde_json::Value, Vec<TensorEntry>, usize) {
    let mut tensors = Vec::new();
    let mut layers = Vec::new();
    let mut params = 0;
    for l in 0..=hidden {
        let (out, inp) = (if l == hidden { 10 } else { width }, width);
        let key = (2 * l).to_string();
        // About +-1/sqrt(in), rows of different norms.
        let s = 1.7 / (inp as f32).sqrt();
        let mut w = values(out * inp, 10 + l as u64);
        w.par_chunks_mut(inp).enumerate().for_each(|(i, row)| {
            let f = s * (1.0 + i as f32 / out as f32);
            row.iter_mut().for_each(|x| *x *= f);
        });
        let bias: Vec<f32> = (0..out).map(|i| 0.01 * (i % 7) as f32).collect();
        let bytes = |v: &[f32]| bytemuck_bytes(v);
        tensors.push(
            TensorEntry::from_bytes(
                format!("{key}.weight"),
                Dtype::F32,
                vec![out, inp],
                bytes(&w),
            )
            .expect("the bytes fit the shape"),
        );
        tensors.push(
            TensorEntry::from_bytes(format!("{key}.bias"), Dtype::F32, vec![out], bytes(&bias))
                .expect("the bytes fit the shape"),
        );
        params += out * inp + out;
        layers.push(json!({"op": "linear", "param": key}));
        if l < hidden {
            layers.push(json!({"op": "relu"}));
        }
    }
    (json!({"input": [width], "layers": layers}), tensors, params)
}

fn bytemuck_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn canonicalize_cases(b: &mut Bench) -> Result<()> {
    for (name, width) in [("canonicalize 10M", 1280), ("canonicalize 100M", 4096)] {
        let hidden = 6;
        let params_guess = hidden * width * width;
        let shape_guess = format!("mlp {hidden}x{width}");
        if !b.wanted(name, &shape_guess) {
            continue;
        }
        let (arch, tensors, params) = big_mlp(width, hidden);
        debug_assert!(params >= params_guess);
        let net = from_arch::<f32>(&arch, &tensors)?.network;
        drop(tensors);
        let shape = format!("{shape_guess} ({:.1}M)", params as f64 / 1e6);
        b.case_with(
            name,
            &shape,
            Some(2 * 4 * params as u64),
            || net.clone(),
            |n| {
                black_box(canonicalize(n).expect("a plain MLP has a canonical form"));
            },
        );
    }
    Ok(())
}

/// `weightnorm bench`.
pub fn bench(args: BenchArgs) -> Result<()> {
    // `--threads N` is the global option, applied in `main` before any command runs.
    if args.runs == Some(0) {
        bail!(Failure::input(anyhow::anyhow!("--runs must be at least 1")));
    }
    let threads = rayon::current_num_threads();
    let allocator = malloc::settings();
    let device = args.device.device()?;
    let on_cpu = args.device.backend == Backend::Cpu;
    let mut b = Bench {
        plan: if args.quick {
            Plan {
                runs: 1,
                adaptive: false,
                warm_up: false,
            }
        } else {
            Plan {
                runs: args.runs.unwrap_or(Plan::MAX_RUNS),
                adaptive: args.runs.is_none(),
                warm_up: true,
            }
        },
        filter: args.filter.clone(),
        cases: Vec::new(),
        overheads: Vec::new(),
        json: args.json,
    };
    if !args.json {
        let stores = match streaming_stores() {
            Some(min) => format!("streaming stores from {min} bytes"),
            None => "plain stores".to_string(),
        };
        println!(
            "weightnorm bench on {}: {threads} threads; allocator: {allocator}; {stores}",
            args.device
        );
        println!(
            "{:<28} {:<24} {:>11} {:>8} {:>5}",
            "case", "shape", "median ms", "GB/s", "runs"
        );
    }
    for (i, w) in WEIGHTS.iter().enumerate() {
        // The copies are the same for both axes of one weight: measured once.
        let copies = WEIGHTS[..i].iter().all(|o| o.dims != w.dims);
        if on_cpu {
            weight_cases(&mut b, w, copies);
        } else {
            device_weight_cases(&mut b, w, copies, &device)?;
        }
    }
    train_cases(&mut b, &device)?;
    canonicalize_cases(&mut b)?;
    if b.cases.is_empty() {
        bail!(Failure::input(anyhow::anyhow!(
            "--filter {:?} matches no case (see `weightnorm bench --help`)",
            args.filter.unwrap_or_default()
        )));
    }
    if args.json {
        let cases: Vec<_> = b
            .cases
            .iter()
            .map(|m| {
                json!({
                    "name": m.name,
                    "shape": m.shape,
                    "median_ms": m.median_ms,
                    "runs": m.runs,
                    "bytes": m.bytes,
                    "gbps": m.gbps(),
                })
            })
            .collect();
        let overheads: Vec<_> = b
            .overheads
            .iter()
            .map(|o| {
                json!({"batch": o.batch, "kind": o.kind, "percent": o.percent, "pairs": o.pairs})
            })
            .collect();
        let out = json!({
            "device": args.device.to_string(),
            "threads": threads,
            "allocator": allocator.json(),
            "streaming_stores_from": streaming_stores(),
            "cases": cases,
            "train_overheads": overheads,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        for o in &b.overheads {
            let what = match o.kind {
                "wn" => "weight-norm",
                _ => "paper-form WnLinear",
            };
            println!(
                "{what} training-step overhead at batch {}: {:+.1}% (median of {} rounds of steps)",
                o.batch, o.percent, o.pairs
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&mut [7.0]), 7.0);
    }

    #[test]
    fn the_big_mlps_have_the_parameters_they_are_named_for() {
        let (_, tensors, params) = big_mlp(16, 2);
        assert_eq!(params, 2 * 16 * 16 + 2 * 16 + 10 * 16 + 10);
        assert_eq!(
            tensors.iter().map(TensorEntry::numel).sum::<usize>(),
            params
        );
        // 6 x 1280 x 1280 and 6 x 4096 x 4096, with biases and the 10 outputs.
        let (_, _, p10) = big_mlp(1280, 6);
        assert_eq!(p10, 9_850_890);
        let p100 = 6 * (4096 * 4096 + 4096) + 10 * 4096 + 10;
        assert_eq!(p100, 100_728_842);
    }
}
