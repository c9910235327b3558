//! `weightnorm canonicalize MODEL.onnx`: the graph read onto the calculus, canonicalized (or
//! reconstituted), written back into the same graph (plus a `Mul` by `canonical.scale`), and
//! verified by reading the model written back and running it against the original, before
//! anything is put in place. The report is `canonicalize`'s, keyed by ONNX node names.

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use anyhow::{Result, anyhow};
use regex::Regex;
use serde_json::json;
use weightnorm::canonical::{Agreement, Real, canonicalize, reconstitute};
use weightnorm::onnx::{Bytes, OnnxModel, OnnxNetwork, encode, write_model};

use crate::canon::{
    CanonicalizeArgs, Form, accuracy, bad, finish, input_files, load_inputs, range_json,
    verification_json,
};
use crate::output::Outputs;
use crate::text::shown;

/// Runs `canonicalize` on an ONNX model.
pub fn canonicalize_onnx(args: &CanonicalizeArgs) -> Result<()> {
    let path = &args.input.input;
    let t0 = Instant::now();
    let model = OnnxModel::open(path).map_err(|e| bad(format!("{}: {e}", shown(path))))?;
    // The files its weights lie in are inputs too: no output may be one of them.
    let mut inputs = input_files(args);
    inputs.extend(
        model
            .external_files()
            .map_err(|e| bad(format!("{}: {e}", shown(path))))?,
    );
    let outputs = Outputs::new(inputs);
    let mut targets: Vec<&Path> = vec![&args.output.output];
    targets.extend(args.report.as_deref());
    outputs.check(&targets, args.output.force)?;
    if model.has_f64_weights() {
        run::<f64>(args, outputs, &model, "f64", t0)
    } else {
        run::<f32>(args, outputs, &model, "f32", t0)
    }
}

/// Layer positions in a message (`layer 3`, `block 4.body.1`) replaced by the names of their
/// nodes (`node /fc/Gemm`, `block /layer1/Add`).
fn renamed(text: &str, names: &HashMap<String, String>) -> String {
    let re = Regex::new(r"\b(layer|block) (\d+(?:\.(?:body|skip)\.\d+)*)").expect("a regex");
    re.replace_all(text, |c: &regex::Captures<'_>| match names.get(&c[2]) {
        Some(node) if &c[1] == "layer" => format!("node {node}"),
        Some(node) => format!("block {node}"),
        None => c[0].to_string(),
    })
    .into_owned()
}

