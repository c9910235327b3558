//! The three transforms of the calculus, each a function of its own, and the in-place kernel
//! that [`canonicalize`](super::canonicalize) runs on every weighted layer.

use rayon::prelude::*;

use super::CanonicalError;
use super::error::{LayerFault, Overflow};
use super::path::LayerPath;

/// The element types a network's weights are stored in: `f32` or `f64`. Every sum is taken in
/// `f64` whatever the storage.
pub trait Real: Copy + Send + Sync + PartialEq + core::fmt::Debug + Default + 'static {
    /// The value as `f64`.
    fn to_f64(self) -> f64;
    /// The nearest value of this type.
    fn from_f64(x: f64) -> Self;
}

impl Real for f32 {
    fn to_f64(self) -> f64 {
        self as f64
    }
    fn from_f64(x: f64) -> Self {
        x as f32
    }
}

impl Real for f64 {
    fn to_f64(self) -> f64 {
        self
    }
    fn from_f64(x: f64) -> Self {
        x
    }
}

/// A weight with one row per output unit (row-major): a linear layer's
/// `[out, in]`, or a convolution's `[out, in / groups, k..]` with one output channel's kernel
/// (all of its input channels and taps) as a row.
#[derive(Clone, Debug, PartialEq)]
pub struct Rows<T: Real = f64> {
    /// Output units.
    pub out: usize,
    /// Elements per row (input units times taps for a convolution).
    pub row_len: usize,
    /// `out * row_len` values.
    pub data: Vec<T>,
}

impl<T: Real> Rows<T> {
    /// A weight from its rows.
    ///
    /// # Panics
    ///
    /// If `data.len() != out * row_len`.
    pub fn new(out: usize, row_len: usize, data: Vec<T>) -> Self {
        assert_eq!(data.len(), out * row_len, "out * row_len values");
        Self { out, row_len, data }
    }

    /// Row `i`.
    pub fn row(&self, i: usize) -> &[T] {
        &self.data[i * self.row_len..(i + 1) * self.row_len]
    }

    /// The L2 norm of every row (summed in `f64`).
    pub fn row_norms(&self) -> Vec<f64> {
        (0..self.out)
            .map(|i| {
                self.row(i)
                    .iter()
                    .map(|x| x.to_f64() * x.to_f64())
                    .sum::<f64>()
                    .sqrt()
            })
            .collect()
    }
}

/// The result of [`decompose`] and [`absorb`]: unit-norm rows, the carried bias and the scale.
#[derive(Clone, Debug, PartialEq)]
pub struct Decomposed {
    /// The unit-norm directions (zero rows stay zero).
    pub v: Rows,
    /// The bias divided by the scale.
    pub bias: Option<Vec<f64>>,
    /// The scale, one per output unit (1 for a zero row).
    pub g: Vec<f64>,
    /// The rows that were zero: they cannot be factored and keep scale 1.
    pub zero_rows: Vec<usize>,
}

/// What [`absorb_in_place`] measured.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Absorbed {
    /// The norm of every row before the transform.
    pub norms_before: Vec<f64>,
    /// `g_out`: the norm of every row of `W_temp` (1 for a zero row).
    pub g_out: Vec<f64>,
    /// The rows of `W_temp` that were zero.
    pub zero_rows: Vec<usize>,
    /// The norm of every row after the transform (1 for the canonical form, in the storage
    /// type's precision).
    pub norms_after: Vec<f64>,
}

