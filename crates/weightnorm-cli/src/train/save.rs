//! What a finished run leaves in its directory besides its plots: `metrics.json`, `arch.json`
//! and `model.safetensors`, staged in the command's [`Outputs`] (put in place with the rest of
//! its outputs, or not at all).

use std::path::Path;

use anyhow::Result;
use burn::module::Module;

use crate::metrics::{RunMetrics, RunSetup};
use crate::model::{Model, Spec};
use crate::output::Outputs;

/// Writes a run's outputs to `out` (created if missing) in `outputs`, replacing those of an
/// earlier run: its metrics with the trained network's global gain, its architecture file and
/// the model in PyTorch's layout.
///
/// # Errors
///
/// If the model cannot be exported or canonicalized, or a file cannot be written.
pub fn save_run(
    outputs: &mut Outputs,
    out: &Path,
    spec: &Spec,
    model: &Model,
    metrics: &RunMetrics,
    setup: &RunSetup,
) -> Result<()> {
    outputs.create_dir_all(out)?;
    // The trained network's global gain (the norm of its canonical output scale).
    let canonical = weightnorm::canonical::canonicalize(spec.network(&model.valid())?)?;
    let m = serde_json::to_value(metrics.file(setup, Some(canonical.global_gain())))?;
    outputs.json(&out.join("metrics.json"), true, &m)?;
    outputs.json(&out.join("arch.json"), true, &spec.arch())?;
    let tensors = spec.export(&model.valid())?;
    outputs.safetensors(&out.join("model.safetensors"), true, &tensors, None)?;
    Ok(())
}
