//! `hearth-host evaluate`: score a saved model on the MNIST test set.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use hearth_worker::{ModelConfig, OptimizerConfig};

use crate::backend::{Backend, BackendKind};
use hearth_runtime::checkpoint;
use hearth_runtime::{Limits, OnOverrun};

/// Options of `evaluate`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// A model written by train-local (model.safetensors).
    #[arg(long)]
    model: PathBuf,
    /// Architecture the model was trained as (read from the file if omitted).
    #[arg(long)]
    arch: Option<String>,
    /// MNIST directory (default: the bundled copy).
    #[arg(long)]
    data: Option<PathBuf>,
}

/// Loads the model into the component and prints test loss and accuracy.
pub fn run(args: Args) -> Result<()> {
    let arch = match args.arch {
        Some(a) => a,
        None => checkpoint::arch_of(&args.model)?,
    };
    let dir = args.data.unwrap_or_else(hearth_mnist::bundled_dir);
    let mnist = hearth_mnist::load(&dir)
        .with_context(|| format!("loading MNIST from {}", dir.display()))?;
    let config = ModelConfig {
        arch,
        seed: 0,
        optimizer: OptimizerConfig::default(),
    };
    let limits = Limits {
        on_overrun: OnOverrun::EndProcess(crate::overrun::exit),
        ..Limits::default()
    };
    let mut backend = Backend::new(BackendKind::Wasmtime, &config, limits)?;
    let params = checkpoint::load(&args.model, &backend.describe())?;
    backend.set_params(&params)?;
    let start = Instant::now();
    let s = backend.evaluate(
        mnist.test.pixels(),
        mnist.test.labels.as_slice().unwrap_or(&[]),
    )?;
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{}: test loss {:.4}, accuracy {:.2} % ({} of {}), {:.0} img/s inference",
        args.model.display(),
        s.loss_sum / s.count as f64,
        100.0 * s.correct as f64 / s.count as f64,
        s.correct,
        s.count,
        s.count as f64 / secs
    );
    Ok(())
}
