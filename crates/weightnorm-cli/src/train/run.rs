//! One training run: the model built and initialised, then epochs of optimizer steps, each
//! epoch followed by an evaluation on the test split.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::module::Module;
use burn::optim::{AdamConfig, AdamWConfig, GradientsParams, ModuleOptimizer};
use burn::tensor::Device;
use indicatif::ProgressBar;

use weightnorm::pcr::{Pcr, PcrConfig};

use crate::Failure;
use crate::data::Dataset;
use crate::metrics::{EpochMetrics, RunMetrics};
use crate::model::{Model, ModelKind, Param, Spec};

use super::args::{DataModelArgs, Init};
use super::batch::{Batch, batch, forward, labels, shuffled};
use super::checkpoint::{self, State, StepRecord};
use super::evaluate::evaluate;
use super::objective::Objective;
use super::progress;

/// Where a run keeps its checkpoint and step log, and how it starts.
pub struct RunDir<'a> {
    /// The run's directory.
    pub dir: &'a Path,
    /// Write a checkpoint every this many steps (besides every epoch's end).
    pub checkpoint_every: Option<usize>,
    /// Continue from the directory's checkpoint where there is one.
    pub resume: bool,
    /// The command-line options of the run, kept in the checkpoint.
    pub argv: &'a [String],
    /// The run's name in its metrics (the parameterization's, or `pcr-<policy>`).
    pub name: &'a str,
    /// Periodic Canonical Regularization's configuration, for `--param pcr`.
    pub pcr: Option<PcrConfig>,
}

/// Set by SIGINT (Ctrl-C): the run writes a checkpoint after the step in progress and stops.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_interrupt(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Makes Ctrl-C stop runs at the next step with a checkpoint, instead of killing the process.
pub fn catch_interrupts() {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(
            libc::SIGINT,
            on_interrupt as extern "C" fn(libc::c_int) as libc::sighandler_t,
        );
    }
}

/// Trains one model on `ds` with the parameterization `param`, checkpointing into `at.dir`;
/// returns its description, the trained model and what was measured.
///
/// # Errors
///
/// If the model cannot be built or initialised, the checkpoint cannot be read or written, the
/// loss stops being finite, or the run was interrupted (after writing its checkpoint).
pub fn run(
    args: &DataModelArgs,
    ds: &Dataset,
    param: Param,
    at: &RunDir<'_>,
) -> Result<(Spec, Model, RunMetrics)> {
    let device = args.device.device()?.autodiff();
    device.seed(args.seed);
    let spec = args.spec(ds, param);
    std::fs::create_dir_all(at.dir)
        .with_context(|| format!("cannot create {}", at.dir.display()))?;
    let built = spec.build(&device)?;
    let mut trainer = Trainer::new(args, ds, &spec, device.clone(), at);
    let model = match at.resume.then(|| checkpoint::path(at.dir)).flatten() {
        Some(_) => trainer.restore(built, checkpoint::load(at.dir)?)?,
        None => initialise(built, args, ds, &spec, &device)?,
    };
    if let Some(config) = &at.pcr {
        let state = trainer.state.pcr.take().unwrap_or_default();
        let pcr = Pcr::resume(config.clone(), state)
            .map_err(|e| Failure::input(anyhow::anyhow!("--param pcr: {e}")))?;
        pcr.check(&model)
            .map_err(|e| Failure::input(anyhow::anyhow!("--param pcr: {e}")))?;
        trainer.state.metrics.pcr = Some(format!(
            "every {} steps, penalty {}, transport {}",
            config.every,
            config.penalty,
            config.transport.name()
        ));
        trainer.pcr = Some(pcr);
    }
    trainer.open_log()?;
    let epochs = args.epochs(ds);
    let bar = progress::bar(param.name(), trainer.steps_per_epoch() * epochs, args.quiet);
    bar.set_position(trainer.state.steps.len() as u64);
    let started = Instant::now();
    let first = trainer.state.epoch;
    let result = (first..epochs).try_fold(model, |model, epoch| {
        trainer.epoch(model, epoch, epochs, &bar, started)
    });
    bar.finish_and_clear();
    let model = result?;
    trainer.state.finished = true;
    trainer.save(&model, started)?;
    Ok((spec, model, trainer.finish(epochs, started)))
}

