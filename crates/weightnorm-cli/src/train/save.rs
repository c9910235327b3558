//! What a finished run leaves in its directory besides its plots: `metrics.json`, `arch.json`
//! and `model.safetensors`, each written atomically.

use std::path::Path;

use anyhow::{Context, Result};
use burn::module::Module;
use serde_json::json;

use crate::metrics::{RunMetrics, RunSetup};
use crate::model::{Model, Spec};
use crate::output::{write_json, write_safetensors};

/// Writes a run's outputs to `out` (created if missing): its metrics with the trained network's
/// global gain, its architecture file and the model in PyTorch's layout.
///
/// # Errors
///
/// If the model cannot be exported or canonicalized, or a file cannot be written.
pub fn save_run(
    out: &Path,
    spec: &Spec,
    model: &Model,
    metrics: &RunMetrics,
    setup: &RunSetup,
) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut m = metrics.json(setup);
    // The trained network's global gain (the norm of its canonical output scale).
    let canonical = weightnorm::canonical::canonicalize(spec.network(&model.valid())?)?;
    m["global_gain"] = json!(canonical.global_gain());
    write_json(&out.join("metrics.json"), &m)?;
    write_json(&out.join("arch.json"), &spec.arch())?;
    let tensors = spec.export(&model.valid())?;
    write_safetensors(&out.join("model.safetensors"), &tensors, None)?;
    Ok(())
}
