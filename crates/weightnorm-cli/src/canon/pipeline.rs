//! The one `canonicalize` pipeline over every front-end: read the network, run the original on
//! the verification inputs, canonicalize, write the chosen form (the front-end's format),
//! verify what was written, report (one schema, [`Report`]) and print. A front-end
//! ([`Front`]) supplies the network, its names for positions, where each layer's parameters
//! live, how the written form is run for the verification, and how it is staged for writing.

use std::time::Instant;

use anyhow::{Result, bail};
use serde::Serialize;
use weightnorm::canonical::{
    Agreement, LayerPath, Namer, Network, Positions, Real, canonicalize, reconstitute,
};

use super::args::{CanonicalizeArgs, Form, bad};
use super::inputs::{Inputs, accuracy, load_inputs};
use crate::output::Outputs;
use crate::text::shown;

/// What a front-end of `canonicalize` supplies.
pub(crate) trait Front<T: Real> {
    /// What the front-end stages for writing (a checkpoint's tensors, a model's bytes).
    type Staged;
    /// The network read.
    fn network(&self) -> &Network<T>;
    /// What the report says was read (`checkpoint` and `arch`, or `model`).
    fn source(&self) -> Source;
    /// The storage type's name (`f32`, `f64`).
    fn dtype(&self) -> &'static str;
    /// Weight-norm pairs fused on the way in, where the format has them.
    fn fused_pairs(&self) -> Option<usize> {
        None
    }
    /// The word for a place in messages (`layer`, `node`).
    fn place(&self) -> &'static str;
    /// The front-end's name for the layer at `path` (an ONNX node, an architecture position).
    fn name(&self, path: &LayerPath) -> String;
    /// The layer's op and the name of its parameter, as the format calls them.
    fn param(&self, path: &LayerPath) -> (Option<String>, Option<String>);
    /// The head's name, where the format has a head the network leaves out.
    fn head(&self) -> Option<String> {
        None
    }
    /// What the original computes on `x` (the network, then the head where there is one).
    fn original(&self, x: &[Vec<f64>]) -> Vec<Vec<f64>>;
    /// Prepares the written form of `network` (with the output `scale` for the canonical form,
    /// without for the reconstituted one), and what the written form computes on `x`, for the
    /// verification (the written model read back and run, where the format allows).
    fn prepare(
        &self,
        network: Network<T>,
        scale: Option<&[f64]>,
        x: &[Vec<f64>],
    ) -> Result<(Self::Staged, Vec<Vec<f64>>)>;
    /// Stages what [`Front::prepare`] made in `outputs`, after a passed verification.
    fn stage(
        &self,
        staged: Self::Staged,
        args: &CanonicalizeArgs,
        outputs: &mut Outputs,
    ) -> Result<()>;
    /// What the verification ran, where it is not the network in memory.
    fn verified_what(&self) -> Option<&'static str> {
        None
    }
}

/// What was read, in the report.
#[derive(Serialize)]
pub(crate) struct Source {
    /// The checkpoint (architecture-file front-end).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<String>,
    /// The architecture file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
    /// The ONNX model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

/// `canonicalize`'s report (`--report R.json`): one schema for every front-end.
#[derive(Serialize)]
pub(crate) struct Report {
    #[serde(flatten)]
    source: Source,
    form: &'static str,
    dtype: &'static str,
    parameters: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    fused_weight_norm_pairs: Option<usize>,
    global_gain: f64,
    gain_direction: Vec<f64>,
    scale: Vec<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    head: Option<String>,
    layers: Vec<LayerEntry>,
    notes: Vec<String>,
    verification: Verification,
    max_abs_error: f64,
    max_rel_error: f64,
    timings_s: Timings,
}

/// One weighted layer or batch norm of the report.
#[derive(Serialize)]
struct LayerEntry {
    /// The front-end's name (the ONNX node; the architecture file's position).
    layer: String,
    /// The calculus's position (`3`, `4.body.0`, `4.skip.1`).
    position: String,
    op: String,
    param: Option<String>,
    row_norms_before: [f64; 2],
    scale_after: [f64; 2],
    row_norms_after: [f64; 2],
    zero_rows: Vec<usize>,
    carries: Option<String>,
}

/// The report's `verification` object.
#[derive(Serialize)]
struct Verification {
    inputs: String,
    samples: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    outputs: Option<&'static str>,
    max_abs_error: f64,
    max_rel_error: f64,
    argmax_agreement: Option<f64>,
    accuracy_original: Option<f64>,
    accuracy_canonical: Option<f64>,
    tolerance: f64,
    passed: bool,
}

#[derive(Serialize)]
struct Timings {
    load: f64,
    canonicalize: f64,
    verify: f64,
    write: f64,
}

/// A front-end's names, as a [`Namer`].
struct Names<'f, T: Real, F: Front<T>>(&'f F, std::marker::PhantomData<T>);

