//! The reference forward pass in `f64`: one sample at a time, channel-major (`[C]`, `[C, L]`
//! or `[C, H, W]`), what [`verify`](super::verify) compares and the front-ends check their
//! readings against. Linear layers go through a batch row by row (one read of the weight per
//! batch); the rest sample by sample, in parallel.

use rayon::prelude::*;

use super::Real;
use super::network::{Barrier, ConvGeometry, Layer, Network, Pool, Weighted};

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

fn gelu(x: f64) -> f64 {
    0.5 * x * (1.0 + libm::erf(x / std::f64::consts::SQRT_2))
}

/// The softmax of `x` (shifted by its largest value, so that it does not overflow).
pub(crate) fn softmax(x: &[f64]) -> Vec<f64> {
    let m = x.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = x.iter().map(|v| (v - m).exp()).collect();
    let sum: f64 = e.iter().sum();
    e.iter().map(|v| v / sum).collect()
}

impl<T: Real> Layer<T> {
    /// Applies the layer to one sample of `shape` (checked by [`Network::new`]).
    pub fn forward(&self, x: &[f64], shape: &[usize]) -> Vec<f64> {
        let channels = shape[0];
        let positions = x.len().checked_div(channels).unwrap_or(0);
        match self {
            Self::Weighted(l) => match &l.conv {
                None => linear(l, x),
                Some(c) => conv(l, c, x, shape),
            },
            Self::Norm(n) => x
                .iter()
                .enumerate()
                .map(|(i, &v)| {
                    let ch = i / positions;
                    let a = n.a.as_ref().map_or(1.0, |a| a[ch].to_f64());
                    a * v + n.c[ch].to_f64()
                })
                .collect(),
            Self::Act(a) => x.iter().map(|&v| a.apply(v)).collect(),
            Self::Barrier(b) => match b {
                Barrier::Tanh => x.iter().map(|v| v.tanh()).collect(),
                Barrier::Sigmoid => x.iter().map(|&v| sigmoid(v)).collect(),
                Barrier::Gelu => x.iter().map(|&v| gelu(v)).collect(),
                Barrier::Gate => {
                    let half = x.len() / 2;
                    (0..half)
                        .map(|i| x[i].tanh() * sigmoid(x[half + i]))
                        .collect()
                }
                Barrier::Softmax => softmax(x),
            },
            Self::PRelu(slopes) => x
                .iter()
                .enumerate()
                .map(|(i, &v)| {
                    if v >= 0.0 {
                        v
                    } else {
                        slopes[i / positions] * v
                    }
                })
                .collect(),
            Self::Pool(p) => pool(p, x, shape),
            Self::Flatten => x.to_vec(),
            Self::Residual(body) => {
                let h = forward_sample(body, x, shape);
                h.iter().zip(x).map(|(a, b)| a + b).collect()
            }
            Self::Shortcut { body, skip } => {
                let h = forward_sample(body, x, shape);
                let s = forward_sample(skip, x, shape);
                h.iter().zip(&s).map(|(a, b)| a + b).collect()
            }
        }
    }
}

/// Runs `layers` on one sample of `shape` (checked by [`Network::new`]).
fn forward_sample<T: Real>(layers: &[Layer<T>], x: &[f64], shape: &[usize]) -> Vec<f64> {
    let mut h = x.to_vec();
    let mut s = shape.to_vec();
    for layer in layers {
        let next = layer.out_shape(&s, &[]).expect("checked by Network::new");
        h = layer.forward(&h, &s);
        s = next;
    }
    h
}

/// A dot product in `f64` with eight running sums (so that it vectorizes).
fn dot<T: Real>(a: &[T], x: &[f64]) -> f64 {
    let mut acc = [0.0f64; 8];
    let (ac, xc) = (a.chunks_exact(8), x.chunks_exact(8));
    let (ar, xr) = (ac.remainder(), xc.remainder());
    for (p, q) in ac.zip(xc) {
        for k in 0..8 {
            acc[k] += p[k].to_f64() * q[k];
        }
    }
    let tail: f64 = ar.iter().zip(xr).map(|(p, q)| p.to_f64() * q).sum();
    acc.iter().sum::<f64>() + tail
}

fn linear<T: Real>(l: &Weighted<T>, x: &[f64]) -> Vec<f64> {
    (0..l.w.out)
        .map(|i| dot(l.w.row(i), x) + l.b.as_ref().map_or(0.0, |b| b[i].to_f64()))
        .collect()
}

/// Lifts a 1-D geometry to 2-D (height 1).
fn geometry_2d(c: &ConvGeometry, shape: &[usize]) -> ([usize; 2], [[usize; 2]; 4]) {
    if c.kernel.len() == 1 {
        (
            [1, shape[1]],
            [
                [1, c.kernel[0]],
                [1, c.stride[0]],
                [0, c.padding[0]],
                [1, c.dilation[0]],
            ],
        )
    } else {
        (
            [shape[1], shape[2]],
            [
                [c.kernel[0], c.kernel[1]],
                [c.stride[0], c.stride[1]],
                [c.padding[0], c.padding[1]],
                [c.dilation[0], c.dilation[1]],
            ],
        )
    }
}

