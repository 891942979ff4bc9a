//! Component signing from the command line: `keygen` and `sign` on the
//! coordinator, `verify` on a device; every refusal names its reason.

use std::path::Path;
use std::process::Command;

use hearth_e2e::{binary, run, text};

fn coordinator(args: &[&str], home: &Path) -> std::process::Output {
    run(Command::new(binary("hearth-coordinator"))
        .args(args)
        .arg("--home")
        .arg(home))
}

fn verify(file: &Path, key: &str) -> std::process::Output {
    run(Command::new(binary("hearth-host"))
        .arg("verify")
        .arg(file)
        .args(["--trust", key]))
}

fn public_key(keygen: &std::process::Output) -> String {
    String::from_utf8_lossy(&keygen.stdout)
        .split_whitespace()
        .last()
        .expect("a public key")
        .to_string()
}

#[test]
fn a_signed_component_verifies_and_tampered_unsigned_or_foreign_ones_are_refused() {
    let (home, other_home, dir) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let keygen = coordinator(&["keygen"], home.path());
    assert!(keygen.status.success(), "{}", text(&keygen));
    let key = public_key(&keygen);
    assert_eq!(key.len(), 64, "{key}");
    let again = coordinator(&["keygen"], home.path());
    assert!(!again.status.success(), "a household keeps its key");

    let file = dir.path().join("trainer.wasm");
    std::fs::write(&file, hearth_runtime::BUILTIN_COMPONENT).unwrap();
    let file_arg = file.to_str().unwrap();
    let sign = coordinator(&["sign", file_arg, "--version", "0.1.0"], home.path());
    assert!(sign.status.success(), "{}", text(&sign));
    let ok = verify(&file, &key);
    assert!(ok.status.success(), "{}", text(&ok));
    assert!(String::from_utf8_lossy(&ok.stdout).contains("ok: hearth-trainer 0.1.0"));

    // The coordinator and its local hosts run the signed file.
    let out = tempfile::tempdir().unwrap();
    let train = run(
        hearth_e2e::in_test_household(&mut Command::new(binary("hearth-coordinator")))
            .args(["train", "--quiet", "--local-workers", "2", "--epochs", "1"])
            .args([
                "--train-limit",
                "2000",
                "--test-limit",
                "500",
                "--component",
                file_arg,
            ])
            .arg("--home")
            .arg(home.path())
            .arg("--out")
            .arg(out.path()),
    );
    assert!(train.status.success(), "{}", text(&train));
    assert!(String::from_utf8_lossy(&train.stdout).contains("running hearth-trainer 0.1.0"));

    let refused = |out: &std::process::Output, reason: &str| {
        assert!(!out.status.success(), "{}", text(out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(reason),
            "expected {reason:?}: {}",
            text(out)
        );
    };
    // Signed by a key this device does not trust.
    let other = coordinator(&["keygen"], other_home.path());
    refused(&verify(&file, &public_key(&other)), "does not trust");
    // One byte flipped.
    let mut bytes = hearth_runtime::BUILTIN_COMPONENT.to_vec();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 1;
    std::fs::write(&file, &bytes).unwrap();
    refused(&verify(&file, &key), "tampered");
    // A device and a coordinator told to run it refuse to, and say why.
    let host = run(
        hearth_e2e::in_test_household(&mut Command::new(binary("hearth-host")))
            .args([
                "work",
                "--coordinator",
                "ws://127.0.0.1:9/ws",
                "--component",
                file_arg,
            ])
            .args(["--trust", &key]),
    );
    refused(&host, "tampered");
    let serve = coordinator(
        &["train", "--local-workers", "1", "--component", file_arg],
        home.path(),
    );
    refused(&serve, "tampered");
    // No signature at all.
    std::fs::remove_file(dir.path().join("trainer.wasm.sig")).unwrap();
    refused(&verify(&file, &key), "unsigned");
    // Not a component of our world: the household does not sign it.
    let junk = dir.path().join("junk.wasm");
    std::fs::write(&junk, b"\0asm\x01\0\0\0").unwrap();
    let sign = coordinator(
        &["sign", junk.to_str().unwrap(), "--version", "1"],
        home.path(),
    );
    assert!(!sign.status.success(), "{}", text(&sign));
}
