//! Helpers for end-to-end tests: find the workspace's built binaries and run them.
//!
//! `cargo test --workspace` builds every binary of the workspace before the
//! tests run; the binaries sit next to this crate's test executables.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Path of a workspace binary built with the same profile as the running test.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is not built: run `cargo test --workspace` (or `cargo build -p {name}`) first",
        path.display()
    );
    path
}

/// The MNIST copy bundled in the repository.
pub fn bundled_mnist() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("data")
        .join("mnist")
}

/// Runs `cmd`, returning its output; panics with both streams if it could not start.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"))
}

/// Standard output and error of `out` as text, for assertion messages.
pub fn text(out: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