fn run<T: Real>(
    args: &CanonicalizeArgs,
    mut outputs: Outputs,
    model: &OnnxModel,
    dtype: &str,
    t0: Instant,
) -> Result<()> {
    let path = &args.input.input;
    let in_model = |e: &dyn std::fmt::Display| bad(format!("{}: {e}", shown(path)));
    let OnnxNetwork { network, graph } = model.network::<T>().map_err(|e| in_model(&e))?;
    let parameters = network.parameters();
    let out_shape = network.output_shape();
    let load_s = t0.elapsed().as_secs_f64();
    let inputs = load_inputs(args, network.input())?;
    let t = Instant::now();
    let expected = graph.with_head(network.forward(&inputs.x), &out_shape);
    let mut verify_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let c = canonicalize(network).map_err(|e| in_model(&e))?;
    let canon_s = t.elapsed().as_secs_f64();
    let (gain, direction, scale) = (c.global_gain(), c.gain_direction(), c.scale().to_vec());
    let (layers, notes) = (c.reports().to_vec(), c.notes().to_vec());
    // Positions to node names, and to bindings, while the network is at hand.
    let names: HashMap<String, String> = graph
        .nodes
        .iter()
        .filter_map(|(p, n)| Some((c.network().layer_name(p)?, n.clone())))
        .collect();
    let bound: HashMap<String, (String, Option<String>)> = graph
        .bindings
        .iter()
        .filter_map(|b| {
            Some((
                c.network().layer_name(&b.path)?,
                (b.op.clone(), b.param.clone()),
            ))
        })
        .collect();
    let t = Instant::now();
    // Each form of the network is dropped once written, before the model is encoded.
    let proto = match args.form {
        Form::Canonical => {
            let proto = write_model(model, &graph, c.network(), Some(&scale));
            drop(c);
            proto
        }
        Form::Reconstituted => {
            let (canonical, scale) = c.into_parts();
            let (back, _) = reconstitute(canonical, &scale).map_err(|e| in_model(&e))?;
            let proto = write_model(model, &graph, &back, None);
            drop(back);
            proto
        }
    }
    .map_err(|e| in_model(&e))?;
    let bytes = Bytes::from(encode(&proto).map_err(|e| in_model(&e))?);
    drop(proto);
    let write_s = t.elapsed().as_secs_f64();
    // The verification runs the model as written, read back.
    let t = Instant::now();
    let got = OnnxModel::decode(bytes.clone(), model.dir().map(Path::to_path_buf))
        .and_then(|m| m.network::<T>())
        .map_err(|e| anyhow!("the model written cannot be read back: {e}"))?
        .forward(&inputs.x);
    verify_s += t.elapsed().as_secs_f64();
    let agreement = Agreement::between(&expected, &got);
    let accuracies = inputs
        .y
        .as_ref()
        .map(|y| (accuracy(&expected, y), accuracy(&got, y)));
    let ok = agreement.max_rel_error <= args.tolerance;
    if ok {
        outputs.bytes(&args.output.output, args.output.force, &bytes)?;
    }
    drop(bytes);
    let notes: Vec<String> = notes.iter().map(|n| renamed(n, &names)).collect();
    let carried: Vec<String> = layers
        .iter()
        .filter_map(|r| {
            r.carries.as_ref().map(|w| {
                let node = names.get(&r.layer).map_or(r.layer.as_str(), String::as_str);
                format!("node {node}: {}", renamed(w, &names))
            })
        })
        .collect();
    if let Some(report_path) = &args.report {
        let mut verification = verification_json(args, &inputs, &agreement, accuracies, ok);
        verification["outputs"] =
            "the model written, read back and run against the original".into();
        let report = json!({
            "model": path.display().to_string(),
            "form": format!("{:?}", args.form).to_lowercase(),
            "dtype": dtype,
            "parameters": parameters,
            "global_gain": gain,
            "gain_direction": direction,
            "scale": scale,
            "head": graph.head.as_ref().map(|h| h.node.clone()),
            "layers": layers.iter().map(|r| {
                let (op, param) = bound.get(&r.layer).cloned().unwrap_or((r.op.clone(), None));
                json!({
                    "layer": names.get(&r.layer).cloned().unwrap_or_else(|| r.layer.clone()),
                    "position": r.layer,
                    "op": op,
                    "param": param,
                    "row_norms_before": range_json(r.row_norms_before),
                    "scale_after": range_json(r.scale),
                    "row_norms_after": range_json(r.row_norms_after),
                    "zero_rows": r.zero_rows,
                    "carries": r.carries.as_ref().map(|w| renamed(w, &names)),
                })
            }).collect::<Vec<_>>(),
            "notes": notes,
            "verification": verification,
            "max_abs_error": agreement.max_abs_error,
            "max_rel_error": agreement.max_rel_error,
            "timings_s": {"load": load_s, "canonicalize": canon_s, "verify": verify_s, "write": write_s},
        });
        outputs.json(report_path, args.output.force, &report)?;
    }
    // The model and the report are put in place together, or neither is.
    outputs.commit()?;
    println!(
        "{parameters} parameters, {} layers with weights: global gain {gain:.6e} over {} outputs",
        layers.len(),
        scale.len()
    );
    for n in notes.iter().chain(&carried) {
        println!("  {n}");
    }
    finish(
        args,
        &format!("verified the model written on {}", inputs.what),
        &agreement,
        accuracies,
        [load_s, canon_s, verify_s, write_s],
        ok,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_become_node_names() {
        let names: HashMap<String, String> = [
            ("1", "/bn/BatchNormalization"),
            ("0", "/fc/Gemm"),
            ("3", "/layer1/Add"),
            ("3.body.2", "/layer1/conv2/Conv"),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        assert_eq!(
            renamed(
                "layer 1 (batch_norm) folded into layer 0 (linear): ok",
                &names
            ),
            "node /bn/BatchNormalization (batch_norm) folded into node /fc/Gemm (linear): ok"
        );
        assert_eq!(
            renamed(
                "the ratio of the residual body's scale to the skip path's (block 3)",
                &names
            ),
            "the ratio of the residual body's scale to the skip path's (block /layer1/Add)"
        );
        assert_eq!(
            renamed("layer 3.body.2 and layer 9", &names),
            "node /layer1/conv2/Conv and layer 9"
        );
    }
}
