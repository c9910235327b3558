//! A run's checkpoint: the model, the optimizer's state, the position in the data and the
//! metrics so far, in one file (`checkpoint.bin` in the run directory) replaced atomically, so
//! that a run stopped at any moment (SIGKILL included) resumes from its last checkpoint and
//! produces exactly the step losses of an uninterrupted run.
//!
//! The file: the magic `WNCKPT02`, then three sections, the model's Burn record, the
//! optimizer's Burn record and the [`State`] as JSON, each written as its length (`u64`
//! little-endian), the CRC-32 of that length and the bytes (`u32` little-endian), then the
//! bytes; nothing follows the last. A flipped bit anywhere is found (the magic, a length, a
//! checksum or a section no longer agree) and the run is refused rather than resumed with other
//! weights. Files of the first version (`WNCKPT01`: the same sections without checksums) are
//! still read. Records carry the parameters' ids, so the optimizer's moments find their
//! parameters again. The state read back is checked against the run before it continues
//! ([`State::check`]).

use std::path::{Path, PathBuf};

use anyhow::Result;
use burn::module::Module;
use burn::optim::ModuleOptimizer;
use burn::store::ModuleRecord;
use burn::tensor::Bytes;
use serde::{Deserialize, Serialize};

use crate::Failure;
use crate::metrics::RunMetrics;
use crate::model::Model;
use crate::output::write_bytes;
use crate::text::shown;

const MAGIC: &[u8; 8] = b"WNCKPT02";
/// The first version's magic: sections without checksums.
const MAGIC_V1: &[u8; 8] = b"WNCKPT01";
/// The most a checkpoint file may hold (a guard against reading a huge file by mistake).
const MAX_BYTES: u64 = 1 << 40;
/// The sections' names, in their order in the file.
const SECTIONS: [&str; 3] = [
    "the model's record",
    "the optimizer's record",
    "the run's state",
];

/// The CRC-32 of a section's length and bytes.
fn checksum(len: u64, bytes: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&len.to_le_bytes());
    h.update(bytes);
    h.finalize()
}

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
    let mut out = Vec::with_capacity(44 + model.len() + optim.len() + state.len());
    out.extend_from_slice(MAGIC);
    for part in [&model[..], &optim[..], &state[..]] {
        let len = part.len() as u64;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&checksum(len, part).to_le_bytes());
        out.extend_from_slice(part);
    }
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
    let bytes = weightnorm::torch::read_regular(&file, MAX_BYTES).map_err(|e| {
        Failure::input(anyhow::anyhow!(
            "cannot resume from {}: {e} (a run writes its checkpoint there at every epoch's end and every --checkpoint-every steps)",
            shown(&file)
        ))
    })?;
    let bad = |what: &str| {
        Failure::input(anyhow::anyhow!(
            "{} is not a whole weightnorm checkpoint: {what}; it cannot be resumed (start the run again, or resume a copy made before it was damaged)",
            shown(&file)
        ))
    };
    let (mut rest, checked) = if let Some(rest) = bytes.strip_prefix(MAGIC) {
        (rest, true)
    } else if let Some(rest) = bytes.strip_prefix(MAGIC_V1) {
        (rest, false)
    } else {
        return Err(bad("it does not begin with the magic WNCKPT02").into());
    };
    let mut parts: Vec<&[u8]> = Vec::new();
    for (i, name) in SECTIONS.iter().enumerate() {
        if !checked && i == 2 {
            // The first version's state runs to the end of the file, unprefixed.
            parts.push(rest);
            break;
        }
        let (len, tail) = rest
            .split_at_checked(8)
            .ok_or_else(|| bad(&format!("it ends before {name}")))?;
        let len_u64 = u64::from_le_bytes(len.try_into().expect("8 bytes"));
        let (sum, tail) = if checked {
            let (sum, tail) = tail
                .split_at_checked(4)
                .ok_or_else(|| bad(&format!("it ends before {name}")))?;
            (
                Some(u32::from_le_bytes(sum.try_into().expect("4 bytes"))),
                tail,
            )
        } else {
            (None, tail)
        };
        let part = usize::try_from(len_u64)
            .ok()
            .and_then(|len| tail.get(..len))
            .ok_or_else(|| {
                bad(&format!(
                    "{name} is said to hold {len_u64} bytes, more than the file has left"
                ))
            })?;
        if let Some(sum) = sum
            && checksum(len_u64, part) != sum
        {
            return Err(bad(&format!("the checksum of {name} does not match its bytes")).into());
        }
        parts.push(part);
        rest = &tail[part.len()..];
    }
    if checked && !rest.is_empty() {
        return Err(bad(&format!("{} bytes follow its last section", rest.len())).into());
    }
    let state: State =
        serde_json::from_slice(parts[2]).map_err(|e| bad(&format!("its state: {e}")))?;
    let optim = Bytes::from_bytes_vec(parts[1].to_vec());
    let model = ModuleRecord::from_bytes(Bytes::from_bytes_vec(parts[0].to_vec()))
        .map_err(|e| bad(&format!("the model's record: {e}")))?;
    Ok(Checkpoint {
        model,
        optim,
        state,
    })
}

