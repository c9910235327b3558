//! `train` and `compare`: training on a real data set, metrics, plots and a report.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::activation::softmax;
use burn::tensor::{Device, Int, Tensor, TensorData};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use crate::Failure;
use crate::data::{Dataset, FASHION_DEFAULT, digits, fashion_mnist};
use crate::metrics::{EpochMetrics, RunMetrics, RunSetup};
use crate::model::{Model, Param, Spec};
use crate::output::{write_bytes, write_json, write_safetensors};

/// Options shared by `train` and `compare`.
#[derive(clap::Args, Clone)]
pub struct DataModelArgs {
    /// The data set: `fashion-mnist` (gzipped IDX files under --data) or `digits` (the UCI
    /// digits, compiled in). Default: Fashion-MNIST when it is installed, else digits.
    #[arg(long)]
    pub dataset: Option<String>,
    /// Directory of Fashion-MNIST in the original MNIST file layout.
    #[arg(long, default_value = FASHION_DEFAULT)]
    pub data: PathBuf,
    /// `mlp` (hidden layers 256, 128) or `cnn` (the weight-normalized CNN classifier).
    #[arg(long, default_value = "mlp")]
    pub model: String,
    /// Initialisation of weight-normalized models: `fp` (function-preserving) or `ddi` (the
    /// paper's data-dependent initialisation on the first batch).
    #[arg(long, default_value = "fp")]
    pub init: String,
    /// Epochs (default: 3 on Fashion-MNIST, 30 on the small digits set).
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Examples per step.
    #[arg(long, default_value_t = 128)]
    pub batch_size: usize,
    /// Adam's learning rate.
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// Seed of the initialisation and the data order.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Hide the progress bar.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(clap::Args)]
#[command(
    after_help = "Writes to --out: metrics.json, curves.png, model.safetensors (PyTorch nn.Sequential\n\
keys and layouts) and arch.json (for `weightnorm canonicalize`).\n\n\
Example:\n  weightnorm train --dataset fashion-mnist --model mlp --param wn --epochs 3 --out runs/wn"
)]
pub struct TrainArgs {
    #[command(flatten)]
    pub common: DataModelArgs,
    /// The parameterization: plain, wn, wn-mobn or bn.
    #[arg(long, default_value = "wn")]
    pub param: String,
    /// Output directory (created if missing).
    #[arg(long, default_value = "runs/train")]
    pub out: PathBuf,
}

#[derive(clap::Args)]
#[command(
    after_help = "Trains each parameterization with the same seed and data order and writes\n\
report.md, loss.png and accuracy.png to --out (and each run under --out/<param>/).\n\n\
Example:\n  weightnorm compare\n  weightnorm compare --dataset digits --params plain,wn --epochs 10"
)]
pub struct CompareArgs {
    #[command(flatten)]
    pub common: DataModelArgs,
    /// Comma-separated parameterizations.
    #[arg(long, default_value = "plain,wn,wn-mobn,bn")]
    pub params: String,
    /// Output directory.
    #[arg(long, default_value = "runs/compare")]
    pub out: PathBuf,
}

impl DataModelArgs {
    /// The number of epochs: given, or the data set's default.
    pub fn epochs(&self, ds: &Dataset) -> usize {
        self.epochs
            .unwrap_or(if ds.name == "digits" { 30 } else { 3 })
    }
}

impl DataModelArgs {
    /// How a run on `ds` is set up, as plain data for its metrics and reports.
    pub fn setup(&self, ds: &Dataset) -> RunSetup {
        RunSetup {
            dataset: ds.name,
            input_norm: ds.norm,
            model: self.model.clone(),
            init: self.init.clone(),
            epochs: self.epochs(ds),
            batch_size: self.batch_size,
            lr: self.lr,
            seed: self.seed,
        }
    }
}