/// The L2 norm of `row * s` (`s` one scale per input channel of `taps` consecutive elements,
/// or 1), summed in `f64` with eight running sums so that the loop vectorizes. Where the plain
/// sum of squares overflows or may have lost tiny squares to underflow, the row is summed again
/// scaled by its largest magnitude, so that every finite norm comes out exact to rounding.
fn scaled_norm<T: Real>(row: &[T], scales: Option<&[f64]>, taps: usize) -> f64 {
    let taps = taps.max(1);
    let at = |k: usize| scales.map_or(1.0, |g| g[k / taps]);
    let mut acc = [0.0f64; 8];
    match scales {
        Some(g) if taps == 1 => {
            let chunks = row.chunks_exact(8).zip(g.chunks_exact(8));
            for (xs, gs) in chunks {
                for k in 0..8 {
                    let t = xs[k].to_f64() * gs[k];
                    acc[k] += t * t;
                }
            }
            let done = row.len() / 8 * 8;
            for (x, s) in row[done..].iter().zip(&g[done..]) {
                let t = x.to_f64() * s;
                acc[0] += t * t;
            }
        }
        None => {
            let chunks = row.chunks_exact(8);
            let rest = chunks.remainder();
            for xs in chunks {
                for k in 0..8 {
                    let t = xs[k].to_f64();
                    acc[k] += t * t;
                }
            }
            for x in rest {
                acc[0] += x.to_f64() * x.to_f64();
            }
        }
        Some(_) => {
            for (k, x) in row.iter().enumerate() {
                let t = x.to_f64() * at(k);
                acc[k % 8] += t * t;
            }
        }
    }
    let sum: f64 = acc.iter().sum();
    // Squares below ~1e-308 are lost; a sum this small may have lost some.
    if sum.is_finite() && sum >= 1e-280 {
        return sum.sqrt();
    }
    let m = (0..row.len())
        .map(|k| (row[k].to_f64() * at(k)).abs())
        .fold(0.0f64, f64::max);
    if m == 0.0 || !m.is_finite() {
        return m;
    }
    let sum: f64 = (0..row.len())
        .map(|k| {
            let t = row[k].to_f64() * at(k) / m;
            t * t
        })
        .sum();
    m * sum.sqrt()
}

/// `(||row||, ||row * s||)` in one read of the row (eight running sums each, as in
/// [`scaled_norm`]); either is summed again by [`scaled_norm`] only where its plain sum of
/// squares overflowed or may have underflowed.
fn both_norms<T: Real>(row: &[T], scales: &[f64], taps: usize) -> (f64, f64) {
    let taps = taps.max(1);
    let (mut before, mut after) = ([0.0f64; 8], [0.0f64; 8]);
    if taps == 1 {
        for (xs, gs) in row.chunks_exact(8).zip(scales.chunks_exact(8)) {
            for k in 0..8 {
                let v = xs[k].to_f64();
                before[k] += v * v;
                let t = v * gs[k];
                after[k] += t * t;
            }
        }
        let done = row.len() / 8 * 8;
        for (x, s) in row[done..].iter().zip(&scales[done..]) {
            let v = x.to_f64();
            before[0] += v * v;
            after[0] += (v * s) * (v * s);
        }
    } else {
        let mut k = 0usize;
        for (chunk, &s) in row.chunks(taps).zip(scales) {
            for x in chunk {
                let v = x.to_f64();
                before[k & 7] += v * v;
                let t = v * s;
                after[k & 7] += t * t;
                k += 1;
            }
        }
    }
    let exact = |sum: f64| sum.is_finite() && sum >= 1e-280;
    let (b, a): (f64, f64) = (before.iter().sum(), after.iter().sum());
    (
        if exact(b) {
            b.sqrt()
        } else {
            scaled_norm(row, None, taps)
        },
        if exact(a) {
            a.sqrt()
        } else {
            scaled_norm(row, Some(scales), taps)
        },
    )
}

