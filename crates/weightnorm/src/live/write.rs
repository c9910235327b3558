//! Writing: a network's weights back into the live module they were read from, in place (every
//! parameter keeps its id), and the rescaling of a live module through the calculus with the
//! per-element factors it applied.

use std::collections::HashMap;

use burn::module::{Module, ModuleMapper, Param, ParamId};
use burn::tensor::{Tensor, TensorData};

use super::{
    Canonicalizable, LiveBinding, LiveError, LiveFault, describe, from_rows, survey_params,
};
use crate::canonical::{Layer, LayerFactors, Network, rescale};

/// Replaces the values of the parameters named in `values`, keeping each parameter's id,
/// dtype, device, gradient requirement and checkpointing strategy.
struct Writer {
    values: HashMap<ParamId, (Vec<usize>, Vec<f64>)>,
    depth: usize,
}

/// `data` as a tensor that stands where `old` stood.
fn replace<const D: usize>(old: Tensor<D>, shape: Vec<usize>, data: Vec<f64>) -> Tensor<D> {
    let device = old.device();
    let values = TensorData::new(data, shape).convert_dtype(old.dtype());
    let mut fresh = Tensor::<D>::from_data(values, &device);
    if let Some(strategy) = old.gradient_checkpointing_strategy() {
        fresh = fresh.with_gradient_checkpointing_strategy(strategy);
    }
    if old.is_require_grad() {
        fresh = fresh.require_grad();
    }
    fresh
}

impl ModuleMapper for Writer {
    fn enter_module(&mut self, _name: &str, container_type: &str) {
        if container_type == "Reparameterization" {
            self.depth += 1;
        }
    }

    fn exit_module(&mut self, _name: &str, container_type: &str) {
        if container_type == "Reparameterization" {
            self.depth -= 1;
        }
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        if self.depth > 0 {
            return param;
        }
        let Some((shape, data)) = self.values.remove(&param.id) else {
            return param;
        };
        let (id, old, mapper) = param.consume();
        Param::from_mapped_value(id, replace(old, shape, data), mapper)
    }
}

/// Checks that `module` holds every parameter `bindings` name, none of them reparameterized.
///
/// # Errors
///
/// [`LiveError::MissingParam`], [`LiveError::Reparameterized`].
pub(crate) fn check_writable<M: Module>(
    module: &M,
    bindings: &[LiveBinding],
) -> Result<(), LiveError> {
    let survey = survey_params(module);
    for b in bindings {
        for (param, id) in [("weight", Some(b.weight)), ("bias", b.bias)] {
            let Some(id) = id else { continue };
            if !survey.all.contains(&id) {
                return Err(LiveError::MissingParam {
                    at: b.path.clone(),
                    param,
                    id: id.val(),
                });
            }
            if let Some((_, r)) = survey.reparameterized.iter().find(|(i, _)| *i == id) {
                return Err(LiveError::Reparameterized {
                    at: b.path.clone(),
                    param,
                    reparameterization: r.clone(),
                });
            }
        }
    }
    Ok(())
}

/// Writes the weights and biases of `network` into `module` through `bindings` (as
/// [`describe`] returned them): every bound parameter gets the network's values, in Burn's
/// layout and the parameter's own dtype, and keeps its id, device, gradient requirement and
/// checkpointing strategy. Nothing else changes.
///
/// # Errors
///
/// [`LiveError::Layer`] if a binding names no weighted layer of its shape;
/// [`LiveError::MissingParam`] if `module` does not hold a bound parameter;
/// [`LiveError::Reparameterized`] if one carries a reparameterization (weight norm, LoRA),
/// whose stored value is not the weight. Nothing is written when an error is returned.
pub fn write<M: Module>(
    module: M,
    network: &Network<f64>,
    bindings: &[LiveBinding],
) -> Result<M, LiveError> {
    check_writable(&module, bindings)?;
    write_checked(module, network, bindings)
}

/// [`write`](fn@write) for bindings [`check_writable`] has accepted for this module.
fn write_checked<M: Module>(
    module: M,
    network: &Network<f64>,
    bindings: &[LiveBinding],
) -> Result<M, LiveError> {
    let mut values = HashMap::new();
    for b in bindings {
        let layer = match network.layer(&b.path) {
            Some(Layer::Weighted(w))
                if w.w.data.len() == b.shape.iter().product::<usize>()
                    && w.b.is_some() == b.bias.is_some() =>
            {
                w
            }
            other => {
                return Err(LiveError::Layer {
                    at: b.path.clone(),
                    op: other.map_or("?", Layer::op),
                    fault: LiveFault::BindingMismatch {
                        kind: b.kind,
                        shape: b.shape.clone(),
                    },
                });
            }
        };
        values.insert(
            b.weight,
            (b.shape.clone(), from_rows(b.kind, &b.shape, &layer.w.data)),
        );
        if let (Some(id), Some(bias)) = (b.bias, &layer.b) {
            values.insert(id, (vec![bias.len()], bias.clone()));
        }
    }
    Ok(module.map(&mut Writer { values, depth: 0 }))
}

