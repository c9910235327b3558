//! Axes: which slices a norm is taken over, PyTorch's `dim` rule, and the one table that knows
//! where each layer kind keeps its output and input units.

use crate::error::{Error, Result};

/// The most dimensions a weight may have (Conv3d's kernel has 5).
pub const MAX_RANK: usize = 5;

/// Which part of a tensor one norm covers.
///
/// `Keep(k)` takes one norm per index along axis `k`, over all other axes (PyTorch's
/// `norm_except_dim(v, 2, k)`); the result has `v`'s size on axis `k` and 1 elsewhere.
/// `Whole` takes a single norm over every element (PyTorch's `dim=None`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NormAxis {
    /// One norm per slice along this axis.
    Keep(usize),
    /// One norm over the whole tensor.
    Whole,
}

impl NormAxis {
    /// The kept axis that a `g` of shape `g` implies for a `v` of shape `v`, as PyTorch shapes
    /// `g`: 0-dim `g` is the whole tensor; otherwise the axis where `g` has `v`'s size and every
    /// other axis of `g` is 1. When several axes fit they all have size 1 and give the same
    /// norms; the first is returned. A one-element `g` of `v`'s rank that fits no axis is the
    /// whole tensor. `None` when `g` fits no axis.
    pub fn implied_by(g: &[usize], v: &[usize]) -> Option<Self> {
        if g.is_empty() {
            return Some(Self::Whole);
        }
        if g.len() != v.len() {
            return None;
        }
        let fits = |k: usize| g[k] == v[k] && g.iter().enumerate().all(|(i, &s)| i == k || s == 1);
        if let Some(k) = (0..v.len()).find(|&k| fits(k)) {
            return Some(Self::Keep(k));
        }
        (g.iter().product::<usize>() == 1).then_some(Self::Whole)
    }

    /// Converts a PyTorch `dim` for a tensor of `rank` dimensions.
    ///
    /// PyTorch's rule, exactly: `None` and `-1` mean the whole tensor (in `weight_norm`, `-1` is
    /// not "the last axis"); other negative values wrap (`-2` on a rank-3 weight is axis 1);
    /// `0..rank` are axes as they are.
    ///
    /// # Errors
    ///
    /// [`Error::DimOutOfRange`] for a dim outside `-rank..rank`, and
    /// [`Error::UnsupportedRank`] for a rank outside `1..=5`.
    ///
    /// ```
    /// use weightnorm_core::NormAxis;
    /// assert_eq!(NormAxis::from_torch(None, 2).unwrap(), NormAxis::Whole);
    /// assert_eq!(NormAxis::from_torch(Some(-1), 3).unwrap(), NormAxis::Whole);
    /// assert_eq!(NormAxis::from_torch(Some(-2), 3).unwrap(), NormAxis::Keep(1));
    /// assert!(NormAxis::from_torch(Some(3), 3).is_err());
    /// ```
    pub fn from_torch(dim: Option<i64>, rank: usize) -> Result<Self> {
        check_rank(rank)?;
        let Some(dim) = dim else {
            return Ok(Self::Whole);
        };
        let r = rank as i64;
        if dim < -r || dim >= r {
            return Err(Error::DimOutOfRange { dim, rank });
        }
        Ok(match dim {
            -1 => Self::Whole,
            d if d < 0 => Self::Keep((d + r) as usize),
            d => Self::Keep(d as usize),
        })
    }

    /// The PyTorch `dim` for this axis: `None` for the whole tensor.
    ///
    /// Note that `Keep(rank - 1)` maps to `rank - 1`, never to `-1`, which PyTorch would read as
    /// the whole tensor.
    pub fn to_torch(self) -> Option<i64> {
        match self {
            Self::Keep(k) => Some(k as i64),
            Self::Whole => None,
        }
    }

