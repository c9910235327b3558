//! The inputs `canonicalize` verifies on: a file of inputs, a data set's test split, or random
//! normal samples.

use anyhow::{Result, bail};
use weightnorm::canonical::argmax;
use weightnorm::torch::TensorEntry;

use super::args::{CanonicalizeArgs, MAX_RANDOM_VALUES, MAX_SAMPLES, bad};
use crate::data;
use crate::text::shown;

/// Inputs for the verification, with labels when known, and where they came from.
pub(crate) struct Inputs {
    pub x: Vec<Vec<f64>>,
    pub y: Option<Vec<usize>>,
    pub what: String,
}

fn decode_f64(t: &TensorEntry) -> Result<Vec<f64>> {
    t.values_f64().map_err(bad)
}

pub(crate) fn load_inputs(args: &CanonicalizeArgs, shape: &[usize]) -> Result<Inputs> {
    let per: usize = shape.iter().product();
    let split = |flat: Vec<f64>| flat.chunks(per).map(<[f64]>::to_vec).collect::<Vec<_>>();
    if let Some(path) = &args.inputs {
        let ck = weightnorm::torch::Checkpoint::open(path, None).map_err(bad)?;
        let x = ck
            .get("x")
            .or_else(|| (ck.tensors.len() == 1).then(|| &ck.tensors[0]))
            .ok_or_else(|| {
                bad(format!(
                    "{}: no tensor `x` (and more than one tensor)",
                    shown(path)
                ))
            })?;
        let n = x.shape.first().copied().unwrap_or(0);
        let rest: usize = x.shape.iter().skip(1).product();
        if x.shape.len() < 2 || rest != per || n == 0 {
            bail!(bad(format!(
                "{}: `{}` has shape {:?}, expected [N, {}] with N > 0",
                shown(path),
                x.name,
                x.shape,
                shape
                    .iter()
                    .map(usize::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let xs = decode_f64(x)?;
        if xs.iter().any(|v| !v.is_finite()) {
            bail!(bad(format!(
                "{}: the inputs hold NaN or infinity",
                shown(path)
            )));
        }
        let y = match ck.get("y") {
            Some(y) if y.numel() == n => {
                Some(decode_f64(y)?.into_iter().map(|v| v as usize).collect())
            }
            Some(y) => bail!(bad(format!(
                "{}: `y` has {} labels for {n} samples",
                shown(path),
                y.numel()
            ))),
            None => None,
        };
        return Ok(Inputs {
            x: split(xs),
            y,
            what: format!("{} ({n} samples)", shown(path)),
        });
    }
    if let Some(name) = &args.dataset {
        let ds = match name.as_str() {
            "digits" => data::digits(),
            "fashion-mnist" => data::fashion_mnist(&args.data)?,
            other => bail!(bad(format!(
                "unknown data set `{other}`: use digits or fashion-mnist"
            ))),
        }
        .standardize();
        if ds.features() != per {
            bail!(bad(format!(
                "the architecture takes {per} values per sample, {} images have {}",
                ds.name,
                ds.features()
            )));
        }
        let n = ds.test_y.len();
        return Ok(Inputs {
            x: split(ds.test_x.iter().map(|&v| f64::from(v)).collect()),
            y: Some(ds.test_y.iter().map(|&v| usize::from(v)).collect()),
            what: format!("{} test split ({n} samples)", ds.name),
        });
    }
    let values = args.samples.saturating_mul(per);
    if args.samples == 0 || args.samples > MAX_SAMPLES || values > MAX_RANDOM_VALUES {
        bail!(bad(format!(
            "--samples must be 1 to {MAX_SAMPLES}, and at most {MAX_RANDOM_VALUES} values in all \
             ({per} per sample here): give fewer, or verify on --inputs or --dataset"
        )));
    }
    // Standard normal samples (Box-Muller).
    let mut rng = data::SplitMix64(args.seed);
    let xs = (0..values)
        .map(|_| {
            let (u, v) = (1.0 - rng.next_f64(), rng.next_f64());
            (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
        })
        .collect();
    Ok(Inputs {
        x: split(xs),
        y: None,
        what: format!(
            "random normal inputs ({} samples, seed {})",
            args.samples, args.seed
        ),
    })
}

pub(crate) fn accuracy(outputs: &[Vec<f64>], labels: &[usize]) -> f64 {
    let right = outputs
        .iter()
        .zip(labels)
        .filter(|(y, l)| argmax(y) == **l)
        .count();
    right as f64 / labels.len().max(1) as f64
}
