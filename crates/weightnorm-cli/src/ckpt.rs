//! `inspect`, `fuse`, `split`, `convert`: PyTorch weight-norm checkpoints.

use std::path::PathBuf;

use anyhow::Result;
use weightnorm::torch::{Checkpoint, Scheme, SplitOptions, Stats, detect_pairs, pair_stats};
use weightnorm::weightnorm_core::files::{self, FileJob};

use weightnorm::onnx::OnnxModel;

use crate::Failure;
use crate::output::{lift, torch_hint};
use crate::text::{escape, hostile, shortened, shown};

/// The widest tensor name `inspect` lays out in a column; longer names are shortened in the
/// middle (`--json` gives them whole).
const NAME_COLUMN: usize = 60;

/// A key scheme of weight-norm pairs, on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SchemeArg {
    /// `torch.nn.utils.weight_norm`: `X_g`, `X_v`.
    Legacy,
    /// `torch.nn.utils.parametrizations.weight_norm`: `M.parametrizations.weight.original0`
    /// (g) and `.original1` (v).
    Parametrizations,
}

impl From<SchemeArg> for Scheme {
    fn from(s: SchemeArg) -> Self {
        match s {
            SchemeArg::Legacy => Scheme::Legacy,
            SchemeArg::Parametrizations => Scheme::Parametrizations,
        }
    }
}

/// Arguments shared by the commands that read a checkpoint.
#[derive(clap::Args)]
pub struct Input {
    /// The checkpoint: `.safetensors`, a PyTorch file (`.pt`, `.pth`, `.bin`, `.ckpt`: zip or
    /// legacy), or a sharded checkpoint's index (`model.safetensors.index.json`,
    /// `pytorch_model.bin.index.json`), read as one.
    pub input: PathBuf,
    /// For a PyTorch file: the key of the state dict inside it (e.g. `generator`,
    /// `state_dict`, or a dotted path such as `model.generator`). Without it, the file's top
    /// level (or the single dict it holds) must hold tensors alone; a training checkpoint
    /// (`{'generator': ..., 'optim_g': ..., 'steps': ...}`) is listed and refused, naming the
    /// key to use.
    #[arg(long)]
    pub key: Option<String>,
}

/// Arguments shared by the commands that write a checkpoint.
#[derive(clap::Args)]
pub struct Output {
    /// Where to write (atomically; the input is never modified), in the format its name asks
    /// for: `.safetensors`; a PyTorch file (`.pt`, `.pth`, `.bin`, `.ckpt`), which keeps the
    /// input's nesting and every other entry of a training checkpoint; or, for a sharded input,
    /// an index (`model.safetensors.index.json`, `pytorch_model.bin.index.json`) with its
    /// shards beside it, sharded as the input is.
    #[arg(short, long = "output", value_name = "OUT")]
    pub output: PathBuf,
    /// Overwrite OUT (and, for an index, its shards) if it exists.
    #[arg(long)]
    pub force: bool,
    /// Write the state dict alone: leave out the other entries of a training checkpoint (and
    /// any value in the state dict that is not a tensor). Without it, a `.safetensors` output
    /// of such a file is refused, naming what would be lost.
    #[arg(long)]
    pub state_dict_only: bool,
}

/// The options of `inspect`.
#[derive(clap::Args)]
#[command(
    after_help = "Example:\n  weightnorm inspect hifigan.pt --key generator\n  weightnorm inspect model.safetensors --json"
)]
pub struct InspectArgs {
    #[command(flatten)]
    pub input: Input,
    /// Print JSON instead of text: `tensors` (name, dtype, shape) and `pairs` (name, scheme,
    /// g_key, v_key, dim in PyTorch's numbering or null for the whole tensor, and statistics
    /// of g and of v's slice norms).
    #[arg(long)]
    pub json: bool,
}

/// The options of `fuse`.
#[derive(clap::Args)]
#[command(
    after_help = "Every `X_g`/`X_v` or `parametrizations.X.original0/1` pair becomes the tensor `X`,\n\
w = g * v / ||v||, in the dtype of v (f16/bf16 computed in f32); every other tensor and the\n\
safetensors metadata are copied as they are.\n\n\
Example:\n  weightnorm fuse generator.pt -o generator.safetensors --key generator"
)]
pub struct FuseArgs {
    #[command(flatten)]
    pub input: Input,
    #[command(flatten)]
    pub output: Output,
    /// PyTorch's `dim` for every pair (`none` for the whole tensor) instead of inferring it
    /// from g's shape.
    #[arg(long, allow_hyphen_values = true)]
    pub dim: Option<String>,
}

