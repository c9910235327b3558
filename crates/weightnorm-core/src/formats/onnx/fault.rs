//! Why a node of an ONNX graph cannot be read ([`OnnxError::Node`](super::OnnxError::Node)):
//! one typed reason per case, so that callers and tests match on what went wrong rather than on
//! a message's words.

use thiserror::Error;

use crate::canonical::NormError;

/// What is wrong with one node ([`OnnxError::Node`](super::OnnxError::Node)).
#[derive(Debug, Clone, PartialEq, Error)]
#[non_exhaustive]
pub enum NodeFault {
    // The graph as a whole, node by node.
    /// A node reads a value that no earlier node computes.
    #[error("uses `{0}` before it is computed (the nodes must be in topological order)")]
    UsedBeforeComputed(String),
    /// A node computes a value that is defined already.
    #[error("computes `{0}`, which is defined already")]
    Redefined(String),
    /// An output past the first (a training statistic, a mask) is used.
    #[error("its output `{0}` is used (only inference is supported)")]
    ExtraOutputUsed(String),
    /// An op of another domain than ONNX's own.
    #[error("op of domain `{0}` is not supported")]
    Domain(String),
    /// An op the canonical form does not map.
    #[error("this op is not supported by the canonical form")]
    Unsupported,

    // Constants.
    /// Constants computed from constants past the depth limit.
    #[error("constants computed from constants too deep")]
    ConstantsTooDeep,
    /// The constants a graph computes would together hold more elements than its size allows
    /// (twice its initializers' elements, and a million more).
    #[error(
        "the constants this graph computes would together hold more elements than its size allows"
    )]
    ConstantsTooLarge,
    /// An input a constant's computation needs is absent.
    #[error("input {0} is missing")]
    MissingInput(usize),
    /// A constant's computation needs the shape of a value the walk has not reached.
    #[error("the shape of `{0}` is not known where it is needed")]
    ShapeUnknown(String),
    /// An output past the first of a node computing constants.
    #[error("output {0} is not a constant this reader computes")]
    ConstantOutput(usize),
    /// An op this reader does not evaluate on constants.
    #[error("{0} on constants is not evaluated")]
    NotEvaluated(String),
    /// A `Constant` node without a value.
    #[error("a Constant without a value")]
    ConstantWithoutValue,
    /// A `Constant` whose `value` holds no tensor.
    #[error("`value` holds no tensor")]
    ValueWithoutTensor,
    /// A `Constant` of more values than a constant may hold.
    #[error("too many values")]
    TooManyValues,
    /// A kind of `Constant` this reader does not read.
    #[error("a Constant `{0}` is not supported")]
    ConstantKind(String),
    /// The arithmetic on constants failed.
    #[error(transparent)]
    Const(#[from] ConstFault),

    // Parameters.
    /// A parameter input that is absent.
    #[error("has no {0}")]
    NoParam(&'static str),
    /// A parameter computed from the graph's input.
    #[error("its {what} `{name}` is computed from the graph's input, not a constant")]
    ParamFromData {
        /// Which parameter.
        what: &'static str,
        /// The value's name.
        name: String,
    },
    /// A parameter that is not floating point.
    #[error("its {what} `{name}` is not floating point")]
    ParamNotFloat {
        /// Which parameter.
        what: &'static str,
        /// The value's name.
        name: String,
    },
    /// A parameter that is not one value per channel.
    #[error("its {what} `{name}` of shape {dims:?} is not one value per channel of {shape:?}")]
    NotPerChannel {
        /// Which parameter.
        what: &'static str,
        /// The value's name.
        name: String,
        /// Its shape.
        dims: Vec<usize>,
        /// The activation's shape (one sample).
        shape: Vec<usize>,
    },
    /// A batch norm parameter of another length than the channels.
    #[error("its {what} `{name}` has {got} values for {channels} channels")]
    NormLength {
        /// Which parameter.
        what: &'static str,
        /// The value's name.
        name: String,
        /// Its length.
        got: usize,
        /// The channels.
        channels: usize,
    },
    /// Batch norm statistics that do not define a normalization.
    #[error(transparent)]
    Norm(#[from] NormError),

    // Ops.
    /// An op in training mode.
    #[error("in training mode (only inference is supported)")]
    Training,
    /// A batch norm in training mode, or not spatial.
    #[error("in training mode or not spatial (only inference is supported)")]
    NormTraining,
    /// A PReLU whose slope is the data.
    #[error("the slope is the data")]
    SlopeIsData,
    /// A GELU approximation the calculus does not know.
    #[error("the `{0}` approximation of GELU is not supported (only the exact one)")]
    ApproximateGelu(String),
    /// A softmax inside the network on more than one axis.
    #[error("a softmax inside the network is read on a flat activation only")]
    SoftmaxNotFlat,
    /// A trailing softmax over the batch axis.
    #[error("a softmax over the batch axis")]
    SoftmaxOverBatch,
    /// Pooling of anything but a 2-D activation.
    #[error("pools 2-D activations only, receives {0:?}")]
    Pool2d(Vec<usize>),
    /// A mean over other axes than the spatial ones.
    #[error("a mean over other axes than the two spatial ones is not supported")]
    MeanAxes,
    /// A flatten from another axis than 1.
    #[error("a flatten from axis {0} (only axis 1 keeps the batch)")]
    FlattenAxis(usize),
    /// A reshape that is not a flatten.
    #[error(
        "a reshape of [batch, {}] to {target:?} is not a flatten [batch, {total}]",
        .shape.iter().map(usize::to_string).collect::<Vec<_>>().join(", ")
    )]
    NotAFlatten {
        /// The activation's shape (one sample).
        shape: Vec<usize>,
        /// The target (unknown entries as `None`).
        target: Vec<Option<i64>>,
        /// The sample's size.
        total: usize,
    },
    /// A squeeze that is not a flatten of `[batch, C, 1, ..]`.
    #[error("only a squeeze of [batch, C, 1, ..] to [batch, C] is read")]
    SqueezeNotFlatten,
    /// A constant minus, or divided by, the activation.
    #[error(
        "a constant {} the activation is not homogeneous",
        if *.minus { "minus" } else { "divided by" }
    )]
    NotHomogeneous {
        /// `Sub` (else `Div`).
        minus: bool,
    },
    /// A division by a zero constant.
    #[error("a division by zero")]
    DivisionByZero,
    /// A matrix product or convolution whose activation is not its first operand.
    #[error("the activation must be the first operand")]
    ActivationNotFirst,
    /// A matrix product of an activation that is not flat.
    #[error("takes [batch, features], receives [batch, {0:?}] (flatten it first)")]
    NotFlat(Vec<usize>),
    /// A `Gemm` with `transA = 1`.
    #[error("transA = 1 is not supported (the batch must be the rows)")]
    TransA,
    /// A `Gemm` with a zero or non-finite `alpha`, or a non-finite `beta`.
    #[error("alpha = {alpha}, beta = {beta}")]
    GemmScalars {
        /// `alpha`.
        alpha: f64,
        /// `beta`.
        beta: f64,
    },
    /// A matrix product's weight that is not a matrix.
    #[error("a weight `{name}` of shape {dims:?}, not a matrix")]
    NotAMatrix {
        /// The weight.
        name: String,
        /// Its shape.
        dims: Vec<usize>,
    },
    /// A matrix product's weight for another number of inputs.
    #[error("a weight `{name}` of shape {dims:?} for {features} input features")]
    WeightInputs {
        /// The weight.
        name: String,
        /// Its shape.
        dims: Vec<usize>,
        /// The activation's features.
        features: usize,
    },
    /// A convolution's weight of another rank than 1-D and 2-D convolutions have.
    #[error("a weight `{name}` of shape {dims:?}: 1-D and 2-D convolutions are read")]
    ConvWeight {
        /// The weight.
        name: String,
        /// Its shape.
        dims: Vec<usize>,
    },
    /// A convolution of an activation with another number of spatial axes.
    #[error("a {spatial}-D convolution of an activation of shape {shape:?}")]
    ConvInput {
        /// The convolution's spatial axes.
        spatial: usize,
        /// The activation's shape (one sample).
        shape: Vec<usize>,
    },
    /// An attribute with values the op does not take (`strides`, `dilations`).
    #[error("{name} {values:?}")]
    Attribute {
        /// The attribute.
        name: &'static str,
        /// Its values.
        values: Vec<i64>,
    },
    /// A `kernel_shape` that disagrees with the weight.
    #[error("kernel_shape {kernel:?} but a weight of shape {dims:?}")]
    KernelShape {
        /// The attribute.
        kernel: Vec<i64>,
        /// The weight's shape.
        dims: Vec<usize>,
    },
    /// Groups that do not divide the output channels.
    #[error("group {groups} for {out} output channels")]
    Groups {
        /// The attribute.
        groups: i64,
        /// The output channels.
        out: usize,
    },
    /// A convolution's bias of the wrong length.
    #[error("a bias of shape {dims:?} for {out} channels")]
    BiasShape {
        /// The bias's shape.
        dims: Vec<usize>,
        /// The output channels.
        out: usize,
    },
    /// `pads` of the wrong length, or negative.
    #[error("pads {pads:?} for {spatial} spatial axes")]
    Pads {
        /// The attribute.
        pads: Vec<i64>,
        /// The spatial axes.
        spatial: usize,
    },
    /// Padding that differs between the two sides.
    #[error("asymmetric padding {0:?} (the calculus pads both sides alike)")]
    AsymmetricPads(Vec<i64>),
    /// `auto_pad` `SAME_*` padding one side more than the other.
    #[error("{0} pads one side more than the other here")]
    SameUneven(String),
    /// An `auto_pad` mode this reader does not know.
    #[error("auto_pad {0:?}")]
    AutoPad(String),
    /// Pooling without a kernel of two positive sizes.
    #[error("needs a kernel_shape of two positive sizes")]
    PoolKernel,
    /// Dilated pooling.
    #[error("dilated pooling is not supported")]
    DilatedPool,
    /// Pooling with `ceil_mode = 1`.
    #[error("ceil_mode = 1 is not supported")]
    CeilMode,
    /// Average pooling that leaves the padding out of the count.
    #[error(
        "count_include_pad = 0 with padding is not supported (the calculus counts the padding, \
         as PyTorch does by default)"
    )]
    CountIncludePad,
}

