//! Builds the browser module as part of the normal cargo build.
//!
//! `worker-wasm` is compiled for `wasm32-unknown-unknown` with feature
//! `browser` (by `hearth-build`, in its own target dir), then the
//! `wasm-bindgen-cli-support` library writes the JS glue (`--target web`)
//! next to the processed module in `OUT_DIR/pkg`. No wasm-bindgen-cli
//! install, no manual step.

use std::env;
use std::path::PathBuf;

use anyhow::Context;

fn main() -> anyhow::Result<()> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let root = manifest_dir
        .parent()
        .context("web-demo/ has no parent")?
        .to_path_buf();
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    hearth_build::watch_worker_sources(&root);
    println!(
        "cargo:rerun-if-changed={}",
        manifest_dir.join("static").display()
    );
    let module = hearth_build::build_worker(&root, &out_dir.join("wasm-target"), "browser")?;
    wasm_bindgen_cli_support::Bindgen::new()
        .input_path(&module)
        .out_name("hearth_worker")
        .web(true)?
        .typescript(false)
        // `init()` with no argument fetches the module next to the glue.
        .omit_default_module_path(false)
        .generate(out_dir.join("pkg"))
        .context("generating the wasm-bindgen JS glue")?;
    Ok(())
}