impl<T: Real, F: Front<T>> Namer for Names<'_, T, F> {
    fn name(&self, path: &LayerPath) -> String {
        self.0.name(path)
    }
}

fn form_name(form: Form) -> &'static str {
    match form {
        Form::Canonical => "canonical",
        Form::Reconstituted => "reconstituted",
    }
}

/// Runs the pipeline on a front-end whose network took `load_s` seconds to read.
pub(crate) fn run<T: Real, F: Front<T>>(
    args: &CanonicalizeArgs,
    mut outputs: Outputs,
    front: F,
    load_s: f64,
) -> Result<()> {
    let net = front.network();
    let parameters = net.parameters();
    let inputs = load_inputs(args, net.input())?;
    let t = Instant::now();
    let expected = front.original(&inputs.x);
    let mut verify_s = t.elapsed().as_secs_f64();
    let namer = Names(&front, std::marker::PhantomData);
    let in_source = |e: String| bad(format!("{}: {e}", shown(&args.input.input)));
    let t = Instant::now();
    let c = canonicalize(net.clone()).map_err(|e| in_source(e.render(&namer)))?;
    let canon_s = t.elapsed().as_secs_f64();
    let (gain, direction, scale) = (c.global_gain(), c.gain_direction(), c.scale().to_vec());
    let positions = Positions(c.network());
    let layers: Vec<LayerEntry> = c
        .reports()
        .iter()
        .map(|r| {
            let (op, param) = front.param(&r.at);
            LayerEntry {
                layer: namer.name(&r.at),
                position: positions.name(&r.at),
                op: op.unwrap_or_else(|| r.op.to_string()),
                param,
                row_norms_before: [r.row_norms_before.0, r.row_norms_before.1],
                scale_after: [r.scale.0, r.scale.1],
                row_norms_after: [r.row_norms_after.0, r.row_norms_after.1],
                zero_rows: r.zero_rows.clone(),
                carries: r.carries.as_ref().map(|w| w.render(&namer)),
            }
        })
        .collect();
    let notes: Vec<String> = c.notes().iter().map(|n| n.render(&namer)).collect();
    let t = Instant::now();
    let (staged, got) = match args.form {
        Form::Canonical => {
            let (network, scale) = c.into_parts();
            front.prepare(network, Some(&scale), &inputs.x)?
        }
        Form::Reconstituted => {
            let (canonical, scale) = c.into_parts();
            let (back, _) =
                reconstitute(canonical, &scale).map_err(|e| in_source(e.render(&namer)))?;
            front.prepare(back, None, &inputs.x)?
        }
    };
    // Preparing includes running the written form (read back, where the format allows).
    verify_s += t.elapsed().as_secs_f64();
    let agreement = Agreement::between(&expected, &got);
    let accuracies = inputs
        .y
        .as_ref()
        .map(|y| (accuracy(&expected, y), accuracy(&got, y)));
    let ok = agreement.max_rel_error <= args.tolerance;
    let t = Instant::now();
    if ok {
        front.stage(staged, args, &mut outputs)?;
    }
    let write_s = t.elapsed().as_secs_f64();
    let carried: Vec<String> = layers
        .iter()
        .filter_map(|l| {
            let w = l.carries.as_ref()?;
            Some(format!("{} {}: {w}", front.place(), l.layer))
        })
        .collect();
    let weighted = layers.len();
    if let Some(path) = &args.report {
        let report = Report {
            source: front.source(),
            form: form_name(args.form),
            dtype: front.dtype(),
            parameters,
            fused_weight_norm_pairs: front.fused_pairs(),
            global_gain: gain,
            gain_direction: direction,
            scale: scale.clone(),
            head: front.head(),
            layers,
            notes: notes.clone(),
            verification: verification(args, &inputs, &agreement, accuracies, ok, &front),
            max_abs_error: agreement.max_abs_error,
            max_rel_error: agreement.max_rel_error,
            timings_s: Timings {
                load: load_s,
                canonicalize: canon_s,
                verify: verify_s,
                write: write_s,
            },
        };
        let value = serde_json::to_value(&report).expect("a report serializes");
        outputs.json(path, args.output.force, &value)?;
    }
    // The output and the report are put in place together, or neither is.
    outputs.commit()?;
    println!(
        "{parameters} parameters, {weighted} layers with weights{}: global gain {gain:.6e} over {} \
         outputs",
        match front.fused_pairs() {
            Some(p) if p > 0 => format!(" ({p} weight-norm pairs fused)"),
            _ => String::new(),
        },
        scale.len()
    );
    for n in notes.iter().chain(&carried) {
        println!("  {n}");
    }
    finish(
        args,
        &agreement,
        accuracies,
        [load_s, canon_s, verify_s, write_s],
        ok,
        &inputs,
        front.verified_what().is_some(),
    )
}

