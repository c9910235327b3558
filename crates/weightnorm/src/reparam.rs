//! Weight normalization on any Burn module, as a Burn [`Reparameterization`].
//!
//! [`apply_weight_norm`] walks a module once, finds the parameters to normalize (every `weight`
//! of a layer this crate knows, or the paths you name), and attaches a [`WeightNorm`] to each:
//! the parameter's stored value becomes `v` and the reparameterization holds `g`, so
//! `param.val()` is `g * v / ||v||` computed by the fused operation of [`crate::ops`], and the
//! optimizer, records, devices and autodiff see `v` and `g` as ordinary parameters. Record paths
//! are `<path>` for `v` and `<path>.weight_norm.g` for `g`.
//!
//! [`remove_weight_norm`] folds it back: every parameter holds `w` again, computed by the same
//! operation, so the outputs are unchanged bit for bit.
//!
//! # Axes
//!
//! The default norm is per output unit for every layer kind, through the one layout table
//! ([`LayerKind::unit_axes`]): Linear keeps axis 1 of its `[d_in, d_out]` weight, convolutions
//! axis 0, transposed convolutions axis 1. PyTorch's `dim` (default 0) differs for Linear in Burn's
//! layout and for transposed convolutions, where `dim = 0` normalizes per *input* channel;
//! [`AxisChoice::Torch`] reproduces PyTorch's choice on PyTorch-layout weights.

use std::collections::BTreeMap;

use burn::config::Config;
use burn::module::{Module, ModuleVisitor, Param, Parameter, Reparameterization, Reparameterizer};
use burn::tensor::{Distribution, Tensor};
use thiserror::Error;

use crate::axis::{LayerKind, NormAxis};
use crate::ops;

/// The reparameterization attached to a weight: `w = g * v / max(||v||, eps)`, `v` being the
/// parameter's stored value.
#[derive(Module, Debug)]
pub struct WeightNorm {
    /// The magnitudes, one per slice along the kept axis (one for the whole tensor).
    pub g: Param<Tensor<1>>,
    /// The kept axis of `v`, or `None` for one norm over the whole tensor.
    pub kept_axis: Option<usize>,
    /// The epsilon of [`ops::weight_norm_eps`]; 0 for PyTorch parity.
    pub eps: f64,
}

impl WeightNorm {
    /// The norm axis.
    pub fn axis(&self) -> NormAxis {
        NormAxis::from(self.kept_axis)
    }

    /// `g` in the keep-dims shape of a weight of `v_shape` (the shape PyTorch gives `weight_g`,
    /// with ones instead of a 0-dim tensor for the whole tensor).
    ///
    /// # Panics
    ///
    /// If `D` or `v_shape` do not fit this reparameterization's axis and `g`.
    pub fn g_keepdims<const D: usize>(&self, v_shape: &[usize]) -> Tensor<D> {
        let shape: [usize; D] = self
            .axis()
            .g_shape(v_shape)
            .try_into()
            .expect("the rank of v");
        self.g.val().reshape(shape)
    }
}

impl Reparameterization for WeightNorm {
    const NAME: &'static str = "weight_norm";

    /// `g * v / ||v||`, fused on the CPU and differentiated analytically.
    ///
    /// # Panics
    ///
    /// If `v` no longer fits `g` (its shape was changed after weight norm was applied).
    fn apply<const D: usize>(&self, base: Tensor<D>) -> Tensor<D> {
        let g = self.g_keepdims::<D>(&base.dims());
        ops::weight_norm_eps(base, g, self.axis(), self.eps)
            .expect("weight norm: v and g were validated when it was applied")
    }
}

/// Which axis a weight keeps its norms along.
#[derive(Config, Debug, PartialEq)]
pub enum AxisChoice {
    /// Per output unit of the layer (the default), from the layout table: Linear axis 1,
    /// convolutions axis 0, transposed convolutions axis 1. Needs a layer kind this crate knows.
    OutputUnits,
    /// The given axis of the weight as Burn stores it.
    Keep(usize),
    /// One norm over the whole tensor.
    Whole,
    /// PyTorch's `dim` read on the weight as Burn stores it (`None` and `-1` are the whole
    /// tensor). For PyTorch-layout weights (convolutions) this is exactly PyTorch's choice.
    Torch(Option<i64>),
}

/// How `v` and `g` start.
#[derive(Config, Debug, PartialEq)]
pub enum Init {
    /// `v = w`, `g = ||w||`: the layer computes exactly what it computed before.
    FunctionPreserving,
    /// The paper's: `v ~ N(0, std)` (the paper uses 0.05), `g = ||v||`.
    Paper {
        /// The standard deviation of `v`.
        std: f64,
    },
}

