//! `export --onnx`: a trained model (`model.safetensors`) as an ONNX file
//! appliances can run with any ONNX runtime (see `hearth-onnx`).

use std::path::PathBuf;

use anyhow::{Context, Result};
use hearth_runtime::checkpoint;
use hearth_worker::{Model, ModelConfig};

/// Options of `export`.
#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    /// The trained model (a run's `model.safetensors`).
    #[arg(long, default_value = "runs/train/model.safetensors")]
    pub model: PathBuf,
    /// Where to write the ONNX file.
    #[arg(long)]
    pub onnx: PathBuf,
}

/// Writes the model as ONNX.
pub fn export(args: ExportArgs) -> Result<()> {
    let arch = checkpoint::arch_of(&args.model)?;
    let info = Model::new(&ModelConfig {
        arch: arch.clone(),
        seed: 0,
        optimizer: Default::default(),
    })
    .with_context(|| format!("{}: architecture {arch}", args.model.display()))?
    .describe();
    let params = checkpoint::load(&args.model, &info)?;
    let bytes = hearth_onnx::export(&info, &params).map_err(anyhow::Error::msg)?;
    hearth_runtime::files::write_private(&args.onnx, &bytes)
        .with_context(|| format!("writing {}", args.onnx.display()))?;
    println!(
        "wrote {} ({} bytes): {arch}, input {:?} float32 [N, 1, 28, 28] (pixels 0-255), output {:?} [N, 10]",
        args.onnx.display(),
        bytes.len(),
        hearth_onnx::INPUT,
        hearth_onnx::OUTPUT
    );
    Ok(())
}
