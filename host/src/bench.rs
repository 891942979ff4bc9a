//! `hearth-host bench`: training-step throughput, native and inside wasmtime,
//! single thread, on real MNIST batches.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use hearth_worker::{ModelConfig, OptimizerConfig};

use crate::backend::{Backend, BackendKind};
use hearth_runtime::{Limits, OnOverrun};

/// Options of `bench`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Architecture: lenet5, lenet5-tanh or lenet-mxnet.
    #[arg(long, default_value = "lenet5")]
    arch: String,
    /// Samples per training step.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Seconds of measurement per backend (after one second of warm-up).
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Repetitions per backend; the median is reported.
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Measure only this backend (for profiling one of them).
    #[arg(long, value_enum)]
    only: Option<Only>,
    /// Also measure `work`'s training with this many threads (component
    /// instances sharing each step) against one (0: skip).
    #[arg(long, default_value_t = 2)]
    threads: usize,
}

/// One of the measured backends.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Only {
    /// The training code compiled natively.
    Native,
    /// The component in wasmtime, call timeout kept by a watchdog (hosts' default).
    Watchdog,
    /// The component in wasmtime, call timeout kept by epoch checks (a trap).
    Epoch,
    /// The component in wasmtime without a call timeout.
    Unlimited,
}

/// Runs the benchmark and prints img/s for both backends and their ratio.
pub fn run(args: Args) -> Result<()> {
    let mnist =
        hearth_mnist::load(&hearth_mnist::bundled_dir()).context("loading bundled MNIST")?;
    let n_batches = 64;
    let batches: Vec<(Vec<u8>, Vec<u8>)> = (0..n_batches)
        .map(|b| {
            let idx: Vec<usize> = (b * args.batch..(b + 1) * args.batch)
                .map(|i| i % mnist.train.len())
                .collect();
            let (mut p, mut l) = (Vec::new(), Vec::new());
            mnist.train.gather(&idx, &mut p, &mut l);
            (p, l)
        })
        .collect();
    let config = ModelConfig {
        arch: args.arch.clone(),
        seed: 1,
        optimizer: OptimizerConfig::default(),
    };
    println!(
        "training step, {} batch {}, single thread, {} × {:.0} s each",
        args.arch, args.batch, args.repeats, args.seconds
    );
    let epoch = Limits::default();
    let watchdog = Limits {
        on_overrun: OnOverrun::EndProcess(crate::overrun::exit),
        ..Limits::default()
    };
    let unlimited = Limits {
        call_timeout: None,
        ..Limits::default()
    };
    let setups = [
        (Only::Native, "native", BackendKind::Native, epoch),
        (
            Only::Watchdog,
            "wasmtime, timeout by watchdog (default)",
            BackendKind::Wasmtime,
            watchdog,
        ),
        (
            Only::Epoch,
            "wasmtime, timeout by epoch checks",
            BackendKind::Wasmtime,
            epoch,
        ),
        (
            Only::Unlimited,
            "wasmtime, no timeout",
            BackendKind::Wasmtime,
            unlimited,
        ),
    ];
    let mut results = Vec::new();
    for (which, label, kind, limits) in setups {
        if args.only.is_some_and(|o| o != which) {
            continue;
        }
        let mut backend = Backend::new(kind, &config, limits)?;
        let mut step = 0usize;
        let mut measure = |d: Duration| {
            images_per_second(&batches, &mut step, d, |p, l| {
                backend.train_batch(p, l).map(|_| ())
            })
        };
        measure(Duration::from_secs(1))?;
        let mut runs: Vec<f64> = (0..args.repeats.max(1))
            .map(|_| measure(Duration::from_secs_f64(args.seconds)))
            .collect::<Result<_>>()?;
        runs.sort_by(f64::total_cmp);
        let median = runs[runs.len() / 2];
        let all: Vec<String> = runs.iter().map(|r| format!("{r:.0}")).collect();
        println!(
            "  {label:<40} {median:>7.0} img/s  (runs: {})",
            all.join(", ")
        );
        results.push(median);
    }
    if args.only.is_some() {
        return Ok(());
    }
    for (i, label) in [(1, "watchdog"), (2, "epoch checks"), (3, "no timeout")] {
        println!(
            "  wasmtime ({label}) / native = {:.3}  (native is {:.2}x faster)",
            results[i] / results[0],
            results[0] / results[i]
        );
    }
    if args.threads > 1 {
        // As `work` trains: instances sharing each step, one thread each;
        // one thread and T threads in turn, the ratio taken pair by pair
        // (this machine's speed drifts from minute to minute).
        let runtime = hearth_runtime::Runtime::new(watchdog)?;
        let component = runtime.load_builtin()?;
        let mut models = [
            hearth_runtime::Replicas::new(&runtime, &component, &config, 1)?,
            hearth_runtime::Replicas::new(&runtime, &component, &config, args.threads)?,
        ];
        let measure = |model: &mut hearth_runtime::Replicas, d: Duration| {
            images_per_second(&batches, &mut 0, d, |p, l| {
                Ok(model.train_batch(p, l).map(|_| ())?)
            })
        };
        for m in models.iter_mut() {
            measure(m, Duration::from_secs(1))?;
        }
        let (mut one, mut many, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..args.repeats.max(1) * 2 {
            let a = measure(&mut models[0], Duration::from_secs_f64(args.seconds / 2.0))?;
            let b = measure(&mut models[1], Duration::from_secs_f64(args.seconds / 2.0))?;
            one.push(a);
            many.push(b);
            ratios.push(b / a);
        }
        let median = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let shown: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
        println!(
            "  work's training: 1 thread {:.0} img/s, {} threads sharing each step {:.0} img/s; \
             ratio {:.2}x (median of pairs: {})",
            median(one),
            args.threads,
            median(many),
            median(ratios.clone()),
            shown.join(", ")
        );
    }
    // The watchdog's bookkeeping per call, measured on the cheapest call
    // there is (the throughput rows above are too noisy to resolve it).
    let per_call = |limits: Limits| -> Result<f64> {
        let runtime = hearth_runtime::Runtime::new(limits)?;
        let component = runtime.load_builtin()?;
        let mut model = hearth_runtime::ComponentModel::new(&runtime, &component, &config)?;
        let calls = 200_000;
        let mut best = f64::INFINITY;
        for _ in 0..5 {
            let start = Instant::now();
            for _ in 0..calls {
                model.optimizer()?;
            }
            best = best.min(start.elapsed().as_secs_f64() / calls as f64);
        }
        Ok(best)
    };
    let (with, without) = (per_call(watchdog)?, per_call(unlimited)?);
    let step = args.batch as f64 / results[1];
    println!(
        "  call budget (watchdog) bookkeeping: {:.0} ns per call ({:.0} ns with, {:.0} ns without), \
         {:.4} % of a {}-image training step",
        (with - without) * 1e9,
        with * 1e9,
        without * 1e9,
        100.0 * (with - without) / step,
        args.batch
    );
    Ok(())
}

/// Training steps on `batches` (in turn, from `*step`) for `d`; returns
/// images per second.
fn images_per_second(
    batches: &[(Vec<u8>, Vec<u8>)],
    step: &mut usize,
    d: Duration,
    mut train: impl FnMut(&[u8], &[u8]) -> Result<()>,
) -> Result<f64> {
    let start = Instant::now();
    let mut images = 0usize;
    while start.elapsed() < d {
        let (p, l) = &batches[*step % batches.len()];
        train(p, l)?;
        images += l.len();
        *step += 1;
    }
    Ok(images as f64 / start.elapsed().as_secs_f64())
}
