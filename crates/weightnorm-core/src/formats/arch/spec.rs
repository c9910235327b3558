//! The architecture file's schema: one serde type per layer op, the op list in one place.
//!
//! ```json
//! {"input": [784], "layers": [{"op": "linear", "param": "0"}, {"op": "relu"},
//!                             {"op": "linear", "param": "2"}]}
//! ```
//!
//! A number or a list of one number per spatial axis is accepted wherever a size is per axis
//! ([`PerAxis`]). Fields left out take the defaults documented on each variant.

use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An architecture file: one input sample's shape and the layers, in order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchSpec {
    /// One sample's shape: `[features]`, `[channels, length]` or `[channels, height, width]`.
    pub input: Vec<usize>,
    /// The layers.
    pub layers: Vec<LayerSpec>,
}

/// A size given once for every spatial axis, or once per axis.
#[derive(Clone, Debug, PartialEq)]
pub enum PerAxis {
    /// The same size on every axis.
    One(usize),
    /// One size per axis.
    Each(Vec<usize>),
}

impl PerAxis {
    /// The sizes for `n` axes (`None` if a list has another length).
    pub fn resolve(&self, n: usize) -> Option<Vec<usize>> {
        match self {
            Self::One(x) => Some(vec![*x; n]),
            Self::Each(v) => (v.len() == n).then(|| v.clone()),
        }
    }
}

impl From<usize> for PerAxis {
    fn from(x: usize) -> Self {
        Self::One(x)
    }
}

impl Serialize for PerAxis {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::One(x) => s.serialize_u64(*x as u64),
            Self::Each(v) => v.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for PerAxis {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = PerAxis;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a non-negative integer or a list of them, one per axis")
            }
            fn visit_u64<E: de::Error>(self, x: u64) -> Result<PerAxis, E> {
                usize::try_from(x)
                    .map(PerAxis::One)
                    .map_err(|_| E::custom(format!("{x} is too large")))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<PerAxis, A::Error> {
                let mut v = Vec::new();
                while let Some(x) = seq.next_element::<usize>()? {
                    v.push(x);
                }
                Ok(PerAxis::Each(v))
            }
        }
        d.deserialize_any(V)
    }
}

/// A convolution's fields (`conv1d`, `conv2d`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConvSpec {
    /// The key prefix of its tensors (`<param>.weight`, `<param>.bias`); default: its position.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub param: Option<String>,
    /// Stride (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stride: Option<PerAxis>,
    /// Zero padding on both sides (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub padding: Option<PerAxis>,
    /// Dilation (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dilation: Option<PerAxis>,
    /// Channel groups (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups: Option<usize>,
}

/// A pooling layer's fields (`max_pool2d`, `avg_pool2d`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolSpec {
    /// The window (required).
    pub kernel: PerAxis,
    /// The step (default: the window).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stride: Option<PerAxis>,
    /// Padding on both sides (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub padding: Option<PerAxis>,
}

/// One layer of an architecture file, tagged by its `op`. Unknown ops and unknown fields are
/// refused.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum LayerSpec {
    /// `y = W x + b` (PyTorch `Linear`: weight `[out, in]`).
    Linear {
        /// The key prefix of its tensors; default: its position (`"3"`, `"4.body.0"`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        param: Option<String>,
    },
    /// A 1-D convolution (weight `[out, in / groups, k]`).
    Conv1d(ConvSpec),
    /// A 2-D convolution (weight `[out, in / groups, kh, kw]`).
    Conv2d(ConvSpec),
    /// `max(x, 0)`.
    Relu {},
    /// `x` for `x >= 0`, `negative_slope * x` otherwise.
    LeakyRelu {
        /// The slope for negative inputs (default 0.01).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        negative_slope: Option<f64>,
    },
    /// `x`.
    Identity {},
    /// Dropout: the identity at inference.
    Dropout {
        /// The training-time probability (ignored).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        p: Option<f64>,
    },
    /// 2-D max pooling.
    MaxPool2d(PoolSpec),
    /// 2-D average pooling (zero padding counted).
    AvgPool2d(PoolSpec),
    /// Flattens `[C, ..]` channel-major.
    Flatten {},
    /// Batch norm in evaluation mode (tensors `weight`, `bias`, `running_mean`, `running_var`).
    BatchNorm {
        /// The key prefix of its tensors; default: its position.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        param: Option<String>,
        /// The epsilon under the square root (default 1e-5).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        eps: Option<f64>,
    },
    /// Mean-only batch norm in evaluation mode (tensors `bias`, `running_mean`).
    MeanOnlyBatchNorm {
        /// The key prefix of its tensors; default: its position.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        param: Option<String>,
    },
    /// `tanh(x)` (a barrier).
    Tanh {},
    /// `1 / (1 + exp(-x))` (a barrier).
    Sigmoid {},
    /// The exact GELU (a barrier).
    Gelu {
        /// Only `"none"` (the exact, erf form) is supported.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        approximate: Option<String>,
    },
    /// WaveNet's gate `tanh(a) * sigmoid(b)` over the two halves of the channels (a barrier).
    Gate {},
    /// `y = x + body(x)`.
    Residual {
        /// The body's layers.
        body: Vec<LayerSpec>,
    },
}

impl LayerSpec {
    /// The op name, as written in the file.
    pub fn op(&self) -> &'static str {
        match self {
            Self::Linear { .. } => "linear",
            Self::Conv1d(_) => "conv1d",
            Self::Conv2d(_) => "conv2d",
            Self::Relu {} => "relu",
            Self::LeakyRelu { .. } => "leaky_relu",
            Self::Identity {} => "identity",
            Self::Dropout { .. } => "dropout",
            Self::MaxPool2d(_) => "max_pool2d",
            Self::AvgPool2d(_) => "avg_pool2d",
            Self::Flatten {} => "flatten",
            Self::BatchNorm { .. } => "batch_norm",
            Self::MeanOnlyBatchNorm { .. } => "mean_only_batch_norm",
            Self::Tanh {} => "tanh",
            Self::Sigmoid {} => "sigmoid",
            Self::Gelu { .. } => "gelu",
            Self::Gate {} => "gate",
            Self::Residual { .. } => "residual",
        }
    }

    /// The key prefix of the layer's tensors, for the layers that have tensors.
    pub fn param(&self) -> Option<&Option<String>> {
        match self {
            Self::Linear { param }
            | Self::BatchNorm { param, .. }
            | Self::MeanOnlyBatchNorm { param } => Some(param),
            Self::Conv1d(c) | Self::Conv2d(c) => Some(&c.param),
            _ => None,
        }
    }
}
