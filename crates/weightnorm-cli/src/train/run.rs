//! One training run: the model built and initialised, then epochs of optimizer steps, each
//! epoch followed by an evaluation on the test split.

use std::time::Instant;

use anyhow::{Result, bail};
use burn::module::Module;
use burn::nn::loss::{CrossEntropyLoss, CrossEntropyLossConfig};
use burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer};
use burn::tensor::Device;
use indicatif::ProgressBar;

use crate::data::Dataset;
use crate::metrics::{EpochMetrics, RunMetrics};
use crate::model::{Model, ModelKind, Param, Spec};

use super::args::{DataModelArgs, Init};
use super::batch::{Batch, batch, forward, labels, shuffled};
use super::evaluate::evaluate;
use super::progress;

/// Trains one model on `ds` with the parameterization `param`; returns its description, the
/// trained model and what was measured.
///
/// # Errors
///
/// If the model cannot be built or initialised, or the loss stops being finite.
pub fn run(args: &DataModelArgs, ds: &Dataset, param: Param) -> Result<(Spec, Model, RunMetrics)> {
    let device = Device::default().autodiff();
    device.seed(args.seed);
    let spec = args.spec(ds, param);
    let model = initialise(spec.build(&device)?, args, ds, &spec, &device)?;
    let mut trainer = Trainer::new(args, ds, &spec, device);
    let epochs = args.epochs(ds);
    let bar = progress::bar(param.name(), trainer.steps_per_epoch() * epochs, args.quiet);
    let started = Instant::now();
    let result = (0..epochs).try_fold(model, |model, epoch| {
        trainer.epoch(model, epoch, epochs, &bar)
    });
    bar.finish_and_clear();
    let model = result?;
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

/// The state of a run between steps, apart from the model: the optimizer, the loss, the
/// settings, and what has been measured so far.
struct Trainer<'a> {
    ds: &'a Dataset,
    optim: ModuleOptimizer,
    loss: CrossEntropyLoss,
    device: Device,
    lr: f64,
    batch_size: usize,
    seed: u64,
    image: bool,
    metrics: RunMetrics,
    /// Seconds spent in optimizer steps.
    step_time: f64,
}

impl<'a> Trainer<'a> {
    fn new(args: &DataModelArgs, ds: &'a Dataset, spec: &Spec, device: Device) -> Self {
        Self {
            ds,
            optim: AdamConfig::new().init(),
            loss: CrossEntropyLossConfig::new().init(&device),
            device,
            lr: args.lr,
            batch_size: args.batch_size,
            seed: args.seed,
            image: spec.kind == ModelKind::Cnn,
            metrics: RunMetrics::new(spec.param.name()),
            step_time: 0.0,
        }
    }

    fn steps_per_epoch(&self) -> usize {
        self.ds.train_y.len().div_ceil(self.batch_size)
    }

    /// Trains epoch `epoch` (from 0) of `epochs` over a fresh shuffle, then evaluates.
    fn epoch(
        &mut self,
        mut model: Model,
        epoch: usize,
        epochs: usize,
        bar: &ProgressBar,
    ) -> Result<Model> {
        let n = self.ds.train_y.len();
        let order = shuffled(n, self.seed.wrapping_add(epoch as u64 + 1));
        let mut loss_sum = 0.0;
        for idx in order.chunks(self.batch_size) {
            let (next, loss) = self.step(model, idx)?;
            model = next;
            loss_sum += loss * idx.len() as f64;
            bar.set_message(format!("epoch {}/{epochs} loss {loss:.4}", epoch + 1));
            bar.inc(1);
        }
        let scores = evaluate(
            &model.valid(),
            self.ds,
            self.image,
            &self.device.clone().inner(),
        );
        let e = EpochMetrics {
            train_loss: loss_sum / n as f64,
            test_loss: scores.loss,
            test_accuracy: scores.accuracy,
            ece: scores.ece,
        };
        progress::epoch_line(bar, &self.metrics.param, epoch + 1, &e);
        self.metrics.epochs.push(e);
        Ok(model)
    }

    /// One optimizer step on the training examples `idx`; returns the updated model and the
    /// batch's loss.
    ///
    /// # Errors
    ///
    /// If the loss is not finite.
    fn step(&mut self, model: Model, idx: &[usize]) -> Result<(Model, f64)> {
        let t0 = Instant::now();
        let x = batch(self.ds, &self.ds.train_x, idx, self.image, &self.device);
        let y = labels(self.ds, idx, &self.device);
        let loss = self.loss.forward(forward(&model, x), y);
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        let model = self.optim.step(self.lr, model, grads);
        let l = loss.into_scalar::<f64>();
        self.step_time += t0.elapsed().as_secs_f64();
        if !l.is_finite() {
            bail!(
                "the loss became {l} at step {}: try a smaller --lr",
                self.metrics.step_losses.len()
            );
        }
        self.metrics.step_losses.push(l);
        Ok((model, l))
    }

    /// The metrics of the finished run of `epochs` epochs, begun at `started`.
    fn finish(mut self, epochs: usize, started: Instant) -> RunMetrics {
        let steps = self.metrics.step_losses.len() as f64;
        self.metrics.mean_step_ms = self.step_time / steps * 1e3;
        self.metrics.examples_per_s = (self.ds.train_y.len() * epochs) as f64 / self.step_time;
        self.metrics.seconds = started.elapsed().as_secs_f64();
        self.metrics
    }
}
