//! `weightnorm op`: the weight-norm operation on a random weight: norms, agreement of the
//! fused and composed paths, and timings.

use std::time::Instant;

use anyhow::{Result, bail};
use burn::tensor::{Device, Distribution, Tensor};
use weightnorm::NormAxis;
use weightnorm::ops::{norm_except_dim, weight_norm, weight_norm_composed};

use crate::{Failure, ckpt};

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
    match rank {
        1 => op_rank::<1>(&args, axis),
        2 => op_rank::<2>(&args, axis),
        3 => op_rank::<3>(&args, axis),
        4 => op_rank::<4>(&args, axis),
        5 => op_rank::<5>(&args, axis),
        r => bail!(Failure::input(anyhow::anyhow!(
            "rank {r} is not supported: give a shape of 1 to 5 sizes"
        ))),
    }
}

fn op_rank<const D: usize>(args: &OpArgs, axis: NormAxis) -> Result<()> {
    let device = Device::default();
    device.seed(args.seed);
    let shape: [usize; D] = args.shape.clone().try_into().expect("rank checked");
    let v = Tensor::<D>::random(shape, Distribution::Normal(0.0, 1.0), &device);
    let g = norm_except_dim(v.clone(), 2.0, axis)?;
    let norms = g.clone().into_data().convert::<f64>().try_to_vec::<f64>()?;
    let (lo, hi) = norms
        .iter()
        .fold((f64::INFINITY, 0.0f64), |(l, h), &x| (l.min(x), h.max(x)));
    println!(
        "v {:?}, {} ({} slices), norms in [{lo:.4}, {hi:.4}]",
        shape,
        axis.describe(),
        norms.len()
    );

    let time = |f: &dyn Fn() -> Tensor<D>| -> (Tensor<D>, f64) {
        let mut out = f();
        let t0 = Instant::now();
        for _ in 0..args.repeats.max(1) {
            out = f();
        }
        (
            out,
            t0.elapsed().as_secs_f64() * 1e3 / args.repeats.max(1) as f64,
        )
    };
    let (fused, t_fused) = time(&|| weight_norm(v.clone(), g.clone(), axis).expect("validated"));
    let (composed, t_composed) =
        time(&|| weight_norm_composed(v.clone(), g.clone(), axis, 0.0).expect("validated"));
    let to_f32 = |t: Tensor<1>| -> f32 { t.into_scalar::<f32>() };
    let err_identity = to_f32((fused.clone() - v).abs().max());
    let err_paths = to_f32((fused - composed).abs().max());
    println!("with g = ||v||, max |w - v| = {err_identity:.3e} (the function-preserving init)");
    println!("max |fused - composed| = {err_paths:.3e}");
    println!("forward: fused {t_fused:.3} ms, composed {t_composed:.3} ms");
    Ok(())
}
