//! Periodic Canonical Regularization (PCR): every `C` optimizer steps the model is put in
//! canonical form in place (unit-norm rows everywhere, the whole gain in the last layers; the
//! function unchanged), the global gain `G = ||g_final||` is regularized, and the optimizer's
//! state is carried across the rescaling, element by element.
//!
//! - **Schedule** ([`PcrConfig::every`]): after every `C`-th optimizer step.
//! - **Penalties** ([`Penalty`]): `none` (the canonicalization keeps the function and the gain);
//!   `cap(max_gain)` (at each canonicalization `g_final` is rescaled so that its norm is at
//!   most `max_gain`: the outputs shrink by `max_gain / G` where `G` exceeds it); `soft(lambda)`
//!   (`lambda * G^2` added to the loss at every step, `G` computed differentiably from the
//!   current weights by the calculus's own propagation: [`gain::gain_squared`]; the
//!   canonicalizations keep the function).
//! - **Transport** ([`Transport`], [`transport`]): a weight element multiplied by `a` has its
//!   gradient divided by `a` (the rescaling is a symmetry of the function, so the loss in the
//!   new coordinates is the old loss composed with the inverse rescaling). `covariant` divides
//!   first moments and velocities by `a` and second moments by `a^2`: the state the optimizer
//!   would hold had it seen the rescaled gradients all along (exact for Adam, AdamW and SGD with
//!   momentum, whose state is a function of the gradients only). `weight-scaled` multiplies
//!   them instead (`a m`, `a^2 v`), `reset` starts the rescaled parameters' state afresh, `keep`
//!   leaves it.
//!
//! Covariance is a statement about the state, not the trajectory: Adam's (and AdamW's) update
//! `lr m^ / (sqrt(v^) + eps)` is nearly invariant to a gradient's scale, so after the rescaling
//! a weight moves by about the same amount as before, not `a` times it; SGD's update `lr g / a`
//! is not `a` times the old one either. Decoupled weight decay (AdamW's `w (1 - lr lambda)`) is
//! linear and commutes with the rescaling, but what it penalizes, `||w||^2`, is not invariant
//! under the rescaling symmetry, so PCR plus AdamW is a different regularizer from either.
//! Coupled L2 decay (Adam's or SGD's `weight_decay`) adds `lambda w` to the gradient, which
//! scales by `a`, not `1 / a`: the covariant transport is then exact for the loss's part of the
//! state only.
//!
//! # Weight normalization under PCR (refused)
//!
//! A weight-normalized layer stores `w = g v / ||v||`. The canonical rescaling multiplies the
//! element of row `i` reading input `j` by `s_j / d_i`; with input scales `s_j` that differ
//! across a row (they are the previous layer's row norms), the row's *direction* changes, so in
//! the coordinates `(v, g)` the rescaling is not a per-element linear map: `g_i` becomes
//! `g_i ||s . v_i|| / (d_i ||v_i||)`, a function of `v`. No element-wise transport of the
//! optimizer's state for `v` and `g` is then exact, and writing `v <- w'` would silently change
//! the effective learning rate of every direction. PCR therefore refuses a weight-normalized
//! model ([`crate::live::LiveError::Reparameterized`], from [`Pcr::check`] and every
//! canonicalization); fold weight norm first ([`crate::remove_weight_norm`]). The soft
//! penalty's gain ([`gain::gain_squared`]) reads weights through their reparameterization and
//! works on weight-normalized models too.
//!
//! # Where it runs
//!
//! In a hand-written loop, [`Pcr::step`] replaces `optim.step(lr, model, grads)`. In
//! burn-train's `Learner` (which owns a [`ModuleOptimizer`] and calls the model's
//! `TrainStep::optimize`), the model holds a [`PcrSlot`] and overrides `optimize` with
//! [`optimize`]; the slot's step count is a parameter of the module, so burn-train's
//! checkpoints carry it and a resumed run continues the schedule.
//!
//! # Checkpoints
//!
//! To resume exactly, a checkpoint holds the model (after the last step), the optimizer's
//! record (after the last transport), and [`PcrState`] (serde: the step count and the events so
//! far); the configuration is the run's. [`Pcr::resume`] takes the state back.

