//! `hearth-host train-local`: the study's single-board run, inside wasmtime.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_pcg::Pcg64Mcg;
use serde::Serialize;

use hearth_mnist::Split;
use hearth_worker::{LrSchedule, ModelConfig, OptimizerConfig};

use crate::backend::{Backend, BackendKind};
use hearth_runtime::checkpoint;
use hearth_runtime::{Limits, OnOverrun};

/// Options of `train-local`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Architecture: lenet5, lenet5-tanh or lenet-mxnet.
    #[arg(long, default_value = "lenet5")]
    pub arch: String,
    /// Passes over the training set.
    #[arg(long, default_value_t = 10)]
    pub epochs: usize,
    /// Samples per SGD step.
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// Learning rate.
    #[arg(long, default_value_t = 0.05)]
    pub lr: f32,
    /// Learning-rate schedule over the run: cosine (decay to 0) or constant.
    #[arg(long, default_value_t = LrSchedule::Cosine)]
    pub lr_schedule: LrSchedule,
    /// Momentum.
    #[arg(long, default_value_t = 0.9)]
    pub momentum: f32,
    /// Weight decay (not applied to biases).
    #[arg(long, default_value_t = 1e-4)]
    pub wd: f32,
    /// Seed of initialization and shuffling.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// MNIST directory (default: the copy bundled in the repository).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Use only the first N training images (quick runs).
    #[arg(long)]
    pub train_limit: Option<usize>,
    /// Use only the first N test images.
    #[arg(long)]
    pub test_limit: Option<usize>,
    /// Where results.json and model.safetensors go.
    #[arg(long, default_value = "runs/train-local")]
    pub out: PathBuf,
    /// wasmtime (the product) or native (for comparison).
    #[arg(long, value_enum, default_value_t = BackendKind::Wasmtime)]
    pub backend: BackendKind,
    /// Longest a single component call may run, in seconds (a watchdog stops
    /// the run with an error when one runs longer); 0: no limit.
    #[arg(long, default_value_t = 600)]
    pub call_timeout: u64,
    /// No progress bars (logs only).
    #[arg(long)]
    pub quiet: bool,
}

/// Figures of one epoch.
#[derive(Debug, Serialize)]
pub struct EpochReport {
    epoch: usize,
    wall_seconds: f64,
    train_images_per_second: f64,
    train_loss: f64,
    train_accuracy: f64,
    test_loss: f64,
    test_accuracy: f64,
}

/// The whole run, as written to `results.json`.
#[derive(Debug, Serialize)]
struct RunReport<'a> {
    arch: &'a str,
    backend: BackendKind,
    component_sha256: Option<&'a str>,
    param_count: usize,
    epochs: usize,
    batch: usize,
    learning_rate: f32,
    lr_schedule: String,
    momentum: f32,
    weight_decay: f32,
    seed: u64,
    call_timeout_seconds: Option<u64>,
    train_samples: usize,
    test_samples: usize,
    per_epoch: &'a [EpochReport],
    final_test_accuracy: f64,
    total_train_seconds: f64,
}

