//! The models `train` and `compare` build, and their export in PyTorch's `nn.Sequential` layout.

use anyhow::Result;
use burn::module::Module;
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig, Relu};
use burn::tensor::{Device, Tensor};
use weightnorm::nn::{MeanOnlyBatchNorm, MeanOnlyBatchNormConfig};

use crate::cnn::{CnnClassifier, CnnClassifierConfig, CnnNorm};
use weightnorm::torch::arch::spec::{ConvSpec, PoolSpec};
use weightnorm::torch::arch::{ArchSpec, LayerSpec};
use weightnorm::torch::{Scheme, TensorEntry, save_module};
use weightnorm::{WeightNormConfig, apply_weight_norm, remove_weight_norm};

/// A parameterization.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Param {
    /// Plain weights.
    Plain,
    /// Plain weights trained with AdamW's decoupled weight decay (`--weight-decay`): the
    /// usual way to keep weights small, the baseline of Periodic Canonical Regularization.
    PlainWd,
    /// Weight normalization.
    Wn,
    /// Plain weights under Periodic Canonical Regularization (`--pcr-every`, `--pcr-penalty`,
    /// `--pcr-transport`): canonicalized every C steps, Adam's moments carried across.
    Pcr,
    /// Weight normalization and mean-only batch normalization (the paper's best).
    WnMobn,
    /// Batch normalization.
    Bn,
}

impl Param {
    /// The name on the command line and in outputs: `plain`, `plain-wd`, `wn`, `wn-mobn` or
    /// `bn`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Plain => "plain",
            Self::PlainWd => "plain-wd",
            Self::Wn => "wn",
            Self::Pcr => "pcr",
            Self::WnMobn => "wn-mobn",
            Self::Bn => "bn",
        }
    }

    /// Whether the optimizer decays the weights (AdamW rather than Adam).
    pub fn decays(self) -> bool {
        self == Self::PlainWd
    }

    /// Whether the parameterization normalizes weights (wn, wn-mobn).
    pub fn weight_norm(self) -> bool {
        matches!(self, Self::Wn | Self::WnMobn)
    }
}

/// A model kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ModelKind {
    /// An MLP with hidden layers 256 and 128.
    Mlp,
    /// A CNN: three 3x3 convolution stages (max pooling after the first two), then two linear
    /// layers; its weights parameterized as `--param` says (weight-normalized under `wn` and
    /// `wn-mobn`, plain otherwise).
    Cnn,
}

impl ModelKind {
    /// The name on the command line and in outputs: `mlp` or `cnn`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Mlp => "mlp",
            Self::Cnn => "cnn",
        }
    }
}

/// An MLP: `Linear -> [norm] -> ReLU` per hidden layer, then a Linear to the classes.
#[derive(Module, Debug)]
pub struct Mlp {
    /// The hidden layers, then the output layer.
    pub linears: Vec<Linear>,
    /// The batch norm after each hidden layer (`bn` only).
    pub bns: Vec<BatchNorm>,
    /// The mean-only batch norm after each hidden layer (`wn-mobn` only).
    pub mobns: Vec<MeanOnlyBatchNorm>,
    /// The activation.
    pub relu: Relu,
}

impl Mlp {
    /// An MLP through the layer widths `sizes` (inputs, hidden..., classes) with `param`.
    ///
    /// # Errors
    ///
    /// If weight normalization cannot be applied.
    pub fn new(sizes: &[usize], param: Param, device: &Device) -> Result<Self> {
        let hidden = sizes.len() - 2;
        let linears = sizes
            .windows(2)
            .enumerate()
            .map(|(i, w)| {
                // Before a batch norm the bias is redundant: the norm's shift replaces it.
                let bias = i == hidden
                    || matches!(
                        param,
                        Param::Plain | Param::PlainWd | Param::Pcr | Param::Wn
                    );
                LinearConfig::new(w[0], w[1]).with_bias(bias).init(device)
            })
            .collect();
        let mlp = Self {
            linears,
            bns: match param {
                Param::Bn => (0..hidden)
                    .map(|i| BatchNormConfig::new(sizes[i + 1]).init(device))
                    .collect(),
                _ => Vec::new(),
            },
            mobns: match param {
                Param::WnMobn => (0..hidden)
                    .map(|i| MeanOnlyBatchNormConfig::new(sizes[i + 1]).init(device))
                    .collect(),
                _ => Vec::new(),
            },
            relu: Relu::new(),
        };
        Ok(if param.weight_norm() {
            apply_weight_norm(mlp, &WeightNormConfig::new())?
        } else {
            mlp
        })
    }

