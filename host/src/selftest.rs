//! `hearth-host selftest`: a few training steps of the built-in component
//! on real MNIST batches, and the SHA-256 of the parameters after them.
//! The same on every machine: two architectures (x86-64 and aarch64, under
//! qemu in CI) must print the same line, bit for bit.

use std::path::PathBuf;

use anyhow::{Context, Result};
use hearth_runtime::{ComponentModel, Limits, Runtime};
use hearth_worker::ModelConfig;

/// Options of `selftest`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Training steps of 64 images.
    #[arg(long, default_value_t = 3)]
    steps: usize,
    /// MNIST directory (default: the bundled copy).
    #[arg(long)]
    data: Option<PathBuf>,
}

/// Trains and prints the architecture, the steps' losses (as bits) and the parameters' digest.
pub fn run(args: Args) -> Result<()> {
    let dir = args.data.unwrap_or_else(hearth_mnist::bundled_dir);
    let mnist = hearth_mnist::load(&dir)
        .with_context(|| format!("loading MNIST from {}", dir.display()))?;
    let runtime = Runtime::new(Limits::default())?;
    let component = runtime.load_builtin()?;
    let config = ModelConfig {
        arch: "lenet5".into(),
        seed: 1,
        optimizer: Default::default(),
    };
    let mut model = ComponentModel::new(&runtime, &component, &config)?;
    let mut losses = Vec::new();
    for step in 0..args.steps {
        let idx: Vec<usize> = (step * 64..(step + 1) * 64).collect();
        let (mut pixels, mut labels) = (Vec::new(), Vec::new());
        mnist.train.gather(&idx, &mut pixels, &mut labels);
        let stats = model.train_batch(&pixels, &labels)?;
        losses.push(format!("{:08x}", stats.loss.to_bits()));
    }
    let bytes: Vec<u8> = model
        .params()?
        .iter()
        .flat_map(|p| p.to_le_bytes())
        .collect();
    println!(
        "{} {} steps: losses {} params sha256 {}",
        config.arch,
        args.steps,
        losses.join(","),
        hearth_runtime::digest(&bytes)
    );
    Ok(())
}
