//! Canonicalization of a whole network: folding normalizations, pushing the scale from the
//! first layer to the last, barriers, residual blocks; reconstitution and verification.
//!
//! The scale travelling through the network is a vector `g` with one entry per channel of the
//! current activation: the original network's activation equals `g` times the canonical
//! network's. A weighted layer receiving `g_in` absorbs it (transform III) and hands on `g_out`;
//! activations, pooling, flatten and shifts let it pass (transform II, with the shift divided
//! by `g`). Where the original activation is needed exactly (before a barrier, at the end of a
//! residual body, in [`reconstitute`]) the last weighted layer before that point *carries* a
//! prescribed scale instead of handing on its own: its rows are `W_temp / target` rather than
//! unit vectors, and the report says which layer carries what.

use super::error::{LayerFault, Overflow};
use super::fold::fold_norms;
use super::network::{Layer, Network, Norm, shapes_from};
use super::path::{LayerPath, child};
use super::position::{Carry, Note};
use super::{CanonicalError, Real, absorb_in_place, flatten_scale, gain_direction, global_gain};

/// What [`canonicalize`] did to one weighted layer (or batch norm).
#[derive(Clone, Debug, PartialEq)]
pub struct LayerReport {
    /// The layer's position (named by [`Positions`](super::Positions) or a front-end's
    /// [`Namer`](super::Namer)).
    pub at: Vec<usize>,
    /// Its op.
    pub op: &'static str,
    /// The smallest and largest row norm before (after folding a batch norm into it).
    pub row_norms_before: (f64, f64),
    /// The smallest and largest entry of the scale it hands on.
    pub scale: (f64, f64),
    /// The smallest and largest row norm after.
    pub row_norms_after: (f64, f64),
    /// Rows that were zero: they cannot be factored and keep scale 1.
    pub zero_rows: Vec<usize>,
    /// Why the rows are not unit vectors, where they carry a scale.
    pub carries: Option<Carry>,
}

/// The per-unit factors a rescaling applied to one weighted layer (or batch norm): the element
/// of output unit `i`'s row that reads input unit (or channel) `j` was multiplied by
/// `input[j] / output[i]`, and bias entry `i` by `1 / output[i]`.
///
/// With `groups > 1`, `input` covers every input channel of the layer and row `i` reads the
/// block of `input.len() / groups` channels of its group.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerFactors {
    /// The layer's position, as in [`LayerReport::at`].
    pub at: Vec<usize>,
    /// `s_j`: the scale the layer received, one entry per input unit or channel.
    pub input: Vec<f64>,
    /// `d_i`: what each output unit's row (and bias) was divided by.
    pub output: Vec<f64>,
}

impl LayerFactors {
    /// The factor of every element of the layer's weight stored with `shape` (row-major), its
    /// output units on axis `output_axis` (0 for PyTorch's layouts and Burn's convolutions,
    /// 1 for Burn's `Linear` `[d_in, d_out]`): `input[j] / output[i]` for the element of output
    /// unit `i` reading input unit (or channel) `j`.
    ///
    /// With `output_axis == 0` a row is one output unit's `[in / groups, k..]` block, reading
    /// its group's input channels, each for the kernel's taps; with `output_axis == 1` the
    /// weight is `[in, out]` (a linear layer).
    ///
    /// # Panics
    ///
    /// If `output_axis` is not 0 or 1, or the shape does not fit the factors.
    pub fn weight_factors(&self, shape: &[usize], output_axis: usize, groups: usize) -> Vec<f64> {
        let inverse: Vec<f64> = self.output.iter().map(|d| 1.0 / d).collect();
        let n: usize = shape.iter().product();
        let mut out = Vec::with_capacity(n);
        match output_axis {
            0 => {
                let row_len = n / inverse.len().max(1);
                let per_group = self.input.len() / groups.max(1);
                let taps = (row_len / per_group.max(1)).max(1);
                let rows_per_group = (inverse.len() / groups.max(1)).max(1);
                for (i, inv) in inverse.iter().enumerate() {
                    let first = (i / rows_per_group) * per_group;
                    out.extend((0..row_len).map(|k| self.input[first + k / taps] * inv));
                }
            }
            1 => {
                for s in &self.input {
                    out.extend(inverse.iter().map(|inv| s * inv));
                }
            }
            a => panic!("output units on axis {a}: only 0 and 1 are weight layouts"),
        }
        assert_eq!(out.len(), n, "the shape {shape:?} does not fit the factors");
        out
    }