    fn hidden(&self, i: usize, h: Tensor<2>) -> Tensor<2> {
        let mut h = self.linears[i].forward(h);
        if let Some(bn) = self.bns.get(i) {
            h = bn.forward(h);
        }
        if let Some(bn) = self.mobns.get(i) {
            h = bn.forward(h);
        }
        self.relu.forward(h)
    }

    /// Logits `[batch, classes]` of inputs `[batch, features]`.
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let last = self.linears.len() - 1;
        let mut h = x;
        for i in 0..last {
            h = self.hidden(i, h);
        }
        self.linears[last].forward(h)
    }

    /// The paper's data-dependent initialisation on one batch, layer after layer.
    pub fn data_dependent_init(mut self, x: Tensor<2>) -> Result<Self> {
        let last = self.linears.len() - 1;
        let mut h = x;
        let linears = std::mem::take(&mut self.linears);
        for (i, l) in linears.into_iter().enumerate() {
            let (l, out) = weightnorm::init::data_dependent_linear(l, h, 1.0)?;
            self.linears.push(l);
            h = out;
            if i < last {
                if let Some(bn) = self.mobns.get(i) {
                    h = bn.forward(h);
                }
                h = self.relu.forward(h);
            }
        }
        Ok(self)
    }
}

impl weightnorm::live::Canonicalizable for Mlp {
    fn input_shape(&self) -> Vec<usize> {
        let [features, _] = self.linears[0].weight.lazy_shape().dims();
        vec![features]
    }

    fn layers(&self) -> Vec<weightnorm::live::LiveLayer<'_>> {
        use weightnorm::live::LiveLayer;
        let last = self.linears.len() - 1;
        let mut out = Vec::new();
        for (i, l) in self.linears.iter().enumerate() {
            out.push(LiveLayer::Linear(l));
            if i < last {
                if !self.bns.is_empty() {
                    out.push(LiveLayer::Unsupported("batch_norm"));
                }
                if !self.mobns.is_empty() {
                    out.push(LiveLayer::Unsupported("mean_only_batch_norm"));
                }
                out.push(LiveLayer::Relu);
            }
        }
        out
    }
}

impl weightnorm::live::Canonicalizable for Model {
    fn input_shape(&self) -> Vec<usize> {
        match self {
            Model::Mlp(m) => m.input_shape(),
            Model::Cnn(m) => m.input_shape(),
        }
    }

    fn layers(&self) -> Vec<weightnorm::live::LiveLayer<'_>> {
        match self {
            Model::Mlp(m) => m.layers(),
            Model::Cnn(m) => m.layers(),
        }
    }
}

/// The models. (Built once per run, so the size difference of the variants does not matter.)
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum Model {
    /// An MLP.
    Mlp(Mlp),
    /// The CNN classifier.
    Cnn(CnnClassifier),
}

/// The layers of an architecture file being built, and for each layer with parameters the
/// Burn module that holds them and its index in the `nn.Sequential`.
#[derive(Default)]
struct Layout {
    names: Vec<(String, String)>,
    layers: Vec<LayerSpec>,
}

impl Layout {
    /// Appends a layer whose parameters the Burn module `burn` holds; its `param` is its index.
    fn param(&mut self, layer: impl FnOnce(Option<String>) -> LayerSpec, burn: String) {
        let idx = self.layers.len().to_string();
        self.names.push((burn, idx.clone()));
        self.layers.push(layer(Some(idx)));
    }