/// The options of `split`.
#[derive(clap::Args)]
#[command(
    after_help = "The inverse of fuse: each selected weight w becomes g = ||w|| (over every axis but\n\
--dim) and v = w, bit for bit.\n\n\
Example:\n  weightnorm split model.safetensors -o model_wn.safetensors --include 'conv.*weight$' --scheme parametrizations"
)]
pub struct SplitArgs {
    #[command(flatten)]
    pub input: Input,
    #[command(flatten)]
    pub output: Output,
    /// PyTorch's `dim`: the axis that keeps one norm per index (`none` for the whole tensor).
    #[arg(long, default_value = "0", allow_hyphen_values = true)]
    pub dim: String,
    /// The key scheme of the output.
    #[arg(long, value_enum, default_value_t = SchemeArg::Legacy)]
    pub scheme: SchemeArg,
    /// Split the float tensors whose name matches this regular expression (default: every
    /// tensor named `*.weight` of rank 2 or more).
    #[arg(long, value_name = "REGEX")]
    pub include: Option<String>,
}

/// The options of `convert`.
#[derive(clap::Args)]
#[command(
    after_help = "Example:\n  weightnorm convert old.safetensors -o new.safetensors --scheme parametrizations"
)]
pub struct ConvertArgs {
    #[command(flatten)]
    pub input: Input,
    #[command(flatten)]
    pub output: Output,
    /// The key scheme to write.
    #[arg(long, value_enum)]
    pub scheme: SchemeArg,
}

/// Opens the input checkpoint; a file that cannot be read is bad input. A file that is not a
/// state dict is refused with the `--key` to use.
pub(crate) fn open(input: &Input) -> Result<Checkpoint> {
    Checkpoint::open(&input.input, input.key.as_deref())
        .map_err(|e| Failure::input(torch_hint(e)).into())
}

/// Parses PyTorch's `dim`: an integer, or `none` (any case) for the whole tensor.
///
/// # Errors
///
/// A [`Failure`] when `s` is neither.
pub(crate) fn parse_dim(s: &str) -> Result<Option<i64>> {
    if s.eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    s.parse::<i64>().map(Some).map_err(|_| {
        Failure::input(anyhow::anyhow!(
            "`{s}` is not a dim: give an integer or `none`"
        ))
        .into()
    })
}

fn json_stats(s: Option<Stats>) -> serde_json::Value {
    match s {
        Some(s) => serde_json::json!({"min": s.min, "max": s.max, "mean": s.mean}),
        None => serde_json::Value::Null,
    }
}

fn fmt_stats(s: Option<Stats>) -> String {
    match s {
        Some(s) => format!("min {:.4e} max {:.4e} mean {:.4e}", s.min, s.max, s.mean),
        None => "empty".into(),
    }
}

/// Whether `path` names an ONNX model (by its extension).
pub(crate) fn is_onnx(path: &std::path::Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("onnx"))
}

/// Refuses the options that mean nothing for an ONNX model.
fn no_checkpoint_options(input: &Input, what: &[(&str, bool)]) -> Result<()> {
    let mut given: Vec<&str> = what.iter().filter(|(_, on)| *on).map(|(f, _)| *f).collect();
    if input.key.is_some() {
        given.insert(0, "--key");
    }
    if let Some(f) = given.first() {
        return Err(Failure::input(anyhow::anyhow!(
            "{f} applies to checkpoints, not to the ONNX model {}",
            shown(&input.input)
        ))
        .into());
    }
    Ok(())
}

fn open_onnx(path: &std::path::Path) -> Result<OnnxModel> {
    OnnxModel::open(path)
        .map_err(|e| Failure::input(anyhow::anyhow!("{}: {e}", shown(path))).into())
}

fn stats_of(xs: &[f64]) -> Option<Stats> {
    (!xs.is_empty()).then(|| Stats {
        min: xs.iter().copied().fold(f64::INFINITY, f64::min),
        max: xs.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        mean: xs.iter().sum::<f64>() / xs.len() as f64,
    })
}

