//! Why a network could not be described or put in canonical form, with typed reasons and
//! positions a front-end names ([`Namer`]).

use thiserror::Error;

use super::path::{Namer, path_name};

/// Why a network could not be described or put in canonical form.
///
/// Every variant carries the position of the layer it is about ([`CanonicalError::at`]): its
/// `Display` names it as the calculus does (`"3"`, `"4.body.0"`, [`path_name`]);
/// [`CanonicalError::render`] names it as a front-end does (a graph's node, a module's
/// parameter path).
#[derive(Debug, Clone, PartialEq, Error)]
#[non_exhaustive]
pub enum CanonicalError {
    /// A layer does not fit, or its description is wrong.
    #[error("layer {} ({op}): {fault}", path_name(at))]
    Layer {
        /// The layer's position (empty for the network's output).
        at: Vec<usize>,
        /// Its op.
        op: &'static str,
        /// What is wrong.
        fault: LayerFault,
    },
    /// A scale with a negative entry cannot pass an activation.
    #[error(
        "layer {}: a scale with negative entries cannot commute with {activation}",
        path_name(at)
    )]
    NegativeScale {
        /// The layer's position.
        at: Vec<usize>,
        /// The activation.
        activation: &'static str,
    },
    /// A value of the result exceeds the range of its type: the exact canonical form is not
    /// representable.
    #[error("layer {}: {what}", path_name(at))]
    Overflow {
        /// The layer's position.
        at: Vec<usize>,
        /// Which value.
        what: Overflow,
    },
    /// An input shape without axes, or of more than [`MAX_VALUES`](super::MAX_VALUES) values
    /// per sample.
    #[error("an input of shape {shape:?}: it needs at least one axis and at most 2^32 values")]
    Input {
        /// The shape as given.
        shape: Vec<usize>,
    },
}

impl CanonicalError {
    /// The position of the layer the error is about (`None` for the input).
    pub fn at(&self) -> Option<&[usize]> {
        match self {
            Self::Layer { at, .. } | Self::NegativeScale { at, .. } | Self::Overflow { at, .. } => {
                Some(at)
            }
            Self::Input { .. } => None,
        }
    }

    /// What is wrong, without the layer's position (for a front-end that names the place
    /// itself, such as a graph's node).
    pub fn reason(&self) -> String {
        match self {
            Self::Layer { fault, .. } => fault.to_string(),
            Self::NegativeScale { activation, .. } => {
                format!("a scale with negative entries cannot commute with {activation}")
            }
            Self::Overflow { what, .. } => what.to_string(),
            e @ Self::Input { .. } => e.to_string(),
        }
    }

    /// The message with the layer named by `namer` (a graph's node, a module's parameter
    /// path) instead of the calculus's position.
    ///
    /// ```
    /// use weightnorm_core::canonical::{CanonicalError, LayerFault};
    ///
    /// let e = CanonicalError::Layer {
    ///     at: vec![2],
    ///     op: "linear",
    ///     fault: LayerFault::Inputs { expected: 4, got: 3 },
    /// };
    /// assert_eq!(e.to_string(), "layer 2 (linear): takes 4 inputs, receives 3");
    /// let onnx = |p: &[usize]| format!("/fc{}/Gemm", p[0]);
    /// assert_eq!(e.render(&onnx), "layer /fc2/Gemm (linear): takes 4 inputs, receives 3");
    /// ```
    pub fn render(&self, namer: &dyn Namer) -> String {
        match self {
            Self::Layer { at, op, fault } => {
                format!("layer {} ({op}): {fault}", namer.name(at))
            }
            Self::NegativeScale { at, .. } | Self::Overflow { at, .. } => {
                format!("layer {}: {}", namer.name(at), self.reason())
            }
            e @ Self::Input { .. } => e.to_string(),
        }
    }
}