    /// The factor of every bias entry: `1 / output[i]`.
    pub fn bias_factors(&self) -> Vec<f64> {
        self.output.iter().map(|d| 1.0 / d).collect()
    }

    /// The factors of two rescalings applied one after the other (`self`, then `then`), for
    /// the same layer: per unit products.
    fn compose(&self, then: &LayerFactors) -> LayerFactors {
        let times = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).collect();
        LayerFactors {
            at: self.at.clone(),
            input: times(&self.input, &then.input),
            output: times(&self.output, &then.output),
        }
    }
}

/// What [`rescale`] did: the network computing the same function (or capped), the gains, and
/// the factors applied to every layer with parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct Rescaled<T: Real = f64> {
    /// The rescaled network: unit rows except where the calculus carries a scale, the gain in
    /// the last layers.
    pub network: Network<T>,
    /// The global gain before: `||g_final||` of the canonical form.
    pub gain_before: f64,
    /// The global gain after (the same, unless a maximum gain capped it).
    pub gain_after: f64,
    /// The output scale `g_final` before, one entry per output unit or channel.
    pub scale_before: Vec<f64>,
    /// The factors of the whole rescaling (canonicalize, then reconstitute) per layer with
    /// parameters, in order.
    pub factors: Vec<LayerFactors>,
}

/// Canonicalizes a network keeping its function: every weighted layer gets the canonical
/// form's unit-norm rows, except where the calculus makes a layer carry a scale, and the
/// output scale `g_final` is multiplied back into the last layers ([`reconstitute`]), so the
/// network computes what it computed before. With `max_gain`, the output scale is first
/// rescaled so that its norm is at most `max_gain` (every entry times `max_gain / G` where the
/// gain `G` exceeds it): the outputs are then multiplied by that ratio.
///
/// This is one step of Periodic Canonical Regularization; the returned factors (the two passes
/// composed per unit) are what the optimizer's state is transported by ([`crate::transport`]).
///
/// # Errors
///
/// [`LayerFault::MaxGain`] for a `max_gain` that is not positive and finite; those of
/// [`canonicalize`] and [`reconstitute`] (an overflow).
///
/// ```
/// use weightnorm_core::canonical::{Activation, Layer, Network, Rows, Weighted, rescale};
///
/// let linear = |out, inp, data: Vec<f64>| {
///     Layer::Weighted(Weighted { w: Rows::new(out, inp, data), b: None, conv: None })
/// };
/// let net = Network::new(
///     vec![2],
///     vec![linear(2, 2, vec![3.0, 4.0, 1.0, 0.0]), Layer::Act(Activation::Relu), linear(1, 2, vec![2.0, -1.0])],
/// )
/// .unwrap();
/// let r = rescale(net.clone(), Some(5.0)).unwrap();
/// assert!((r.gain_before - 101f64.sqrt()).abs() < 1e-12);
/// assert_eq!(r.gain_after, 5.0);
/// let (x, y) = (vec![vec![1.0, 2.0]], net.forward(&[vec![1.0, 2.0]]));
/// let ratio = 5.0 / 101f64.sqrt();
/// assert!((r.network.forward(&x)[0][0] - ratio * y[0][0]).abs() < 1e-12);
/// ```
pub fn rescale<T: Real>(
    network: Network<T>,
    max_gain: Option<f64>,
) -> Result<Rescaled<T>, CanonicalError> {
    if let Some(m) = max_gain
        && !(m.is_finite() && m > 0.0)
    {
        return Err(CanonicalError::Layer {
            at: Vec::new(),
            op: "scale",
            fault: LayerFault::MaxGain { value: m },
        });
    }
    let c = canonicalize(network)?;
    let gain_before = c.global_gain();
    let scale_before = c.scale.clone();
    let ratio = match max_gain {
        Some(m) if gain_before > m => m / gain_before,
        _ => 1.0,
    };
    let target: Vec<f64> = scale_before.iter().map(|s| s * ratio).collect();
    let first = c.factors;
    let back = reconstitute_with_factors(c.network, &target)?;
    let factors = first
        .iter()
        .map(|a| {
            let b = back
                .factors
                .iter()
                .find(|b| b.at == a.at)
                .expect("both passes report every layer with parameters");
            a.compose(b)
        })
        .collect();
    Ok(Rescaled {
        network: back.network,
        gain_before,
        gain_after: global_gain(&target),
        scale_before,
        factors,
    })
}

