//! `inspect`, `fuse`, `split`, `convert`: PyTorch weight-norm checkpoints.

use std::path::PathBuf;

use anyhow::Result;
use weightnorm::torch::{
    Checkpoint, FuseOptions, Scheme, SplitOptions, Stats, TensorEntry, TorchError, convert,
    detect_pairs, fuse, pair_stats, split,
};

use crate::Failure;
use crate::output::Outputs;
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
    /// The checkpoint: `.safetensors`, or a PyTorch `.pt` / `.pth` / `.bin` (zip) file.
    pub input: PathBuf,
    /// For a PyTorch checkpoint: the key of the state dict inside it (e.g. `model`,
    /// `state_dict`, or a dotted path). Without it, a file whose top level is a single dict
    /// under one key is opened at that key.
    #[arg(long)]
    pub key: Option<String>,
}

/// Arguments shared by the commands that write a checkpoint.
#[derive(clap::Args)]
pub struct Output {
    /// Where to write the `.safetensors` result (written atomically; the input is never
    /// modified).
    #[arg(short, long = "output", value_name = "OUT")]
    pub output: PathBuf,
    /// Overwrite OUT if it exists.
    #[arg(long)]
    pub force: bool,
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

/// Opens the input checkpoint; a file that cannot be read is bad input.
pub(crate) fn open(input: &Input) -> Result<Checkpoint> {
    Checkpoint::open(&input.input, input.key.as_deref()).map_err(|e| Failure::input(e).into())
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

/// `weightnorm inspect`.
pub fn inspect(args: InspectArgs) -> Result<()> {
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
    if args.json {
        let doc = serde_json::json!({
            "file": ckpt.path.display().to_string(),
            "format": format,
            "key": ckpt.key,
            "metadata": ckpt.metadata,
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
        "{} ({format}{}, {} tensors, {} weight-norm pairs)",
        shown(&ckpt.path),
        ckpt.key
            .as_deref()
            .map(|k| format!(", key `{}`", escape(k)))
            .unwrap_or_default(),
        ckpt.tensors.len(),
        pairs.len()
    );
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

/// Reads the input checkpoint, transforms its tensors with `f` (which returns the new tensors
/// and the pairs it handled) and writes them, with the input's metadata, to the output;
/// returns how many pairs and tensors were written. Nothing is read when the output is refused.
fn rewrite<P>(
    input: &Input,
    output: &Output,
    f: impl FnOnce(&[TensorEntry]) -> Result<(Vec<TensorEntry>, Vec<P>), TorchError>,
) -> Result<(usize, usize)> {
    let mut outputs = Outputs::new([&input.input]);
    outputs.check(&[&output.output], output.force)?;
    let ckpt = open(input)?;
    let (tensors, pairs) = f(&ckpt.tensors).map_err(Failure::input)?;
    outputs.safetensors(
        &output.output,
        output.force,
        &tensors,
        ckpt.metadata.as_ref(),
    )?;
    outputs.commit()?;
    Ok((pairs.len(), tensors.len()))
}

/// `weightnorm fuse`.
pub fn fuse_cmd(args: FuseArgs) -> Result<()> {
    let dim = args.dim.as_deref().map(parse_dim).transpose()?;
    let (pairs, tensors) = rewrite(&args.input, &args.output, |t| fuse(t, &FuseOptions { dim }))?;
    eprintln!(
        "fused {pairs} pairs into {} ({tensors} tensors)",
        shown(&args.output.output)
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
    let (pairs, _) = rewrite(&args.input, &args.output, |t| split(t, &options))?;
    eprintln!(
        "split {pairs} weights into {} ({} scheme)",
        shown(&args.output.output),
        scheme.as_str()
    );
    Ok(())
}

/// `weightnorm convert`.
pub fn convert_cmd(args: ConvertArgs) -> Result<()> {
    let scheme = Scheme::from(args.scheme);
    let (pairs, _) = rewrite(&args.input, &args.output, |t| convert(t, scheme))?;
    eprintln!(
        "renamed {pairs} pairs into the {} scheme in {}",
        scheme.as_str(),
        shown(&args.output.output)
    );
    Ok(())
}
