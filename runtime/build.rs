//! Builds the training component as part of the normal cargo build.
//!
//! `worker-wasm` is compiled for `wasm32-unknown-unknown` with `simd128` by
//! `hearth-build` (its own target dir inside OUT_DIR), then turned into a
//! component with the `wit-component` library: no `wasm-tools` install, no
//! imports.

use std::fs;

use anyhow::Context;

fn main() -> anyhow::Result<()> {
    let hearth_build::BuildPaths { root, out_dir, .. } = hearth_build::paths()?;
    let module_path = hearth_build::build_wasm(
        &root,
        &out_dir.join("wasm-target"),
        "hearth-worker",
        "component",
    )?;
    let module =
        fs::read(&module_path).with_context(|| format!("reading {}", module_path.display()))?;
    let component = wit_component::ComponentEncoder::default()
        .module(&module)
        .context("the worker module has no component-type section")?
        .validate(true)
        .encode()
        .context("componentizing the worker module")?;
    fs::write(out_dir.join("hearth_trainer.wasm"), &component)?;
    Ok(())
}