/// What the arithmetic on constants (shapes, indices, reshape targets) refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ConstFault {
    /// An axis outside `-rank..rank`.
    #[error("axis {axis} is out of range for rank {rank}")]
    Axis {
        /// The axis as given.
        axis: i64,
        /// The rank.
        rank: usize,
    },
    /// A value that should be an integer.
    #[error("{0} is not an integer")]
    NotAnInteger(String),
    /// A value that is unknown where it must be known.
    #[error("a value that is not known (a dynamic size) where it must be")]
    Unknown,
    /// An axis given twice.
    #[error("repeated axes {0:?}")]
    RepeatedAxes(Vec<i64>),
    /// A squeezed axis that is not of size 1.
    #[error("axis {axis} of {shape:?} is not of size 1")]
    NotSqueezable {
        /// The axis.
        axis: usize,
        /// The shape.
        shape: Vec<usize>,
    },
    /// Nothing to concatenate.
    #[error("nothing to concatenate")]
    EmptyConcat,
    /// Shapes that do not concatenate.
    #[error("shapes {a:?} and {b:?} do not concatenate on axis {axis}")]
    Concat {
        /// The first shape.
        a: Vec<usize>,
        /// Another.
        b: Vec<usize>,
        /// The axis.
        axis: usize,
    },
    /// An index out of range.
    #[error("index {index} is out of range for {len}")]
    Index {
        /// The index.
        index: i64,
        /// The axis's length.
        len: i64,
    },
    /// Slice arguments of different lengths.
    #[error("starts, ends and axes differ in length")]
    SliceLengths,
    /// A slice step of 0.
    #[error("a slice step of 0")]
    SliceStep,
    /// A constant past the size limit.
    #[error("a constant of shape {shape:?} is more than {limit} elements")]
    TooLarge {
        /// The shape.
        shape: Vec<usize>,
        /// The limit.
        limit: usize,
    },
    /// A shape whose size overflows.
    #[error("the shape overflows")]
    Overflow,
    /// A reshape target entry this reader does not take.
    #[error("a reshape target {0:?}")]
    ReshapeTarget(Vec<i64>),
    /// A reshape `0` copying an axis the input does not have.
    #[error("0 copies a missing axis")]
    ZeroCopiesMissing,
    /// Sizes that do not reshape.
    #[error("{shape:?} does not reshape to {target:?}")]
    Reshape {
        /// The shape.
        shape: Vec<usize>,
        /// The target.
        target: Vec<i64>,
    },
    /// Shapes that do not broadcast.
    #[error("shapes {a:?} and {b:?} do not broadcast")]
    Broadcast {
        /// One shape.
        a: Vec<usize>,
        /// The other.
        b: Vec<usize>,
    },
    /// Another error of the arithmetic (a type it does not compute in).
    #[error("{0}")]
    Type(&'static str),
}