/// Trains, evaluates after every epoch, writes the results and the model.
pub fn run(args: Args) -> Result<()> {
    let dir = args.data.clone().unwrap_or_else(hearth_mnist::bundled_dir);
    let mnist = hearth_mnist::load(&dir)
        .with_context(|| format!("loading MNIST from {}", dir.display()))?;
    let train = args
        .train_limit
        .map_or(mnist.train.clone(), |n| mnist.train.head(n));
    let test = args
        .test_limit
        .map_or(mnist.test.clone(), |n| mnist.test.head(n));
    anyhow::ensure!(
        !train.is_empty() && !test.is_empty(),
        "empty training or test set"
    );
    anyhow::ensure!(args.batch >= 1, "--batch must be at least 1");

    let config = ModelConfig {
        arch: args.arch.clone(),
        seed: args.seed,
        optimizer: OptimizerConfig {
            learning_rate: args.lr,
            momentum: args.momentum,
            weight_decay: args.wd,
        },
    };
    let timeout = (args.call_timeout > 0).then(|| Duration::from_secs(args.call_timeout));
    let limits = Limits {
        call_timeout: timeout,
        on_overrun: OnOverrun::EndProcess(crate::overrun::exit),
        ..Limits::default()
    };
    let mut backend = Backend::new(args.backend, &config, limits)?;
    let arch = backend.describe();
    tracing::info!(
        arch = %arch.name, params = arch.param_count, backend = ?args.backend,
        train = train.len(), test = test.len(), "training"
    );
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;

    let mut reports = Vec::new();
    let mut order: Vec<usize> = (0..train.len()).collect();
    let (mut pixels, mut labels) = (Vec::new(), Vec::new());
    let mut total_train = 0.0;
    let steps_per_epoch = train.len().div_ceil(args.batch);
    let total_steps = steps_per_epoch * args.epochs;
    let mut step = 0;
    for epoch in 1..=args.epochs {
        // A seeded shuffle per epoch; every sample is used exactly once.
        order.sort_unstable();
        order.shuffle(&mut Pcg64Mcg::seed_from_u64(
            args.seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
        ));
        let bar = progress(args.quiet, train.len() as u64, epoch, args.epochs);
        let start = Instant::now();
        let (mut loss_sum, mut correct) = (0.0f64, 0u64);
        for chunk in order.chunks(args.batch) {
            pixels.clear();
            labels.clear();
            train.gather(chunk, &mut pixels, &mut labels);
            let lr = args.lr_schedule.rate(args.lr, step, total_steps);
            backend.set_optimizer(OptimizerConfig {
                learning_rate: lr,
                ..config.optimizer
            })?;
            step += 1;
            let s = backend.train_batch(&pixels, &labels)?;
            loss_sum += s.loss as f64 * s.count as f64;
            correct += s.correct as u64;
            bar.inc(chunk.len() as u64);
            bar.set_message(format!("loss {:.4}", s.loss));
        }
        let wall = start.elapsed().as_secs_f64();
        total_train += wall;
        bar.finish_and_clear();
        let (test_loss, test_acc) = evaluate(&mut backend, &test)?;
        let r = EpochReport {
            epoch,
            wall_seconds: wall,
            train_images_per_second: train.len() as f64 / wall,
            train_loss: loss_sum / train.len() as f64,
            train_accuracy: correct as f64 / train.len() as f64,
            test_loss,
            test_accuracy: test_acc,
        };
        println!(
            "epoch {:>2}/{}  {:>6.1} s  {:>7.0} img/s  train loss {:.4} acc {:.2} %  test loss {:.4} acc {:.2} %",
            epoch,
            args.epochs,
            r.wall_seconds,
            r.train_images_per_second,
            r.train_loss,
            100.0 * r.train_accuracy,
            r.test_loss,
            100.0 * r.test_accuracy
        );
        reports.push(r);
    }

    let final_acc = reports.last().map_or(0.0, |r| r.test_accuracy);
    let report = RunReport {
        arch: &arch.name,
        backend: args.backend,
        component_sha256: backend.component_digest(),
        param_count: arch.param_count,
        epochs: args.epochs,
        batch: args.batch,
        learning_rate: args.lr,
        lr_schedule: format!("{:?}", args.lr_schedule).to_lowercase(),
        momentum: args.momentum,
        weight_decay: args.wd,
        seed: args.seed,
        call_timeout_seconds: (args.call_timeout > 0).then_some(args.call_timeout),
        train_samples: train.len(),
        test_samples: test.len(),
        per_epoch: &reports,
        final_test_accuracy: final_acc,
        total_train_seconds: total_train,
    };
    let results = args.out.join("results.json");
    std::fs::write(&results, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("writing {}", results.display()))?;
    let model_path = args.out.join("model.safetensors");
    let meta = HashMap::from([
        ("epochs".to_string(), args.epochs.to_string()),
        ("test_accuracy".to_string(), format!("{final_acc:.4}")),
    ]);
    let params = backend.params()?;
    checkpoint::save(&model_path, &arch, &params, meta)?;
    println!(
        "final test accuracy {:.2} %; wrote {} and {}",
        100.0 * final_acc,
        results.display(),
        model_path.display()
    );
    Ok(())
}

/// Mean loss and accuracy on `split`, in slices of 1,000 images.
fn evaluate(backend: &mut Backend, split: &Split) -> Result<(f64, f64)> {
    let (mut loss, mut correct) = (0.0, 0u64);
    let px = split.pixels();
    let lb = split.labels.as_slice().unwrap_or(&[]);
    for (p, l) in px
        .chunks(1000 * hearth_mnist::IMAGE_LEN)
        .zip(lb.chunks(1000))
    {
        let s = backend.evaluate(p, l)?;
        loss += s.loss_sum;
        correct += s.correct as u64;
    }
    Ok((
        loss / split.len() as f64,
        correct as f64 / split.len() as f64,
    ))
}

fn progress(quiet: bool, len: u64, epoch: usize, epochs: usize) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    let style = ProgressStyle::with_template(
        "epoch {prefix} [{bar:32}] {pos}/{len} images  {per_sec}  eta {eta}  {msg}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    bar.set_style(style);
    bar.set_prefix(format!("{epoch}/{epochs}"));
    bar
}