/// Which parameters get weight norm.
#[derive(Config, Debug, PartialEq)]
pub enum Selection {
    /// Every parameter named `weight` in a layer of a known kind ([`LayerKind`]).
    AllWeights,
    /// Exactly these parameter paths (e.g. `"encoder.0.weight"`), each of which must exist.
    Paths(Vec<String>),
}

/// What [`apply_weight_norm`] does: a Burn [`Config`] (serializable; `new()` gives the
/// defaults, `with_*` changes one field).
///
/// ```
/// use burn::config::Config;
/// use weightnorm::{AxisChoice, WeightNormConfig};
///
/// let config = WeightNormConfig::new().with_axis(AxisChoice::Whole).with_eps(1e-12);
/// let json = config.to_string();
/// assert_eq!(WeightNormConfig::load_binary(json.as_bytes()).unwrap(), config);
/// ```
#[derive(Config, Debug, PartialEq)]
pub struct WeightNormConfig {
    /// Which parameters (default: every weight of a known layer kind).
    #[config(default = "Selection::AllWeights")]
    pub params: Selection,
    /// Which axis (default: per output unit).
    #[config(default = "AxisChoice::OutputUnits")]
    pub axis: AxisChoice,
    /// How `v` and `g` start (default: function-preserving).
    #[config(default = "Init::FunctionPreserving")]
    pub init: Init,
    /// The epsilon (default 0, for PyTorch parity).
    #[config(default = 0.0)]
    pub eps: f64,
}

impl Default for WeightNormConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl WeightNormConfig {
    /// Only these parameter paths (`with_params(Selection::Paths(..))`).
    pub fn with_paths<S: Into<String>>(self, paths: impl IntoIterator<Item = S>) -> Self {
        self.with_params(Selection::Paths(
            paths.into_iter().map(Into::into).collect(),
        ))
    }
}

/// Why weight norm could not be applied or removed. Nothing is changed when one is returned.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum ReparamError {
    /// A named parameter path is not in the module.
    #[error("no float parameter `{path}` in the module; its parameters are: {available}")]
    MissingParam {
        /// The path as given.
        path: String,
        /// The module's float parameter paths.
        available: String,
    },
    /// The parameter already has weight norm (or another reparameterization).
    #[error(
        "`{path}` already has a `{existing}` reparameterization: remove it before applying weight norm again"
    )]
    AlreadyApplied {
        /// The parameter path.
        path: String,
        /// The name of the attached reparameterization.
        existing: String,
    },
    /// No parameter to remove weight norm from.
    #[error("the module has no weight norm to remove")]
    NothingToRemove,
    /// No parameter matched the selection.
    #[error(
        "no parameter to normalize: the module has no `weight` of a known layer kind; name the parameters with `with_params`"
    )]
    NothingSelected,
    /// The output axis of a parameter is unknown.
    #[error(
        "`{path}` is in a `{module}`, whose output axis is not in the layout table; choose the axis with `AxisChoice::Keep` or `AxisChoice::Torch`"
    )]
    UnknownLayout {
        /// The parameter path.
        path: String,
        /// The type name of the module holding it (e.g. `"MyLayer"`).
        module: String,
    },
    /// A configuration or weight the operation refuses (bad axis, zero-norm slice, ...).
    #[error("`{path}`: {source}")]
    Op {
        /// The parameter path.
        path: String,
        /// What the operation said.
        source: crate::Error,
    },
}

/// One float parameter found by [`survey`].
#[derive(Clone, Debug, PartialEq)]
pub struct ParamInfo {
    /// Its path, e.g. `"layers.0.weight"`.
    pub path: String,
    /// The type name of the module holding it, e.g. `"Linear"` (empty for a bare parameter).
    pub module: String,
    /// Its shape.
    pub shape: Vec<usize>,
    /// The name of its attached reparameterization, if any (`"weight_norm"` for ours).
    pub reparameterization: Option<String>,
    /// The reparameterization's own parameters: path below it (e.g. `"g"`) and shape.
    pub reparameterization_params: Vec<(String, Vec<usize>)>,
}

impl ParamInfo {
    /// The layer kind of the holding module, if the layout table knows it.
    pub fn layer_kind(&self) -> Option<LayerKind> {
        layer_kind(&self.module)
    }
}

/// The type name in a container type Burn's visitor reports (`"Struct:Linear"` is `"Linear"`).
fn type_name(container: &str) -> &str {
    container
        .split_once(':')
        .map_or(container, |(_, name)| name)
}

