//! Writing: a (canonical or reconstituted) network back into its ONNX graph.

use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use prost::Message;

use super::fault::ModelFault;
use super::lower::{Role, Slot};
use super::proto::{ModelProto, NodeProto, StringStringEntryProto, TensorProto};
use super::tensor::encode_floats;
use super::{GraphMap, OnnxError, OnnxModel};
use crate::canonical::{Layer, Network, Real};

/// The initializer that holds the output scale of a canonical model.
pub const CANONICAL_SCALE: &str = "canonical.scale";

/// The metadata key saying which form a model written here is in.
const FORM_KEY: &str = "weightnorm.form";

/// The values a slot is written with, from the layer at its binding's position.
fn slot_values<T: Real>(layer: &Layer<T>, slot: &Slot) -> Option<Vec<f64>> {
    let f = |v: &[T]| v.iter().map(|x| x.to_f64()).collect::<Vec<_>>();
    Some(match (layer, &slot.role) {
        (Layer::Weighted(w), Role::Weight { transposed, alpha }) => {
            let (out, inp) = (w.w.out, w.w.row_len);
            let rows = &w.w.data;
            if *transposed {
                let mut t = vec![0.0; rows.len()];
                for o in 0..out {
                    for k in 0..inp {
                        t[k * out + o] = rows[o * inp + k].to_f64() / alpha;
                    }
                }
                t
            } else {
                rows.iter().map(|x| x.to_f64() / alpha).collect()
            }
        }
        (Layer::Weighted(w), Role::Bias { beta }) => match &w.b {
            Some(b) => b.iter().map(|x| x.to_f64() / beta).collect(),
            None => vec![0.0; w.w.out],
        },
        (Layer::Norm(n), Role::BnScale { eps }) => {
            let root = if *eps < 1.0 { 1.0 } else { (1.0 + eps).sqrt() };
            n.a.as_deref()
                .map_or(vec![1.0; n.c.len()], f)
                .iter()
                .map(|a| a * root)
                .collect()
        }
        (Layer::Norm(n), Role::BnBias) => f(&n.c),
        (Layer::Norm(n), Role::BnMean) => vec![0.0; n.c.len()],
        (Layer::Norm(n), Role::BnVar { eps }) => {
            vec![if *eps < 1.0 { 1.0 - eps } else { 1.0 }; n.c.len()]
        }
        (Layer::Norm(n), Role::Shift { negate }) => {
            n.c.iter()
                .map(|x| if *negate { -x.to_f64() } else { x.to_f64() })
                .collect()
        }
        (Layer::Norm(n), Role::Multiplier { reciprocal }) => {
            if n.c.iter().any(|c| c.to_f64() != 0.0) {
                return None;
            }
            let a = n.a.as_deref().map_or(vec![1.0; n.c.len()], f);
            if *reciprocal {
                a.iter().map(|x| 1.0 / x).collect()
            } else {
                a
            }
        }
        _ => return None,
    })
}

/// Every name a value, an initializer or a node has in the graph.
fn taken_names(model: &ModelProto) -> HashSet<String> {
    let mut names = HashSet::new();
    if let Some(g) = &model.graph {
        for t in &g.initializer {
            names.extend(t.name.clone());
        }
        for v in g.input.iter().chain(&g.output).chain(&g.value_info) {
            names.extend(v.name.clone());
        }
        for n in &g.node {
            names.extend(n.output.iter().cloned());
            names.extend(n.name.clone());
        }
    }
    names
}

/// `base`, or `base.1`, `base.2`, .. : the first name not taken (which is then taken).
fn unique(taken: &mut HashSet<String>, base: &str) -> String {
    let mut name = base.to_string();
    let mut k = 0;
    while taken.contains(&name) {
        k += 1;
        name = format!("{base}.{k}");
    }
    taken.insert(name.clone());
    name
}

