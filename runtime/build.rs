//! Builds the training component as part of the normal cargo build.
//!
//! `worker-wasm` is compiled for `wasm32-unknown-unknown` with `simd128` (its
//! own target dir inside OUT_DIR, so the host build's flags never leak in and
//! the wasm build never invalidates the host's), then turned into a component
//! with the `wit-component` library: no `wasm-tools` install, no imports.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

/// Environment of the outer cargo that must not reach the wasm build.
const OUTER_ENV: &[&str] = &[
    "RUSTFLAGS",
    "CARGO_ENCODED_RUSTFLAGS",
    "CARGO_BUILD_RUSTFLAGS",
    "CARGO_TARGET_DIR",
    "CARGO_BUILD_TARGET",
    "RUSTC_WORKSPACE_WRAPPER",
    "CARGO_PRIMARY_PACKAGE",
    "CARGO_LLVM_COV",
    "LLVM_PROFILE_FILE",
];

fn main() -> anyhow::Result<()> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let root = manifest_dir
        .parent()
        .context("runtime/ has no parent")?
        .to_path_buf();
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    for watched in [
        "worker-wasm/src",
        "worker-wasm/Cargo.toml",
        "wit",
        "Cargo.lock",
        "Cargo.toml",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }

    let target_dir = out_dir.join("wasm-target");
    let module_path = build_module(&root, &target_dir)?;
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

/// Makes sure the standard library for wasm32-unknown-unknown is installed.
///
/// `rust-toolchain.toml` lists the target, but rustup only honours that when
/// it installs the toolchain; on a machine that already had 1.95 it is
/// missing, so add it here (rustup is how this workspace pins its toolchain).
fn ensure_wasm_target() -> anyhow::Result<()> {
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let out = Command::new(&rustc)
        .args([
            "--print",
            "target-libdir",
            "--target",
            "wasm32-unknown-unknown",
        ])
        .output();
    let installed = out.ok().filter(|o| o.status.success()).is_some_and(|o| {
        let dir = String::from_utf8_lossy(&o.stdout).trim().to_string();
        Path::new(&dir).join("libcore.rlib").exists()
            || fs::read_dir(&dir).is_ok_and(|d| {
                d.flatten()
                    .any(|e| e.file_name().to_string_lossy().starts_with("libcore-"))
            })
    });
    if installed {
        return Ok(());
    }
    println!(
        "cargo:warning=installing the wasm32-unknown-unknown target with rustup (listed in rust-toolchain.toml)"
    );
    let status = Command::new("rustup")
        .args(["target", "add", "wasm32-unknown-unknown"])
        .stdout(Stdio::from(std::io::stderr()))
        .status()
        .context("running rustup (needed to add the wasm32-unknown-unknown target)")?;
    if !status.success() {
        bail!("rustup target add wasm32-unknown-unknown failed ({status})");
    }
    Ok(())
}

fn build_module(root: &Path, target_dir: &Path) -> anyhow::Result<PathBuf> {
    ensure_wasm_target()?;
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root)
        .args([
            "build",
            "--package",
            "hearth-worker",
            "--features",
            "component",
        ])
        .args(["--target", "wasm32-unknown-unknown", "--profile", "wasm"])
        .arg("--target-dir")
        .arg(target_dir)
        // cargo's own progress goes to stderr; keep stdout free for directives.
        .stdout(Stdio::from(std::io::stderr()));
    for var in OUTER_ENV {
        cmd.env_remove(var);
    }
    cmd.env("CARGO_ENCODED_RUSTFLAGS", "-Ctarget-feature=+simd128");
    if env::var_os("CARGO_NET_OFFLINE").is_some() {
        cmd.arg("--offline");
    }
    let status = cmd
        .status()
        .context("running cargo for the wasm component")?;
    if !status.success() {
        bail!(
            "building worker-wasm for wasm32-unknown-unknown failed ({status}); \
             if the target is missing: rustup target add wasm32-unknown-unknown"
        );
    }
    Ok(target_dir.join("wasm32-unknown-unknown/wasm/hearth_worker.wasm"))
}
