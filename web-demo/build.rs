//! Builds the browser module as part of the normal cargo build.
//!
//! `browser/` (`hearth-browser`) is compiled for `wasm32-unknown-unknown`
//! (by `hearth-build`, in its own target dir), then the
//! `wasm-bindgen-cli-support` library writes the JS glue (`--target web`)
//! next to the processed module in `OUT_DIR/pkg`. No wasm-bindgen-cli
//! install, no manual step.

use anyhow::Context;

fn main() -> anyhow::Result<()> {
    let hearth_build::BuildPaths {
        manifest_dir,
        root,
        out_dir,
    } = hearth_build::paths()?;
    println!(
        "cargo:rerun-if-changed={}",
        manifest_dir.join("static").display()
    );
    let module =
        hearth_build::build_wasm(&root, &out_dir.join("wasm-target"), "hearth-browser", "")?;
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