/// Checks the options before anything is loaded or printed.
fn check(args: &DataModelArgs) -> Result<()> {
    let bad = |m: String| -> Result<()> { Err(Failure::input(anyhow::anyhow!(m)).into()) };
    if !matches!(args.model.as_str(), "mlp" | "cnn") {
        return bad(format!("unknown model `{}`: use mlp or cnn", args.model));
    }
    if args.epochs == Some(0) || args.batch_size == 0 || !(args.lr > 0.0 && args.lr.is_finite()) {
        return bad(
            "--epochs and --batch-size must be positive, and --lr a positive number".into(),
        );
    }
    if !matches!(args.init.as_str(), "fp" | "ddi") {
        return bad(format!("unknown --init `{}`: use fp or ddi", args.init));
    }
    if let Some(d) = args
        .dataset
        .as_deref()
        .filter(|d| !matches!(*d, "fashion-mnist" | "digits"))
    {
        return bad(format!(
            "unknown data set `{d}`: use fashion-mnist or digits"
        ));
    }
    Ok(())
}

/// Loads the data set, standardized with its training pixels' mean and standard deviation.
pub fn load_data(args: &DataModelArgs) -> Result<Dataset> {
    raw_data(args).map(Dataset::standardize)
}

fn raw_data(args: &DataModelArgs) -> Result<Dataset> {
    match args.dataset.as_deref() {
        Some("fashion-mnist") => fashion_mnist(&args.data),
        Some("digits") => Ok(digits()),
        None => {
            if args.data.is_dir() {
                fashion_mnist(&args.data)
            } else {
                eprintln!(
                    "Fashion-MNIST is not at {}: using the UCI digits. To get Fashion-MNIST: \
                     apt-get install dataset-fashion-mnist (or pass --data DIR).",
                    args.data.display()
                );
                Ok(digits())
            }
        }
        Some(other) => Err(Failure::input(anyhow::anyhow!(
            "unknown data set `{other}`: use fashion-mnist or digits"
        ))
        .into()),
    }
}

fn spec_for(args: &DataModelArgs, ds: &Dataset, param: Param) -> Spec {
    let cnn = args.model == "cnn";
    Spec {
        kind: args.model.clone(),
        param,
        input: ds.shape,
        hidden: if cnn { vec![128] } else { vec![256, 128] },
        cnn_widths: [32, 64, 128],
        classes: ds.classes,
    }
}

/// A batch as tensors: images flattened for the MLP, `[b, c, h, w]` for the CNN.
enum Batch {
    Flat(Tensor<2>),
    Image(Tensor<4>),
}

fn batch(ds: &Dataset, x: &[f32], idx: &[usize], image: bool, device: &Device) -> Batch {
    let f = ds.features();
    let mut data = Vec::with_capacity(idx.len() * f);
    for &i in idx {
        data.extend_from_slice(&x[i * f..(i + 1) * f]);
    }
    if image {
        let [c, h, w] = ds.shape;
        Batch::Image(Tensor::from_data(
            TensorData::new(data, [idx.len(), c, h, w]),
            device,
        ))
    } else {
        Batch::Flat(Tensor::from_data(
            TensorData::new(data, [idx.len(), f]),
            device,
        ))
    }
}

fn forward(model: &Model, b: Batch) -> Tensor<2> {
    match (model, b) {
        (Model::Mlp(m), Batch::Flat(x)) => m.forward(x),
        (Model::Cnn(m), Batch::Image(x)) => m.forward(x),
        (Model::Mlp(m), Batch::Image(x)) => m.forward(x.flatten(1, 3)),
        (Model::Cnn(_), Batch::Flat(_)) => unreachable!("CNN batches are images"),
    }
}

