//! The canonical form of a network under positive rescaling (the core of the calculus; the
//! network description covers sequential stacks of linear layers and positively homogeneous
//! activations so far).
//!
//! A ReLU-like network keeps free magnitudes in its weights: scaling a unit's incoming weights by
//! `s > 0` and its outgoing weights by `1 / s` changes nothing. Three transforms remove them:
//!
//! - **I, decomposition** ([`decompose`]): `linear(W, b) = unit_row_linear(V, b / g)` followed by
//!   `scale_vector(g)`, with `g_i = ||row_i(W)||` and `row_i(V) = row_i(W) / g_i`.
//! - **II, commutation** ([`Activation::commute`]): `scale_vector(g)` then `f` equals `f` then
//!   `scale_vector(g)` for positively homogeneous `f` and `g >= 0`.
//! - **III, absorption** ([`absorb`]): `scale_vector(g_in)` then `linear(W)` equals
//!   `unit_row_linear(V_out)` then `scale_vector(g_out)`, with `row_i(W_temp) = row_i(W) * g_in`,
//!   `g_out_i = ||row_i(W_temp)||` and `V_out = W_temp / g_out`.
//!
//! [`canonicalize`] applies them layer after layer until one scale vector remains at the output;
//! its norm is the network's [`global_gain`], its direction the [`gain_direction`]. Weights are in
//! PyTorch's layout (`[out, in..]`: one row per output unit), in f64.

use thiserror::Error;

/// Why a network could not be put in canonical form.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum CanonicalError {
    /// A layer's shapes do not fit the data it receives.
    #[error("layer {layer}: {reason}")]
    Shape {
        /// The layer's index.
        layer: usize,
        /// What is wrong.
        reason: String,
    },
    /// A scale with a negative entry cannot pass an activation.
    #[error("layer {layer}: a scale with negative entries cannot commute with {activation}")]
    NegativeScale {
        /// The layer's index.
        layer: usize,
        /// The activation.
        activation: String,
    },
}

/// A weight with one row per output unit (PyTorch's layout, row-major).
#[derive(Clone, Debug, PartialEq)]
pub struct Rows {
    /// Output units.
    pub out: usize,
    /// Elements per row (input units times taps for a convolution).
    pub row_len: usize,
    /// `out * row_len` values.
    pub data: Vec<f64>,
}

impl Rows {
    /// A weight from its rows.
    ///
    /// # Panics
    ///
    /// If `data.len() != out * row_len`.
    pub fn new(out: usize, row_len: usize, data: Vec<f64>) -> Self {
        assert_eq!(data.len(), out * row_len, "out * row_len values");
        Self { out, row_len, data }
    }

    /// Row `i`.
    pub fn row(&self, i: usize) -> &[f64] {
        &self.data[i * self.row_len..(i + 1) * self.row_len]
    }

    /// The L2 norm of every row.
    pub fn row_norms(&self) -> Vec<f64> {
        (0..self.out)
            .map(|i| self.row(i).iter().map(|x| x * x).sum::<f64>().sqrt())
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

/// Transform I: `linear(W, b) = scale_vector(g) . unit_row_linear(V, b / g)`.
pub fn decompose(w: &Rows, bias: Option<&[f64]>) -> Decomposed {
    let norms = w.row_norms();
    let mut zero_rows = Vec::new();
    let g: Vec<f64> = norms
        .iter()
        .enumerate()
        .map(|(i, &n)| {
            if n == 0.0 {
                zero_rows.push(i);
                1.0
            } else {
                n
            }
        })
        .collect();
    let mut data = w.data.clone();
    for (i, gi) in g.iter().enumerate() {
        for x in &mut data[i * w.row_len..(i + 1) * w.row_len] {
            *x /= gi;
        }
    }
    Decomposed {
        v: Rows::new(w.out, w.row_len, data),
        bias: bias.map(|b| b.iter().zip(&g).map(|(b, g)| b / g).collect()),
        g,
        zero_rows,
    }
}

/// Transform III: `unit_row_linear(V_out, b / g_out) . scale_vector(g_out)` from
/// `linear(W, b) . scale_vector(g_in)`. `g_in` has one entry per input unit; a row holds
/// `row_len / g_in.len()` consecutive taps per input unit (1 for a linear layer, the kernel size
/// for a convolution).
///
/// # Errors
///
/// [`CanonicalError::Shape`] if `row_len` is not a multiple of `g_in.len()`.
pub fn absorb(
    g_in: &[f64],
    w: &Rows,
    bias: Option<&[f64]>,
    layer: usize,
) -> Result<Decomposed, CanonicalError> {
    if g_in.is_empty() || !w.row_len.is_multiple_of(g_in.len()) {
        return Err(CanonicalError::Shape {
            layer,
            reason: format!(
                "rows of {} elements do not take {} input units",
                w.row_len,
                g_in.len()
            ),
        });
    }
    let taps = w.row_len / g_in.len();
    let mut temp = w.clone();
    for i in 0..w.out {
        for (p, x) in temp.data[i * w.row_len..(i + 1) * w.row_len]
            .iter_mut()
            .enumerate()
        {
            *x *= g_in[p / taps];
        }
    }
    Ok(decompose(&temp, bias))
}

/// The norm of the Hadamard product of two vectors: the "directional interference" that makes
/// absorption lose magnitude (`<= 1` for unit vectors).
pub fn hadamard_norm(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x * y).powi(2))
        .sum::<f64>()
        .sqrt()
}

