//! Checkpoint surgery on tensor maps: weight-norm pairs in both PyTorch key schemes, and fuse,
//! split, convert and inspect on whole checkpoints.
//!
//! A checkpoint is a list of [`TensorEntry`](crate::formats::TensorEntry)s (read from a file by
//! [`crate::formats`], or built in memory); the transforms return a new list in which every
//! untouched tensor is the same entry (the same bytes, not a copy) and every fused or split
//! tensor is computed when its bytes are asked for, one at a time.
//!
//! | scheme | `g` | `v` |
//! |---|---|---|
//! | [`Scheme::Legacy`] (`torch.nn.utils.weight_norm`) | `<prefix>.<name>_g` | `<prefix>.<name>_v` |
//! | [`Scheme::Parametrizations`] (`torch.nn.utils.parametrizations.weight_norm`) | `<prefix>.parametrizations.<name>.original0` | `<prefix>.parametrizations.<name>.original1` |
//!
//! `g` has `v`'s size on the kept axis and 1 elsewhere, or is 0-dim for `dim=None`; the axis is
//! inferred from that shape ([`infer_axis`]).

mod pairs;
mod transform;

pub use pairs::{Pair, Scheme, detect_pairs, infer_axis, pair_keys};
pub use transform::{
    FuseOptions, Selector, SplitOptions, Stats, convert, fuse, fuse_tensor, pair_stats, split,
    split_tensor,
};
