//! The architecture-file front-end of the canonical form: an architecture file (JSON) and a
//! PyTorch checkpoint in, a [`Network`] and the checkpoint keys of its layers ([`Binding`]s)
//! out; canonical weights back to checkpoint tensors under the same keys.
//!
//! The architecture file names PyTorch `nn.Sequential` modules ([`spec`] is its schema):
//!
//! ```json
//! {"input": [784], "layers": [{"op": "linear", "param": "0"}, {"op": "relu"},
//!                             {"op": "linear", "param": "2"}]}
//! ```
//!
//! Ops: `linear`; `conv1d`, `conv2d` (`stride`, `padding`, `dilation`: a number or one per axis;
//! `groups`); `relu`; `leaky_relu` (`negative_slope`, default 0.01); `identity`; `dropout`
//! (`p`, ignored: inference); `max_pool2d`, `avg_pool2d` (`kernel`, `stride` (default the
//! kernel), `padding`); `flatten`; `batch_norm` (`param`, `eps`, default 1e-5);
//! `mean_only_batch_norm` (`param`); `tanh`; `sigmoid`; `gelu`; `gate` (WaveNet's
//! `tanh(a) * sigmoid(b)` over the two halves of the channels); `residual` (`body`: a list of
//! layers, `y = x + body(x)`). `param` is the key prefix of the layer's tensors
//! (`<param>.weight`, `<param>.bias`, `<param>.running_mean`, ..., in PyTorch's layout); it
//! defaults to the layer's position (`"3"`, `"4.body.0"`).
//!
//! The calculus ([`crate::canonical`]) never sees a key: [`from_arch`] returns the network and,
//! beside it, one [`Binding`] per layer with tensors, and [`to_tensors`] writes through them.

mod read;
pub mod spec;
mod write;

use thiserror::Error;

use crate::canonical::{CanonicalError, LayerPath, Namer, Network, Real, path_name};

pub use read::{from_arch, from_spec, parse_arch};

pub use spec::{ArchSpec, LayerSpec};
pub use write::{CANONICAL_SCALE_KEY, to_tensors, vector_entry};

/// Why an architecture file and a checkpoint could not be read or written as a network.
#[derive(Debug, Clone, Error)]
#[non_exhaustive]
pub enum ArchError {
    /// The file is not a JSON object.
    #[error("architecture: must be a JSON object with `input` and `layers`")]
    NotAnObject,
    /// A top-level field other than `input` and `layers`.
    #[error("architecture: unknown field `{0}` (expected `input` and `layers`)")]
    UnknownField(String),
    /// `input` is not one sample's shape.
    #[error(
        "architecture: `input` must be one sample's shape: 1 to 3 positive integers \
         ([features], [channels, length] or [channels, height, width])"
    )]
    BadInput,
    /// An input shape the calculus refuses (more than 2^32 values per sample).
    #[error("architecture: {0}")]
    Input(CanonicalError),
    /// `layers` is not a list.
    #[error("architecture: `layers` must be a list")]
    LayersNotAList,
    /// An extra tensor repeats a key of the checkpoint.
    #[error("architecture: the checkpoint already holds `{0}`")]
    DuplicateKey(String),
    /// A layer's description or tensors are wrong.
    #[error("layer {} ({op}): {fault}", path_name(at))]
    Layer {
        /// The layer's position (`[3]`, `[4, 0]`: named `"3"`, `"4.body.0"`, the place in the
        /// file's `layers`).
        at: Vec<usize>,
        /// Its op, as the file names it (`?` where it names none).
        op: String,
        /// What is wrong.
        fault: ArchFault,
    },
    /// The layers do not fit together.
    #[error(transparent)]
    Network(#[from] CanonicalError),
}