fn verification<T: Real, F: Front<T>>(
    args: &CanonicalizeArgs,
    inputs: &Inputs,
    agreement: &Agreement,
    accuracies: Option<(f64, f64)>,
    ok: bool,
    front: &F,
) -> Verification {
    Verification {
        inputs: inputs.what.clone(),
        samples: inputs.x.len(),
        outputs: front.verified_what(),
        max_abs_error: agreement.max_abs_error,
        max_rel_error: agreement.max_rel_error,
        argmax_agreement: agreement.argmax_agreement,
        accuracy_original: accuracies.map(|a| a.0),
        accuracy_canonical: accuracies.map(|a| a.1),
        tolerance: args.tolerance,
        passed: ok,
    }
}

/// The verification line (`verified`, then the errors and, with labels, the accuracies), the
/// timings of the four stages, and the verdict (`ok`: the largest relative error is within
/// `--tolerance`): an error when it is not (nothing was written then), else the line naming
/// the written file.
fn finish(
    args: &CanonicalizeArgs,
    agreement: &Agreement,
    accuracies: Option<(f64, f64)>,
    [load_s, canon_s, verify_s, write_s]: [f64; 4],
    ok: bool,
    inputs: &Inputs,
    read_back: bool,
) -> Result<()> {
    let verified = if read_back {
        format!("verified the model written on {}", inputs.what)
    } else {
        format!("verified on {}", inputs.what)
    };
    println!(
        "{verified}: max abs error {:.3e}, max rel error {:.3e}{}{}",
        agreement.max_abs_error,
        agreement.max_rel_error,
        agreement
            .argmax_agreement
            .map_or(String::new(), |a| format!(", argmax agreement {a:.6}")),
        accuracies.map_or(String::new(), |(a, b)| format!(
            ", accuracy {a:.4} original / {b:.4} {}",
            form_name(args.form)
        ))
    );
    println!(
        "time: load {load_s:.3} s, canonicalize {canon_s:.3} s, verify {verify_s:.3} s, write {write_s:.3} s"
    );
    if !ok {
        bail!(
            "verification failed: max rel error {:.3e} exceeds --tolerance {:.1e}; nothing written",
            agreement.max_rel_error,
            args.tolerance
        );
    }
    println!("wrote {}", shown(&args.output.output));
    Ok(())
}
