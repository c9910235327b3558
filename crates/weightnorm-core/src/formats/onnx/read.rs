//! Reading: an ONNX graph to a [`Network`](crate::canonical::Network) and its [`Binding`]s,
//! through the core's graph lowering ([`crate::graph::lower`]) with this front-end's per-op
//! lowering (`lower.rs`) and constants (`graph.rs`).

use super::fault::ModelFault;
use super::graph::{Graph, R};
use super::lower::Site;
use super::{GraphMap, OnnxError, OnnxModel, OnnxNetwork};
use crate::canonical::Real;
use crate::graph::{WalkError, lower};

/// Reads a model's graph as a network.
pub(crate) fn read<T: Real>(model: &OnnxModel) -> R<OnnxNetwork<T>> {
    let (g, _, elem) = Graph::new(model)?;
    let lowered = lower::<_, T>(&g).map_err(|e| match e {
        WalkError::Frontend(e) => e,
        WalkError::Graph(f) => OnnxError::Graph(f),
    })?;
    let site_value = lowered.site.clone();
    let &(node, output) = g
        .producer
        .get(site_value.as_str())
        .ok_or_else(|| OnnxError::Model(ModelFault::NotComputed(site_value.clone())))?;
    let bindings: Vec<_> = lowered
        .bindings
        .into_iter()
        .map(|(path, mut b)| {
            b.path = path;
            b
        })
        .collect();
    let dtype = bindings
        .iter()
        .rev()
        .find_map(|b| b.slots.first())
        .map(|s| s.dtype)
        .unwrap_or(elem);
    let shape = lowered.network.output_shape();
    Ok(OnnxNetwork {
        network: lowered.network,
        graph: GraphMap {
            bindings,
            nodes: lowered
                .nodes
                .into_iter()
                .map(|(p, n)| (p, g.name(n)))
                .collect(),
            head: lowered.head.map(|(h, _)| h),
            input_name: g.input.to_string(),
            output_name: g.output.to_string(),
            site: Site {
                value: site_value,
                node,
                output,
                dtype,
                shape,
            },
        },
    })
}