/// What is wrong with a layer ([`CanonicalError::Layer`]).
#[derive(Debug, Clone, PartialEq, Error)]
#[non_exhaustive]
pub enum LayerFault {
    /// The layer's output would exceed [`MAX_VALUES`](super::MAX_VALUES) values per sample.
    #[error("an output of shape {shape:?}: more than 2^32 values per sample")]
    TooLarge {
        /// The shape it would produce.
        shape: Vec<usize>,
    },
    /// The layer receives an input without axes.
    #[error("receives a 0-dimensional input")]
    NoAxes,
    /// A bias of the wrong length.
    #[error("{bias} bias values for {units} output units")]
    BiasLength {
        /// The bias's length.
        bias: usize,
        /// The layer's output units.
        units: usize,
    },
    /// A linear layer receiving more than one axis.
    #[error(
        "takes a flat input of {inputs} units, receives shape {shape:?} (add a flatten before it)"
    )]
    NotFlat {
        /// The units it takes.
        inputs: usize,
        /// The shape it receives.
        shape: Vec<usize>,
    },
    /// A linear layer receiving another number of units.
    #[error("takes {expected} inputs, receives {got}")]
    Inputs {
        /// The units it takes.
        expected: usize,
        /// The units it receives.
        got: usize,
    },
    /// A convolution receiving another number of axes.
    #[error("takes [channels{}], receives shape {shape:?}", ", length".repeat(*.spatial))]
    ConvAxes {
        /// Its spatial axes.
        spatial: usize,
        /// The shape it receives.
        shape: Vec<usize>,
    },
    /// A convolution receiving another number of channels.
    #[error("takes {expected} input channels, receives {got}")]
    Channels {
        /// The channels it takes.
        expected: usize,
        /// The channels it receives.
        got: usize,
    },
    /// Output channels that do not split into the groups.
    #[error("{out} output channels do not split into {groups} groups")]
    Groups {
        /// The output channels.
        out: usize,
        /// The groups.
        groups: usize,
    },
    /// Rows and input channels that do not split into the groups.
    #[error("{out} output units and {inputs} input channels do not split into {groups} groups")]
    GroupsInput {
        /// The output units.
        out: usize,
        /// The input channels.
        inputs: usize,
        /// The groups.
        groups: usize,
    },
    /// Rows whose length is not a whole number of taps per input channel.
    #[error("rows of {row_len} elements do not take {per_group} input channels")]
    RowLength {
        /// The row length.
        row_len: usize,
        /// The input channels per group.
        per_group: usize,
    },
    /// A kernel larger than the padded input.
    #[error(
        "the kernel ({kernel:?}, dilation {dilation:?}) does not fit the padded input {shape:?}"
    )]
    KernelTooLarge {
        /// The kernel.
        kernel: Vec<usize>,
        /// The dilation.
        dilation: Vec<usize>,
        /// The input's shape.
        shape: Vec<usize>,
    },
    /// A normalization of another number of channels.
    #[error("normalizes {expected} channels, receives {got}")]
    NormChannels {
        /// The channels it normalizes.
        expected: usize,
        /// The channels it receives.
        got: usize,
    },
    /// A softmax inside the network receiving more than one axis.
    #[error("takes a flat input, receives shape {shape:?}")]
    SoftmaxNotFlat {
        /// The shape it receives.
        shape: Vec<usize>,
    },
    /// A PReLU with another number of slopes than channels.
    #[error("has {slopes} slopes for {channels} channels")]
    Slopes {
        /// Its slopes.
        slopes: usize,
        /// The channels it receives.
        channels: usize,
    },
    /// WaveNet's gate on an odd number of channels.
    #[error("splits the channels in halves, receives {channels}")]
    OddChannels {
        /// The channels it receives.
        channels: usize,
    },
    /// Pooling on another shape than `[channels, height, width]`.
    #[error("takes [channels, height, width], receives shape {shape:?}")]
    PoolAxes {
        /// The shape it receives.
        shape: Vec<usize>,
    },
    /// A pooling kernel or stride of zero.
    #[error("a pooling kernel {kernel:?} or stride {stride:?} of 0")]
    PoolZero {
        /// The kernel.
        kernel: [usize; 2],
        /// The stride.
        stride: [usize; 2],
    },
    /// Pooling padding beyond half the kernel.
    #[error("padding {padding:?} exceeds half the kernel {kernel:?}")]
    PoolPadding {
        /// The padding.
        padding: [usize; 2],
        /// The kernel.
        kernel: [usize; 2],
    },
    /// A pooling kernel larger than the padded input.
    #[error("the kernel {kernel:?} does not fit the input {shape:?}")]
    PoolKernelTooLarge {
        /// The kernel.
        kernel: [usize; 2],
        /// The input's shape.
        shape: Vec<usize>,
    },
    /// A residual body changing the shape the skip path carries.
    #[error("the body produces shape {body:?} but the skip path carries {skip:?}")]
    ResidualShape {
        /// The body's output shape.
        body: Vec<usize>,
        /// The block's input shape.
        skip: Vec<usize>,
    },
    /// A shortcut whose branches produce different shapes.
    #[error("the body produces shape {body:?} but the skip path {skip:?}")]
    ShortcutShape {
        /// The body's output shape.
        body: Vec<usize>,
        /// The skip's output shape.
        skip: Vec<usize>,
    },
    /// An output scale of the wrong length.
    #[error("{got} scale entries for {channels} output channels")]
    ScaleLength {
        /// Its length.
        got: usize,
        /// The output channels.
        channels: usize,
    },
    /// An output scale entry that is not positive and finite.
    #[error("a scale entry of {value} (must be positive)")]
    ScaleEntry {
        /// The entry.
        value: f64,
    },
    /// A maximum global gain that is not positive and finite ([`rescale`](super::rescale)).
    #[error("a maximum gain of {value} (it must be positive and finite)")]
    MaxGain {
        /// The maximum as given.
        value: f64,
    },
    /// No layer where a prescribed scale must be carried.
    #[error("no layer before this point can carry the scale it must hand on")]
    NothingCarries,
    /// Neither branch of a shortcut can carry a prescribed scale.
    #[error("neither branch of this shortcut can carry the scale it must hand on")]
    ShortcutCannotCarry,
    /// A shortcut's branches hand on different scales and neither can carry the other's.
    #[error(
        "the branches of this shortcut hand on different scales and neither has a layer to \
         carry the other's"
    )]
    ShortcutScales,
    /// A prescribed scale that differs within a flattened channel.
    #[error(
        "a scale that differs within a flattened channel cannot be carried by a layer before \
         the flatten"
    )]
    FlattenedScale,
}