/// The layer kind a module type name names.
fn layer_kind(module: &str) -> Option<LayerKind> {
    Some(match module {
        "Linear" => LayerKind::Linear,
        "Conv1d" => LayerKind::Conv1d,
        "Conv2d" => LayerKind::Conv2d,
        "Conv3d" => LayerKind::Conv3d,
        "ConvTranspose1d" => LayerKind::ConvTranspose1d,
        "ConvTranspose2d" => LayerKind::ConvTranspose2d,
        "ConvTranspose3d" => LayerKind::ConvTranspose3d,
        "Embedding" => LayerKind::Embedding,
        _ => return None,
    })
}

#[derive(Default)]
struct Survey {
    stack: Vec<(String, String)>,
    /// Depth of reparameterization scopes entered: their own parameters are not candidates.
    in_reparam: usize,
    params: Vec<ParamInfo>,
}

impl ModuleVisitor for Survey {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        if container_type == "Reparameterization" {
            if self.in_reparam == 0
                && let Some(last) = self.params.last_mut()
            {
                last.reparameterization = Some(name.to_string());
            }
            self.in_reparam += 1;
        }
        self.stack
            .push((name.to_string(), container_type.to_string()));
    }

    fn exit_module(&mut self, _name: &str, container_type: &str) {
        if container_type == "Reparameterization" {
            self.in_reparam -= 1;
        }
        self.stack.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if self.in_reparam > 0 {
            if self.in_reparam == 1
                && let Some(last) = self.params.last_mut()
            {
                let below = self
                    .stack
                    .iter()
                    .rev()
                    .take_while(|(_, c)| c != "Reparameterization")
                    .map(|(n, _)| n.as_str())
                    .collect::<Vec<_>>();
                let rel = below.into_iter().rev().collect::<Vec<_>>().join(".");
                last.reparameterization_params
                    .push((rel, param.shape().to_vec()));
            }
            return;
        }
        self.params.push(ParamInfo {
            path: self
                .stack
                .iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join("."),
            module: self
                .stack
                .last()
                .map(|(_, c)| type_name(c).to_string())
                .unwrap_or_default(),
            shape: param.shape().to_vec(),
            reparameterization: None,
            reparameterization_params: Vec::new(),
        });
    }
}

/// Every float parameter of `module` (not counting those inside reparameterizations), with its
/// container type and any attached reparameterization.
pub fn survey<M: Module>(module: &M) -> Vec<ParamInfo> {
    let mut s = Survey::default();
    module.visit(&mut s);
    s.params
}

/// The paths of the parameters that carry weight norm.
pub fn weight_normed_params<M: Module>(module: &M) -> Vec<String> {
    survey(module)
        .into_iter()
        .filter(|p| p.reparameterization.as_deref() == Some(WeightNorm::NAME))
        .map(|p| p.path)
        .collect()
}

fn resolve_axis(info: &ParamInfo, choice: &AxisChoice) -> Result<NormAxis, ReparamError> {
    let rank = info.shape.len();
    let op = |source| ReparamError::Op {
        path: info.path.clone(),
        source,
    };
    let axis = match choice {
        AxisChoice::OutputUnits => match info.layer_kind() {
            Some(kind) if kind.weight_rank() == rank => kind.output_axis(),
            _ => {
                return Err(ReparamError::UnknownLayout {
                    path: info.path.clone(),
                    module: info.module.clone(),
                });
            }
        },
        AxisChoice::Keep(k) => NormAxis::Keep(*k),
        AxisChoice::Whole => NormAxis::Whole,
        AxisChoice::Torch(dim) => NormAxis::from_torch(*dim, rank).map_err(op)?,
    };
    axis.validate(rank).map_err(op)?;
    Ok(axis)
}

struct Applier<'a> {
    plan: BTreeMap<String, NormAxis>,
    config: &'a WeightNormConfig,
    errors: Vec<ReparamError>,
}

fn with_grad_state<const D: usize>(value: Tensor<D>, like: &Tensor<D>) -> Tensor<D> {
    Parameter::set_require_grad(value, like.is_require_grad())
}

