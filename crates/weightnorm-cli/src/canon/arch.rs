//! The architecture-file front-end of `canonicalize`: a checkpoint and its architecture file in,
//! the canonical (or reconstituted) checkpoint out under the same keys, plus `canonical.scale`.

use std::path::Path;
use std::sync::Arc;

use anyhow::Result;
use weightnorm::canonical::{LayerPath, Namer, Network, Positions, Real};
use weightnorm::torch::{
    ArchNetwork, CANONICAL_SCALE_KEY, Checkpoint, Dtype, TensorEntry, to_tensors, vector_entry,
};

use super::args::{CanonicalizeArgs, Form, bad};
use super::pipeline::{Front, Source};
use crate::output::Outputs;

/// A checkpoint read through its architecture file.
pub(crate) struct ArchFront<'a, T: Real> {
    pub read: ArchNetwork<T>,
    pub ckpt: &'a Checkpoint,
    /// The checkpoint's tensors, weight-norm pairs fused.
    pub tensors: Vec<TensorEntry>,
    pub pairs: usize,
    pub dtype: Dtype,
    pub checkpoint: &'a Path,
    pub arch: &'a Path,
}

/// `scale * y` per output channel, for outputs of `shape` (`[C, ..]`).
pub(crate) fn scaled(mut ys: Vec<Vec<f64>>, scale: &[f64], shape: &[usize]) -> Vec<Vec<f64>> {
    let per = shape.iter().skip(1).product::<usize>().max(1);
    for y in &mut ys {
        for (i, v) in y.iter_mut().enumerate() {
            *v *= scale[i / per];
        }
    }
    ys
}

impl<T: Real> Front<T> for ArchFront<'_, T> {
    type Staged = Vec<TensorEntry>;

    fn network(&self) -> &Network<T> {
        &self.read.network
    }

    fn source(&self) -> Source {
        Source {
            checkpoint: Some(self.checkpoint.display().to_string()),
            arch: Some(self.arch.display().to_string()),
            model: None,
        }
    }

    fn dtype(&self) -> &'static str {
        if self.dtype == Dtype::F64 {
            "f64"
        } else {
            "f32"
        }
    }

    fn fused_pairs(&self) -> Option<usize> {
        Some(self.pairs)
    }

    fn place(&self) -> &'static str {
        "layer"
    }

    fn name(&self, path: &LayerPath) -> String {
        Positions(&self.read.network).name(path)
    }

    fn param(&self, path: &LayerPath) -> (Option<String>, Option<String>) {
        (None, self.read.prefix(path).map(str::to_string))
    }

    fn original(&self, x: &[Vec<f64>]) -> Vec<Vec<f64>> {
        self.read.network.forward(x)
    }

    fn prepare(
        &self,
        network: Network<T>,
        scale: Option<&[f64]>,
        x: &[Vec<f64>],
    ) -> Result<(Vec<TensorEntry>, Vec<Vec<f64>>)> {
        let got = match scale {
            Some(s) => scaled(network.forward(x), s, &network.output_shape()),
            None => network.forward(x),
        };
        let extra = match scale {
            Some(s) => vec![vector_entry(CANONICAL_SCALE_KEY, s, self.dtype).map_err(bad)?],
            None => Vec::new(),
        };
        let entries = to_tensors(Arc::new(network), &self.read.bindings, &self.tensors, extra)
            .map_err(bad)?;
        Ok((entries, got))
    }

    fn stage(
        &self,
        entries: Vec<TensorEntry>,
        args: &CanonicalizeArgs,
        outputs: &mut Outputs,
    ) -> Result<()> {
        let mut metadata = self.ckpt.metadata.clone().unwrap_or_default();
        metadata.insert("format".into(), "pt".into());
        metadata.insert(
            "weightnorm.form".into(),
            match args.form {
                Form::Canonical => "canonical",
                Form::Reconstituted => "reconstituted",
            }
            .into(),
        );
        outputs.safetensors(
            &args.output.output,
            args.output.force,
            &entries,
            Some(&metadata),
        )
    }
}