    /// Checks that the axis exists in a tensor of `rank` dimensions, and that the rank is
    /// supported.
    ///
    /// # Errors
    ///
    /// [`Error::UnsupportedRank`] or [`Error::AxisOutOfRange`].
    pub fn validate(self, rank: usize) -> Result<()> {
        check_rank(rank)?;
        match self {
            Self::Keep(axis) if axis >= rank => Err(Error::AxisOutOfRange { axis, rank }),
            _ => Ok(()),
        }
    }

    /// The shape of the norms (and of `g`) for a tensor of shape `v_shape`: the kept axis's size
    /// there and 1 elsewhere; all ones for the whole tensor.
    ///
    /// # Panics
    ///
    /// If the axis is out of range for `v_shape` (call [`NormAxis::validate`] first).
    pub fn g_shape(self, v_shape: &[usize]) -> Vec<usize> {
        let mut shape = vec![1; v_shape.len()];
        if let Self::Keep(k) = self {
            shape[k] = v_shape[k];
        }
        shape
    }

    /// The axes a norm sums over, in increasing order.
    pub fn reduced_axes(self, rank: usize) -> Vec<usize> {
        (0..rank).filter(|&a| Some(a) != self.kept()).collect()
    }

    /// The kept axis, if any.
    pub const fn kept(self) -> Option<usize> {
        match self {
            Self::Keep(k) => Some(k),
            Self::Whole => None,
        }
    }

    /// Views a tensor of `shape` as `[outer, n, inner]` around the kept axis: `n` slices, each
    /// made of `outer` contiguous runs of `inner` elements (row-major). The whole tensor is one
    /// slice: `[1, 1, numel]`.
    pub fn split_shape(self, shape: &[usize]) -> [usize; 3] {
        match self {
            Self::Whole => [1, 1, shape.iter().product()],
            Self::Keep(k) => [
                shape[..k].iter().product(),
                shape[k],
                shape[k + 1..].iter().product(),
            ],
        }
    }

    /// Names slice `j` in words, for messages: "index 3 of axis 0" or "the whole tensor".
    pub fn describe_slice(self, j: usize) -> String {
        match self {
            Self::Keep(k) => format!("index {j} of axis {k}"),
            Self::Whole => "the whole tensor".to_string(),
        }
    }

    /// Describes the axis in words, for messages.
    pub fn describe(self) -> String {
        match self {
            Self::Keep(k) => format!("per slice of axis {k}"),
            Self::Whole => "over the whole tensor".to_string(),
        }
    }
}

impl core::fmt::Display for NormAxis {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Keep(k) => write!(f, "axis {k}"),
            Self::Whole => write!(f, "whole"),
        }
    }
}

impl From<Option<usize>> for NormAxis {
    /// `Some(k)` keeps axis `k`; `None` is the whole tensor.
    fn from(keep: Option<usize>) -> Self {
        keep.map_or(Self::Whole, Self::Keep)
    }
}

pub(crate) fn check_rank(rank: usize) -> Result<()> {
    if (1..=MAX_RANK).contains(&rank) {
        Ok(())
    } else {
        Err(Error::UnsupportedRank { rank })
    }
}

/// The kinds of layer whose weights this library knows, in Burn's layouts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LayerKind {
    /// `burn::nn::Linear`: weight `[d_input, d_output]` (PyTorch stores `[out, in]`).
    Linear,
    /// `burn::nn::conv::Conv1d`: weight `[out, in / groups, k]`.
    Conv1d,
    /// `burn::nn::conv::Conv2d`: weight `[out, in / groups, kh, kw]`.
    Conv2d,
    /// `burn::nn::conv::Conv3d`: weight `[out, in / groups, kd, kh, kw]`.
    Conv3d,
    /// `burn::nn::conv::ConvTranspose1d`: weight `[in, out / groups, k]`.
    ConvTranspose1d,
    /// `burn::nn::conv::ConvTranspose2d`: weight `[in, out / groups, kh, kw]`.
    ConvTranspose2d,
    /// `burn::nn::conv::ConvTranspose3d`: weight `[in, out / groups, kd, kh, kw]`.
    ConvTranspose3d,
    /// `burn::nn::Embedding`: weight `[n_embedding, d_model]`, read as a linear map from one-hot
    /// token vectors to `d_model` outputs.
    Embedding,
}