impl Reparameterizer for &mut Applier<'_> {
    type Reparam = WeightNorm;

    fn reparameterize<const D: usize>(
        &mut self,
        path: &str,
        param: Param<Tensor<D>>,
    ) -> (Param<Tensor<D>>, Option<WeightNorm>) {
        let Some(&axis) = self.plan.get(path) else {
            return (param, None);
        };
        let eps = self.config.eps;
        let w = param.val().detach();
        let (param, v) = match self.config.init {
            Init::FunctionPreserving => (param, w),
            Init::Paper { std } => {
                let v = Tensor::<D>::random(w.shape(), Distribution::Normal(0.0, std), &w.device())
                    .cast(w.dtype());
                let fresh = v.clone();
                (param.map(|old| with_grad_state(fresh, &old)), v)
            }
        };
        let g = match ops::check_norms(&v, axis, eps)
            .and_then(|()| ops::norm_except_dim(v, 2.0, axis))
        {
            Ok(g) => g,
            Err(source) => {
                self.errors.push(ReparamError::Op {
                    path: path.to_string(),
                    source,
                });
                return (param, None);
            }
        };
        let n = g.shape().num_elements();
        let g = Param::from_tensor(g.reshape([n]).detach());
        let wn = WeightNorm {
            g,
            kept_axis: axis.kept(),
            eps,
        };
        (param, Some(wn))
    }
}

/// Weight-normalizes the selected parameters of `module`: one call for any module.
///
/// With the default [`WeightNormConfig`], every `weight` of a Linear, Conv1d/2d/3d,
/// ConvTranspose1d/2d/3d or Embedding (including those inside Lstm and Gru gates) is normalized
/// per output unit, function-preserving: the module's outputs do not change.
///
/// # Errors
///
/// Nothing is changed when an error is returned: a named path that does not exist, a parameter
/// that already has a reparameterization, a layer whose output axis is unknown, a bad axis, an
/// epsilon below zero, or a zero-norm slice ([`ReparamError`]).
///
/// ```
/// use burn::nn::LinearConfig;
/// use burn::tensor::{Device, Tensor};
/// use weightnorm::reparam::{WeightNormConfig, apply_weight_norm, remove_weight_norm};
///
/// let device = Device::flex();
/// let linear = LinearConfig::new(3, 2).init(&device);
/// let x = Tensor::<2>::ones([4, 3], &device);
/// let before = linear.forward(x.clone());
/// let wn = apply_weight_norm(linear, &WeightNormConfig::new()).unwrap();
/// let after = wn.forward(x.clone());
/// assert!((after.clone() - before).abs().max().into_scalar::<f32>() <= 1e-6);
/// let folded = remove_weight_norm(wn).unwrap();
/// assert_eq!(folded.forward(x).into_data(), after.into_data());
/// ```
pub fn apply_weight_norm<M: Module>(
    module: M,
    config: &WeightNormConfig,
) -> Result<M, ReparamError> {
    if !(config.eps.is_finite() && config.eps >= 0.0) {
        return Err(ReparamError::Op {
            path: String::new(),
            source: crate::Error::InvalidEpsilon { eps: config.eps },
        });
    }
    let params = survey(&module);
    let selected: Vec<&ParamInfo> = match &config.params {
        Selection::AllWeights => params
            .iter()
            .filter(|p| p.path.rsplit('.').next() == Some("weight") && p.layer_kind().is_some())
            .collect(),
        Selection::Paths(paths) => {
            let mut out = Vec::new();
            for path in paths {
                match params.iter().find(|p| &p.path == path) {
                    Some(p) => out.push(p),
                    None => {
                        return Err(ReparamError::MissingParam {
                            path: path.clone(),
                            available: params
                                .iter()
                                .map(|p| p.path.as_str())
                                .collect::<Vec<_>>()
                                .join(", "),
                        });
                    }
                }
            }
            out
        }
    };
    if selected.is_empty() {
        return Err(ReparamError::NothingSelected);
    }
    let mut plan = BTreeMap::new();
    for info in selected {
        if let Some(existing) = &info.reparameterization {
            return Err(ReparamError::AlreadyApplied {
                path: info.path.clone(),
                existing: existing.clone(),
            });
        }
        plan.insert(info.path.clone(), resolve_axis(info, &config.axis)?);
    }
    // The zero-norm check runs inside the traversal; on an error, the original is returned
    // untouched (the traversal consumed a clone, which is cheap: tensors are shared).
    let mut applier = Applier {
        plan,
        config,
        errors: Vec::new(),
    };
    let out = module.clone().apply_reparameterization(&mut applier);
    match applier.errors.into_iter().next() {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

/// Folds weight norm back into plain weights: every parameter holds `w = g * v / ||v||` again,
/// computed by the same operation, so the module's outputs are unchanged bit for bit.
///
/// This materializes every reparameterization of the module (Burn's
/// [`Module::materialize`]), so other reparameterizations (LoRA) are folded too.
///
/// # Errors
///
/// [`ReparamError::NothingToRemove`] when no parameter has weight norm.
pub fn remove_weight_norm<M: Module>(module: M) -> Result<M, ReparamError> {
    if weight_normed_params(&module).is_empty() {
        return Err(ReparamError::NothingToRemove);
    }
    Ok(module.materialize())
}