/// A network in canonical form: unit-norm layers and one output scale vector.
///
/// Made by [`canonicalize`]; the scale always has one entry per output channel of the network.
#[derive(Clone, Debug, PartialEq)]
pub struct Canonical<T: Real = f64> {
    pub(crate) network: Network<T>,
    pub(crate) scale: Vec<f64>,
    pub(crate) reports: Vec<LayerReport>,
    pub(crate) notes: Vec<Note>,
    pub(crate) factors: Vec<LayerFactors>,
}

impl<T: Real> Canonical<T> {
    /// The canonical network: the original computes `scale * network(x)` (per output channel).
    pub fn network(&self) -> &Network<T> {
        &self.network
    }

    /// The output scale, one entry per output channel (or unit).
    pub fn scale(&self) -> &[f64] {
        &self.scale
    }

    /// One entry per weighted layer and batch norm, in order.
    pub fn reports(&self) -> &[LayerReport] {
        &self.reports
    }

    /// Folded normalizations and other remarks.
    pub fn notes(&self) -> &[Note] {
        &self.notes
    }

    /// The factors applied to every weighted layer and batch norm, in order (after folding:
    /// a folded batch norm's factors are those of the layer it was folded into).
    pub fn factors(&self) -> &[LayerFactors] {
        &self.factors
    }

    /// The canonical network and the output scale, giving the rest up.
    pub fn into_parts(self) -> (Network<T>, Vec<f64>) {
        (self.network, self.scale)
    }

    /// `||scale||`.
    pub fn global_gain(&self) -> f64 {
        global_gain(&self.scale)
    }

    /// `scale / ||scale||`.
    pub fn gain_direction(&self) -> Vec<f64> {
        gain_direction(&self.scale)
    }

    /// The original network's outputs, computed as `scale * network(x)`.
    pub fn forward(&self, inputs: &[Vec<f64>]) -> Vec<Vec<f64>> {
        let mut out = self.network.forward(inputs);
        let per = self
            .network
            .output_shape()
            .iter()
            .skip(1)
            .product::<usize>();
        for y in &mut out {
            for (i, v) in y.iter_mut().enumerate() {
                *v *= self.scale[i / per.max(1)];
            }
        }
        out
    }
}

/// The agreement of two sets of outputs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Agreement {
    /// The largest absolute difference.
    pub max_abs_error: f64,
    /// `max_abs_error` over the largest absolute expected output.
    pub max_rel_error: f64,
    /// The fraction of samples whose largest output sits at the same index (outputs of more
    /// than one value only).
    pub argmax_agreement: Option<f64>,
}