/// The factors a rescaling applied to one weighted layer of a live module, with the layer's
/// binding: weight element `(i, j)` (output unit `i`, input unit or channel `j`) was multiplied
/// by `input[j] / output[i]`, bias entry `i` by `1 / output[i]`.
#[derive(Clone, Debug, PartialEq)]
pub struct LiveFactors {
    /// The layer and its parameters.
    pub binding: LiveBinding,
    /// `s_j`, one per input unit or channel of the layer.
    pub input: Vec<f64>,
    /// `d_i`, one per output unit.
    pub output: Vec<f64>,
}

impl LiveFactors {
    /// The factor of every weight element, in Burn's layout of the weight (row-major, the
    /// weight's [`LiveBinding::shape`]).
    pub fn weight(&self) -> Vec<f64> {
        let b = &self.binding;
        LayerFactors {
            at: b.path.clone(),
            input: self.input.clone(),
            output: self.output.clone(),
        }
        .weight_factors(&b.shape, b.kind.unit_axes().output, b.groups)
    }

    /// The factor of every bias entry: `1 / output[i]`.
    pub fn bias(&self) -> Vec<f64> {
        self.output.iter().map(|d| 1.0 / d).collect()
    }
}

/// What [`canonicalize_module`] did.
#[derive(Clone, Debug, PartialEq)]
pub struct Rescaling {
    /// The global gain before: `||g_final||` of the module's canonical form.
    pub gain_before: f64,
    /// The global gain after (the same, unless a maximum gain capped it).
    pub gain_after: f64,
    /// The output scale `g_final` before, one entry per output unit or channel.
    pub scale_before: Vec<f64>,
    /// The factors applied to every weighted layer, in order.
    pub factors: Vec<LiveFactors>,
}

impl Rescaling {
    /// The factor of every element of every rescaled parameter, by id, in Burn's layout.
    pub fn by_param(&self) -> HashMap<ParamId, Vec<f64>> {
        let mut out = HashMap::new();
        for f in &self.factors {
            out.insert(f.binding.weight, f.weight());
            if let Some(id) = f.binding.bias {
                out.insert(id, f.bias());
            }
        }
        out
    }
}

/// Canonicalizes a live module in place, keeping its function: every weighted layer gets the
/// canonical form's unit-norm rows (transform I, II, III from the first layer to the last),
/// except where the calculus makes a layer carry a scale (before a barrier, at the end of a
/// residual body), and the output scale `g_final` is multiplied back into the last layers
/// ([`crate::canonical::reconstitute`]), so the module computes what it computed before.
///
/// With `max_gain`, the output scale is first rescaled so that its norm is at most `max_gain`
/// (every entry times `max_gain / ||g_final||` where the gain exceeds it): the module's outputs
/// are then multiplied by that ratio.
///
/// Returns the new module (every parameter keeping its id) and the factors applied: the two
/// passes of the calculus (canonicalize, then reconstitute with the kept or capped scale)
/// composed per unit.
///
/// # Errors
///
/// [`LiveError::MaxGain`] for a `max_gain` that is not positive and finite; those of
/// [`describe`] and [`write`](fn@write) (a reparameterized weight is refused); [`LiveError::Calculus`]
/// if the canonical form overflows.
pub fn canonicalize_module<M: Canonicalizable>(
    module: &M,
    max_gain: Option<f64>,
) -> Result<(M, Rescaling), LiveError> {
    if let Some(m) = max_gain
        && !(m.is_finite() && m > 0.0)
    {
        return Err(LiveError::MaxGain(m));
    }
    let live = describe(module)?;
    // Refuse reparameterized parameters before the work.
    check_writable(module, &live.bindings)?;
    let r = rescale(live.network, max_gain)?;
    let module = write_checked(module.clone(), &r.network, &live.bindings)?;
    let factors = live
        .bindings
        .into_iter()
        .map(|binding| {
            let f = r
                .factors
                .iter()
                .find(|f| f.at == binding.path)
                .expect("the calculus reports every weighted layer");
            LiveFactors {
                input: f.input.clone(),
                output: f.output.clone(),
                binding,
            }
        })
        .collect();
    Ok((
        module,
        Rescaling {
            gain_before: r.gain_before,
            gain_after: r.gain_after,
            scale_before: r.scale_before,
            factors,
        },
    ))
}