/// Test loss, accuracy and expected calibration error (15 equal-width confidence bins).
fn evaluate(model: &Model, ds: &Dataset, image: bool, device: &Device) -> (f64, f64, f64) {
    let n = ds.test_y.len();
    let (mut loss, mut correct) = (0.0, 0usize);
    const BINS: usize = 15;
    let mut bins = [(0usize, 0.0f64, 0.0f64); BINS];
    for start in (0..n).step_by(1000) {
        let idx: Vec<usize> = (start..(start + 1000).min(n)).collect();
        let logits = forward(model, batch(ds, &ds.test_x, &idx, image, device));
        let probs = softmax(logits, 1)
            .into_data()
            .convert::<f64>()
            .try_to_vec::<f64>()
            .expect("f64");
        for (k, &i) in idx.iter().enumerate() {
            let p = &probs[k * ds.classes..(k + 1) * ds.classes];
            let (pred, conf) = p
                .iter()
                .enumerate()
                .fold((0, f64::MIN), |b, (j, &q)| if q > b.1 { (j, q) } else { b });
            let y = ds.test_y[i] as usize;
            loss -= p[y].max(1e-12).ln();
            let hit = pred == y;
            correct += hit as usize;
            let b = ((conf * BINS as f64) as usize).min(BINS - 1);
            bins[b].0 += 1;
            bins[b].1 += hit as usize as f64;
            bins[b].2 += conf;
        }
    }
    // ECE = sum over bins of (n_b / N) |accuracy_b - confidence_b| = sum |hits_b - conf_b| / N.
    let ece = bins
        .iter()
        .map(|&(_, hits, conf)| (hits - conf).abs())
        .sum::<f64>()
        / n as f64;
    (loss / n as f64, correct as f64 / n as f64, ece)
}

/// A deterministic permutation for the epoch.
fn shuffled(n: usize, seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut state = seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ 0x9E37_79B9_7F4A_7C15;
    for i in (1..n).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        order.swap(i, (state % (i as u64 + 1)) as usize);
    }
    order
}

/// Trains one model; returns it and what was measured.
pub fn run(args: &DataModelArgs, ds: &Dataset, param: Param) -> Result<(Spec, Model, RunMetrics)> {
    let device = Device::default().autodiff();
    device.seed(args.seed);
    // The options were validated by `check`.
    let epochs = args.epochs(ds);
    let spec = spec_for(args, ds, param);
    let image = spec.kind == "cnn";
    let mut model = spec.build(&device)?;
    let first: Vec<usize> = shuffled(ds.train_y.len(), args.seed)
        .into_iter()
        .take(args.batch_size.max(256))
        .collect();
    match args.init.as_str() {
        "fp" => {}
        "ddi" if matches!(param, Param::Wn | Param::WnMobn) => {
            model = match (model, batch(ds, &ds.train_x, &first, image, &device)) {
                (Model::Mlp(m), Batch::Flat(x)) => Model::Mlp(m.data_dependent_init(x)?),
                (Model::Cnn(m), Batch::Image(x)) => Model::Cnn(m.data_dependent_init(x, 1.0)?),
                _ => unreachable!(),
            };
        }
        "ddi" => {}
        other => {
            return Err(
                Failure::input(anyhow::anyhow!("unknown --init `{other}`: use fp or ddi")).into(),
            );
        }
    }
    let loss_fn = CrossEntropyLossConfig::new().init(&device);
    let mut optim = AdamConfig::new().init();
    let n = ds.train_y.len();
    let steps_per_epoch = n.div_ceil(args.batch_size);
    let bar = if args.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new((steps_per_epoch * epochs) as u64)
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix:>8} [{bar:30}] {pos}/{len} steps  {msg}  ({per_sec}, eta {eta})",
        )
        .expect("template")
        .progress_chars("=> "),
    );
    bar.set_prefix(param.name());
    let mut metrics = RunMetrics::new(param.name());
    let started = Instant::now();
    let mut step_time = 0.0;
    for epoch in 0..epochs {
        let order = shuffled(n, args.seed.wrapping_add(epoch as u64 + 1));
        let mut epoch_loss = 0.0;
        for idx in order.chunks(args.batch_size) {
            let t0 = Instant::now();
            let x = batch(ds, &ds.train_x, idx, image, &device);
            let labels: Vec<i64> = idx.iter().map(|&i| ds.train_y[i] as i64).collect();
            let y = Tensor::<1, Int>::from_data(labels.as_slice(), &device);
            let loss = loss_fn.forward(forward(&model, x), y);
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(args.lr, model, grads);
            let l = loss.into_scalar::<f64>();
            step_time += t0.elapsed().as_secs_f64();
            if !l.is_finite() {
                bar.finish_and_clear();
                anyhow::bail!(
                    "the loss became {l} at step {}: try a smaller --lr",
                    metrics.step_losses.len()
                );
            }
            metrics.step_losses.push(l);
            epoch_loss += l * idx.len() as f64;
            bar.set_message(format!("epoch {}/{epochs} loss {l:.4}", epoch + 1));
            bar.inc(1);
        }
        let valid = model.valid();
        let (test_loss, test_accuracy, ece) = evaluate(&valid, ds, image, &device.clone().inner());
        bar.println(format!(
            "{:>8} epoch {}: train loss {:.4}, test loss {test_loss:.4}, test accuracy {test_accuracy:.4}, ECE {ece:.4}",
            param.name(),
            epoch + 1,
            epoch_loss / n as f64
        ));
        metrics.epochs.push(EpochMetrics {
            train_loss: epoch_loss / n as f64,
            test_loss,
            test_accuracy,
            ece,
        });
    }
    bar.finish_and_clear();
    let steps = metrics.step_losses.len() as f64;
    metrics.mean_step_ms = step_time / steps * 1e3;
    metrics.examples_per_s = (n * epochs) as f64 / step_time;
    metrics.seconds = started.elapsed().as_secs_f64();
    Ok((spec, model, metrics))
}