/// Where a layer's weight keeps its output units and its input units.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct UnitAxes {
    /// The axis indexed by output unit (neuron, output channel).
    pub output: usize,
    /// The axis indexed by input unit (input feature, input channel).
    pub input: usize,
}

impl LayerKind {
    /// The one table of layouts: every algorithm that speaks of output and input units asks it,
    /// and no other code writes an axis number for a layer.
    ///
    /// | kind | Burn weight layout | output | input |
    /// |---|---|---|---|
    /// | `Linear` | `[in, out]` | 1 | 0 |
    /// | `Conv1d/2d/3d` | `[out, in/groups, k..]` | 0 | 1 |
    /// | `ConvTranspose1d/2d/3d` | `[in, out/groups, k..]` | 1 | 0 |
    /// | `Embedding` | `[tokens, d_model]` | 1 | 0 |
    pub const fn unit_axes(self) -> UnitAxes {
        match self {
            Self::Linear
            | Self::ConvTranspose1d
            | Self::ConvTranspose2d
            | Self::ConvTranspose3d
            | Self::Embedding => UnitAxes {
                output: 1,
                input: 0,
            },
            Self::Conv1d | Self::Conv2d | Self::Conv3d => UnitAxes {
                output: 0,
                input: 1,
            },
        }
    }

    /// The rank of the layer's weight.
    pub const fn weight_rank(self) -> usize {
        match self {
            Self::Linear | Self::Embedding => 2,
            Self::Conv1d | Self::ConvTranspose1d => 3,
            Self::Conv2d | Self::ConvTranspose2d => 4,
            Self::Conv3d | Self::ConvTranspose3d => 5,
        }
    }

    /// Whether PyTorch stores this kind's weight transposed relative to Burn (Linear:
    /// `[out, in]` against Burn's `[in, out]`).
    pub const fn transposed_in_torch(self) -> bool {
        matches!(self, Self::Linear)
    }

    /// Where PyTorch's layout of this kind's weight keeps its output and input units.
    pub const fn torch_unit_axes(self) -> UnitAxes {
        let a = self.unit_axes();
        if self.transposed_in_torch() {
            UnitAxes {
                output: a.input,
                input: a.output,
            }
        } else {
            a
        }
    }

    /// The same axis of this kind's weight in the other library's layout (Burn to PyTorch or
    /// back: the mapping is its own inverse).
    pub const fn torch_axis(self, axis: NormAxis) -> NormAxis {
        match axis {
            NormAxis::Keep(k) if self.transposed_in_torch() => NormAxis::Keep(1 - k),
            other => other,
        }
    }