/// Applies the initialisation `args.init` asks for: the paper's data-dependent initialisation
/// on a first batch of at least 256 examples (weight-normalized models only), or none.
fn initialise(
    model: Model,
    args: &DataModelArgs,
    ds: &Dataset,
    spec: &Spec,
    device: &Device,
) -> Result<Model> {
    if args.init != Init::Ddi || !matches!(spec.param, Param::Wn | Param::WnMobn) {
        return Ok(model);
    }
    let first: Vec<usize> = shuffled(ds.train_y.len(), args.seed)
        .into_iter()
        .take(args.batch_size.max(256))
        .collect();
    Ok(
        match (
            model,
            batch(ds, &ds.train_x, &first, spec.kind == ModelKind::Cnn, device),
        ) {
            (Model::Mlp(m), Batch::Flat(x)) => Model::Mlp(m.data_dependent_init(x)?),
            (Model::Cnn(m), Batch::Image(x)) => Model::Cnn(m.data_dependent_init(x, 1.0)?),
            _ => unreachable!("batches are built for the model"),
        },
    )
}

/// The optimizer of `param`: Adam, or AdamW with decoupled weight decay `weight_decay` for
/// `plain-wd`.
fn optimizer(param: Param, weight_decay: f64) -> ModuleOptimizer {
    if param.decays() {
        AdamWConfig::new()
            .with_weight_decay(weight_decay as f32)
            .init()
    } else {
        AdamConfig::new().init()
    }
}

/// The state of a run between steps, apart from the model: the optimizer, the loss, the
/// settings, where the run is and what has been measured so far.
struct Trainer<'a> {
    ds: &'a Dataset,
    spec: Spec,
    optim: ModuleOptimizer,
    loss: Objective,
    device: Device,
    lr: f64,
    batch_size: usize,
    seed: u64,
    /// The epochs the run trains.
    epochs: usize,
    image: bool,
    dir: &'a Path,
    checkpoint_every: Option<usize>,
    /// Where the run is and what it measured (what the checkpoint holds).
    state: State,
    /// The streamed step log (`steps.jsonl`).
    log: Option<BufWriter<File>>,
    /// Periodic Canonical Regularization, for PCR runs.
    pcr: Option<Pcr>,
}

impl<'a> Trainer<'a> {
    fn new(
        args: &DataModelArgs,
        ds: &'a Dataset,
        spec: &Spec,
        device: Device,
        at: &RunDir<'a>,
    ) -> Self {
        Self {
            ds,
            spec: spec.clone(),
            optim: optimizer(spec.param, args.weight_decay),
            loss: Objective::new(args.loss, ds.classes, &device),
            device,
            lr: args.lr,
            batch_size: args.batch_size,
            seed: args.seed,
            epochs: args.epochs(ds),
            image: spec.kind == ModelKind::Cnn,
            dir: at.dir,
            checkpoint_every: at.checkpoint_every.filter(|&n| n > 0),
            state: State {
                argv: at.argv.to_vec(),
                epoch: 0,
                step_in_epoch: 0,
                steps: Vec::new(),
                metrics: RunMetrics::new(at.name, args.seed),
                step_time: 0.0,
                seconds: 0.0,
                finished: false,
                pcr: None,
            },
            log: None,
            pcr: None,
        }
    }

    /// The model and the optimizer as the checkpoint left them, and its state.
    fn restore(&mut self, built: Model, ck: checkpoint::Checkpoint) -> Result<Model> {
        let optim = std::mem::replace(&mut self.optim, AdamConfig::new().init());
        // A placeholder while the run's own optimizer (Adam or AdamW) takes the state saved.
        ck.state.check(
            &self.state.argv,
            self.seed,
            self.epochs,
            self.steps_per_epoch(),
        )?;
        let (model, optim, state) = ck.restore(built, optim)?;
        self.optim = optim;
        self.state = state;
        Ok(model)
    }