impl Agreement {
    /// Compares `got` with `expected`, sample by sample.
    ///
    /// # Panics
    ///
    /// If the two do not have the same shapes.
    pub fn between(expected: &[Vec<f64>], got: &[Vec<f64>]) -> Self {
        assert_eq!(expected.len(), got.len(), "as many samples");
        let (mut abs, mut big, mut same) = (0.0f64, 0.0f64, 0usize);
        for (a, b) in expected.iter().zip(got) {
            assert_eq!(a.len(), b.len(), "as many outputs");
            for (x, y) in a.iter().zip(b) {
                abs = abs.max((x - y).abs());
                big = big.max(x.abs());
            }
            same += usize::from(argmax(a) == argmax(b));
        }
        let wide = expected.first().is_some_and(|y| y.len() > 1);
        Self {
            max_abs_error: abs,
            max_rel_error: if big > 0.0 { abs / big } else { abs },
            argmax_agreement: wide.then(|| same as f64 / expected.len().max(1) as f64),
        }
    }
}

/// The index of the largest value (the first of equals).
pub fn argmax(y: &[f64]) -> usize {
    y.iter()
        .enumerate()
        .fold((0, f64::NEG_INFINITY), |(bi, bv), (i, &v)| {
            if v > bv { (i, v) } else { (bi, bv) }
        })
        .0
}

/// The outputs of `original` and of `scale * canonical` on the same inputs, compared.
pub fn verify<T: Real>(original: &Network<T>, c: &Canonical<T>, inputs: &[Vec<f64>]) -> Agreement {
    Agreement::between(&original.forward(inputs), &c.forward(inputs))
}

/// Puts a network in canonical form, in place: batch norms folded into the weighted layer
/// before them, then transforms I, II, III from the first layer to the last, so that every
/// weighted layer has unit-norm rows (zero rows excepted, and the layers that carry a scale
/// before a barrier or at the end of a residual body, which the report names) and one scale
/// vector remains at the output.
///
/// # Errors
///
/// [`CanonicalError`] if a layer does not fit (a network built with [`Network::new`] fits).
pub fn canonicalize<T: Real>(mut network: Network<T>) -> Result<Canonical<T>, CanonicalError> {
    let mut notes = Vec::new();
    fold_norms(&mut network.layers, &[], 0, &mut notes)?;
    let mut run = Run::default();
    let start = State::unit(&network.input);
    let end = run.seq(&mut network.layers, start, &Target::Free, &[], 0)?;
    Ok(Canonical {
        network,
        scale: end.scale,
        reports: run.reports,
        notes,
        factors: run.factors,
    })
}

/// A normal network again from a canonical form and an output scale (the canonical form's own,
/// or a changed one): all of the gain is multiplied into the last weighted layer (and the
/// residual ratios stay where they are), so that the result computes `scale * network(x)`.
///
/// # Errors
///
/// [`CanonicalError::Layer`] if an entry of `scale` is not positive and finite, or has the wrong
/// length, or the network has no weighted layer to carry it.
pub fn reconstitute<T: Real>(
    network: Network<T>,
    scale: &[f64],
) -> Result<(Network<T>, Vec<LayerReport>), CanonicalError> {
    reconstitute_with_factors(network, scale).map(|r| (r.network, r.reports))
}

/// What [`reconstitute_with_factors`] returns.
#[derive(Clone, Debug, PartialEq)]
pub struct Reconstituted<T: Real = f64> {
    /// The network, computing `scale * canonical(x)`.
    pub network: Network<T>,
    /// One entry per weighted layer and batch norm, in order.
    pub reports: Vec<LayerReport>,
    /// The factors applied to every weighted layer and batch norm, in order.
    pub factors: Vec<LayerFactors>,
}

/// [`reconstitute`], also returning the factors it applied to every weighted layer (as
/// [`Canonical::factors`] does for [`canonicalize`]).
///
/// # Errors
///
/// As [`reconstitute`].
pub fn reconstitute_with_factors<T: Real>(
    network: Network<T>,
    scale: &[f64],
) -> Result<Reconstituted<T>, CanonicalError> {
    let mut network = network;
    let out = network.output_shape();
    let bad = |fault: LayerFault| CanonicalError::Layer {
        at: Vec::new(),
        op: "scale",
        fault,
    };
    if scale.len() != out[0] {
        return Err(bad(LayerFault::ScaleLength {
            got: scale.len(),
            channels: out[0],
        }));
    }
    if let Some(s) = scale.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
        return Err(bad(LayerFault::ScaleEntry { value: *s }));
    }
    // The canonical network computes z; a layer carrying `t` computes (its input's value) / t,
    // so carrying 1 / scale gives scale * z.
    let inverse: Vec<f64> = scale.iter().map(|s| 1.0 / s).collect();
    let mut run = Run::default();
    let start = State::unit(&network.input);
    run.seq(
        &mut network.layers,
        start,
        &Target::To(inverse, Carry::Gain),
        &[],
        0,
    )?;
    Ok(Reconstituted {
        network,
        reports: run.reports,
        factors: run.factors,
    })
}