    /// Appends a layer without parameters.
    fn op(&mut self, layer: LayerSpec) {
        self.layers.push(layer);
    }
}

/// What a model is, for building and exporting it.
#[derive(Clone, Debug)]
pub struct Spec {
    /// MLP or CNN.
    pub kind: ModelKind,
    /// The parameterization.
    pub param: Param,
    /// The input image shape `[channels, height, width]`.
    pub input: [usize; 3],
    /// Hidden layer widths (the CNN uses the first for its dense layer).
    pub hidden: Vec<usize>,
    /// The CNN's convolution widths.
    pub cnn_widths: [usize; 3],
    /// Number of classes.
    pub classes: usize,
}

impl Spec {
    /// Builds the model, freshly initialised, on `device`.
    ///
    /// # Errors
    ///
    /// If the configuration is invalid or weight normalization cannot be applied.
    pub fn build(&self, device: &Device) -> Result<Model> {
        let features: usize = self.input.iter().product();
        match self.kind {
            ModelKind::Mlp => {
                let mut sizes = vec![features];
                sizes.extend(&self.hidden);
                sizes.push(self.classes);
                Ok(Model::Mlp(Mlp::new(&sizes, self.param, device)?))
            }
            ModelKind::Cnn => {
                let norm = match self.param {
                    Param::Plain | Param::PlainWd | Param::Pcr | Param::Wn => CnnNorm::None,
                    Param::WnMobn => CnnNorm::MeanOnly,
                    Param::Bn => CnnNorm::Batch,
                };
                Ok(Model::Cnn(
                    CnnClassifierConfig::new()
                        .with_channels_in(self.input[0])
                        .with_num_classes(self.classes)
                        .with_widths(self.cnn_widths)
                        .with_hidden(self.hidden.first().copied().unwrap_or(128))
                        .with_weight_norm(self.param.weight_norm())
                        .with_flatten_input(Some([self.input[1], self.input[2]]))
                        .with_norm(norm)
                        .init(device)?,
                ))
            }
        }
    }

    /// The module names of the `nn.Sequential` the model exports to, and the architecture file
    /// (the canonical form's format): `(burn prefix, sequential index)` pairs and the schema.
    fn layout(&self) -> (Vec<(String, String)>, ArchSpec) {
        let mut lay = Layout::default();
        let linear = |param| LayerSpec::Linear { param };
        match self.kind {
            ModelKind::Mlp => {
                let n = self.hidden.len();
                for i in 0..=n {
                    lay.param(linear, format!("linears.{i}"));
                    if i < n {
                        self.norm(&mut lay, i);
                        lay.op(LayerSpec::Relu {});
                    }
                }
                let input = vec![self.input.iter().product::<usize>()];
                (
                    lay.names,
                    ArchSpec {
                        input,
                        layers: lay.layers,
                    },
                )
            }
            ModelKind::Cnn => {
                for i in 0..3 {
                    let conv = |param| {
                        LayerSpec::Conv2d(ConvSpec {
                            param,
                            stride: Some(1.into()),
                            padding: Some(1.into()),
                            dilation: Some(1.into()),
                            groups: Some(1),
                        })
                    };
                    lay.param(conv, format!("convs.{i}"));
                    self.norm(&mut lay, i);
                    lay.op(LayerSpec::Relu {});
                    if i < 2 {
                        lay.op(LayerSpec::MaxPool2d(PoolSpec {
                            kernel: 2.into(),
                            stride: Some(2.into()),
                            padding: Some(0.into()),
                        }));
                    }
                }
                lay.op(LayerSpec::Flatten {});
                lay.param(linear, "fc1".into());
                self.norm(&mut lay, 3);
                lay.op(LayerSpec::Relu {});
                lay.param(linear, "fc2".into());
                (
                    lay.names,
                    ArchSpec {
                        input: self.input.to_vec(),
                        layers: lay.layers,
                    },
                )
            }
        }
    }