pub mod gain;
mod transport;

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use burn::module::{Module, ModuleMapper, Param, ParamId};
use burn::optim::lr_scheduler::module_lr_scheduler::ModuleLearningRate;
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::tensor::{Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::live::{
    Canonicalizable, LiveError, Rescaling, canonicalize_module, check_writable, describe,
};

pub use transport::{transport, transport_record};

/// What PCR does to the global gain.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Penalty {
    /// Nothing: each canonicalization keeps the function and the gain.
    None,
    /// At each canonicalization, `g_final` is rescaled so that `||g_final|| <= max_gain`.
    Cap {
        /// The largest global gain kept.
        max_gain: f64,
    },
    /// `lambda * G^2` is added to the loss at every step ([`Pcr::penalty`]).
    Soft {
        /// The penalty's weight.
        lambda: f64,
    },
}

impl fmt::Display for Penalty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::None => write!(f, "none"),
            Self::Cap { max_gain } => write!(f, "cap:{max_gain}"),
            Self::Soft { lambda } => write!(f, "soft:{lambda}"),
        }
    }
}

impl FromStr for Penalty {
    type Err = PcrError;

    /// `none`, `cap:G` (G positive and finite) or `soft:L` (L finite, not negative).
    fn from_str(s: &str) -> Result<Self, PcrError> {
        let bad = || PcrError::Penalty(s.to_string());
        let value = |v: &str| v.trim().parse::<f64>().map_err(|_| bad());
        let p = match s.trim().split_once(':') {
            None if s.trim() == "none" => Self::None,
            Some(("cap", v)) => Self::Cap {
                max_gain: value(v)?,
            },
            Some(("soft", v)) => Self::Soft { lambda: value(v)? },
            _ => return Err(bad()),
        };
        p.validate().map_err(|_| bad())?;
        Ok(p)
    }
}

impl Penalty {
    fn validate(self) -> Result<(), PcrError> {
        let ok = match self {
            Self::None => true,
            Self::Cap { max_gain } => max_gain.is_finite() && max_gain > 0.0,
            Self::Soft { lambda } => lambda.is_finite() && lambda >= 0.0,
        };
        if ok {
            Ok(())
        } else {
            Err(PcrError::Penalty(self.to_string()))
        }
    }
}

/// How the optimizer's state crosses a rescaling (from the core: [`crate::transport`]).
pub use weightnorm_core::transport::Transport;

/// What PCR does and when (serializable with serde).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PcrConfig {
    /// Canonicalize after every `every` optimizer steps (at least 1).
    pub every: u64,
    /// What happens to the global gain.
    pub penalty: Penalty,
    /// How the optimizer's state crosses each canonicalization.
    pub transport: Transport,
}

impl PcrConfig {
    /// Every `every` steps, no penalty, covariant transport.
    pub fn new(every: u64) -> Self {
        Self {
            every,
            penalty: Penalty::None,
            transport: Transport::Covariant,
        }
    }

    /// With this penalty.
    pub fn with_penalty(mut self, penalty: Penalty) -> Self {
        self.penalty = penalty;
        self
    }

    /// With this transport.
    pub fn with_transport(mut self, transport: Transport) -> Self {
        self.transport = transport;
        self
    }

    /// Checks the schedule and the penalty.
    ///
    /// # Errors
    ///
    /// [`PcrError::Every`] for `every == 0`; [`PcrError::Penalty`] for a maximum gain that is
    /// not positive and finite or a lambda that is negative or not finite.
    pub fn validate(&self) -> Result<(), PcrError> {
        if self.every == 0 {
            return Err(PcrError::Every);
        }
        self.penalty.validate()
    }
}

/// One canonicalization, as PCR records it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PcrEvent {
    /// The number of optimizer steps taken when it ran (`C`, `2C`, ...).
    pub step: u64,
    /// The global gain just before.
    pub gain_before: f64,
    /// The global gain just after (equal under `none` and `soft`; at most `max_gain` under
    /// `cap`).
    pub gain_after: f64,
    /// The batch loss just before, where the caller measured it (penalty excluded).
    pub loss_before: Option<f64>,
    /// The same batch's loss just after.
    pub loss_after: Option<f64>,
}

/// PCR's state between steps: all a checkpoint must hold besides the model, the optimizer's
/// record and the configuration (serializable with serde).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PcrState {
    /// Optimizer steps taken so far.
    pub steps: u64,
    /// Every canonicalization so far.
    pub events: Vec<PcrEvent>,
}