impl State {
    /// Checks the state read back from a checkpoint against the run that continues it: the
    /// options it was started with (`argv`, `seed`), its position (epochs of `epochs`, steps of
    /// `steps_per_epoch`) against the steps and metrics it holds.
    ///
    /// # Errors
    ///
    /// A [`Failure`] (exit 2) naming the first disagreement.
    pub fn check(
        &self,
        argv: &[String],
        seed: u64,
        epochs: usize,
        steps_per_epoch: usize,
    ) -> Result<()> {
        let bad = |what: String| -> Result<()> {
            Err(Failure::input(anyhow::anyhow!(
                "the checkpoint's state does not fit its run: {what}"
            ))
            .into())
        };
        if self.argv != argv {
            return bad(format!(
                "it was written by a run with the options `{}`, not `{}`",
                self.argv.join(" "),
                argv.join(" ")
            ));
        }
        if self.metrics.seed != seed {
            return bad(format!(
                "its metrics are of seed {}, the run's seed is {seed}",
                self.metrics.seed
            ));
        }
        if self.epoch > epochs || (self.epoch == epochs && self.step_in_epoch != 0) {
            return bad(format!(
                "it is at epoch {} step {}, beyond the run's {epochs} epochs",
                self.epoch, self.step_in_epoch
            ));
        }
        // A checkpoint after an epoch's last step and before its evaluation is at step
        // `steps_per_epoch` of it.
        if self.step_in_epoch > steps_per_epoch {
            return bad(format!(
                "it is at step {} of an epoch of {steps_per_epoch} steps",
                self.step_in_epoch
            ));
        }
        let steps = self.epoch * steps_per_epoch + self.step_in_epoch;
        if self.steps.len() != steps || self.metrics.step_losses.len() != steps {
            return bad(format!(
                "epoch {} step {} is {steps} steps into the run, but it records {} steps and {} step losses",
                self.epoch,
                self.step_in_epoch,
                self.steps.len(),
                self.metrics.step_losses.len()
            ));
        }
        if self.metrics.epochs.len() != self.epoch {
            return bad(format!(
                "it has finished {} epochs but records {}",
                self.epoch,
                self.metrics.epochs.len()
            ));
        }
        for (i, s) in self.steps.iter().enumerate() {
            let loss = self.metrics.step_losses[i];
            if s.step != i
                || s.epoch != i / steps_per_epoch + 1
                || s.loss.to_bits() != loss.to_bits()
            {
                return bad(format!(
                    "step {i} is recorded as step {} of epoch {} with loss {}, the metrics say loss {loss}",
                    s.step, s.epoch, s.loss
                ));
            }
        }
        if self.finished && self.epoch != epochs {
            return bad(format!(
                "it says the run finished, at epoch {} of {epochs}",
                self.epoch
            ));
        }
        Ok(())
    }
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
        let model = model.try_load_record(self.model).map_err(|e| {
            Failure::input(anyhow::anyhow!(
                "the checkpoint's model does not fit the run's options: {e}"
            ))
        })?;
        let optim = optim.from_bytes(self.optim).map_err(|e| {
            Failure::input(anyhow::anyhow!(
                "the checkpoint's optimizer state does not fit the run's model: {e}"
            ))
        })?;
        Ok((model, optim, self.state))
    }
}