    /// Opens the step log and rewrites it with the steps the state holds (a run resumed from
    /// a checkpoint forgets the steps after it).
    fn open_log(&mut self) -> Result<()> {
        let path = self.dir.join("steps.jsonl");
        let file =
            File::create(&path).with_context(|| format!("cannot write {}", path.display()))?;
        let mut log = BufWriter::new(file);
        for s in &self.state.steps {
            writeln!(log, "{}", serde_json::to_string(s)?)?;
        }
        log.flush()?;
        self.log = Some(log);
        Ok(())
    }

    /// Writes the checkpoint.
    fn save(&mut self, model: &Model, started: Instant) -> Result<()> {
        let mut state = self.state.clone();
        state.seconds += started.elapsed().as_secs_f64();
        state.pcr = self.pcr.as_ref().map(|p| p.state().clone());
        checkpoint::save(self.dir, model, &self.optim, &state)
    }

    fn steps_per_epoch(&self) -> usize {
        self.ds.train_y.len().div_ceil(self.batch_size)
    }

    /// Trains epoch `epoch` (from 0) of `epochs` over its shuffle, from the step the state is
    /// at, then evaluates.
    fn epoch(
        &mut self,
        mut model: Model,
        epoch: usize,
        epochs: usize,
        bar: &ProgressBar,
        started: Instant,
    ) -> Result<Model> {
        let n = self.ds.train_y.len();
        let order = shuffled(n, self.seed.wrapping_add(epoch as u64 + 1));
        let done = self.state.step_in_epoch;
        // The loss sum of the steps done before a resume, added in the same order.
        let losses = &self.state.metrics.step_losses;
        let (mut loss_sum, mut seen) = (0.0, 0usize);
        for (idx, loss) in order
            .chunks(self.batch_size)
            .zip(&losses[losses.len() - done..])
        {
            loss_sum += loss * idx.len() as f64;
            seen += idx.len();
        }
        for idx in order.chunks(self.batch_size).skip(done) {
            let (next, loss) = self.step(model, idx, epoch, started)?;
            model = next;
            loss_sum += loss * idx.len() as f64;
            seen += idx.len();
            bar.set_message(format!(
                "epoch {}/{epochs}, mean loss {:.4}",
                epoch + 1,
                loss_sum / seen as f64
            ));
            bar.inc(1);
            let steps = self.state.steps.len();
            if self
                .checkpoint_every
                .is_some_and(|k| steps.is_multiple_of(k))
            {
                self.save(&model, started)?;
            }
            if INTERRUPTED.load(Ordering::SeqCst) {
                self.save(&model, started)?;
                bar.finish_and_clear();
                bail!(Interrupted {
                    steps,
                    dir: self.dir.display().to_string()
                });
            }
        }
        let scores = evaluate(
            &model.valid(),
            self.ds,
            self.image,
            &self.device.clone().inner(),
            self.loss.kind(),
        );
        let e = EpochMetrics {
            train_loss: loss_sum / n as f64,
            test_loss: scores.loss,
            test_nll: scores.nll,
            test_accuracy: scores.accuracy,
            ece: scores.ece,
        };
        progress::epoch_line(bar, &self.state.metrics.param, epoch + 1, &e);
        let gain = weightnorm::canonical::canonicalize(self.spec.network(&model.valid())?)?;
        let steps = self.state.steps.len();
        self.state
            .metrics
            .global_gain
            .push((steps, gain.global_gain()));
        self.state.metrics.epochs.push(e);
        self.state.epoch = epoch + 1;
        self.state.step_in_epoch = 0;
        self.save(&model, started)?;
        Ok(model)
    }

