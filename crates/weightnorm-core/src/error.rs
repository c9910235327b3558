//! What the weight-norm operations refuse.

use thiserror::Error;

/// Everything that can go wrong in the weight-norm operations when the input comes from outside:
/// shapes, axes, dtypes and values.
///
/// Every message names what is wrong and what would be right, so it can be shown to a user as is.
#[derive(Debug, Clone, PartialEq, Error)]
#[non_exhaustive]
pub enum Error {
    /// A PyTorch `dim` outside `-rank..rank`.
    #[error(
        "dim {dim} is out of range for a rank-{rank} weight: valid dims are {lo}..={hi}, \
         or None / -1 for the whole tensor",
        lo = -(*rank as i64),
        hi = *rank as i64 - 1
    )]
    DimOutOfRange {
        /// The dim as given.
        dim: i64,
        /// The rank of the weight.
        rank: usize,
    },

    /// A kept axis that the tensor does not have.
    #[error("axis {axis} is out of range for a rank-{rank} tensor: valid axes are 0..{rank}")]
    AxisOutOfRange {
        /// The axis as given.
        axis: usize,
        /// The rank of the tensor.
        rank: usize,
    },

    /// A tensor rank outside 1..=5.
    #[error("rank {rank} is not supported: weight normalization works on tensors of rank 1 to 5")]
    UnsupportedRank {
        /// The rank of the tensor.
        rank: usize,
    },

    /// `g` does not have the shape that `v` and the axis call for.
    #[error(
        "g has shape {got:?}, but v of shape {v_shape:?} normalized {} needs g of shape \
         {expected:?} (the kept axis's size there, 1 elsewhere)",
        per_slice(*.kept)
    )]
    GShapeMismatch {
        /// The shape of `g`.
        got: Vec<usize>,
        /// The shape `g` must have.
        expected: Vec<usize>,
        /// The shape of `v`.
        v_shape: Vec<usize>,
        /// The axis the norms keep (`None`: one norm over the whole tensor), as
        /// [`NormAxis::kept`](crate::NormAxis::kept) gives it.
        kept: Option<usize>,
    },

    /// `v` and `g` differ in dtype, or one of them is not a float tensor.
    #[error("v and g must be float tensors of one dtype, got v: {v} and g: {g}")]
    DTypeMismatch {
        /// The dtype of `v`, as the framework names it (`f32`, `bf16`, `i64`, ...).
        v: &'static str,
        /// The dtype of `g`.
        g: &'static str,
    },

    /// A norm order below 1 or not a number.
    #[error("p = {p} is not a norm order: p must be at least 1 (infinity for the max norm)")]
    InvalidNormOrder {
        /// The order as given.
        p: f64,
    },

    /// A negative or non-finite epsilon.
    #[error("epsilon must be finite and at least 0, got {eps}")]
    InvalidEpsilon {
        /// The epsilon as given.
        eps: f64,
    },

    /// A slice of `v` whose norm is zero: its direction is undefined and `v / ||v||` would be NaN.
    #[error(
        "v has a zero-norm slice ({}): its direction is undefined, so w = g * v / ||v|| \
         would be NaN; give that slice a non-zero value or opt into an epsilon",
        slice(*.kept, *.index)
    )]
    ZeroNorm {
        /// The axis the norms keep (`None`: the whole tensor).
        kept: Option<usize>,
        /// Which slice along it (0 for the whole tensor).
        index: usize,
    },

    /// A norm that is NaN or infinite: `v` holds NaN or infinite values, or overflows.
    #[error(
        "v has a slice whose norm is not finite ({}): v holds NaN or infinite values",
        slice(*.kept, *.index)
    )]
    NonFiniteNorm {
        /// The axis the norms keep (`None`: the whole tensor).
        kept: Option<usize>,
        /// Which slice along it (0 for the whole tensor).
        index: usize,
    },
    /// The operands of the paper-form linear layer do not fit together.
    #[error(
        "linear weight norm: {what} (x {x:?}, v [d_in, d_out] {v:?}, g {g:?}, bias {})",
        .bias.as_ref().map_or("none".to_string(), |b| format!("{b:?}"))
    )]
    LinearShapeMismatch {
        /// What does not fit.
        what: LinearMismatch,
        /// The input's shape.
        x: Vec<usize>,
        /// `v`'s shape, `[d_in, d_out]`.
        v: [usize; 2],
        /// `g`'s shape.
        g: Vec<usize>,
        /// The bias's shape, if there is a bias.
        bias: Option<Vec<usize>>,
    },
}

/// `per slice of axis k` or `over the whole tensor`.
fn per_slice(kept: Option<usize>) -> String {
    match kept {
        Some(k) => format!("per slice of axis {k}"),
        None => "over the whole tensor".to_string(),
    }
}

/// `index j of axis k` or `the whole tensor`.
fn slice(kept: Option<usize>, j: usize) -> String {
    match kept {
        Some(k) => format!("index {j} of axis {k}"),
        None => "the whole tensor".to_string(),
    }
}

/// Which operand of the paper-form linear layer does not fit ([`Error::LinearShapeMismatch`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LinearMismatch {
    /// The input's last axis is not `v`'s `d_in`.
    Input,
    /// `g` does not hold one value per output unit.
    Gain,
    /// The bias does not hold one value per output unit.
    Bias,
}

impl core::fmt::Display for LinearMismatch {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::Input => "the input's last axis is not v's d_in",
            Self::Gain => "g does not hold one value per output unit (d_out)",
            Self::Bias => "the bias does not hold one value per output unit (d_out)",
        })
    }
}

/// The library's result type.
pub type Result<T, E = Error> = core::result::Result<T, E>;
