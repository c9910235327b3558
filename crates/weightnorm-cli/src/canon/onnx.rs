//! The ONNX front-end of `canonicalize`: the graph read onto the calculus, the chosen form
//! written back into the same graph (plus a `Mul` by `canonical.scale`), and the verification
//! run on the model written, read back, before anything is put in place. Layers are named by
//! their ONNX nodes.

use std::path::Path;

use anyhow::{Result, anyhow};
use weightnorm::canonical::{LayerPath, Namer, Network, Positions, Real};
use weightnorm::onnx::{Bytes, OnnxModel, OnnxNetwork, encode, write_model};

use super::args::{CanonicalizeArgs, bad};
use super::pipeline::{Front, Source};
use crate::output::Outputs;
use crate::text::shown;

/// An ONNX model read as a network.
pub(crate) struct OnnxFront<'m, T: Real> {
    pub model: &'m OnnxModel,
    pub read: OnnxNetwork<T>,
    pub path: &'m Path,
}

impl<T: Real> OnnxFront<'_, T> {
    fn in_model(&self, e: impl std::fmt::Display) -> anyhow::Error {
        bad(format!("{}: {e}", shown(self.path)))
    }
}

impl<T: Real> Front<T> for OnnxFront<'_, T> {
    type Staged = Bytes;

    fn network(&self) -> &Network<T> {
        &self.read.network
    }

    fn source(&self) -> Source {
        Source {
            checkpoint: None,
            arch: None,
            model: Some(self.path.display().to_string()),
        }
    }

    fn dtype(&self) -> &'static str {
        if self.model.has_f64_weights() {
            "f64"
        } else {
            "f32"
        }
    }

    fn place(&self) -> &'static str {
        "node"
    }

    fn name(&self, path: &LayerPath) -> String {
        match self.read.graph.node_at(path) {
            Some(node) => node.to_string(),
            None => Positions(&self.read.network).name(path),
        }
    }

    fn param(&self, path: &LayerPath) -> (Option<String>, Option<String>) {
        match self.read.graph.bindings.iter().find(|b| b.path == path) {
            Some(b) => (Some(b.op.clone()), b.param.clone()),
            None => (None, None),
        }
    }

    fn head(&self) -> Option<String> {
        self.read.graph.head.as_ref().map(|h| h.node.clone())
    }

    fn original(&self, x: &[Vec<f64>]) -> Vec<Vec<f64>> {
        self.read.forward(x)
    }

    fn prepare(
        &self,
        network: Network<T>,
        scale: Option<&[f64]>,
        x: &[Vec<f64>],
    ) -> Result<(Bytes, Vec<Vec<f64>>)> {
        let proto = write_model(self.model, &self.read.graph, &network, scale)
            .map_err(|e| self.in_model(e))?;
        // The network is dropped once written, before the model is encoded.
        drop(network);
        let bytes = Bytes::from(encode(&proto).map_err(|e| self.in_model(e))?);
        drop(proto);
        // The verification runs the model as written, read back.
        let got = OnnxModel::decode(bytes.clone(), self.model.dir().map(Path::to_path_buf))
            .and_then(|m| m.network::<T>())
            .map_err(|e| anyhow!("the model written cannot be read back: {e}"))?
            .forward(x);
        Ok((bytes, got))
    }

    fn stage(&self, bytes: Bytes, args: &CanonicalizeArgs, outputs: &mut Outputs) -> Result<()> {
        outputs.bytes(&args.output.output, args.output.force, &bytes)
    }

    fn verified_what(&self) -> Option<&'static str> {
        Some("the model written, read back and run against the original")
    }
}
