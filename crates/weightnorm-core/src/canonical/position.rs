//! The calculus's own names for positions ([`Positions`]), and the typed notes of a
//! canonicalization ([`Note`], [`Carry`]), rendered with any front-end's [`Namer`].

use super::Real;
use super::network::{Barrier, Network, NormKind};
use super::path::{LayerPath, Namer, path_name};

/// The calculus's own names for a network's positions: `"3"`, `"4.body.0"`, `"4.skip.1"`.
#[derive(Clone, Copy, Debug)]
pub struct Positions<'a, T: Real>(pub &'a Network<T>);

impl<T: Real> Namer for Positions<'_, T> {
    fn name(&self, path: &LayerPath) -> String {
        self.0.layer_name(path).unwrap_or_else(|| path_name(path))
    }
}

/// Why a layer's rows carry a scale instead of being unit vectors
/// ([`LayerReport::carries`](super::LayerReport::carries)).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Carry {
    /// The scale, multiplied back before a barrier, which it cannot pass.
    Barrier {
        /// The barrier.
        barrier: Barrier,
        /// Its position.
        at: Vec<usize>,
    },
    /// The scale, multiplied back before a residual block whose body starts with a barrier.
    ResidualInput {
        /// The block's position.
        block: Vec<usize>,
    },
    /// The scale, multiplied back before a shortcut one of whose branches starts with a barrier.
    ShortcutInput {
        /// The block's position.
        block: Vec<usize>,
    },
    /// The ratio of a residual body's scale to the skip path's (in the body's last layer).
    ResidualRatio {
        /// The block's position.
        block: Vec<usize>,
    },
    /// The ratio of a shortcut's scale to the residual body's (in the skip's last layer).
    ShortcutRatio {
        /// The block's position.
        block: Vec<usize>,
    },
    /// All of the gain, multiplied back by [`reconstitute`](super::reconstitute).
    Gain,
}

impl Carry {
    /// In words, with positions named by `namer`.
    pub fn render(&self, namer: &dyn Namer) -> String {
        match self {
            Self::Barrier { barrier, at } => format!(
                "the scale, multiplied back before {} (layer {})",
                barrier.name(),
                namer.name(at)
            ),
            Self::ResidualInput { block } => format!(
                "the scale, multiplied back before the residual block {} (its body starts with a \
                 barrier)",
                namer.name(block)
            ),
            Self::ShortcutInput { block } => format!(
                "the scale, multiplied back before the shortcut {} (a branch starts with a \
                 barrier)",
                namer.name(block)
            ),
            Self::ResidualRatio { block } => format!(
                "the ratio of the residual body's scale to the skip path's (block {})",
                namer.name(block)
            ),
            Self::ShortcutRatio { block } => format!(
                "the ratio of the shortcut's scale to the residual body's (block {})",
                namer.name(block)
            ),
            Self::Gain => "all of the gain (reconstituted)".to_string(),
        }
    }
}

/// A remark of [`canonicalize`](super::canonicalize) beside its per-layer reports.
#[derive(Clone, Debug, PartialEq)]
pub struct Note {
    /// The layer it is about.
    pub at: Vec<usize>,
    /// What happened.
    pub kind: NoteKind,
}

/// What a [`Note`] says.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum NoteKind {
    /// A normalization folded into the weighted layer before it.
    Folded {
        /// Which normalization.
        norm: NormKind,
        /// The weighted layer's position.
        into: Vec<usize>,
        /// The weighted layer's op.
        op: &'static str,
        /// Whether its multiplier went into the rows (a batch norm), besides the bias into its
        /// shift.
        multiplier: bool,
    },
}

impl Note {
    /// In words, with positions named by `namer`.
    ///
    /// ```
    /// use weightnorm_core::canonical::{Note, NoteKind, NormKind, Positions};
    ///
    /// let note = Note {
    ///     at: vec![1],
    ///     kind: NoteKind::Folded {
    ///         norm: NormKind::Batch,
    ///         into: vec![0],
    ///         op: "conv2d",
    ///         multiplier: true,
    ///     },
    /// };
    /// let keys = |p: &[usize]| format!("`features.{}`", p[0]);
    /// assert!(note.render(&keys).starts_with("layer `features.1` (batch_norm) folded into layer `features.0` (conv2d)"));
    /// ```
    pub fn render(&self, namer: &dyn Namer) -> String {
        match &self.kind {
            NoteKind::Folded {
                norm,
                into,
                op,
                multiplier,
            } => {
                let what = if *multiplier {
                    "its multiplier is in the rows, the layer's bias is carried as its shift"
                } else {
                    "the layer's bias is carried as its shift"
                };
                format!(
                    "layer {} ({}) folded into layer {} ({op}): {what}",
                    namer.name(&self.at),
                    norm.op(),
                    namer.name(into)
                )
            }
        }
    }
}

impl std::fmt::Display for Note {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.render(&path_name))
    }
}
