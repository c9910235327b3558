//! `weightnorm op`: the weight-norm operation on a random weight, on the CPU or a GPU: norms,
//! agreement of the fused and composed paths, and timings.
//!
//! What a benchmark on any device needs is here too: [`time_op`] (forward and forward +
//! backward of the fused and composed paths on a device) and [`time_copy`] (a device copy of the
//! same bytes, the bandwidth yardstick). The device itself is `--device` (`crate::device`).

use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::tensor::{DType, Device, Distribution, FloatDType, Tensor};
use weightnorm::NormAxis;
use weightnorm::ops::{norm_except_dim, weight_norm, weight_norm_composed};

use crate::{Failure, ckpt};

/// A weight-norm benchmark: a random `v` (standard normal) of `shape` in `dtype`, `g = ||v||`.
#[derive(Clone, Debug)]
pub struct OpBench {
    /// The weight's shape (rank 1 to 5).
    pub shape: Vec<usize>,
    /// The normalized axis.
    pub axis: NormAxis,
    /// f32, f16 or bf16 (f64 on the CPU and CUDA).
    pub dtype: FloatDType,
    /// Untimed calls first (kernel compilation, allocation).
    pub warmup: usize,
    /// Timed calls.
    pub repeats: usize,
    /// Seed of the random weight.
    pub seed: u64,
}

/// Milliseconds per call, the device synchronized before each clock stops.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OpTimings {
    /// `weight_norm` (fused on the CPU and GPU backends).
    pub fused_forward: f64,
    /// `weight_norm_composed`, Burn's primitive operations.
    pub composed_forward: f64,
    /// The fused forward and its backward (`dw` all ones).
    pub fused_forward_backward: f64,
    /// The composed forward and Burn's backward of it.
    pub composed_forward_backward: f64,
}

/// Times `f` on `device`: `warmup` untimed calls, then the mean of `repeats` timed ones, in ms.
fn time_on(device: &Device, warmup: usize, repeats: usize, f: &mut dyn FnMut()) -> Result<f64> {
    for _ in 0..warmup {
        f();
    }
    device.sync().context("synchronizing the device")?;
    let repeats = repeats.max(1);
    let t0 = Instant::now();
    for _ in 0..repeats {
        f();
    }
    device.sync().context("synchronizing the device")?;
    Ok(t0.elapsed().as_secs_f64() * 1e3 / repeats as f64)
}

/// Times the forward and the forward + backward of the fused and the composed weight norm on
/// `device` (the same random weight for both).
///
/// # Errors
///
/// A shape of rank outside 1 to 5, a shape the axis does not fit, a dtype the device does not
/// support, or a device that fails.
pub fn time_op(device: &Device, bench: &OpBench) -> Result<OpTimings> {
    match bench.shape.len() {
        1 => time_rank::<1>(device, bench),
        2 => time_rank::<2>(device, bench),
        3 => time_rank::<3>(device, bench),
        4 => time_rank::<4>(device, bench),
        5 => time_rank::<5>(device, bench),
        r => bail!("rank {r} is not supported: give a shape of 1 to 5 sizes"),
    }
}

fn time_rank<const D: usize>(device: &Device, bench: &OpBench) -> Result<OpTimings> {
    if !device.supports_dtype(DType::from(bench.dtype)) {
        bail!("{:?} is not supported on {device:?}", bench.dtype);
    }
    let shape: [usize; D] = bench.shape.clone().try_into().expect("rank checked");
    device.seed(bench.seed);
    let v = Tensor::<D>::random(shape, Distribution::Normal(0.0, 1.0), device).cast(bench.dtype);
    let g = norm_except_dim(v.clone(), 2.0, bench.axis)?;
    let axis = bench.axis;
    let (warm, reps) = (bench.warmup, bench.repeats);
    let forward = |composed: bool| {
        let (v, g) = (v.clone(), g.clone());
        move || {
            let w = if composed {
                weight_norm_composed(v.clone(), g.clone(), axis, 0.0)
            } else {
                weight_norm(v.clone(), g.clone(), axis)
            };
            drop(w.expect("validated"));
        }
    };
    let (va, ga) = (v.clone().autodiff(), g.clone().autodiff());
    let forward_backward = |composed: bool| {
        let (v, g) = (va.clone().require_grad(), ga.clone().require_grad());
        move || {
            let w = if composed {
                weight_norm_composed(v.clone(), g.clone(), axis, 0.0)
            } else {
                weight_norm(v.clone(), g.clone(), axis)
            };
            drop(w.expect("validated").backward());
        }
    };
    Ok(OpTimings {
        fused_forward: time_on(device, warm, reps, &mut forward(false))?,
        composed_forward: time_on(device, warm, reps, &mut forward(true))?,
        fused_forward_backward: time_on(device, warm, reps, &mut forward_backward(false))?,
        composed_forward_backward: time_on(device, warm, reps, &mut forward_backward(true))?,
    })
}