/// Why PCR could not be set up or run.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum PcrError {
    /// `every` is 0.
    #[error("PCR canonicalizes every C optimizer steps: C must be at least 1")]
    Every,
    /// A penalty that is not `none`, `cap:G` (G > 0) or `soft:L` (L >= 0).
    #[error(
        "invalid PCR penalty `{0}`: expected `none`, `cap:G` (G positive, finite) or `soft:L` \
         (L finite, not negative)"
    )]
    Penalty(String),
    /// A transport that is not one of the four.
    #[error(transparent)]
    Transport(#[from] weightnorm_core::transport::UnknownTransport),
    /// The module could not be described or rescaled.
    #[error(transparent)]
    Live(#[from] LiveError),
    /// The optimizer's record could not be read or written.
    #[error("the optimizer's record: {0}")]
    Record(String),
    /// A state tensor whose transport is unknown.
    #[error(
        "the optimizer's state `{field}` has no known transport (PCR carries Adam's, AdamW's \
         and SGD's momentum); transport it with `reset` or `keep` instead"
    )]
    UnknownState {
        /// The field's path below the parameter (`momentum.moment_1`).
        field: String,
    },
    /// A state tensor that does not have its parameter's number of elements.
    #[error("the optimizer's state `{field}` holds {got} values for a parameter of {expected}")]
    StateShape {
        /// The field's path below the parameter.
        field: String,
        /// Its number of values.
        got: usize,
        /// The parameter's.
        expected: usize,
    },
}

/// The PCR driver for a hand-written training loop: the configuration and the state.
///
/// ```
/// use burn::module::Module;
/// use burn::nn::{Linear, LinearConfig};
/// use burn::optim::{AdamConfig, GradientsParams};
/// use burn::tensor::{Device, Tensor};
/// use weightnorm::live::{Canonicalizable, LiveLayer};
/// use weightnorm::pcr::{Pcr, PcrConfig, Penalty};
///
/// #[derive(Module, Debug)]
/// struct Net {
///     a: Linear,
///     b: Linear,
/// }
/// impl Canonicalizable for Net {
///     fn input_shape(&self) -> Vec<usize> {
///         vec![3]
///     }
///     fn layers(&self) -> Vec<LiveLayer<'_>> {
///         vec![LiveLayer::Linear(&self.a), LiveLayer::Relu, LiveLayer::Linear(&self.b)]
///     }
/// }
///
/// let device = Device::flex().autodiff();
/// let mut net = Net {
///     a: LinearConfig::new(3, 5).init(&device),
///     b: LinearConfig::new(5, 2).init(&device),
/// };
/// let mut optim = AdamConfig::new().init();
/// let mut pcr = Pcr::new(PcrConfig::new(2).with_penalty(Penalty::Cap { max_gain: 0.5 })).unwrap();
/// pcr.check(&net).unwrap();
/// let x = Tensor::<2>::ones([4, 3], &device);
/// for _ in 0..4 {
///     let h = burn::tensor::activation::relu(net.a.forward(x.clone()));
///     let loss = net.b.forward(h).square().mean();
///     let grads = GradientsParams::from_grads(loss.backward(), &net);
///     net = pcr.step(&mut optim, 1e-2, net, grads).unwrap().0;
/// }
/// assert_eq!(pcr.state().events.len(), 2);
/// assert!(pcr.state().events.iter().all(|e| e.gain_after <= 0.5 + 1e-12));
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Pcr {
    config: PcrConfig,
    state: PcrState,
}

impl Pcr {
    /// A fresh run.
    ///
    /// # Errors
    ///
    /// Those of [`PcrConfig::validate`].
    pub fn new(config: PcrConfig) -> Result<Self, PcrError> {
        Self::resume(config, PcrState::default())
    }

    /// A run resumed from a checkpoint's state.
    ///
    /// # Errors
    ///
    /// Those of [`PcrConfig::validate`].
    pub fn resume(config: PcrConfig, state: PcrState) -> Result<Self, PcrError> {
        config.validate()?;
        Ok(Self { config, state })
    }

    /// The configuration.
    pub fn config(&self) -> &PcrConfig {
        &self.config
    }

    /// The state (for a checkpoint).
    pub fn state(&self) -> &PcrState {
        &self.state
    }

    /// Gives the state up.
    pub fn into_state(self) -> PcrState {
        self.state
    }

    /// Whether the next [`step`](Self::step) canonicalizes (so that a caller can measure the
    /// batch loss around it).
    pub fn is_due(&self) -> bool {
        (self.state.steps + 1).is_multiple_of(self.config.every)
    }

    /// Checks that `module` can be canonicalized and rewritten (before training, so that no
    /// step fails later): every layer described, no reparameterized weight.
    ///
    /// # Errors
    ///
    /// [`PcrError::Live`]: a layer the front-end cannot describe, or a weight-normalized (or
    /// otherwise reparameterized) weight.
    pub fn check<M: Canonicalizable>(&self, module: &M) -> Result<(), PcrError> {
        let live = describe(module)?;
        check_writable(module, &live.bindings)?;
        Ok(())
    }