/// The scale at a point of the network and the activation's shape there.
#[derive(Clone, Debug)]
struct State {
    scale: Vec<f64>,
    shape: Vec<usize>,
}

impl State {
    fn unit(shape: &[usize]) -> Self {
        Self {
            scale: vec![1.0; shape.first().copied().unwrap_or(0)],
            shape: shape.to_vec(),
        }
    }
}

/// What the end of a stretch of layers must hand on.
#[derive(Clone, Debug)]
enum Target {
    /// Its own scale: the canonical form.
    Free,
    /// The original activation (scale 1), because of the reason given.
    Unit(Carry),
    /// This scale, because of the reason given.
    To(Vec<f64>, Carry),
}

#[derive(Default)]
struct Run {
    reports: Vec<LayerReport>,
    factors: Vec<LayerFactors>,
}

fn is_owner<T: Real>(l: &Layer<T>) -> bool {
    matches!(
        l,
        Layer::Weighted(_)
            | Layer::Residual(_)
            | Layer::Shortcut { .. }
            | Layer::Norm(Norm { a: Some(_), .. })
    )
}

/// Whether a branch can bring its output to a prescribed scale: a layer that can carry one
/// follows its last barrier.
fn can_carry<T: Real>(layers: &[Layer<T>]) -> bool {
    let start = layers
        .iter()
        .rposition(|l| matches!(l, Layer::Barrier(_)))
        .map_or(0, |i| i + 1);
    layers[start..].iter().any(is_owner)
}

/// Whether a residual block (or shortcut) needs its input as it is: a barrier comes before any
/// layer that could absorb the scale, in its body or its skip; or neither branch of a shortcut
/// can carry a scale and one of them holds a barrier (which hands on 1, so the other must too).
fn block_needs_unit_input<T: Real>(l: &Layer<T>) -> bool {
    match l {
        Layer::Residual(body) => needs_unit_input(body),
        Layer::Shortcut { body, skip } => {
            let barrier = |ls: &[Layer<T>]| ls.iter().any(|l| matches!(l, Layer::Barrier(_)));
            needs_unit_input(body)
                || needs_unit_input(skip)
                || (!can_carry(body) && !can_carry(skip) && (barrier(body) || barrier(skip)))
        }
        _ => false,
    }
}

/// Whether a stretch of layers needs its input as it is: a barrier (or a block that does) comes
/// before any layer that could absorb the scale.
fn needs_unit_input<T: Real>(layers: &[Layer<T>]) -> bool {
    for l in layers {
        match l {
            Layer::Barrier(_) => return true,
            Layer::Residual(_) | Layer::Shortcut { .. } if block_needs_unit_input(l) => {
                return true;
            }
            Layer::Residual(_) | Layer::Shortcut { .. } => {}
            l if is_owner(l) => return false,
            _ => {}
        }
    }
    false
}

