//! Compiles a workspace crate (the component's `hearth-worker`, the
//! browser's `hearth-browser`) for `wasm32-unknown-unknown` from a build script.
//!
//! The nested cargo gets its own target dir (inside the caller's OUT_DIR) and
//! none of the outer build's flags, so the wasm build never invalidates the
//! native one, and `simd128` is always on.

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

/// Builds `package` with `features` for wasm32 (profile `wasm`) into
/// `target_dir` and returns the path of the `.wasm` module.
pub fn build_wasm(
    root: &Path,
    target_dir: &Path,
    package: &str,
    features: &str,
) -> anyhow::Result<PathBuf> {
    ensure_wasm_target()?;
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root)
        .args(["build", "--package", package, "--features", features])
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
    let status = cmd.status().context("running cargo for the wasm build")?;
    if !status.success() {
        bail!(
            "building {package} (features {features:?}) for wasm32-unknown-unknown failed ({status}); \
             if the target is missing: rustup target add wasm32-unknown-unknown"
        );
    }
    Ok(target_dir.join(format!(
        "wasm32-unknown-unknown/wasm/{}.wasm",
        package.replace('-', "_")
    )))
}

/// Paths a build script of a workspace member needs.
pub struct BuildPaths {
    /// The calling crate's directory.
    pub manifest_dir: PathBuf,
    /// The workspace root (its parent).
    pub root: PathBuf,
    /// The build script's `OUT_DIR`.
    pub out_dir: PathBuf,
}

/// Reads the paths from cargo's environment and prints `rerun-if-changed`
/// for everything the worker build reads.
pub fn paths() -> anyhow::Result<BuildPaths> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let root = manifest_dir
        .parent()
        .context("a workspace member has no parent directory")?
        .to_path_buf();
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    watch_worker_sources(&root);
    Ok(BuildPaths {
        manifest_dir,
        root,
        out_dir,
    })
}

/// Prints `rerun-if-changed` for everything the worker build reads.
pub fn watch_worker_sources(root: &Path) {
    for watched in [
        "worker-wasm/src",
        "worker-wasm/Cargo.toml",
        "protocol/src",
        "protocol/Cargo.toml",
        "session/src",
        "session/Cargo.toml",
        "browser/src",
        "browser/Cargo.toml",
        "wit",
        "Cargo.lock",
        "Cargo.toml",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }
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