/// The model with `network`'s weights (a canonical or reconstituted form of the network read
/// with `read`) written into the initializers its bindings name, and, given a `scale` (one entry per
/// output channel), the graph's output rewired through `Mul(.., canonical.scale)`, before the
/// head where there is one, so that the model computes `scale * network(x)` (then the head).
///
/// An initializer used by this node alone is replaced in place (same name, raw data inline);
/// one shared with other nodes, computed in the graph, or of another shape, is written under a
/// fresh name for this node, and an initializer no longer used by any node is removed. External
/// data is read in, so that the model written stands on its own (below protobuf's 2 GiB). The
/// model's metadata records the form (`weightnorm.form`).
///
/// # Errors
///
/// [`OnnxError::Model`] if a binding does not fit `network` (a network of another structure)
/// or `scale` has the wrong length; [`OnnxError::Tensor`] for a value beyond the range of the
/// type it is written in (a global gain beyond `f32`, written in `f32`, included).
pub fn write_model<T: Real>(
    model: &OnnxModel,
    read: &GraphMap,
    network: &Network<T>,
    scale: Option<&[f64]>,
) -> Result<ModelProto, OnnxError> {
    let mut out = model.proto.clone();
    let mut taken = taken_names(&out);
    let g = out
        .graph
        .as_mut()
        .ok_or(OnnxError::Model(ModelFault::NoGraph))?;
    let mut uses: HashMap<String, usize> = HashMap::new();
    for n in &g.node {
        for i in n.input.iter().filter(|s| !s.is_empty()) {
            *uses.entry(i.clone()).or_default() += 1;
        }
    }
    for o in &g.output {
        *uses.entry(o.name.clone().unwrap_or_default()).or_default() += 1;
    }
    let index: HashMap<String, usize> = g
        .initializer
        .iter()
        .enumerate()
        .map(|(k, t)| (t.name.clone().unwrap_or_default(), k))
        .collect();
    let mut fresh: Vec<TensorProto> = Vec::new();
    let mut rewired: HashSet<String> = HashSet::new();
    for b in &read.bindings {
        let layer = network.layer(&b.path);
        for slot in &b.slots {
            let values = layer
                .and_then(|l| slot_values(l, slot))
                .ok_or_else(|| OnnxError::Model(ModelFault::NoLayer(b.node.clone())))?;
            let node = g
                .node
                .get_mut(slot.node)
                .ok_or_else(|| OnnxError::Model(ModelFault::NoNode(b.node.clone())))?;
            let name = node.input.get(slot.input).cloned().unwrap_or_default();
            let expected: i64 = slot.dims.iter().product();
            if values.len() as i64 != expected {
                return Err(OnnxError::Model(ModelFault::ValueCount {
                    node: b.node.clone(),
                    got: values.len(),
                    name,
                    dims: slot.dims.clone(),
                }));
            }
            let raw = encode_floats(&name, values.into_iter(), slot.dtype)?;
            let in_place = index.get(&name).filter(|&&k| {
                uses.get(&name) == Some(&1)
                    && name != CANONICAL_SCALE
                    && g.initializer[k].dims == slot.dims
            });
            match in_place {
                Some(&k) => {
                    let t = &mut g.initializer[k];
                    *t = TensorProto {
                        name: t.name.take(),
                        doc_string: t.doc_string.take(),
                        metadata_props: std::mem::take(&mut t.metadata_props),
                        dims: slot.dims.clone(),
                        data_type: Some(slot.dtype),
                        raw_data: Some(Bytes::from(raw)),
                        ..TensorProto::default()
                    };
                }
                None => {
                    let new = unique(&mut taken, &format!("{name}.{}", b.node));
                    node.input[slot.input] = new.clone();
                    rewired.insert(name);
                    fresh.push(TensorProto {
                        name: Some(new),
                        dims: slot.dims.clone(),
                        data_type: Some(slot.dtype),
                        raw_data: Some(Bytes::from(raw)),
                        ..TensorProto::default()
                    });
                }
            }
        }
    }
    // Initializers the rewiring left without a use go (an old `canonical.scale` among them).
    let still: HashSet<&str> = g
        .node
        .iter()
        .flat_map(|n| n.input.iter().map(String::as_str))
        .chain(g.output.iter().filter_map(|o| o.name.as_deref()))
        .collect();
    let gone: HashSet<String> = rewired
        .into_iter()
        .filter(|n| index.contains_key(n) && !still.contains(n.as_str()))
        .collect();
    g.initializer
        .retain(|t| !gone.contains(t.name.as_deref().unwrap_or("")));
    g.input
        .retain(|i| !gone.contains(i.name.as_deref().unwrap_or("")));
    for n in &gone {
        taken.remove(n);
    }
    g.initializer.extend(fresh);
    if let Some(scale) = scale {
        let site = &read.site;
        if scale.len() != site.shape[0] {
            return Err(OnnxError::Model(ModelFault::ScaleLength {
                got: scale.len(),
                channels: site.shape[0],
            }));
        }
        if taken.contains(CANONICAL_SCALE) {
            return Err(OnnxError::Model(ModelFault::NameTaken(
                CANONICAL_SCALE.to_string(),
            )));
        }
        let mut dims = vec![scale.len() as i64];
        dims.extend(std::iter::repeat_n(1, site.shape.len() - 1));
        let raw = encode_floats(CANONICAL_SCALE, scale.iter().copied(), site.dtype)?;
        g.initializer.push(TensorProto {
            name: Some(CANONICAL_SCALE.into()),
            dims,
            data_type: Some(site.dtype),
            raw_data: Some(Bytes::from(raw)),
            ..TensorProto::default()
        });
        taken.insert(CANONICAL_SCALE.into());
        let unscaled = unique(&mut taken, &format!("{}.unscaled", site.value));
        let producer = g
            .node
            .get_mut(site.node)
            .ok_or(OnnxError::Model(ModelFault::NoOutputNode))?;
        producer.output[site.output] = unscaled.clone();
        let name = unique(&mut taken, "canonical.scale.Mul");
        g.node.insert(
            site.node + 1,
            NodeProto {
                input: vec![unscaled, CANONICAL_SCALE.into()],
                output: vec![site.value.clone()],
                name: Some(name),
                op_type: Some("Mul".into()),
                ..NodeProto::default()
            },
        );
    }
    let form = if scale.is_some() {
        "canonical"
    } else {
        "reconstituted"
    };
    out.metadata_props
        .retain(|e| e.key.as_deref() != Some(FORM_KEY));
    out.metadata_props.push(StringStringEntryProto {
        key: Some(FORM_KEY.into()),
        value: Some(form.into()),
    });
    // External data is read in: the model written stands on its own.
    model.standalone(out)
}

/// The protobuf encoding of a model.
///
/// # Errors
///
/// [`OnnxError::Model`] for a model of 2 GiB or more, which protobuf (and so every ONNX runtime)
/// cannot read back in one message.
pub fn encode(model: &ModelProto) -> Result<Vec<u8>, OnnxError> {
    let len = model.encoded_len();
    if len > i32::MAX as usize {
        return Err(OnnxError::Model(ModelFault::TooLarge(len)));
    }
    Ok(model.encode_to_vec())
}