/// Transforms I and III in place, on the rows of a weight and its bias: every row is multiplied
/// by the scale of the input units it reads (`W_temp`), measured (`g_out`), then divided by
/// `divisor(g_out)` (`g_out` itself for the canonical form, so that rows have unit norm; a
/// prescribed scale where a layer must carry one), and so is the bias.
///
/// `g_in` holds one scale per input unit or channel of the whole layer; with `groups > 1` the
/// rows of group `k` read the `k`-th block of `g_in.len() / groups` channels. A row holds
/// `row_len / (g_in.len() / groups)` consecutive taps per channel.
///
/// # Errors
///
/// [`CanonicalError::Layer`] (named `layer`) if the shapes do not fit;
/// [`CanonicalError::Overflow`] if a norm, a carried row or a bias exceeds the range of `f64`
/// or of the storage type `T`.
pub fn absorb_in_place<T: Real>(
    w: &mut Rows<T>,
    bias: Option<&mut [T]>,
    g_in: &[f64],
    groups: usize,
    divisor: impl Fn(&[f64]) -> Vec<f64>,
    layer: &LayerPath,
) -> Result<(Absorbed, Vec<f64>), CanonicalError> {
    let bad = |fault: LayerFault| CanonicalError::Layer {
        at: layer.to_vec(),
        op: "absorb",
        fault,
    };
    if groups == 0 || !g_in.len().is_multiple_of(groups) || !w.out.is_multiple_of(groups) {
        return Err(bad(LayerFault::GroupsInput {
            out: w.out,
            inputs: g_in.len(),
            groups,
        }));
    }
    let per_group = g_in.len() / groups;
    if per_group == 0 || !w.row_len.is_multiple_of(per_group) {
        return Err(bad(LayerFault::RowLength {
            row_len: w.row_len,
            per_group,
        }));
    }
    let taps = w.row_len / per_group;
    let rows_per_group = w.out / groups;
    let row_len = w.row_len.max(1);
    let scales_of = |i: usize| &g_in[(i / rows_per_group) * per_group..][..per_group];
    // Rows handed to a worker at a time: about 64 Ki elements, so that a small layer runs on
    // one thread rather than paying for rayon's hand-offs.
    let min_rows = ((1 << 16) / row_len).max(1);
    // Pass 1 (read only): the norm of every row before and after multiplying by g_in.
    let sums: Vec<(f64, f64)> = w
        .data
        .par_chunks(row_len)
        .with_min_len(min_rows)
        .enumerate()
        .map(|(i, row)| both_norms(row, scales_of(i), taps))
        .collect();
    let norms_before: Vec<f64> = sums.iter().map(|s| s.0).collect();
    if let Some(i) = sums.iter().position(|s| !s.1.is_finite()) {
        return Err(CanonicalError::Overflow {
            at: layer.to_vec(),
            what: Overflow::RowNorm { row: i },
        });
    }
    let mut zero_rows = Vec::new();
    let g_out: Vec<f64> = sums
        .iter()
        .enumerate()
        .map(|(i, s)| {
            if s.1 == 0.0 {
                zero_rows.push(i);
                1.0
            } else {
                s.1
            }
        })
        .collect();
    let d = divisor(&g_out);
    // Pass 2: V = W * g_in / d, measuring the rows again.
    let norms_after: Vec<f64> = w
        .data
        .par_chunks_mut(row_len)
        .with_min_len(min_rows)
        .zip(d.par_iter())
        .enumerate()
        .map(|(i, (row, &di))| {
            let g = scales_of(i);
            let mut acc = [0.0f64; 8];
            // `(w * s) / d_i`, correctly rounded like the division it is. Pass 1 found the
            // norm of `w * s` finite, so no product overflows: `|w_k s_k| <= ||w * s||`.
            if taps <= 1 {
                // One scale per element (a Linear layer): eight lanes at a time, which the
                // compiler vectorizes.
                let mut xs = row.chunks_exact_mut(8);
                let mut ss = g.chunks_exact(8);
                for (x, s) in (&mut xs).zip(&mut ss) {
                    for k in 0..8 {
                        let y = T::from_f64(x[k].to_f64() * s[k] / di);
                        x[k] = y;
                        acc[k] += y.to_f64() * y.to_f64();
                    }
                }
                for (x, &s) in xs.into_remainder().iter_mut().zip(ss.remainder()) {
                    let y = T::from_f64(x.to_f64() * s / di);
                    *x = y;
                    acc[0] += y.to_f64() * y.to_f64();
                }
                return acc.iter().sum::<f64>().sqrt();
            }
            let mut k = 0usize;
            // One input channel's `taps` elements at a time, all sharing the scale `s`.
            for (chunk, &s) in row.chunks_mut(taps).zip(g) {
                for x in chunk {
                    let y = T::from_f64(x.to_f64() * s / di);
                    *x = y;
                    acc[k & 7] += y.to_f64() * y.to_f64();
                    k += 1;
                }
            }
            acc.iter().sum::<f64>().sqrt()
        })
        .collect();
    if let Some(i) = norms_after.iter().position(|n| !n.is_finite()) {
        return Err(CanonicalError::Overflow {
            at: layer.to_vec(),
            what: Overflow::CarriedRow { row: i },
        });
    }
    if let Some(b) = bias {
        for (i, (x, di)) in b.iter_mut().zip(&d).enumerate() {
            *x = T::from_f64(x.to_f64() / di);
            if !x.to_f64().is_finite() {
                return Err(CanonicalError::Overflow {
                    at: layer.to_vec(),
                    what: Overflow::Bias { unit: i },
                });
            }
        }
    }
    Ok((
        Absorbed {
            norms_before,
            g_out,
            zero_rows,
            norms_after,
        },
        d,
    ))
}