    /// The penalty term to add to this step's loss: `lambda * G^2` under `soft`, `None`
    /// otherwise (a one-element tensor, differentiable with respect to every weight).
    ///
    /// # Errors
    ///
    /// [`PcrError::Live`] if the module cannot be described.
    pub fn penalty<M: Canonicalizable>(&self, module: &M) -> Result<Option<Tensor<1>>, PcrError> {
        soft_penalty(self.config.penalty, module)
    }

    /// One optimizer step (`optim.step(lr, module, grads)`), then, after every `C`-th,
    /// the canonicalization: the module rescaled in place ([`canonicalize_module`], capped under
    /// `cap`) and the optimizer's state transported. Returns the module and the event, if one
    /// ran.
    ///
    /// # Errors
    ///
    /// Those of [`canonicalize`](Self::canonicalize). The step's module is lost with the
    /// error; [`check`](Self::check) before training rules out all but an overflowing
    /// network.
    pub fn step<M: Canonicalizable>(
        &mut self,
        optim: &mut ModuleOptimizer,
        lr: impl Into<ModuleLearningRate>,
        module: M,
        grads: GradientsParams,
    ) -> Result<(M, Option<PcrEvent>), PcrError> {
        self.step_measured(optim, lr, module, grads, None::<fn(&M) -> f64>)
    }

    /// [`step`](Self::step), measuring the batch loss (penalty excluded) just before and just
    /// after a canonicalization with `batch_loss` (called twice, only when one runs).
    ///
    /// # Errors
    ///
    /// As [`step`](Self::step).
    pub fn step_measured<M: Canonicalizable, F: FnMut(&M) -> f64>(
        &mut self,
        optim: &mut ModuleOptimizer,
        lr: impl Into<ModuleLearningRate>,
        module: M,
        grads: GradientsParams,
        batch_loss: Option<F>,
    ) -> Result<(M, Option<PcrEvent>), PcrError> {
        let module = optim.step(lr.into(), module, grads);
        self.state.steps += 1;
        if !self.state.steps.is_multiple_of(self.config.every) {
            return Ok((module, None));
        }
        let (module, event) = self.canonicalize(optim, &module, batch_loss)?;
        Ok((module, Some(event)))
    }

    /// Canonicalizes `module` now (whatever the schedule), transports `optim`'s state, and
    /// records the event at the current step count.
    ///
    /// # Errors
    ///
    /// [`PcrError::Live`] if the module cannot be described or written (weight norm is
    /// refused) or its canonical form overflows; [`PcrError::Record`],
    /// [`PcrError::UnknownState`] or [`PcrError::StateShape`] from the transport. Neither the
    /// module nor the optimizer is changed when one is returned.
    pub fn canonicalize<M: Canonicalizable, F: FnMut(&M) -> f64>(
        &mut self,
        optim: &mut ModuleOptimizer,
        module: &M,
        mut batch_loss: Option<F>,
    ) -> Result<(M, PcrEvent), PcrError> {
        let loss_before = batch_loss.as_mut().map(|f| f(module));
        let (rescaled, rescaling) = self.rescale(module)?;
        transport(optim, &rescaling.by_param(), self.config.transport)?;
        let loss_after = batch_loss.as_mut().map(|f| f(&rescaled));
        let event = PcrEvent {
            step: self.state.steps,
            gain_before: rescaling.gain_before,
            gain_after: rescaling.gain_after,
            loss_before,
            loss_after,
        };
        self.state.events.push(event.clone());
        Ok((rescaled, event))
    }

    /// The module canonicalized under this configuration's penalty, and the factors.
    ///
    /// # Errors
    ///
    /// As [`canonicalize_module`].
    pub fn rescale<M: Canonicalizable>(&self, module: &M) -> Result<(M, Rescaling), PcrError> {
        let max_gain = match self.config.penalty {
            Penalty::Cap { max_gain } => Some(max_gain),
            Penalty::None | Penalty::Soft { .. } => None,
        };
        Ok(canonicalize_module(module, max_gain)?)
    }
}

/// `lambda * G^2` under [`Penalty::Soft`], `None` otherwise.
fn soft_penalty<M: Canonicalizable>(
    penalty: Penalty,
    module: &M,
) -> Result<Option<Tensor<1>>, PcrError> {
    match penalty {
        Penalty::Soft { lambda } => Ok(Some(gain::gain_squared(module)?.mul_scalar(lambda))),
        Penalty::None | Penalty::Cap { .. } => Ok(None),
    }
}