    /// One optimizer step on the training examples `idx` of epoch `epoch`; returns the updated
    /// model and the batch's loss, and logs the step.
    ///
    /// # Errors
    ///
    /// If the loss is not finite, or the step log cannot be written.
    fn step(
        &mut self,
        model: Model,
        idx: &[usize],
        epoch: usize,
        started: Instant,
    ) -> Result<(Model, f64)> {
        let t0 = Instant::now();
        let x = batch(self.ds, &self.ds.train_x, idx, self.image, &self.device);
        let y = labels(self.ds, idx, &self.device);
        let loss = self.loss.forward(forward(&model, x), y);
        let total = match &self.pcr {
            Some(pcr) => match pcr.penalty(&model)? {
                Some(penalty) => loss.clone() + penalty,
                None => loss.clone(),
            },
            None => loss.clone(),
        };
        let grads = GradientsParams::from_grads(total.backward(), &model);
        let (model, event) = match &mut self.pcr {
            None => (self.optim.step(self.lr, model, grads), None),
            Some(pcr) => {
                // The loss of this batch just before and just after a canonicalization, on
                // the inference model (no graph), penalty excluded.
                let inner = self.device.clone().inner();
                let (ds, image, loss_fn) = (self.ds, self.image, &self.loss);
                let measure = |m: &Model| {
                    let x = batch(ds, &ds.train_x, idx, image, &inner);
                    let y = labels(ds, idx, &inner);
                    loss_fn
                        .forward(forward(&m.valid(), x), y)
                        .into_scalar::<f64>()
                };
                pcr.step_measured(&mut self.optim, self.lr, model, grads, Some(measure))
                    .map_err(|e| {
                        anyhow::anyhow!("PCR at step {}: {e}", self.state.steps.len() + 1)
                    })?
            }
        };
        let l = loss.into_scalar::<f64>();
        let took = t0.elapsed().as_secs_f64();
        self.state.step_time += took;
        let step = self.state.steps.len();
        if !l.is_finite() {
            bail!("the loss became {l} at step {step}: try a smaller --lr");
        }
        let record = StepRecord {
            step,
            epoch: epoch + 1,
            loss: l,
            lr: self.lr,
            seconds: self.state.seconds + started.elapsed().as_secs_f64(),
            ms: took * 1e3,
        };
        if let Some(log) = &mut self.log {
            writeln!(log, "{}", serde_json::to_string(&record)?)?;
            log.flush()?;
        }
        self.state.metrics.step_losses.push(l);
        self.state.metrics.step_ms.push(record.ms);
        self.state.metrics.step_seconds.push(record.seconds);
        if let Some(e) = event {
            self.state
                .metrics
                .global_gain
                .push((e.step as usize, e.gain_before));
            self.state
                .metrics
                .pcr_events
                .push(crate::metrics::PcrEvent {
                    step: e.step as usize,
                    gain_before: e.gain_before,
                    gain_after: e.gain_after,
                    loss_before: e.loss_before.unwrap_or(f64::NAN),
                    loss_after: e.loss_after.unwrap_or(f64::NAN),
                });
        }
        self.state.steps.push(record);
        self.state.step_in_epoch += 1;
        Ok((model, l))
    }

    /// The metrics of the finished run of `epochs` epochs, this session of which began at
    /// `started`.
    fn finish(self, epochs: usize, started: Instant) -> RunMetrics {
        let mut metrics = self.state.metrics;
        let steps = metrics.step_losses.len() as f64;
        metrics.mean_step_ms = self.state.step_time / steps * 1e3;
        metrics.examples_per_s = (self.ds.train_y.len() * epochs) as f64 / self.state.step_time;
        metrics.seconds = self.state.seconds + started.elapsed().as_secs_f64();
        metrics
    }
}

/// A run stopped by Ctrl-C, its checkpoint written.
#[derive(Debug)]
pub struct Interrupted {
    /// Steps done.
    pub steps: usize,
    /// The run's directory.
    pub dir: String,
}

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "interrupted after step {}: checkpoint written; continue with --resume {}",
            self.steps, self.dir
        )
    }
}

impl std::error::Error for Interrupted {}