/// Which value of the canonical form exceeds the range of its type
/// ([`CanonicalError::Overflow`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum Overflow {
    /// A row's norm times its input scale exceeds `f64`.
    #[error("the norm of row {row} times its input scale exceeds the range of f64")]
    RowNorm {
        /// The row (output unit).
        row: usize,
    },
    /// A row the layer must carry exceeds its storage type.
    #[error("row {row} of the weight it must carry exceeds the range of its type")]
    CarriedRow {
        /// The row (output unit).
        row: usize,
    },
    /// A bias divided by its scale exceeds its storage type.
    #[error("bias {unit} divided by its scale exceeds the range of its type")]
    Bias {
        /// The output unit.
        unit: usize,
    },
    /// A shift divided by its scale exceeds its storage type.
    #[error("the shift of channel {channel} divided by its scale exceeds the range of its type")]
    Shift {
        /// The channel.
        channel: usize,
    },
    /// A row times the multiplier of the norm folded into it exceeds its storage type.
    #[error("row {row} times the multiplier of the norm after it exceeds the range of its type")]
    FoldedRow {
        /// The row (output unit).
        row: usize,
    },
    /// A shift with the layer's bias folded in exceeds its storage type.
    #[error(
        "the shift of channel {channel} with the layer's bias folded in exceeds the range of its \
         type"
    )]
    FoldedShift {
        /// The channel.
        channel: usize,
    },
}