/// Activations, and whether a positive scale passes through them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Activation {
    /// `max(0, x)`.
    Relu,
    /// `x` for `x >= 0`, `slope * x` otherwise (any slope: positively homogeneous).
    LeakyRelu(f64),
    /// `x`.
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

    /// Transform II: `f(g * x) = g * f(x)` for `g >= 0`, so the scale passes unchanged.
    ///
    /// # Errors
    ///
    /// [`CanonicalError::NegativeScale`] if an entry of `g` is negative.
    pub fn commute(self, g: Vec<f64>, layer: usize) -> Result<Vec<f64>, CanonicalError> {
        if g.iter().any(|&x| x < 0.0) {
            return Err(CanonicalError::NegativeScale {
                layer,
                activation: format!("{self:?}"),
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

/// A layer of a sequential network.
#[derive(Clone, Debug, PartialEq)]
pub enum Layer {
    /// `y = W x + b`, `W` with `out` rows of `in` elements.
    Linear {
        /// The weight.
        w: Rows,
        /// The bias.
        b: Option<Vec<f64>>,
    },
    /// An elementwise activation.
    Act(Activation),
}

/// A network in canonical form: unit-norm layers and one output scale vector.
#[derive(Clone, Debug, PartialEq)]
pub struct Canonical {
    /// The layers, every linear one with unit-norm rows (zero rows excepted).
    pub layers: Vec<Layer>,
    /// The output scale: the network computes `scale * canonical(x)`.
    pub scale: Vec<f64>,
    /// For each linear layer (by index), the rows that were zero.
    pub zero_rows: Vec<(usize, Vec<usize>)>,
}

/// Puts a sequential network in canonical form (transforms I, II, III from the first layer to
/// the last).
///
/// # Errors
///
/// A layer whose input size does not fit the previous output, or a negative scale before an
/// activation (impossible from norms, but checked).
pub fn canonicalize(layers: &[Layer]) -> Result<Canonical, CanonicalError> {
    let mut out = Vec::new();
    let mut zero_rows = Vec::new();
    let mut scale: Option<Vec<f64>> = None;
    for (i, layer) in layers.iter().enumerate() {
        match layer {
            Layer::Linear { w, b } => {
                let d = match &scale {
                    None => decompose(w, b.as_deref()),
                    Some(g) => {
                        if w.row_len != g.len() {
                            return Err(CanonicalError::Shape {
                                layer: i,
                                reason: format!("takes {} inputs, receives {}", w.row_len, g.len()),
                            });
                        }
                        absorb(g, w, b.as_deref(), i)?
                    }
                };
                if !d.zero_rows.is_empty() {
                    zero_rows.push((i, d.zero_rows.clone()));
                }
                out.push(Layer::Linear { w: d.v, b: d.bias });
                scale = Some(d.g);
            }
            Layer::Act(a) => {
                if let Some(g) = scale.take() {
                    scale = Some(a.commute(g, i)?);
                }
                out.push(layer.clone());
            }
        }
    }
    let scale = scale.ok_or_else(|| CanonicalError::Shape {
        layer: 0,
        reason: "the network has no linear layer".into(),
    })?;
    Ok(Canonical {
        layers: out,
        scale,
        zero_rows,
    })
}

/// The network's global gain: `||g_final||`.
pub fn global_gain(scale: &[f64]) -> f64 {
    scale.iter().map(|x| x * x).sum::<f64>().sqrt()
}

/// The gain direction: `g_final / ||g_final||` (zeros for a zero scale).
pub fn gain_direction(scale: &[f64]) -> Vec<f64> {
    let n = global_gain(scale);
    scale
        .iter()
        .map(|x| if n > 0.0 { x / n } else { 0.0 })
        .collect()
}

/// A normal network again: all of the gain multiplied into the last linear layer's rows and bias.
pub fn reconstitute(c: &Canonical) -> Vec<Layer> {
    let mut layers = c.layers.clone();
    if let Some(Layer::Linear { w, b }) = layers
        .iter_mut()
        .rev()
        .find(|l| matches!(l, Layer::Linear { .. }))
    {
        for (i, g) in c.scale.iter().enumerate() {
            for x in &mut w.data[i * w.row_len..(i + 1) * w.row_len] {
                *x *= g;
            }
        }
        if let Some(b) = b {
            for (x, g) in b.iter_mut().zip(&c.scale) {
                *x *= g;
            }
        }
    }
    layers
}

/// Runs a sequential network on one input vector.
pub fn forward(layers: &[Layer], x: &[f64]) -> Vec<f64> {
    let mut h = x.to_vec();
    for layer in layers {
        h = match layer {
            Layer::Linear { w, b } => (0..w.out)
                .map(|i| {
                    let dot: f64 = w.row(i).iter().zip(&h).map(|(a, b)| a * b).sum();
                    dot + b.as_ref().map_or(0.0, |b| b[i])
                })
                .collect(),
            Layer::Act(a) => h.iter().map(|&v| a.apply(v)).collect(),
        };
    }
    h
}

/// The largest absolute and relative (to the largest output) difference between the original
/// network and `scale * canonical` on the given inputs.
pub fn verify(original: &[Layer], c: &Canonical, inputs: &[Vec<f64>]) -> (f64, f64) {
    let (mut abs, mut scale) = (0.0f64, 0.0f64);
    for x in inputs {
        let y = forward(original, x);
        let z = forward(&c.layers, x);
        for ((a, b), g) in y.iter().zip(&z).zip(&c.scale) {
            abs = abs.max((a - g * b).abs());
            scale = scale.max(a.abs());
        }
    }
    (abs, if scale > 0.0 { abs / scale } else { abs })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> f64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
        }
        fn below(&mut self, n: usize) -> usize {
            ((self.next() + 1.0) / 2.0 * n as f64) as usize % n
        }
    }

    #[test]
    fn the_write_ups_interference_examples() {
        assert_eq!(hadamard_norm(&[1.0, 0.0, 0.0], &[1.0, 0.0, 0.0]), 1.0);
        assert_eq!(hadamard_norm(&[1.0, 0.0], &[0.0, 1.0]), 0.0);
        let h = hadamard_norm(&[1.0, 0.0], &[0.5f64.sqrt(), 0.5f64.sqrt()]);
        assert!((h - 0.5f64.sqrt()).abs() < 1e-15);
        // And it is what absorption multiplies magnitudes by: g_out = |w| |g_in| ||v . u||.
        let w = Rows::new(1, 2, vec![3.0, 0.0]);
        let g_in = [2.0, 2.0];
        let d = absorb(&g_in, &w, None, 0).unwrap();
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
            assert!(act.commute(vec![1.0, 2.0], 0).is_ok());
            assert!(act.commute(vec![-1.0], 0).is_err());
        }
    }

    #[test]
    fn absorption_per_input_unit_and_per_channel() {
        // A convolution row: 2 input channels x 3 taps.
        let w = Rows::new(1, 6, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let d = absorb(&[2.0, 0.5], &w, Some(&[1.0]), 0).unwrap();
        let temp = [2.0, 4.0, 6.0, 2.0, 2.5, 3.0];
        let n = temp.iter().map(|x: &f64| x * x).sum::<f64>().sqrt();
        assert!((d.g[0] - n).abs() < 1e-12);
        for (v, t) in d.v.data.iter().zip(temp) {
            assert!((v - t / n).abs() < 1e-12);
        }
        assert!((d.bias.unwrap()[0] - 1.0 / n).abs() < 1e-12);
        assert!(absorb(&[1.0; 4], &w, None, 3).is_err());
        assert_eq!(
            flatten_scale(&[1.0, 2.0], 3),
            vec![1.0, 1.0, 1.0, 2.0, 2.0, 2.0]
        );
    }

    #[test]
    fn the_write_ups_linear_relu_linear() {
        let layers = vec![
            Layer::Linear {
                w: Rows::new(2, 2, vec![3.0, 4.0, 1.0, 0.0]),
                b: Some(vec![0.5, -1.0]),
            },
            Layer::Act(Activation::Relu),
            Layer::Linear {
                w: Rows::new(1, 2, vec![2.0, -1.0]),
                b: None,
            },
        ];
        let c = canonicalize(&layers).unwrap();
        assert_eq!(c.scale.len(), 1);
        // g2 = || [2 * 5, -1 * 1] || = sqrt(101)
        assert!((global_gain(&c.scale) - 101f64.sqrt()).abs() < 1e-12);
        assert_eq!(gain_direction(&c.scale), vec![1.0]);
        let (abs, _) = verify(&layers, &c, &[vec![1.0, 2.0], vec![-3.0, 0.5]]);
        assert!(abs < 1e-12);
    }

    /// Thousands of random networks (depth 1-6, random widths, with and without bias, leaky
    /// slopes, zero rows): canonical output equals the original, every canonical row has unit
    /// norm, and the reconstituted network matches too.
    #[test]
    fn random_networks_keep_their_function() {
        let mut rng = Rng(0x1234_5678_9abc_def1);
        for case in 0..3000 {
            let depth = 1 + rng.below(6);
            let mut width = 1 + rng.below(8);
            let input = width;
            let mut layers = Vec::new();
            for d in 0..depth {
                let out = 1 + rng.below(8);
                let mut data: Vec<f64> = (0..out * width).map(|_| rng.next() * 3.0).collect();
                if rng.below(10) == 0 {
                    let r = rng.below(out);
                    data[r * width..(r + 1) * width].fill(0.0);
                }
                let b = (rng.below(2) == 0).then(|| (0..out).map(|_| rng.next()).collect());
                layers.push(Layer::Linear {
                    w: Rows::new(out, width, data),
                    b,
                });
                if d + 1 < depth {
                    layers.push(Layer::Act(match rng.below(3) {
                        0 => Activation::Relu,
                        1 => Activation::LeakyRelu(rng.next()),
                        _ => Activation::Identity,
                    }));
                }
                width = out;
            }
            let c = canonicalize(&layers).unwrap();
            for (i, l) in c.layers.iter().enumerate() {
                if let Layer::Linear { w, .. } = l {
                    let zeros = c
                        .zero_rows
                        .iter()
                        .find(|(j, _)| *j == i)
                        .map(|z| z.1.clone())
                        .unwrap_or_default();
                    for (r, n) in w.row_norms().iter().enumerate() {
                        if zeros.contains(&r) {
                            assert_eq!(*n, 0.0);
                        } else {
                            assert!((n - 1.0).abs() < 1e-12, "case {case}: row norm {n}");
                        }
                    }
                }
            }
            let inputs: Vec<Vec<f64>> = (0..4)
                .map(|_| (0..input).map(|_| rng.next() * 2.0).collect())
                .collect();
            let (_, rel) = verify(&layers, &c, &inputs);
            assert!(rel < 1e-10, "case {case}: canonical differs by {rel:e}");
            let back = reconstitute(&c);
            for x in &inputs {
                let (a, b) = (forward(&layers, x), forward(&back, x));
                let scale = a.iter().fold(1e-300f64, |m, v| m.max(v.abs()));
                for (p, q) in a.iter().zip(&b) {
                    assert!((p - q).abs() / scale < 1e-10, "case {case}: reconstituted");
                }
            }
        }
    }
}