/// Writes a run's outputs to `out`.
pub fn save_run(
    out: &Path,
    spec: &Spec,
    model: &Model,
    metrics: &RunMetrics,
    args: &DataModelArgs,
    ds: &Dataset,
) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut m = metrics.json(&args.setup(ds));
    // The trained network's global gain (the norm of its canonical output scale).
    let canonical = weightnorm::canonical::canonicalize(spec.network(&model.valid())?)?;
    m["global_gain"] = json!(canonical.global_gain());
    write_json(&out.join("metrics.json"), &m)?;
    write_json(&out.join("arch.json"), &spec.arch())?;
    let tensors = spec.export(&model.valid())?;
    write_safetensors(&out.join("model.safetensors"), &tensors, None)?;
    crate::plot::curves(&out.join("curves.png"), metrics)?;
    Ok(())
}

pub fn train(args: TrainArgs) -> Result<()> {
    let param = Param::parse(&args.param)?;
    check(&args.common)?;
    let ds = load_data(&args.common)?;
    eprintln!(
        "{}: {} training and {} test images of {:?}; {} {}",
        ds.name,
        ds.train_y.len(),
        ds.test_y.len(),
        ds.shape,
        args.common.model,
        param.name()
    );
    let (spec, model, metrics) = run(&args.common, &ds, param)?;
    save_run(&args.out, &spec, &model, &metrics, &args.common, &ds)?;
    let last = metrics.epochs.last().expect("at least one epoch");
    println!(
        "test accuracy {:.4}, test loss {:.4}, ECE {:.4}; {:.0} examples/s; outputs in {}",
        last.test_accuracy,
        last.test_loss,
        last.ece,
        metrics.examples_per_s,
        args.out.display()
    );
    Ok(())
}

pub fn compare(args: CompareArgs) -> Result<()> {
    let params: Vec<Param> = args
        .params
        .split(',')
        .map(|p| Param::parse(p.trim()))
        .collect::<Result<_>>()?;
    check(&args.common)?;
    let ds = load_data(&args.common)?;
    eprintln!(
        "{}: {} training and {} test images; {} with {}",
        ds.name,
        ds.train_y.len(),
        ds.test_y.len(),
        args.common.model,
        args.params
    );
    let mut runs = Vec::new();
    for &p in &params {
        let (spec, model, metrics) = run(&args.common, &ds, p)?;
        save_run(
            &args.out.join(p.name()),
            &spec,
            &model,
            &metrics,
            &args.common,
            &ds,
        )?;
        runs.push(metrics);
    }
    crate::plot::comparison(&args.out, &runs)?;
    let report = crate::report::report(&args.common.setup(&ds), &runs);
    write_bytes(&args.out.join("report.md"), report.as_bytes())?;
    println!("{report}");
    println!("report: {}", args.out.join("report.md").display());
    Ok(())
}