/// What is wrong with one layer of an architecture file or its tensors
/// ([`ArchError::Layer`]).
#[derive(Debug, Clone, Error)]
#[non_exhaustive]
pub enum ArchFault {
    /// The layer is not a JSON object.
    #[error("must be a JSON object with an `op`")]
    NotAnObject,
    /// The layer names no op.
    #[error("has no `op` string")]
    NoOp,
    /// A residual block whose body is not a list.
    #[error("`body` must be a list of layers")]
    BodyNotAList,
    /// The layer's fields do not fit its op's schema (serde's message, with `unknown op` for an
    /// op the format does not have).
    #[error("{0}")]
    Schema(String),
    /// A per-axis value that is not one integer or a list of one per axis.
    #[error("`{key}` must be an integer or a list of {axes} integers, each at least {min}")]
    PerAxis {
        /// The field.
        key: &'static str,
        /// The spatial axes.
        axes: usize,
        /// The smallest value allowed.
        min: usize,
    },
    /// A field the op needs.
    #[error("`{0}` is required")]
    Required(&'static str),
    /// A number that is not finite.
    #[error("`{0}` must be a finite number")]
    NotFinite(&'static str),
    /// A tensor the layer needs is not in the checkpoint.
    #[error("the checkpoint has no tensor `{0}`")]
    MissingTensor(String),
    /// A tensor that is not floating point.
    #[error("`{key}`: a {dtype} tensor, not floating point")]
    NotFloat {
        /// The tensor.
        key: String,
        /// Its dtype.
        dtype: String,
    },
    /// A tensor whose bytes could not be read.
    #[error("`{key}`: {source}")]
    Unreadable {
        /// The tensor.
        key: String,
        /// What the reader said.
        #[source]
        source: std::sync::Arc<crate::formats::TorchError>,
    },
    /// A tensor holding NaN or infinity.
    #[error("`{0}` holds NaN or infinity")]
    NonFinite(String),
    /// A vector of the wrong shape.
    #[error("`{key}` has shape {shape:?}, expected [{}]", .len.map_or("n".to_string(), |n| n.to_string()))]
    VectorShape {
        /// The tensor.
        key: String,
        /// Its shape.
        shape: Vec<usize>,
        /// The length it must have, where one is known.
        len: Option<usize>,
    },
    /// A weight of the wrong rank for its layer.
    #[error(
        "`{key}` has shape {shape:?}, expected a rank-{rank} weight (output units on axis \
         {output}, input units on axis {input})"
    )]
    WeightRank {
        /// The tensor.
        key: String,
        /// Its shape.
        shape: Vec<usize>,
        /// The rank the layer's weight has.
        rank: usize,
        /// The output units' axis.
        output: usize,
        /// The input units' axis.
        input: usize,
    },
    /// A weight with an axis of size zero.
    #[error("`{key}` has an empty axis: {shape:?}")]
    EmptyAxis {
        /// The tensor.
        key: String,
        /// Its shape.
        shape: Vec<usize>,
    },
    /// A GELU other than the exact one.
    #[error("only the exact GELU (`approximate`: \"none\") is supported")]
    ApproximateGelu,
    /// A convolution with zero groups.
    #[error("`groups` must be at least 1")]
    ZeroGroups,
    /// Output channels that do not split into the groups.
    #[error("{out} output channels do not split into {groups} groups")]
    Groups {
        /// The output channels.
        out: usize,
        /// The groups.
        groups: usize,
    },
    /// Statistics that do not define a normalization.
    #[error(transparent)]
    Norm(#[from] crate::canonical::NormError),
    /// A binding that does not fit the network's layer when writing back.
    #[error("the binding of `{0}` does not fit this layer")]
    BindingMismatch(String),
    /// The checkpoint lacks a tensor to hold the canonical values.
    #[error("the checkpoint has no `{0}` to hold the canonical values")]
    NoPlace(String),
}

/// What a layer with tensors is in the checkpoint, beyond what the calculus needs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum BindingKind {
    /// A linear layer or convolution: `weight`, `bias`.
    Weighted,
    /// A batch norm: `weight`, `bias`, `running_mean`, `running_var` (and its `eps`, with which
    /// an affine map is written back as `running_var = 1 - eps`).
    BatchNorm {
        /// The epsilon under the square root.
        eps: f64,
    },
    /// A mean-only batch norm: `bias`, `running_mean`.
    MeanOnlyBatchNorm,
}

/// Where a layer's tensors live in the checkpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct Binding {
    /// The layer's position in the network.
    pub path: Vec<usize>,
    /// The key prefix of its tensors (`<prefix>.weight`, ...).
    pub prefix: String,
    /// What it is in the checkpoint.
    pub kind: BindingKind,
}

/// A network read from an architecture file, with the checkpoint keys of its layers.
#[derive(Clone, Debug, PartialEq)]
pub struct ArchNetwork<T: Real = f64> {
    /// The network.
    pub network: Network<T>,
    /// One binding per layer with tensors, in order.
    pub bindings: Vec<Binding>,
}