impl Run {
    /// A sequence: split at its barriers; every stretch before a barrier must hand on scale 1.
    /// The layers are the children of `path` from position `base` on (the top level: `[]`
    /// and 0; a residual body: the block and 0; a shortcut's skip: the block and the body's
    /// length).
    fn seq<T: Real>(
        &mut self,
        layers: &mut [Layer<T>],
        mut st: State,
        target: &Target,
        path: &LayerPath,
        base: usize,
    ) -> Result<State, CanonicalError> {
        let mut start = 0;
        for i in 0..layers.len() {
            let Layer::Barrier(b) = layers[i] else {
                continue;
            };
            let why = Carry::Barrier {
                barrier: b,
                at: child(path, base + i),
            };
            st = self.segment(
                &mut layers[start..i],
                st,
                &Target::Unit(why),
                path,
                base + start,
            )?;
            let shape = layers[i].out_shape(&st.shape, &child(path, base + i))?;
            st = State::unit(&shape);
            start = i + 1;
        }
        self.segment(&mut layers[start..], st, target, path, base + start)
    }

    /// A stretch without barriers at its own level.
    fn segment<T: Real>(
        &mut self,
        layers: &mut [Layer<T>],
        st: State,
        target: &Target,
        path: &LayerPath,
        offset: usize,
    ) -> Result<State, CanonicalError> {
        if let Target::Free = target {
            return self.free(layers, st, path, offset);
        }
        let Some(j) = layers.iter().rposition(is_owner) else {
            let start = child(path, offset);
            let st = self.pass(layers, st, path, offset)?;
            if !reaches(&st.scale, target) {
                return Err(CanonicalError::Layer {
                    at: start,
                    op: "scale",
                    fault: LayerFault::NothingCarries,
                });
            }
            return Ok(st);
        };
        // The target at the owner's output: back through the homogeneous layers after it.
        let shape_j = shapes_from(&layers[..=j], offset, &st.shape, path)?;
        let name = child(path, offset + j);
        let t_owner = map_back(&layers[j + 1..], &shape_j, target, &name)?;
        let st = match &layers[j] {
            Layer::Shortcut { body, skip } if can_carry(body) && can_carry(skip) => {
                // Both branches can carry the target themselves.
                let st = if block_needs_unit_input(&layers[j]) {
                    let why = Carry::ShortcutInput {
                        block: name.clone(),
                    };
                    self.segment(&mut layers[..j], st, &Target::Unit(why), path, offset)?
                } else {
                    self.free(&mut layers[..j], st, path, offset)?
                };
                self.shortcut_to(&mut layers[j], st, &t_owner, &name)?
            }
            Layer::Residual(_) | Layer::Shortcut { .. } => {
                // The skip passes its input's scale on: the layers before carry the target.
                let st = self.segment(&mut layers[..j], st, &t_owner, path, offset)?;
                let st = self.residual(&mut layers[j], st, &name)?;
                if !reaches(&st.scale, &t_owner) {
                    return Err(CanonicalError::Layer {
                        at: name,
                        op: "scale",
                        fault: LayerFault::ShortcutCannotCarry,
                    });
                }
                st
            }
            _ => {
                let st = self.free(&mut layers[..j], st, path, offset)?;
                self.owner(&mut layers[j], st, &t_owner, &name)?
            }
        };
        self.pass(&mut layers[j + 1..], st, path, offset + j + 1)
    }

    /// A shortcut whose branches both carry `target`.
    fn shortcut_to<T: Real>(
        &mut self,
        layer: &mut Layer<T>,
        st: State,
        target: &Target,
        name: &LayerPath,
    ) -> Result<State, CanonicalError> {
        let Layer::Shortcut { body, skip } = layer else {
            unreachable!("a shortcut")
        };
        let n = body.len();
        self.seq(body, st.clone(), target, name, 0)?;
        self.seq(skip, st, target, name, n)
    }

    /// A stretch that hands on its own scale.
    fn free<T: Real>(
        &mut self,
        layers: &mut [Layer<T>],
        st: State,
        path: &LayerPath,
        offset: usize,
    ) -> Result<State, CanonicalError> {
        // A residual whose body needs its input as it is: everything before it hands on 1.
        let k = layers.iter().rposition(block_needs_unit_input);
        let (mut st, from) = match k {
            Some(k) => {
                let why = Carry::ResidualInput {
                    block: child(path, offset + k),
                };
                (
                    self.segment(&mut layers[..k], st, &Target::Unit(why), path, offset)?,
                    k,
                )
            }
            None => (st, 0),
        };
        for (i, l) in layers.iter_mut().enumerate().skip(from) {
            let name = child(path, offset + i);
            st = match l {
                Layer::Residual(_) | Layer::Shortcut { .. } => self.residual(l, st, &name)?,
                l if is_owner(l) => self.owner(l, st, &Target::Free, &name)?,
                l => self.pass_one(l, st, &name)?,
            };
        }
        Ok(st)
    }

