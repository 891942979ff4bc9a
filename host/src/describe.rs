//! `hearth-host describe`: layers and parameter layout, as the component reports them.

use anyhow::Result;
use hearth_worker::{ModelConfig, OptimizerConfig};

use crate::backend::{Backend, BackendKind};
use hearth_runtime::Limits;

/// Options of `describe`.
#[derive(clap::Args)]
pub struct Args {
    /// Architecture: lenet5, lenet5-tanh or lenet-mxnet.
    #[arg(long, default_value = "lenet5")]
    arch: String,
}

/// Prints the architecture table.
pub fn run(args: Args) -> Result<()> {
    let config = ModelConfig {
        arch: args.arch,
        seed: 0,
        optimizer: OptimizerConfig::default(),
    };
    let backend = Backend::new(BackendKind::Wasmtime, &config, Limits::default())?;
    let a = backend.describe();
    println!("{} — input {:?}", a.name, a.input_shape);
    println!(
        "{:<10} {:<48} {:<16} {:>10}",
        "layer", "kind", "output", "params"
    );
    for l in &a.layers {
        println!(
            "{:<10} {:<48} {:<16} {:>10}",
            l.name,
            l.kind,
            format!("{:?}", l.output_shape),
            l.param_count
        );
    }
    println!(
        "total parameters: {} ({:.1} KiB as f32)",
        a.param_count,
        a.param_count as f64 * 4.0 / 1024.0
    );
    if let Some(d) = backend.component_digest() {
        println!("component sha256: {d}");
    }
    Ok(())
}
