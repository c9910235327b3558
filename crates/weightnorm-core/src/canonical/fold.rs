//! Batch norms in evaluation mode as per-channel affine maps, and their folding into the
//! weighted layer before them.
//!
//! A batch norm computes `gamma * (x - mean) / sqrt(var + eps) + beta`, that is `a * x + c` with
//! `a = gamma / sqrt(var + eps)` and `c = beta - a * mean` ([`Norm::batch`]); a mean-only batch
//! norm computes `x - mean + bias` ([`Norm::mean_only`]). After a weighted layer `W x + b` with
//! as many output channels, `a * (W x + b) + c = (a W) x + (a b + c)`: the multiplier goes into
//! the rows and the norm keeps only the shift ([`fold_norms`]).

use thiserror::Error;

use super::error::Overflow;
use super::network::{Layer, Norm, NormKind};
use super::path::{LayerPath, child};
use super::position::{Note, NoteKind};
use super::{CanonicalError, Real};

/// Statistics that do not define a batch norm.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum NormError {
    /// A vector whose length differs from the running mean's.
    #[error("`{field}` has {got} values for {channels} channels")]
    Length {
        /// Which vector (`gamma`, `beta`, `running_var`, `bias`).
        field: &'static str,
        /// Its length.
        got: usize,
        /// The number of channels (the running mean's length).
        channels: usize,
    },
    /// `running_var + eps` is not positive (or NaN) for a channel.
    #[error("running_var + eps is not positive for channel {channel}")]
    NotPositive {
        /// The channel.
        channel: usize,
    },
    /// The multiplier or the shift of a channel exceeds the range of the storage type.
    #[error("the multiplier or shift of channel {channel} exceeds the range of its type")]
    Range {
        /// The channel.
        channel: usize,
    },
    /// A negative or non-finite epsilon.
    #[error("`eps` must be finite and not negative, got {eps}")]
    Eps {
        /// The epsilon as given.
        eps: f64,
    },
}

impl<T: Real> Norm<T> {
    /// A batch norm in evaluation mode: `a = gamma / sqrt(var + eps)`, `c = beta - a * mean`
    /// (`gamma` defaults to ones, `beta` to zeros: a norm without affine parameters).
    ///
    /// # Errors
    ///
    /// [`NormError`] if the vectors differ in length, `eps` is negative, or `var + eps` is not
    /// positive.
    pub fn batch(
        gamma: Option<&[T]>,
        beta: Option<&[T]>,
        mean: &[T],
        var: &[T],
        eps: f64,
    ) -> Result<Self, NormError> {
        let n = mean.len();
        if !(eps.is_finite() && eps >= 0.0) {
            return Err(NormError::Eps { eps });
        }
        for (field, v) in [("gamma", gamma), ("beta", beta), ("running_var", Some(var))] {
            if let Some(v) = v
                && v.len() != n
            {
                return Err(NormError::Length {
                    field,
                    got: v.len(),
                    channels: n,
                });
            }
        }
        let mut a = Vec::with_capacity(n);
        let mut c = Vec::with_capacity(n);
        for i in 0..n {
            let denom = (var[i].to_f64() + eps).sqrt();
            if denom.is_nan() || denom <= 0.0 {
                return Err(NormError::NotPositive { channel: i });
            }
            let ai = gamma.map_or(1.0, |g| g[i].to_f64()) / denom;
            let (at, ct) = (
                T::from_f64(ai),
                T::from_f64(beta.map_or(0.0, |b| b[i].to_f64()) - ai * mean[i].to_f64()),
            );
            if !(at.to_f64().is_finite() && ct.to_f64().is_finite()) {
                return Err(NormError::Range { channel: i });
            }
            a.push(at);
            c.push(ct);
        }
        Ok(Self {
            kind: NormKind::Batch,
            a: Some(a),
            c,
        })
    }

    /// A mean-only batch norm in evaluation mode: `y = x - mean + bias`.
    ///
    /// # Errors
    ///
    /// [`NormError::Length`] if `bias` and `mean` differ in length.
    pub fn mean_only(bias: &[T], mean: &[T]) -> Result<Self, NormError> {
        if bias.len() != mean.len() {
            return Err(NormError::Length {
                field: "bias",
                got: bias.len(),
                channels: mean.len(),
            });
        }
        let c: Vec<T> = bias
            .iter()
            .zip(mean)
            .map(|(b, m)| T::from_f64(b.to_f64() - m.to_f64()))
            .collect();
        if let Some(channel) = c.iter().position(|x| !x.to_f64().is_finite()) {
            return Err(NormError::Range { channel });
        }
        Ok(Self {
            kind: NormKind::MeanOnly,
            a: None,
            c,
        })
    }
}

/// Folds every batch norm and mean-only batch norm that directly follows a weighted layer with
/// as many output channels into it: the rows are multiplied by the norm's multiplier, and the
/// combined shift (`a * b + c`) is kept by the norm as a shift (the layer's bias, if it has one,
/// becomes zero). A [`NormKind::Scale`] is left alone.
///
/// # Errors
///
/// [`CanonicalError::Overflow`] if a row times the multiplier, or the combined shift, exceeds
/// the range of the storage type.
pub(crate) fn fold_norms<T: Real>(
    layers: &mut [Layer<T>],
    path: &LayerPath,
    offset: usize,
    notes: &mut Vec<Note>,
) -> Result<(), CanonicalError> {
    let at = |i: usize| child(path, offset + i);
    for i in 0..layers.len() {
        match &mut layers[i] {
            Layer::Residual(body) => {
                fold_norms(body, &at(i), 0, notes)?;
                continue;
            }
            Layer::Shortcut { body, skip } => {
                let n = body.len();
                fold_norms(body, &at(i), 0, notes)?;
                fold_norms(skip, &at(i), n, notes)?;
                continue;
            }
            _ => {}
        }
        if i == 0 {
            continue;
        }
        let (before, after) = layers.split_at_mut(i);
        let (Layer::Weighted(w), Layer::Norm(n)) = (&mut before[i - 1], &mut after[0]) else {
            continue;
        };
        if n.c.len() != w.w.out || n.kind == NormKind::Scale {
            continue;
        }
        let bias = w.b.clone();
        let row_len = w.w.row_len;
        let overflow = |at: Vec<usize>, what: Overflow| CanonicalError::Overflow { at, what };
        for ch in 0..w.w.out {
            let a = n.a.as_ref().map_or(1.0, |a| a[ch].to_f64());
            if n.a.is_some() {
                for x in &mut w.w.data[ch * row_len..(ch + 1) * row_len] {
                    *x = T::from_f64(x.to_f64() * a);
                    if !x.to_f64().is_finite() {
                        return Err(overflow(at(i - 1), Overflow::FoldedRow { row: ch }));
                    }
                }
            }
            let b = bias.as_ref().map_or(0.0, |b| b[ch].to_f64());
            n.c[ch] = T::from_f64(a * b + n.c[ch].to_f64());
            if !n.c[ch].to_f64().is_finite() {
                return Err(overflow(at(i), Overflow::FoldedShift { channel: ch }));
            }
        }
        let multiplier = n.a.is_some();
        // The layer's bias is in the shift now; it keeps a zero bias where it had one.
        if let Some(b) = &mut w.b {
            b.fill(T::from_f64(0.0));
        }
        n.a = None;
        notes.push(Note {
            at: at(i),
            kind: NoteKind::Folded {
                norm: n.kind,
                into: at(i - 1),
                op: w.op(),
                multiplier,
            },
        });
    }
    Ok(())
}