/// What is wrong with the model as a whole ([`OnnxError::Model`](super::OnnxError::Model)).
#[derive(Debug, Clone, PartialEq, Error)]
#[non_exhaustive]
pub enum ModelFault {
    /// No graph.
    #[error("the model has no graph")]
    NoGraph,
    /// No version of the default opset.
    #[error("the model imports no version of the default opset")]
    NoOpset,
    /// An opset before 7.
    #[error("opset {0}: opset 7 or later is needed (re-export the model)")]
    OldOpset(i64),
    /// Two initializers of one name, or one without a name.
    #[error("two initializers named {0:?} (or one without a name)")]
    DuplicateInitializer(String),
    /// Not exactly one data input.
    #[error(
        "{0} graph inputs besides the initializers: the canonical form reads a model with one input"
    )]
    Inputs(usize),
    /// Not exactly one output.
    #[error("{0} graph outputs: the canonical form reads a model with one output")]
    Outputs(usize),
    /// An input that is not a tensor.
    #[error("the graph input `{0}` is not a tensor")]
    InputNotTensor(String),
    /// An input that is not floating point.
    #[error("the graph input `{input}` is {dtype}, not floating point")]
    InputNotFloat {
        /// The input.
        input: String,
        /// Its element type.
        dtype: String,
    },
    /// An input without a shape.
    #[error("the graph input `{0}` has no shape (export it with one)")]
    InputNoShape(String),
    /// An input of another rank than the calculus reads.
    #[error(
        "the graph input `{input}` has rank {rank}: [batch, features], [batch, channels, length] \
         or [batch, channels, height, width] is needed"
    )]
    InputRank {
        /// The input.
        input: String,
        /// Its rank.
        rank: usize,
    },
    /// An input whose sample axes are not known sizes.
    #[error(
        "the graph input `{input}` has shape {dims:?}: every axis but the batch must be a known \
         size"
    )]
    InputShape {
        /// The input.
        input: String,
        /// Its dimensions (unknown as `None`).
        dims: Vec<Option<i64>>,
    },
    /// An output no node computes.
    #[error("the graph output `{0}` is computed by no node")]
    OutputNotComputed(String),
    /// The graph's input where a constant is needed.
    #[error("`{0}` is the graph's input, not a constant")]
    InputNotConstant(String),
    /// A value no node computes.
    #[error("`{0}` is computed by no node")]
    NotComputed(String),
    /// Writing: the network has no layer of a binding's kind at its position.
    #[error("node {0}: the network written has no layer of its kind at its position")]
    NoLayer(String),
    /// Writing: a binding's node is not in the model.
    #[error("node {0}: not in the model written to")]
    NoNode(String),
    /// Writing: another number of values than the parameter holds.
    #[error("node {node}: {got} values for `{name}` of shape {dims:?}")]
    ValueCount {
        /// The node.
        node: String,
        /// The values given.
        got: usize,
        /// The parameter.
        name: String,
        /// Its shape.
        dims: Vec<i64>,
    },
    /// Writing: an output scale of the wrong length.
    #[error("{got} scale entries for {channels} output channels")]
    ScaleLength {
        /// Its length.
        got: usize,
        /// The output channels.
        channels: usize,
    },
    /// Writing: the scale's name is taken.
    #[error("the name `{0}` is taken in the graph")]
    NameTaken(String),
    /// Writing: the node computing the output is gone.
    #[error("the node computing the output is not in the model")]
    NoOutputNode,
    /// Writing: a model beyond protobuf's 2 GiB.
    #[error("the model written would be {0} bytes, beyond protobuf's 2 GiB")]
    TooLarge(usize),
}