/// Transform I: `linear(W, b) = scale_vector(g) . unit_row_linear(V, b / g)`, with
/// `g_i = ||row_i(W)||` (1 for a zero row, which stays zero and is reported).
pub fn decompose(w: &Rows, bias: Option<&[f64]>) -> Decomposed {
    absorb(&vec![1.0; w.row_len.max(1)], w, bias, &[0]).expect("one unit per element")
}

/// Transform III: `unit_row_linear(V_out, b / g_out) . scale_vector(g_out)` from
/// `linear(W, b) . scale_vector(g_in)`, with `row_i(W_temp) = row_i(W) * g_in` (per input unit,
/// or per channel when a row holds several taps per input channel), `g_out_i =
/// ||row_i(W_temp)||` and `V_out = W_temp / g_out`.
///
/// # Errors
///
/// [`CanonicalError::Layer`] if `row_len` is not a multiple of `g_in.len()`.
pub fn absorb(
    g_in: &[f64],
    w: &Rows,
    bias: Option<&[f64]>,
    layer: &LayerPath,
) -> Result<Decomposed, CanonicalError> {
    let mut v = w.clone();
    let mut b = bias.map(<[f64]>::to_vec);
    let (a, g) = absorb_in_place(&mut v, b.as_deref_mut(), g_in, 1, |g| g.to_vec(), layer)?;
    Ok(Decomposed {
        v,
        bias: b,
        g,
        zero_rows: a.zero_rows,
    })
}

/// The norm of the Hadamard product of two vectors: the "directional interference" that makes
/// absorption lose magnitude (`<= 1` for unit vectors).
pub fn hadamard_norm(a: &[f64], b: &[f64]) -> f64 {
    let products: Vec<f64> = a.iter().zip(b).map(|(x, y)| x * y).collect();
    scaled_norm(&products, None, 1)
}

/// Positively homogeneous activations: a non-negative scale passes through them (transform II).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Activation {
    /// `max(0, x)`.
    Relu,
    /// `x` for `x >= 0`, `slope * x` otherwise (any slope: positively homogeneous; PReLU at
    /// inference is this with a learned slope).
    LeakyRelu(f64),
    /// `x`: also dropout at inference.
    Identity,
}

impl Activation {
    /// Applies the activation.
    pub fn apply(self, x: f64) -> f64 {
        match self {
            Self::Relu => x.max(0.0),
            Self::LeakyRelu(s) => {
                if x >= 0.0 {
                    x
                } else {
                    s * x
                }
            }
            Self::Identity => x,
        }
    }

    /// The activation's name in architecture files.
    pub fn name(self) -> &'static str {
        match self {
            Self::Relu => "relu",
            Self::LeakyRelu(_) => "leaky_relu",
            Self::Identity => "identity",
        }
    }

    /// Transform II: `f(g * x) = g * f(x)` for `g >= 0`, so the scale passes unchanged.
    ///
    /// # Errors
    ///
    /// [`CanonicalError::NegativeScale`] if an entry of `g` is negative.
    pub fn commute(self, g: Vec<f64>, layer: &LayerPath) -> Result<Vec<f64>, CanonicalError> {
        if g.iter().any(|&x| x < 0.0) {
            return Err(CanonicalError::NegativeScale {
                at: layer.to_vec(),
                activation: self.name(),
            });
        }
        Ok(g)
    }
}

/// Flatten of `[channels, positions]` (channel-major): each channel's scale repeated over its
/// positions.
pub fn flatten_scale(g: &[f64], positions: usize) -> Vec<f64> {
    g.iter()
        .flat_map(|&x| std::iter::repeat_n(x, positions))
        .collect()
}

/// The network's global gain: `||g_final||` (rescaled where the squares would overflow or underflow,
/// so that it is exact to rounding for every finite scale).
pub fn global_gain(scale: &[f64]) -> f64 {
    scaled_norm(scale, None, 1)
}