/// `weightnorm inspect model.onnx`: the weight-norm subgraphs.
fn inspect_onnx(args: &InspectArgs) -> Result<()> {
    no_checkpoint_options(&args.input, &[])?;
    let path = &args.input.input;
    let model = open_onnx(path)?;
    let found = model
        .weight_norms()
        .map_err(|e| Failure::input(anyhow::anyhow!("{}: {e}", shown(path))))?;
    let inits = model
        .proto
        .graph
        .as_ref()
        .map_or(0, |g| g.initializer.len());
    if args.json {
        let doc = serde_json::json!({
            "file": path.display().to_string(),
            "format": "onnx",
            "initializers": inits,
            "pairs": found.iter().map(|s| serde_json::json!({
                "name": s.weight,
                "consumers": s.consumers,
                "g_key": s.g,
                "v_key": s.v,
                "dim": s.axis.to_torch(),
                "shape": s.shape,
                "dtype": s.dtype,
                "nodes": s.nodes,
                "difference": s.difference,
                "g": json_stats(stats_of(&s.g_values)),
                "v_norms": json_stats(stats_of(&s.v_norms)),
            })).collect::<Vec<_>>(),
        });
        println!("{}", json_safe(&serde_json::to_string_pretty(&doc)?));
        return Ok(());
    }
    println!(
        "{} (onnx, {inits} initializers, {} weight-norm subgraphs)",
        shown(path),
        found.len()
    );
    for s in &found {
        let dim = s
            .axis
            .to_torch()
            .map_or("None".to_string(), |d| d.to_string());
        println!(
            "  {} {:?} {} (dim={dim}), used by {}",
            shortened(&s.weight, 2 * NAME_COLUMN),
            s.shape,
            s.dtype,
            shortened(&s.consumers.join(", "), 2 * NAME_COLUMN)
        );
        println!(
            "    g: {}  v: {}  ({} nodes)",
            shortened(&s.g, NAME_COLUMN),
            shortened(&s.v, NAME_COLUMN),
            s.nodes.len()
        );
        println!("    g:             {}", fmt_stats(stats_of(&s.g_values)));
        println!("    ||v|| slices:  {}", fmt_stats(stats_of(&s.v_norms)));
    }
    Ok(())
}

/// `weightnorm fuse model.onnx -o out.onnx`: every weight-norm subgraph folded.
fn fuse_onnx(args: &FuseArgs) -> Result<()> {
    no_checkpoint_options(
        &args.input,
        &[
            ("--dim", args.dim.is_some()),
            ("--state-dict-only", args.output.state_dict_only),
        ],
    )?;
    let (path, out) = (&args.input.input, &args.output.output);
    let found = files::fuse_onnx_file(path, out, args.output.force).map_err(lift)?;
    eprintln!(
        "folded {} weight-norm subgraphs into {} (largest difference from the graph's own computation {:.1e})",
        found.len(),
        shown(out),
        found.iter().map(|s| s.difference).fold(0.0, f64::max)
    );
    Ok(())
}