/// What is wrong with a tensor (an initializer or a constant)
/// ([`OnnxError::Tensor`](super::OnnxError::Tensor)).
#[derive(Debug, Clone, Error)]
#[non_exhaustive]
pub enum TensorFault {
    /// External data without a location.
    #[error("external data without a `location`")]
    NoLocation,
    /// An external location that is not a relative path under the model's directory.
    #[error("external data location {0:?} must be a relative path under the model's directory")]
    LocationNotRelative(String),
    /// External data for a model read from bytes, with no directory.
    #[error("external data, but no directory to read it from")]
    NoDirectory,
    /// An external location that leads out of the model's directory (through a link).
    #[error("external data location {0:?} leads out of the model's directory")]
    LocationEscapes(String),
    /// An external `offset` or `length` that is not a size.
    #[error("external data `{key}` {value:?} is not a size")]
    NotASize {
        /// The entry.
        key: String,
        /// Its value.
        value: String,
    },
    /// An external `length` that differs from the tensor's size.
    #[error("external data of {got} bytes for a tensor of {want} bytes")]
    ExternalLength {
        /// The length given.
        got: u64,
        /// The tensor's size in bytes.
        want: usize,
    },
    /// The external file could not be read.
    #[error("{0}")]
    ExternalFile(#[source] Box<super::OnnxError>),
    /// External data past the end of its file.
    #[error(
        "external data at offset {offset} ({len} bytes) runs past the end of {file} ({size} bytes)"
    )]
    PastEnd {
        /// The offset.
        offset: u64,
        /// The length.
        len: usize,
        /// The file.
        file: String,
        /// Its size.
        size: usize,
    },
    /// A negative dimension.
    #[error("a negative dimension in {0:?}")]
    NegativeDim(Vec<i64>),
    /// A shape whose size overflows.
    #[error("the shape {0:?} overflows")]
    ShapeOverflow(Vec<i64>),
    /// An element type that is not numeric.
    #[error("{0} is not a numeric type")]
    NotNumeric(String),
    /// A segment of a tensor.
    #[error("a segment of a tensor is not supported")]
    Segment,
    /// A size in bytes that overflows.
    #[error("its size overflows")]
    SizeOverflow,
    /// Raw data of another size than the shape.
    #[error("{bytes} bytes of data for {elements} elements of {dtype}")]
    DataLength {
        /// The bytes given.
        bytes: usize,
        /// The elements of the shape.
        elements: usize,
        /// The element type.
        dtype: String,
    },
    /// Typed data of another length than the shape.
    #[error("{values} values for a shape of {elements} elements")]
    ValueCount {
        /// The values given.
        values: usize,
        /// The elements of the shape.
        elements: usize,
    },
    /// A tensor that must hold integers and does not.
    #[error("{0}, not an integer")]
    NotInteger(String),
    /// A tensor that must be floating point and is not.
    #[error("{0}, not floating point")]
    NotFloat(String),
    /// NaN or infinity.
    #[error("holds NaN or infinity")]
    NonFinite,
    /// A weight-norm `v` with a slice of norm zero: its direction is undefined (the graph
    /// itself computes NaN there).
    #[error("its weight norm's v has a slice ({0}) of norm 0, whose direction is undefined")]
    ZeroNorm(usize),
    /// A canonical value beyond the range of the tensor's type.
    #[error("the canonical value {value:e} exceeds the range of {dtype}")]
    Range {
        /// The value.
        value: f64,
        /// The element type.
        dtype: String,
    },
}