    /// `y = x + body(x)`: the body is brought to the skip path's scale. `y = skip(x) +
    /// body(x)`: the skip hands on its own scale and the body is brought to it (or, where the
    /// body has no layer to carry a scale, the other way round).
    fn residual<T: Real>(
        &mut self,
        layer: &mut Layer<T>,
        st: State,
        name: &LayerPath,
    ) -> Result<State, CanonicalError> {
        let why = Carry::ResidualRatio {
            block: name.to_vec(),
        };
        match layer {
            Layer::Residual(body) => {
                self.seq(
                    body,
                    st.clone(),
                    &Target::To(st.scale.clone(), why),
                    name,
                    0,
                )?;
                Ok(st)
            }
            Layer::Shortcut { body, skip } if can_carry(body) => {
                let n = body.len();
                let out = self.seq(skip, st.clone(), &Target::Free, name, n)?;
                self.seq(body, st, &Target::To(out.scale.clone(), why), name, 0)?;
                Ok(out)
            }
            Layer::Shortcut { body, skip } if can_carry(skip) => {
                let why = Carry::ShortcutRatio {
                    block: name.to_vec(),
                };
                let n = body.len();
                let out = self.seq(body, st.clone(), &Target::Free, name, 0)?;
                self.seq(skip, st, &Target::To(out.scale.clone(), why), name, n)?;
                Ok(out)
            }
            Layer::Shortcut { body, skip } => {
                // Neither branch can carry a scale: both hand on what they receive (1 after a
                // barrier, which their input then is too), and they must agree.
                let n = body.len();
                let out = self.seq(body, st.clone(), &Target::Free, name, 0)?;
                let short = self.seq(skip, st, &Target::Free, name, n)?;
                if out.scale != short.scale {
                    return Err(CanonicalError::Layer {
                        at: name.to_vec(),
                        op: "scale",
                        fault: LayerFault::ShortcutScales,
                    });
                }
                Ok(out)
            }
            _ => unreachable!("a residual block"),
        }
    }