    /// Appends the normalization after hidden layer `i`, if the parameterization has one.
    fn norm(&self, lay: &mut Layout, i: usize) {
        match self.param {
            Param::Bn => lay.param(
                |param| LayerSpec::BatchNorm {
                    param,
                    eps: Some(1e-5),
                },
                format!("bns.{i}"),
            ),
            Param::WnMobn => lay.param(
                |param| LayerSpec::MeanOnlyBatchNorm { param },
                format!("mobns.{i}"),
            ),
            Param::Plain | Param::PlainWd | Param::Pcr | Param::Wn => {}
        }
    }

    /// The architecture file's schema.
    pub fn arch_spec(&self) -> ArchSpec {
        self.layout().1
    }

    /// The architecture file.
    pub fn arch(&self) -> serde_json::Value {
        serde_json::to_value(self.arch_spec()).expect("the schema serializes")
    }

    /// The trained model as a PyTorch `nn.Sequential` state dict: weight norm folded into plain
    /// weights and PyTorch's names and layouts (from [`save_module`]), modules renamed to their
    /// index in the sequence.
    pub fn export(&self, model: &Model) -> Result<Vec<TensorEntry>> {
        let model = if weightnorm::reparam::weight_normed_params(model).is_empty() {
            model.clone()
        } else {
            remove_weight_norm(model.clone())?
        };
        let tensors = save_module(&model, Scheme::Legacy)?;
        let (names, _) = self.layout();
        let mut out = Vec::new();
        for t in tensors {
            // Burn paths look like `Mlp.linears.0.weight` or `Cnn.convs.1.bias`.
            let path = t.name.split_once('.').map(|(_, p)| p).unwrap_or(&t.name);
            let (module, field) = path.rsplit_once('.').expect("module.field");
            let Some((_, seq)) = names.iter().find(|(b, _)| b == module) else {
                continue;
            };
            out.push(t.renamed(format!("{seq}.{field}")));
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }
}

impl Spec {
    /// The model as a network description for the canonical form: its PyTorch export read
    /// with its architecture file (weight norm folded, batch norms in evaluation mode).
    pub fn network(&self, model: &Model) -> Result<weightnorm::canonical::Network<f32>> {
        let tensors = self.export(model)?;
        Ok(weightnorm::torch::arch::from_spec(&self.arch_spec(), &tensors)?.network)
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::Distribution;

    use super::*;

    /// The network description computes what the Burn model computes (inference mode), for
    /// every model and parameterization `train` builds.
    #[test]
    fn the_description_computes_the_models_function() {
        let device = Device::flex();
        for kind in [ModelKind::Mlp, ModelKind::Cnn] {
            for &param in <Param as clap::ValueEnum>::value_variants() {
                let spec = Spec {
                    kind,
                    param,
                    input: [1, 8, 8],
                    hidden: vec![12, 6],
                    cnn_widths: [4, 6, 8],
                    classes: 5,
                };
                let model = spec.build(&device).unwrap();
                let x = Tensor::<4>::random([3, 1, 8, 8], Distribution::Normal(0.0, 1.0), &device);
                let y = match &model {
                    Model::Mlp(m) => m.forward(x.clone().flatten(1, 3)),
                    Model::Cnn(m) => m.forward(x.clone()),
                };
                let y: Vec<f32> = y.into_data().try_to_vec().unwrap();
                let xs: Vec<f32> = x.into_data().try_to_vec().unwrap();
                let net = spec.network(&model).unwrap();
                let samples: Vec<Vec<f64>> = xs
                    .chunks(64)
                    .map(|c| c.iter().map(|&v| f64::from(v)).collect())
                    .collect();
                let z = net.forward(&samples);
                let scale = y.iter().fold(0f32, |m, v| m.max(v.abs()));
                for (a, b) in y.iter().zip(z.iter().flatten()) {
                    assert!(
                        (f64::from(*a) - b).abs() <= 1e-5 * f64::from(scale).max(1.0),
                        "{} {}: {a} vs {b}",
                        kind.name(),
                        param.name()
                    );
                }
            }
        }
    }
}
