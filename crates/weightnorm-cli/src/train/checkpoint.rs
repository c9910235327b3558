//! A run's checkpoint: the model, the optimizer's state, the position in the data and the
//! metrics so far, in one file (`checkpoint.bin` in the run directory) replaced atomically, so
//! that a run stopped at any moment (SIGKILL included) resumes from its last checkpoint and
//! produces exactly the step losses of an uninterrupted run.
//!
//! The file: the magic `WNCKPT01`, then the model's Burn record (`u64` little-endian length,
//! then its bytes), the optimizer's Burn record (likewise), and the [`State`] as JSON.
//! Records carry the parameters' ids, so the optimizer's moments find their parameters again.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::module::Module;
use burn::optim::ModuleOptimizer;
use burn::store::ModuleRecord;
use burn::tensor::Bytes;
use serde::{Deserialize, Serialize};

use crate::Failure;
use crate::metrics::RunMetrics;
use crate::model::Model;
use crate::output::write_bytes;

const MAGIC: &[u8; 8] = b"WNCKPT01";

/// The file name of a run's checkpoint in its directory.
pub const FILE: &str = "checkpoint.bin";

/// One optimizer step as the step log (`steps.jsonl`) records it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// The step's index in the run, from 0.
    pub step: usize,
    /// Its epoch, from 1.
    pub epoch: usize,
    /// The batch's training loss.
    pub loss: f64,
    /// The learning rate.
    pub lr: f64,
    /// Seconds since the run began (over all its sessions) when the step ended.
    pub seconds: f64,
    /// The step's own wall time (forward, backward, optimizer), in milliseconds.
    #[serde(default)]
    pub ms: f64,
}

/// Where a run is and what it has measured.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct State {
    /// The command-line options the run was started with (after the subcommand), so that
    /// `--resume` continues it with the same ones.
    pub argv: Vec<String>,
    /// The epoch in progress, from 0 (the number of epochs finished).
    pub epoch: usize,
    /// Steps done in that epoch.
    pub step_in_epoch: usize,
    /// Every step so far.
    pub steps: Vec<StepRecord>,
    /// The metrics so far (every step loss from step 0, every finished epoch).
    pub metrics: RunMetrics,
    /// Seconds spent in optimizer steps so far.
    pub step_time: f64,
    /// Wall-clock seconds of the run so far.
    pub seconds: f64,
    /// Whether the run has finished all its epochs.
    pub finished: bool,
    /// Periodic Canonical Regularization's state (its step count and events), for PCR runs.
    #[serde(default)]
    pub pcr: Option<weightnorm::pcr::PcrState>,
}

/// A checkpoint read back: the model's and the optimizer's records, and the state.
pub struct Checkpoint {
    model: ModuleRecord,
    optim: Bytes,
    /// Where the run is.
    pub state: State,
}

/// Writes the checkpoint of `model`, `optim` and `state` to `dir` (atomically: the previous
/// checkpoint stays whole until the new one is complete).
///
/// # Errors
///
/// If a record cannot be encoded or the file cannot be written.
pub fn save(dir: &Path, model: &Model, optim: &ModuleOptimizer, state: &State) -> Result<()> {
    let model = model
        .clone()
        .into_record()
        .into_bytes()
        .map_err(|e| anyhow::anyhow!("cannot encode the model's record: {e}"))?;
    let optim = optim
        .into_bytes()
        .map_err(|e| anyhow::anyhow!("cannot encode the optimizer's record: {e}"))?;
    let state = serde_json::to_vec(state)?;
    let mut out = Vec::with_capacity(24 + model.len() + optim.len() + state.len());
    out.extend_from_slice(MAGIC);
    for part in [&model[..], &optim[..]] {
        out.extend_from_slice(&(part.len() as u64).to_le_bytes());
        out.extend_from_slice(part);
    }
    out.extend_from_slice(&state);
    write_bytes(&dir.join(FILE), &out)
}

/// The path of `dir`'s checkpoint, if it has one.
pub fn path(dir: &Path) -> Option<PathBuf> {
    let p = dir.join(FILE);
    p.is_file().then_some(p)
}

/// Reads `dir`'s checkpoint.
///
/// # Errors
///
/// A [`Failure`] (exit 2) if there is none, or it is not a checkpoint of this program.
pub fn load(dir: &Path) -> Result<Checkpoint> {
    let file = dir.join(FILE);
    let bytes = std::fs::read(&file).map_err(|e| {
        Failure::input(anyhow::anyhow!(
            "cannot resume from {}: {e} (a run writes its checkpoint there at every epoch's end and every --checkpoint-every steps)",
            file.display()
        ))
    })?;
    let bad = |what: &str| {
        Failure::input(anyhow::anyhow!(
            "{} is not a weightnorm checkpoint: {what}",
            file.display()
        ))
    };
    let rest = bytes.strip_prefix(MAGIC).ok_or_else(|| bad("no magic"))?;
    let mut parts = Vec::new();
    let mut rest = rest;
    for _ in 0..2 {
        let (len, tail) = rest.split_at_checked(8).ok_or_else(|| bad("truncated"))?;
        let len = u64::from_le_bytes(len.try_into().expect("8 bytes"));
        let len = usize::try_from(len).map_err(|_| bad("a record too long"))?;
        let (part, tail) = tail.split_at_checked(len).ok_or_else(|| bad("truncated"))?;
        parts.push(part.to_vec());
        rest = tail;
    }
    let state: State = serde_json::from_slice(rest).map_err(|e| bad(&format!("its state: {e}")))?;
    let optim = Bytes::from_bytes_vec(parts.pop().expect("two parts"));
    let model = ModuleRecord::from_bytes(Bytes::from_bytes_vec(parts.pop().expect("two parts")))
        .map_err(|e| bad(&format!("the model's record: {e}")))?;
    Ok(Checkpoint {
        model,
        optim,
        state,
    })
}

impl Checkpoint {
    /// `model` (built as the run built it) with the checkpoint's parameters, and `optim` with
    /// its state.
    ///
    /// # Errors
    ///
    /// If the records do not fit the model (the run was made with other options).
    pub fn restore(
        self,
        model: Model,
        optim: ModuleOptimizer,
    ) -> Result<(Model, ModuleOptimizer, State)> {
        let model = model
            .try_load_record(self.model)
            .context("the checkpoint's model does not fit the run's options")?;
        let optim = optim
            .from_bytes(self.optim)
            .map_err(|e| anyhow::anyhow!("the checkpoint's optimizer state: {e}"))?;
        let state = &self.state;
        if state.steps.len() != state.metrics.step_losses.len()
            || state.step_in_epoch > state.steps.len()
            || state.metrics.epochs.len() != state.epoch
        {
            bail!(crate::Failure::input(anyhow::anyhow!(
                "the checkpoint's position (epoch {}, step {} of the epoch) disagrees with its \
                 {} steps and {} epochs of metrics",
                state.epoch,
                state.step_in_epoch,
                state.steps.len(),
                state.metrics.epochs.len()
            )));
        }
        Ok((model, optim, self.state))
    }
}