    /// Transform III on a weighted layer or a batch norm, handing on its own scale (`Free`) or
    /// carrying the target's.
    fn owner<T: Real>(
        &mut self,
        layer: &mut Layer<T>,
        st: State,
        target: &Target,
        name: &LayerPath,
    ) -> Result<State, CanonicalError> {
        let shape = layer.out_shape(&st.shape, name)?;
        let divisor = |g: &[f64]| match target {
            Target::Free => g.to_vec(),
            Target::Unit(_) => vec![1.0; g.len()],
            Target::To(t, _) => t.clone(),
        };
        let received = st.scale.clone();
        let (absorbed, d) = match layer {
            Layer::Weighted(l) => {
                let groups = l.groups();
                let (a, d) = absorb_in_place(
                    &mut l.w,
                    l.b.as_deref_mut(),
                    &st.scale,
                    groups,
                    divisor,
                    name,
                )?;
                (a, d)
            }
            Layer::Norm(n) => {
                let a = n.a.as_mut().expect("an owner has a multiplier");
                let mut rows = super::Rows::new(a.len(), 1, std::mem::take(a));
                let groups = rows.out;
                let (ab, d) =
                    absorb_in_place(&mut rows, Some(&mut n.c), &st.scale, groups, divisor, name)?;
                n.a = Some(rows.data);
                (ab, d)
            }
            _ => unreachable!("an owner"),
        };
        let range = |xs: &[f64]| {
            xs.iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
                    (lo.min(x), hi.max(x))
                })
        };
        let carries = match target {
            Target::Free => None,
            Target::Unit(why) | Target::To(_, why) => Some(why.clone()),
        };
        self.factors.push(LayerFactors {
            at: name.to_vec(),
            input: received,
            output: d.clone(),
        });
        self.reports.push(LayerReport {
            at: name.to_vec(),
            op: layer.op(),
            row_norms_before: range(&absorbed.norms_before),
            scale: range(&d),
            row_norms_after: range(&absorbed.norms_after),
            zero_rows: absorbed.zero_rows,
            carries,
        });
        Ok(State { scale: d, shape })
    }

    /// Transform II (and flatten, pooling, shifts) over layers without weights.
    fn pass<T: Real>(
        &mut self,
        layers: &mut [Layer<T>],
        mut st: State,
        path: &LayerPath,
        offset: usize,
    ) -> Result<State, CanonicalError> {
        for (i, l) in layers.iter_mut().enumerate() {
            st = self.pass_one(l, st, &child(path, offset + i))?;
        }
        Ok(st)
    }

    fn pass_one<T: Real>(
        &mut self,
        layer: &mut Layer<T>,
        st: State,
        name: &LayerPath,
    ) -> Result<State, CanonicalError> {
        let shape = layer.out_shape(&st.shape, name)?;
        let scale = match layer {
            Layer::Act(a) => a.commute(st.scale, name)?,
            Layer::Pool(_) | Layer::PRelu(_) => {
                if st.scale.iter().any(|&g| g < 0.0) {
                    return Err(CanonicalError::NegativeScale {
                        at: name.to_vec(),
                        activation: layer.op(),
                    });
                }
                st.scale
            }
            Layer::Norm(n) => {
                // A shift: g * x + c = g * (x + c / g).
                for (k, (c, g)) in n.c.iter_mut().zip(&st.scale).enumerate() {
                    *c = T::from_f64(c.to_f64() / g);
                    if !c.to_f64().is_finite() {
                        return Err(CanonicalError::Overflow {
                            at: name.to_vec(),
                            what: Overflow::Shift { channel: k },
                        });
                    }
                }
                st.scale
            }
            Layer::Flatten => flatten_scale(&st.scale, st.shape[1..].iter().product()),
            Layer::Weighted(_)
            | Layer::Residual(_)
            | Layer::Shortcut { .. }
            | Layer::Barrier(_) => {
                unreachable!("not a pass-through layer")
            }
        };
        Ok(State { scale, shape })
    }
}

/// Whether `scale` is what `target` asks for.
fn reaches(scale: &[f64], target: &Target) -> bool {
    match target {
        Target::Free => true,
        Target::Unit(_) => scale.iter().all(|&g| g == 1.0),
        Target::To(t, _) => scale == t.as_slice(),
    }
}

/// The target at the output of the layer before `suffix` (whose output has `shape`), from the
/// target at the end of `suffix`: unchanged through everything but flatten, whose repeated
/// entries must agree.
fn map_back<T: Real>(
    suffix: &[Layer<T>],
    shape: &[usize],
    target: &Target,
    name: &LayerPath,
) -> Result<Target, CanonicalError> {
    let Target::To(t, why) = target else {
        return Ok(target.clone());
    };
    let mut positions = Vec::new();
    let mut s = shape.to_vec();
    for l in suffix {
        if let Layer::Flatten = l {
            positions.push(s[1..].iter().product::<usize>());
        }
        s = l.out_shape(&s, name)?;
    }
    let mut t = t.clone();
    for p in positions.into_iter().rev() {
        let p = p.max(1);
        if t.chunks(p).any(|c| c.iter().any(|&x| x != c[0])) {
            return Err(CanonicalError::Layer {
                at: name.to_vec(),
                op: "scale",
                fault: LayerFault::FlattenedScale,
            });
        }
        t = t.iter().step_by(p).copied().collect();
    }
    Ok(Target::To(t, why.clone()))
}