/// Times a copy of `elements` values of `dtype` on `device` (one elementwise kernel that reads
/// and writes every value once, as a copy does): milliseconds per copy.
///
/// # Errors
///
/// A dtype the device does not support, or a device that fails.
pub fn time_copy(
    device: &Device,
    elements: usize,
    dtype: FloatDType,
    warmup: usize,
    repeats: usize,
) -> Result<f64> {
    if !device.supports_dtype(DType::from(dtype)) {
        bail!("{dtype:?} is not supported on {device:?}");
    }
    let x = Tensor::<1>::ones([elements], device).cast(dtype);
    time_on(device, warmup, repeats, &mut || {
        drop(x.clone().add_scalar(1.0));
    })
}

/// The options of `op`.
#[derive(clap::Args)]
#[command(
    after_help = "Example:\n  weightnorm op --shape 4096,4096 --dim 0\n  weightnorm op --shape 64,3,3,3 --dim none"
)]
pub struct OpArgs {
    /// The weight's shape, comma-separated, in PyTorch's layout (rank 1 to 5, sizes at least 1,
    /// at most 2^28 elements).
    #[arg(
        long,
        default_value = "1024,1024",
        value_delimiter = ',',
        required = true
    )]
    pub shape: Vec<usize>,
    /// PyTorch's `dim`: an axis (negative values wrap), or `none` / `-1` for the whole tensor.
    #[arg(long, default_value = "0", allow_hyphen_values = true)]
    pub dim: String,
    /// How many timed repetitions.
    #[arg(long, default_value_t = 10)]
    pub repeats: usize,
    /// Seed of the random weight.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Where to run: the CPU, or a GPU through the CubeCL backend (`cuda` and `wgpu` need the
    /// cargo features of the same names).
    #[arg(long, value_parser = crate::device::DeviceParser, default_value = "cpu")]
    pub device: crate::device::DeviceArg,
}

/// The most elements the random weight of `op` may have: 2^28 (1 GiB of f32).
pub const MAX_ELEMENTS: usize = 1 << 28;

/// `weightnorm op`.
pub fn op(args: OpArgs) -> Result<()> {
    let rank = args.shape.len();
    let elements = args.shape.iter().try_fold(1usize, |a, &s| a.checked_mul(s));
    if args.shape.contains(&0) {
        bail!(Failure::input(anyhow::anyhow!(
            "--shape {:?} has a zero size: every size must be at least 1",
            args.shape
        )));
    }
    if elements.is_none_or(|n| n > MAX_ELEMENTS) {
        bail!(Failure::input(anyhow::anyhow!(
            "--shape {:?} has more than {MAX_ELEMENTS} elements: give a smaller weight",
            args.shape
        )));
    }
    let axis = NormAxis::from_torch(ckpt::parse_dim(&args.dim)?, rank).map_err(Failure::input)?;
    let device = args.device.device()?;
    match rank {
        1 => op_rank::<1>(&args, axis, &device),
        2 => op_rank::<2>(&args, axis, &device),
        3 => op_rank::<3>(&args, axis, &device),
        4 => op_rank::<4>(&args, axis, &device),
        5 => op_rank::<5>(&args, axis, &device),
        r => bail!(Failure::input(anyhow::anyhow!(
            "rank {r} is not supported: give a shape of 1 to 5 sizes"
        ))),
    }
}

fn op_rank<const D: usize>(args: &OpArgs, axis: NormAxis, device: &Device) -> Result<()> {
    device.seed(args.seed);
    let shape: [usize; D] = args.shape.clone().try_into().expect("rank checked");
    let v = Tensor::<D>::random(shape, Distribution::Normal(0.0, 1.0), device);
    let g = norm_except_dim(v.clone(), 2.0, axis)?;
    let norms = g.clone().into_data().convert::<f64>().try_to_vec::<f64>()?;
    let (lo, hi) = norms
        .iter()
        .fold((f64::INFINITY, 0.0f64), |(l, h), &x| (l.min(x), h.max(x)));
    println!(
        "v {:?} on {}, {} ({} slices), norms in [{lo:.4}, {hi:.4}]",
        shape,
        args.device,
        axis.describe(),
        norms.len()
    );

    let fused = weight_norm(v.clone(), g.clone(), axis)?;
    let composed = weight_norm_composed(v.clone(), g, axis, 0.0)?;
    let to_f32 = |t: Tensor<1>| -> f32 { t.into_scalar::<f32>() };
    let err_identity = to_f32((fused.clone() - v).abs().max());
    let err_paths = to_f32((fused - composed).abs().max());
    println!("with g = ||v||, max |w - v| = {err_identity:.3e} (the function-preserving init)");
    println!("max |fused - composed| = {err_paths:.3e}");

    let bench = OpBench {
        shape: args.shape.clone(),
        axis,
        dtype: FloatDType::F32,
        warmup: 1,
        repeats: args.repeats,
        seed: args.seed,
    };
    let t = time_op(device, &bench)?;
    let copy = time_copy(
        device,
        shape.iter().product(),
        FloatDType::F32,
        1,
        args.repeats,
    )?;
    println!(
        "forward: fused {:.3} ms, composed {:.3} ms",
        t.fused_forward, t.composed_forward
    );
    println!(
        "forward + backward: fused {:.3} ms, composed {:.3} ms",
        t.fused_forward_backward, t.composed_forward_backward
    );
    println!("a copy of the same bytes: {copy:.3} ms");
    Ok(())
}
