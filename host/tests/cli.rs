//! The `hearth-host` command line (this file also makes `cargo test` build the
//! binary that the workspace's end-to-end tests start).

use std::process::Command;

fn host() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hearth-host"))
}

#[test]
fn help_lists_the_subcommands() {
    let out = host().arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for sub in ["work", "train-local", "bench", "evaluate", "describe"] {
        assert!(text.contains(sub), "{sub} missing from:\n{text}");
    }
}

#[test]
fn bad_options_are_refused_with_a_reason() {
    let out = host()
        .args(["train-local", "--lr-schedule", "linear"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown schedule \"linear\""));
    let out = host()
        .args([
            "evaluate",
            "--model",
            "/nonexistent/model.safetensors",
            "--arch",
            "lenet5",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/model.safetensors"));
}

#[test]
fn describe_reports_the_component_layout() {
    let out = host()
        .args(["describe", "--arch", "lenet-mxnet"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("total parameters: 431080") && text.contains("component sha256:"),
        "{text}"
    );
}