/// PCR inside a module, for burn-train's `Learner`: the step count as a parameter (so that the
/// module's record, and with it burn-train's checkpoint, carries it), the configuration, and
/// the events of this process (shared by the module's clones).
///
/// Put one in the model, implement [`PcrModel`], add [`PcrSlot::penalty`] to the loss in
/// `TrainStep::step`, and override `TrainStep::optimize` with [`optimize`]:
///
/// ```text
/// impl TrainStep for Model {
///     // ...
///     fn optimize(self, optim: &mut ModuleOptimizer, lr: ModuleLearningRate,
///                 grads: GradientsParams) -> Self {
///         weightnorm::pcr::optimize(self, optim, lr, grads)
///     }
/// }
/// ```
#[derive(Module, Debug)]
pub struct PcrSlot {
    /// Optimizer steps taken (one integer).
    pub steps: Param<Tensor<1, Int>>,
    /// The configuration.
    #[module(skip)]
    pub config: PcrConfig,
    /// The canonicalizations of this process (a resumed run starts an empty list; the step
    /// count, not this list, drives the schedule).
    #[module(skip)]
    pub events: Arc<Mutex<Vec<PcrEvent>>>,
}

impl PcrSlot {
    /// A slot at step 0 on `device`.
    ///
    /// # Errors
    ///
    /// Those of [`PcrConfig::validate`].
    pub fn new(config: PcrConfig, device: &burn::tensor::Device) -> Result<Self, PcrError> {
        config.validate()?;
        Ok(Self {
            steps: Param::initialized(
                ParamId::new(),
                Tensor::from_data(TensorData::new(vec![0i64], [1]), device),
            ),
            config,
            events: Arc::new(Mutex::new(Vec::new())),
        })
    }

    /// The optimizer steps taken (read from the device).
    pub fn step_count(&self) -> u64 {
        let steps: Vec<i64> = self
            .steps
            .val()
            .into_data()
            .try_into_vec_as::<i64>()
            .expect("an integer tensor converts to i64");
        steps.first().map_or(0, |&s| s.max(0) as u64)
    }

    /// The canonicalizations of this process so far.
    pub fn events(&self) -> Vec<PcrEvent> {
        self.events.lock().expect("not poisoned").clone()
    }

    /// The penalty term for this step's loss (`lambda * G^2` under `soft`, else `None`).
    ///
    /// # Errors
    ///
    /// [`PcrError::Live`] if the module cannot be described.
    pub fn penalty<M: Canonicalizable>(&self, module: &M) -> Result<Option<Tensor<1>>, PcrError> {
        soft_penalty(self.config.penalty, module)
    }
}

/// A model that carries PCR in a [`PcrSlot`].
pub trait PcrModel: Canonicalizable {
    /// The model's slot.
    fn pcr_slot(&self) -> &PcrSlot;
}

/// Writes a step count into the parameter with this id.
struct StepWriter {
    id: ParamId,
    steps: u64,
}

impl ModuleMapper for StepWriter {
    fn map_int<const D: usize>(&mut self, param: Param<Tensor<D, Int>>) -> Param<Tensor<D, Int>> {
        if param.id != self.id {
            return param;
        }
        let steps = self.steps as i64;
        param.map(|old| {
            let values = TensorData::new(vec![steps; old.shape().num_elements()], old.shape())
                .convert_dtype(old.dtype());
            Tensor::from_data(values, &old.device())
        })
    }
}

/// `TrainStep::optimize` with PCR: the optimizer step, then every `C`-th step the
/// canonicalization and the transport of the optimizer's state, the step count written back
/// into the model's slot and the event appended to the slot's list.
///
/// # Panics
///
/// If the canonicalization fails (burn-train's `optimize` has no error channel): a model the
/// front-end cannot describe, a weight-normalized one (call [`Pcr::check`] before training to
/// get the error instead), or a network whose canonical form overflows.
pub fn optimize<M: PcrModel>(
    module: M,
    optim: &mut ModuleOptimizer,
    lr: ModuleLearningRate,
    grads: GradientsParams,
) -> M {
    let slot = module.pcr_slot().clone();
    let state = PcrState {
        steps: slot.step_count(),
        events: Vec::new(),
    };
    let mut pcr = Pcr::resume(slot.config.clone(), state).expect("validated by PcrSlot::new");
    let (module, event) = pcr
        .step(optim, lr, module, grads)
        .unwrap_or_else(|e| panic!("PCR: {e}"));
    if let Some(event) = event {
        slot.events.lock().expect("not poisoned").push(event);
    }
    module.map(&mut StepWriter {
        id: slot.steps.id,
        steps: pcr.state.steps,
    })
}