/// The gain direction: `g_final / ||g_final||` (zeros for a zero scale).
pub fn gain_direction(scale: &[f64]) -> Vec<f64> {
    let n = global_gain(scale);
    scale
        .iter()
        .map(|x| if n > 0.0 { x / n } else { 0.0 })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_write_ups_interference_examples() {
        // Identical unit vectors: 1; orthogonal: 0; [1, 0] with [sqrt(.5), sqrt(.5)]: sqrt(.5).
        assert_eq!(hadamard_norm(&[1.0, 0.0, 0.0], &[1.0, 0.0, 0.0]), 1.0);
        assert_eq!(hadamard_norm(&[1.0, 0.0], &[0.0, 1.0]), 0.0);
        let h = hadamard_norm(&[1.0, 0.0], &[0.5f64.sqrt(), 0.5f64.sqrt()]);
        assert!((h - 0.5f64.sqrt()).abs() < 1e-15);
        // And it is what absorption multiplies magnitudes by: g_out = |w| |g_in| ||v . u||.
        let w = Rows::new(1, 2, vec![3.0, 0.0]);
        let g_in = [2.0, 2.0];
        let d = absorb(&g_in, &w, None, &[0]).unwrap();
        let expected =
            3.0 * global_gain(&g_in) * hadamard_norm(&[1.0, 0.0], &gain_direction(&g_in));
        assert!((d.g[0] - expected).abs() < 1e-12);
    }

    #[test]
    fn decomposition_factors_rows_and_carries_the_bias() {
        let w = Rows::new(2, 2, vec![3.0, 4.0, 0.0, 0.0]);
        let d = decompose(&w, Some(&[10.0, 7.0]));
        assert_eq!(d.g, vec![5.0, 1.0]);
        assert_eq!(d.v.data, vec![0.6, 0.8, 0.0, 0.0]);
        assert_eq!(d.bias, Some(vec![2.0, 7.0]));
        assert_eq!(d.zero_rows, vec![1]);
    }

    #[test]
    fn commutation_with_homogeneous_activations() {
        let xs = [-2.0, -0.5, 0.0, 0.3, 4.0];
        for act in [
            Activation::Relu,
            Activation::LeakyRelu(0.2),
            Activation::LeakyRelu(-1.5),
            Activation::Identity,
        ] {
            for g in [0.0, 0.5, 3.0] {
                for x in xs {
                    assert!(
                        (act.apply(g * x) - g * act.apply(x)).abs() < 1e-15,
                        "{act:?}"
                    );
                }
            }
            assert!(act.commute(vec![1.0, 2.0], &[0]).is_ok());
            assert!(act.commute(vec![-1.0], &[0]).is_err());
        }
    }

    #[test]
    fn absorption_per_input_unit_and_per_channel() {
        // A convolution row: 2 input channels x 3 taps.
        let w = Rows::new(1, 6, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let d = absorb(&[2.0, 0.5], &w, Some(&[1.0]), &[0]).unwrap();
        let temp = [2.0, 4.0, 6.0, 2.0, 2.5, 3.0];
        let n = temp.iter().map(|x: &f64| x * x).sum::<f64>().sqrt();
        assert!((d.g[0] - n).abs() < 1e-12);
        for (v, t) in d.v.data.iter().zip(temp) {
            assert!((v - t / n).abs() < 1e-12);
        }
        assert!((d.bias.unwrap()[0] - 1.0 / n).abs() < 1e-12);
        assert!(absorb(&[1.0; 4], &w, None, &[3]).is_err());
        assert_eq!(
            flatten_scale(&[1.0, 2.0], 3),
            vec![1.0, 1.0, 1.0, 2.0, 2.0, 2.0]
        );
    }

    #[test]
    fn grouped_rows_read_their_own_channels() {
        // 2 groups, 2 output channels, 4 input channels, 1 tap: row 0 reads channels 0-1, row
        // 1 reads channels 2-3.
        let mut w = Rows::new(2, 2, vec![1.0f32, 1.0, 1.0, 1.0]);
        let (a, d) = absorb_in_place(
            &mut w,
            None,
            &[3.0, 4.0, 5.0, 12.0],
            2,
            |g| g.to_vec(),
            &[0],
        )
        .unwrap();
        assert_eq!(a.g_out, vec![5.0, 13.0]);
        assert_eq!(d, a.g_out);
        assert_eq!(w.data, vec![0.6, 0.8, 5.0 / 13.0, 12.0 / 13.0]);
        assert_eq!(a.norms_before, vec![2f64.sqrt(), 2f64.sqrt()]);
    }
}
