//! The `hearth-coordinator` command line (this file also makes `cargo test`
//! build the binary that the workspace's end-to-end tests start).

use std::process::Command;

fn coordinator() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hearth-coordinator"))
}

#[test]
fn help_lists_the_subcommands() {
    let out = coordinator().arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for sub in ["train", "serve", "bench", "bench-browser"] {
        assert!(text.contains(sub), "{sub} missing from:\n{text}");
    }
}

#[test]
fn a_missing_or_wrong_config_file_is_named() {
    let out = coordinator()
        .args(["train", "--config", "/nonexistent/hearth.toml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/hearth.toml"));
    let dir = std::env::temp_dir().join(format!("hearth-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "epoch = 2\n").unwrap();
    let out = coordinator()
        .args(["train", "--local-workers", "0", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown field `epoch`"));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn the_lan_is_refused_with_the_development_secret_and_pairing_lists_and_revokes() {
    let home = tempfile::tempdir().unwrap();
    let out = coordinator()
        .args(["serve", "--listen", "0.0.0.0:0", "--home"])
        .arg(home.path())
        .env_remove("HEARTH_SECRET")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("development secret"), "{err}");

    let pair = coordinator()
        .args(["pair", "--no-qr", "--name", "kitchen-pi", "--home"])
        .arg(home.path())
        .env_remove("HEARTH_SECRET")
        .output()
        .unwrap();
    assert!(pair.status.success());
    let text = String::from_utf8_lossy(&pair.stdout);
    assert!(
        text.contains("hearth-host work --pair 'hearth://127.0.0.1:7070/?device=kitchen-pi&key="),
        "{text}"
    );
    assert!(
        home.path().join("secret").is_file(),
        "the first pairing makes a household secret"
    );
    let list = |home: &std::path::Path| {
        let out = coordinator()
            .arg("devices")
            .arg("--home")
            .arg(home)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    assert!(list(home.path()).contains("kitchen-pi") && list(home.path()).contains("active"));
    let revoke = coordinator()
        .args(["revoke", "kitchen-pi", "--home"])
        .arg(home.path())
        .output()
        .unwrap();
    assert!(revoke.status.success());
    assert!(list(home.path()).contains("revoked"));
}

#[test]
fn export_writes_a_checkpoint_as_onnx_and_names_a_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let model = hearth_worker::Model::new(&hearth_worker::ModelConfig {
        arch: "lenet5".into(),
        seed: 5,
        optimizer: Default::default(),
    })
    .unwrap();
    let checkpoint = dir.path().join("model.safetensors");
    hearth_runtime::checkpoint::save(
        &checkpoint,
        &model.describe(),
        model.params(),
        Default::default(),
    )
    .unwrap();
    let onnx = dir.path().join("lenet5.onnx");
    let out = coordinator()
        .args(["export", "--model"])
        .arg(&checkpoint)
        .arg("--onnx")
        .arg(&onnx)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let expected = hearth_onnx::export(&model.describe(), model.params()).unwrap();
    assert_eq!(std::fs::read(&onnx).unwrap(), expected);
    // A truncated checkpoint is an error that names the file.
    let bytes = std::fs::read(&checkpoint).unwrap();
    std::fs::write(&checkpoint, &bytes[..bytes.len() / 2]).unwrap();
    let out = coordinator()
        .args(["export", "--model"])
        .arg(&checkpoint)
        .arg("--onnx")
        .arg(dir.path().join("bad.onnx"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("model.safetensors"));
}
