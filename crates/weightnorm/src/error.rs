//! The library's error type.

use burn::tensor::DType;
use thiserror::Error;

/// Everything that can go wrong in the weight-norm operations when the input comes from outside:
/// shapes, axes, dtypes and values.
///
/// Every message names what is wrong and what would be right, so it can be shown to a user as is.
#[derive(Debug, Clone, PartialEq, Error)]
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
        "g has shape {got:?}, but v of shape {v_shape:?} normalized {axis} needs g of shape \
         {expected:?} (the kept axis's size there, 1 elsewhere)"
    )]
    GShapeMismatch {
        /// The shape of `g`.
        got: Vec<usize>,
        /// The shape `g` must have.
        expected: Vec<usize>,
        /// The shape of `v`.
        v_shape: Vec<usize>,
        /// The axis, in words ("per slice of axis 0", "over the whole tensor").
        axis: String,
    },

    /// `v` and `g` differ in dtype, or one of them is not a float tensor.
    #[error("v and g must be float tensors of one dtype, got v: {v:?} and g: {g:?}")]
    DTypeMismatch {
        /// The dtype of `v`.
        v: DType,
        /// The dtype of `g`.
        g: DType,
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
        "v has a zero-norm slice ({slice}): its direction is undefined, so w = g * v / ||v|| \
         would be NaN; give that slice a non-zero value or opt into an epsilon"
    )]
    ZeroNorm {
        /// Which slice, in words ("index 3 of axis 0", "the whole tensor").
        slice: String,
    },

    /// A norm that is NaN or infinite: `v` holds NaN or infinite values, or overflows.
    #[error("v has a slice whose norm is not finite ({slice}): v holds NaN or infinite values")]
    NonFiniteNorm {
        /// Which slice, in words.
        slice: String,
    },
    /// The operands of the paper-form linear layer do not fit together.
    #[error("linear weight norm: {what} ({shapes})")]
    LinearShapeMismatch {
        /// What does not fit, in words.
        what: String,
        /// The operands' shapes, in words (`x [..], v [d_in, d_out] [..], g [..], bias [..]`).
        shapes: String,
    },
}

/// The library's result type.
pub type Result<T, E = Error> = core::result::Result<T, E>;