fn conv<T: Real>(l: &Weighted<T>, c: &ConvGeometry, x: &[f64], shape: &[usize]) -> Vec<f64> {
    let ([h, w], [k, s, p, d]) = geometry_2d(c, shape);
    let (ho, wo) = (
        (h + 2 * p[0] - d[0] * (k[0] - 1) - 1) / s[0] + 1,
        (w + 2 * p[1] - d[1] * (k[1] - 1) - 1) / s[1] + 1,
    );
    let out = l.w.out;
    let per_group_in = l.w.row_len / (k[0] * k[1]);
    let per_group_out = out / c.groups;
    let mut y = vec![0.0; out * ho * wo];
    // The output columns `ox` whose input column `ox * s + offset` lies in `[0, w)`.
    let columns = |offset: isize| -> (usize, usize) {
        let lo = if offset >= 0 {
            0
        } else {
            ((-offset) as usize).div_ceil(s[1])
        };
        let hi = if (w as isize) <= offset {
            0
        } else {
            ((w as isize - offset) as usize).div_ceil(s[1]).min(wo)
        };
        (lo, hi.max(lo))
    };
    for (o, plane_out) in y.chunks_mut(ho * wo).enumerate() {
        let row = l.w.row(o);
        let first = (o / per_group_out) * per_group_in;
        plane_out.fill(l.b.as_ref().map_or(0.0, |b| b[o].to_f64()));
        for ci in 0..per_group_in {
            let plane = &x[(first + ci) * h * w..][..h * w];
            for ky in 0..k[0] {
                for kx in 0..k[1] {
                    let wv = row[(ci * k[0] + ky) * k[1] + kx].to_f64();
                    if wv == 0.0 {
                        continue;
                    }
                    let dx = (kx * d[1]) as isize - p[1] as isize;
                    let (lo, hi) = columns(dx);
                    if lo >= hi {
                        continue;
                    }
                    for oy in 0..ho {
                        let iy = (oy * s[0] + ky * d[0]) as isize - p[0] as isize;
                        if iy < 0 || iy >= h as isize {
                            continue;
                        }
                        let input = &plane[iy as usize * w..][..w];
                        let target = &mut plane_out[oy * wo..][..wo];
                        if s[1] == 1 {
                            let start = (lo as isize + dx) as usize;
                            for (t, v) in target[lo..hi].iter_mut().zip(&input[start..]) {
                                *t += wv * v;
                            }
                        } else {
                            for (ox, t) in target.iter_mut().enumerate().take(hi).skip(lo) {
                                *t += wv * input[(ox as isize * s[1] as isize + dx) as usize];
                            }
                        }
                    }
                }
            }
        }
    }
    y
}

fn pool(p: &Pool, x: &[f64], shape: &[usize]) -> Vec<f64> {
    let (c, h, w) = (shape[0], shape[1], shape[2]);
    let [kh, kw] = p.kernel;
    let ho = (h + 2 * p.padding[0] - kh) / p.stride[0] + 1;
    let wo = (w + 2 * p.padding[1] - kw) / p.stride[1] + 1;
    let mut y = Vec::with_capacity(c * ho * wo);
    for ch in 0..c {
        let plane = &x[ch * h * w..][..h * w];
        for oy in 0..ho {
            for ox in 0..wo {
                let (mut best, mut sum) = (f64::NEG_INFINITY, 0.0);
                for ky in 0..kh {
                    let iy = (oy * p.stride[0] + ky) as isize - p.padding[0] as isize;
                    for kx in 0..kw {
                        let ix = (ox * p.stride[1] + kx) as isize - p.padding[1] as isize;
                        if iy >= 0 && iy < h as isize && ix >= 0 && ix < w as isize {
                            let v = plane[iy as usize * w + ix as usize];
                            best = best.max(v);
                            sum += v;
                        }
                    }
                }
                y.push(if p.max { best } else { sum / (kh * kw) as f64 });
            }
        }
    }
    y
}

impl<T: Real> Network<T> {
    /// Runs the network on a batch of samples (each flattened, of [`Network::input`]'s size),
    /// in `f64`. Linear layers go through the batch row by row (one read of the weight per
    /// batch); the rest sample by sample, in parallel.
    ///
    /// # Panics
    ///
    /// If a sample does not have the input's size.
    pub fn forward(&self, inputs: &[Vec<f64>]) -> Vec<Vec<f64>> {
        let n: usize = self.input.iter().product();
        assert!(
            inputs.iter().all(|x| x.len() == n),
            "every sample holds {n} values"
        );
        forward_layers(&self.layers, inputs.to_vec(), &self.input)
    }
}

fn forward_layers<T: Real>(
    layers: &[Layer<T>],
    mut h: Vec<Vec<f64>>,
    input: &[usize],
) -> Vec<Vec<f64>> {
    let mut shape = input.to_vec();
    for layer in layers {
        let next = layer
            .out_shape(&shape, &[])
            .expect("checked by Network::new");
        h = match layer {
            Layer::Weighted(l) if l.conv.is_none() => {
                // Row-parallel over the whole batch: each row is read once.
                let cols: Vec<Vec<f64>> = (0..l.w.out)
                    .into_par_iter()
                    .map(|i| {
                        let row = l.w.row(i);
                        let b = l.b.as_ref().map_or(0.0, |b| b[i].to_f64());
                        h.iter().map(|x| b + dot(row, x)).collect()
                    })
                    .collect();
                (0..h.len())
                    .map(|s| cols.iter().map(|c| c[s]).collect())
                    .collect()
            }
            Layer::Residual(body) => {
                let out = forward_layers(body, h.clone(), &shape);
                out.into_iter()
                    .zip(&h)
                    .map(|(a, b)| a.iter().zip(b).map(|(p, q)| p + q).collect())
                    .collect()
            }
            Layer::Shortcut { body, skip } => {
                let out = forward_layers(body, h.clone(), &shape);
                let short = forward_layers(skip, h, &shape);
                out.into_iter()
                    .zip(&short)
                    .map(|(a, b)| a.iter().zip(b).map(|(p, q)| p + q).collect())
                    .collect()
            }
            _ => h.par_iter().map(|x| layer.forward(x, &shape)).collect(),
        };
        shape = next;
    }
    h
}