    /// The axis that "one norm per output unit" keeps: the natural default for weight
    /// normalization and for the canonical form.
    pub const fn output_axis(self) -> NormAxis {
        NormAxis::Keep(self.unit_axes().output)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torch_dims_follow_pytorch() {
        assert_eq!(NormAxis::from_torch(None, 4), Ok(NormAxis::Whole));
        assert_eq!(NormAxis::from_torch(Some(-1), 4), Ok(NormAxis::Whole));
        assert_eq!(NormAxis::from_torch(Some(-1), 1), Ok(NormAxis::Whole));
        assert_eq!(NormAxis::from_torch(Some(0), 1), Ok(NormAxis::Keep(0)));
        assert_eq!(NormAxis::from_torch(Some(-2), 3), Ok(NormAxis::Keep(1)));
        assert_eq!(NormAxis::from_torch(Some(-4), 4), Ok(NormAxis::Keep(0)));
        assert_eq!(NormAxis::from_torch(Some(3), 4), Ok(NormAxis::Keep(3)));
    }

    #[test]
    fn out_of_range_dims_name_the_valid_range() {
        let err = NormAxis::from_torch(Some(3), 3).unwrap_err();
        assert_eq!(err, Error::DimOutOfRange { dim: 3, rank: 3 });
        assert_eq!(
            err.to_string(),
            "dim 3 is out of range for a rank-3 weight: valid dims are -3..=2, \
             or None / -1 for the whole tensor"
        );
        assert!(NormAxis::from_torch(Some(-4), 3).is_err());
        assert!(NormAxis::from_torch(Some(2), 2).is_err());
    }

    #[test]
    fn ranks_outside_one_to_five_are_refused() {
        assert_eq!(
            NormAxis::from_torch(Some(0), 6),
            Err(Error::UnsupportedRank { rank: 6 })
        );
        assert_eq!(
            NormAxis::Whole.validate(0),
            Err(Error::UnsupportedRank { rank: 0 })
        );
        assert_eq!(
            NormAxis::Keep(2).validate(2),
            Err(Error::AxisOutOfRange { axis: 2, rank: 2 })
        );
    }

    #[test]
    fn torch_round_trip_never_produces_minus_one() {
        for rank in 1..=MAX_RANK {
            for k in 0..rank {
                let axis = NormAxis::Keep(k);
                assert_eq!(NormAxis::from_torch(axis.to_torch(), rank), Ok(axis));
            }
            assert_eq!(
                NormAxis::from_torch(NormAxis::Whole.to_torch(), rank),
                Ok(NormAxis::Whole)
            );
        }
    }

    #[test]
    fn shapes_and_split() {
        let v = [6, 3, 5];
        assert_eq!(NormAxis::Keep(0).g_shape(&v), vec![6, 1, 1]);
        assert_eq!(NormAxis::Keep(2).g_shape(&v), vec![1, 1, 5]);
        assert_eq!(NormAxis::Whole.g_shape(&v), vec![1, 1, 1]);
        assert_eq!(NormAxis::Keep(1).split_shape(&v), [6, 3, 5]);
        assert_eq!(NormAxis::Keep(0).split_shape(&v), [1, 6, 15]);
        assert_eq!(NormAxis::Keep(2).split_shape(&v), [18, 5, 1]);
        assert_eq!(NormAxis::Whole.split_shape(&v), [1, 1, 90]);
        assert_eq!(NormAxis::Keep(1).reduced_axes(3), vec![0, 2]);
        assert_eq!(NormAxis::Whole.reduced_axes(2), vec![0, 1]);
    }

    #[test]
    fn layout_table() {
        assert_eq!(LayerKind::Linear.output_axis(), NormAxis::Keep(1));
        assert_eq!(LayerKind::Conv2d.output_axis(), NormAxis::Keep(0));
        assert_eq!(LayerKind::ConvTranspose1d.output_axis(), NormAxis::Keep(1));
        // PyTorch's Linear dim 0 (per output row) is Burn's axis 1, and back.
        assert_eq!(
            LayerKind::Linear.torch_axis(NormAxis::Keep(0)),
            NormAxis::Keep(1)
        );
        assert_eq!(
            LayerKind::Linear.torch_axis(NormAxis::Keep(1)),
            NormAxis::Keep(0)
        );
        assert_eq!(
            LayerKind::Conv2d.torch_axis(NormAxis::Keep(1)),
            NormAxis::Keep(1)
        );
        assert_eq!(
            LayerKind::Linear.torch_axis(NormAxis::Whole),
            NormAxis::Whole
        );
        assert_eq!(NormAxis::Keep(2).describe_slice(4), "index 4 of axis 2");
        for kind in [
            LayerKind::Linear,
            LayerKind::Conv1d,
            LayerKind::Conv2d,
            LayerKind::Conv3d,
            LayerKind::ConvTranspose1d,
            LayerKind::ConvTranspose2d,
            LayerKind::ConvTranspose3d,
            LayerKind::Embedding,
        ] {
            let u = kind.unit_axes();
            assert_ne!(u.output, u.input);
            assert!(u.output < kind.weight_rank() && u.input < kind.weight_rank());
        }
    }
}