impl<T: Real> ArchNetwork<T> {
    /// The key prefix of the layer at `path`, if it has tensors.
    pub fn prefix(&self, path: &LayerPath) -> Option<&str> {
        self.bindings
            .iter()
            .find(|b| b.path == path)
            .map(|b| b.prefix.as_str())
    }

    /// The architecture file's names for positions: the layer's index path (`"3"`,
    /// `"4.body.0"`), with its tensors' key prefix where it has tensors (`"3 (`features.3`)"`).
    pub fn namer(&self) -> impl Namer + '_ {
        move |path: &LayerPath| match self.prefix(path) {
            Some(p) if p != path_name(path) => format!("{} (`{p}`)", path_name(path)),
            _ => path_name(path),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use safetensors::Dtype;
    use serde_json::json;

    use super::*;
    use crate::canonical::{Agreement, canonicalize, verify};
    use crate::formats::TensorEntry;

    fn entry(name: &str, shape: Vec<usize>, values: &[f32]) -> TensorEntry {
        TensorEntry::from_bytes(
            name,
            Dtype::F32,
            shape,
            bytemuck::cast_slice(values).to_vec(),
        )
        .unwrap()
    }

    /// Deterministic values in (-1, 1).
    fn vals(n: usize, seed: usize) -> Vec<f32> {
        (0..n)
            .map(|i| ((i * 7919 + seed * 104_729) as f32 * 0.618_034).sin())
            .collect()
    }

    fn small_checkpoint() -> Vec<TensorEntry> {
        let mut seed = 0;
        let mut v = |n: usize| {
            seed += 1;
            vals(n, seed)
        };
        vec![
            entry("0.weight", vec![4, 2, 3, 3], &v(72)),
            entry("1.weight", vec![4], &v(4)),
            entry("1.bias", vec![4], &v(4)),
            entry("1.running_mean", vec![4], &v(4)),
            entry(
                "1.running_var",
                vec![4],
                &v(4).iter().map(|x| x.abs() + 0.5).collect::<Vec<_>>(),
            ),
            TensorEntry::from_bytes("1.num_batches_tracked", Dtype::I64, vec![], vec![7; 8])
                .unwrap(),
            entry("3.body.0.weight", vec![4, 4, 1, 1], &v(16)),
            entry("3.body.0.bias", vec![4], &v(4)),
            entry("6.weight", vec![3, 16], &v(48)),
            entry("6.bias", vec![3], &v(3)),
        ]
    }

    fn small_arch() -> serde_json::Value {
        json!({"input": [2, 6, 6], "layers": [
            {"op": "conv2d", "padding": 1},
            {"op": "batch_norm"},
            {"op": "relu"},
            {"op": "residual", "body": [{"op": "conv2d"}]},
            {"op": "max_pool2d", "kernel": 3},
            {"op": "flatten"},
            {"op": "linear"}
        ]})
    }

    #[test]
    fn from_an_architecture_file_and_back_to_tensors() {
        let tensors = small_checkpoint();
        let read: ArchNetwork<f32> = from_arch(&small_arch(), &tensors).unwrap();
        let net = read.network.clone();
        assert_eq!(net.output_shape(), vec![3]);
        let prefixes: Vec<&str> = read.bindings.iter().map(|b| b.prefix.as_str()).collect();
        assert_eq!(prefixes, ["0", "1", "3.body.0", "6"]);
        assert_eq!(read.prefix(&[3, 0]), Some("3.body.0"));
        assert_eq!(read.bindings[1].kind, BindingKind::BatchNorm { eps: 1e-5 });
        let c = canonicalize(net.clone()).unwrap();
        let scale = vector_entry(CANONICAL_SCALE_KEY, c.scale(), Dtype::F32).unwrap();
        let out = to_tensors(
            Arc::new(c.network().clone()),
            &read.bindings,
            &tensors,
            vec![scale],
        )
        .unwrap();
        let names: Vec<&str> = out.iter().map(|t| t.name.as_str()).collect();
        let mut expected: Vec<&str> = tensors.iter().map(|t| t.name.as_str()).collect();
        expected.push(CANONICAL_SCALE_KEY);
        assert_eq!(names, expected, "same keys, same order, plus the scale");
        // Untouched tensors are kept bit for bit; the folded norm reads as a shift.
        assert_eq!(out[5].bytes().unwrap().as_ref(), &[7u8; 8]);
        let var: Vec<f32> = bytemuck::pod_collect_to_vec(&out[4].bytes().unwrap());
        assert!(var.iter().all(|&v| v == (1.0 - 1e-5f64) as f32));
        // Reading the canonical checkpoint gives the canonical network's function.
        let reread: ArchNetwork<f32> = from_arch(&small_arch(), &out).unwrap();
        let xs: Vec<Vec<f64>> = (0..3)
            .map(|k| {
                vals(72, 50 + k)
                    .iter()
                    .map(|&x| f64::from(x) * 2.0)
                    .collect()
            })
            .collect();
        let a = Agreement::between(&c.network().forward(&xs), &reread.network.forward(&xs));
        assert!(a.max_rel_error < 1e-6, "{a:?}");
        assert!(verify(&net, &c, &xs).max_rel_error < 1e-5);
    }

    #[test]
    fn the_schema_round_trips_through_serde() {
        let spec = parse_arch(&small_arch()).unwrap();
        let written = serde_json::to_value(&spec).unwrap();
        assert_eq!(parse_arch(&written).unwrap(), spec);
        assert_eq!(written["layers"][0], json!({"op": "conv2d", "padding": 1}));
        assert_eq!(written["layers"][3]["body"][0], json!({"op": "conv2d"}));
        // The derived reader agrees with the one that names layers in errors.
        let derived: ArchSpec = serde_json::from_value(small_arch()).unwrap();
        assert_eq!(derived, spec);
    }

    #[test]
    fn a_binding_that_does_not_fit_is_refused() {
        let tensors = small_checkpoint();
        let read: ArchNetwork<f32> = from_arch(&small_arch(), &tensors).unwrap();
        let mut bindings = read.bindings.clone();
        bindings[0].path = vec![2];
        let e = to_tensors(Arc::new(read.network), &bindings, &tensors, Vec::new()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "layer 2 (relu): the binding of `0` does not fit this layer"
        );
    }

    #[test]
    fn bad_architectures_name_the_layer() {
        let tensors = small_checkpoint();
        let err =
            |arch: serde_json::Value| from_arch::<f32>(&arch, &tensors).unwrap_err().to_string();
        let mut a = small_arch();
        a["layers"][2]["op"] = json!("swish");
        let e = err(a);
        assert!(e.starts_with("layer 2 (swish): unknown op `swish`"), "{e}");
        let mut a = small_arch();
        a["layers"][6]["param"] = json!("9");
        assert!(err(a).contains("layer 6 (linear): the checkpoint has no tensor `9.weight`"));
        let mut a = small_arch();
        a["layers"][4]["kernel"] = json!(2);
        let e = err(a);
        assert!(
            e.starts_with("layer 6 (linear): takes 16 inputs, receives 36"),
            "{e}"
        );
        let mut a = small_arch();
        a["layers"][4]["kernel"] = json!(0);
        assert!(err(a).starts_with("layer 4 (max_pool2d): a pooling kernel [0, 0]"));
        let mut a = small_arch();
        a["layers"][3]["body"] = json!([{"op": "conv2d"}, {"op": "max_pool2d", "kernel": 2}]);
        let e = err(a);
        assert!(e.starts_with("layer 3 (residual): the body produces shape [4, 3, 3] but the skip path carries [4, 6, 6]"), "{e}");
        let mut a = small_arch();
        a["layers"][0]["strides"] = json!(2);
        let e = err(a);
        assert!(
            e.starts_with("layer 0 (conv2d): unknown field `strides`"),
            "{e}"
        );
        let mut a = small_arch();
        a["layers"][3]["body"][0]["stride"] = json!("two");
        let e = err(a);
        assert!(
            e.starts_with("layer 3.body.0 (conv2d): invalid type"),
            "{e}"
        );
        let mut a = small_arch();
        a["layers"][0]["stride"] = json!([1, 1, 1]);
        let e = err(a);
        assert!(
            e.starts_with("layer 0 (conv2d): `stride` must be an integer or a list of 2"),
            "{e}"
        );
        let mut a = small_arch();
        a["layers"][2]["slope"] = json!(2);
        let e = err(a);
        assert!(
            e.starts_with("layer 2 (relu): unknown field `slope`"),
            "{e}"
        );
        let mut a = small_arch();
        a["layers"][1]["eps"] = json!(-1.0);
        let e = err(a);
        assert!(
            e.starts_with("layer 1 (batch_norm): `eps` must be finite"),
            "{e}"
        );
        assert!(err(json!({"layers": []})).starts_with("architecture: `input`"));
        assert!(err(json!({"input": [2], "layers": [], "x": 1})).contains("unknown field `x`"));
    }
}