/// `weightnorm inspect`.
pub fn inspect(args: InspectArgs) -> Result<()> {
    if is_onnx(&args.input.input) {
        return inspect_onnx(&args);
    }
    let ckpt = open(&args.input)?;
    let pairs = detect_pairs(&ckpt.shapes(), None).map_err(Failure::input)?;
    let mut pair_rows = Vec::new();
    for p in &pairs {
        let (g, v) = (ckpt.get(&p.g_key).unwrap(), ckpt.get(&p.v_key).unwrap());
        let (gs, ns) = pair_stats(v, g, p.axis).map_err(Failure::input)?;
        pair_rows.push((p, gs, ns));
    }
    let format = match ckpt.format {
        weightnorm::torch::Format::SafeTensors => "safetensors",
        weightnorm::torch::Format::PyTorch => "pytorch",
    };
    let others = ckpt.others();
    if args.json {
        let doc = serde_json::json!({
            "file": ckpt.path.display().to_string(),
            "format": format,
            "key": ckpt.key,
            "metadata": ckpt.metadata,
            "shards": ckpt.sharding().map(|s| s.shards.iter().map(|sh| serde_json::json!({
                "file": sh.file, "tensors": sh.tensors.len(),
            })).collect::<Vec<_>>()),
            "others": others.iter().map(|e| serde_json::json!({
                "name": e.name, "type": e.kind, "tensors": e.tensors, "pairs": e.pairs,
            })).collect::<Vec<_>>(),
            "tensors": ckpt.tensors.iter().map(|t| serde_json::json!({
                "name": t.name, "dtype": format!("{:?}", t.dtype), "shape": t.shape,
            })).collect::<Vec<_>>(),
            "pairs": pair_rows.iter().map(|(p, gs, ns)| serde_json::json!({
                "name": p.name,
                "scheme": p.scheme.as_str(),
                "g_key": p.g_key,
                "v_key": p.v_key,
                "dim": p.axis.to_torch(),
                "g": json_stats(*gs),
                "v_norms": json_stats(*ns),
            })).collect::<Vec<_>>(),
        });
        println!("{}", json_safe(&serde_json::to_string_pretty(&doc)?));
        return Ok(());
    }
    println!(
        "{} ({format}{}{}, {} tensors, {} weight-norm pairs)",
        shown(&ckpt.path),
        ckpt.sharding()
            .map(|s| format!(" in {} shards", s.shards.len()))
            .unwrap_or_default(),
        ckpt.key
            .as_deref()
            .map(|k| format!(", key `{}`", escape(k)))
            .unwrap_or_default(),
        ckpt.tensors.len(),
        pairs.len()
    );
    if !others.is_empty() {
        println!(
            "besides the state dict: {}",
            others
                .iter()
                .map(|e| shortened(&e.to_string(), 2 * NAME_COLUMN))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let names: Vec<String> = ckpt
        .tensors
        .iter()
        .map(|t| shortened(&t.name, NAME_COLUMN))
        .collect();
    let width = names.iter().map(|n| n.chars().count()).max().unwrap_or(0);
    for (t, name) in ckpt.tensors.iter().zip(&names) {
        println!(
            "  {name:width$}  {:>5}  {:?}",
            format!("{:?}", t.dtype),
            t.shape
        );
    }
    if !pair_rows.is_empty() {
        println!("weight-norm pairs:");
        for (p, gs, ns) in pair_rows {
            let dim = p
                .axis
                .to_torch()
                .map_or("None".to_string(), |d| d.to_string());
            println!(
                "  {} ({}, dim={dim})",
                shortened(&p.name, 2 * NAME_COLUMN),
                p.scheme.as_str()
            );
            println!("    g:             {}", fmt_stats(gs));
            println!("    ||v|| slices:  {}", fmt_stats(ns));
        }
    }
    Ok(())
}

/// Pretty JSON with the characters it may hold raw that a terminal acts on (DEL, the C1
/// controls, direction overrides) written as `\uXXXX` escapes: the same JSON document.
fn json_safe(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c != '\n' && hostile(c) {
            out.push_str(&format!("\\u{:04x}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

/// The core's file job for a command's input and output options.
fn job<'a>(input: &'a Input, output: &'a Output) -> FileJob<'a> {
    FileJob {
        input: &input.input,
        key: input.key.as_deref(),
        output: &output.output,
        force: output.force,
        state_dict_only: output.state_dict_only,
    }
}

/// `weightnorm fuse`.
pub fn fuse_cmd(args: FuseArgs) -> Result<()> {
    if is_onnx(&args.input.input) {
        return fuse_onnx(&args);
    }
    let dim = args.dim.as_deref().map(parse_dim).transpose()?;
    let (pairs, written) = files::fuse_file(&job(&args.input, &args.output), dim).map_err(lift)?;
    eprintln!(
        "fused {} pairs into {}{}",
        pairs.len(),
        shown(&args.output.output),
        written.said()
    );
    Ok(())
}

/// `weightnorm split`.
pub fn split_cmd(args: SplitArgs) -> Result<()> {
    let dim = parse_dim(&args.dim)?;
    let scheme = Scheme::from(args.scheme);
    let include = args
        .include
        .as_deref()
        .map(regex::Regex::new)
        .transpose()
        .map_err(|e| {
            Failure::input(anyhow::anyhow!(
                "--include is not a valid regular expression: {e}"
            ))
        })?;
    let mut options = SplitOptions {
        dim,
        scheme,
        ..Default::default()
    };
    if let Some(re) = include {
        options.select = Box::new(move |name, _| re.is_match(name));
    }
    let (pairs, written) =
        files::split_file(&job(&args.input, &args.output), &options).map_err(lift)?;
    eprintln!(
        "split {} weights into {} ({} scheme){}",
        pairs.len(),
        shown(&args.output.output),
        scheme.as_str(),
        written.said()
    );
    Ok(())
}

/// `weightnorm convert`.
pub fn convert_cmd(args: ConvertArgs) -> Result<()> {
    let scheme = Scheme::from(args.scheme);
    let (pairs, written) =
        files::convert_file(&job(&args.input, &args.output), scheme).map_err(lift)?;
    let renamed = pairs.iter().filter(|p| p.scheme != scheme).count();
    if renamed == 0 {
        eprintln!(
            "nothing to rename: the {} pairs are already in the {} scheme; {} is a copy of the input{}",
            pairs.len(),
            scheme.as_str(),
            shown(&args.output.output),
            written.said()
        );
    } else {
        eprintln!(
            "renamed {renamed} of {} pairs into the {} scheme in {}{}",
            pairs.len(),
            scheme.as_str(),
            shown(&args.output.output),
            written.said()
        );
    }
    Ok(())
}
