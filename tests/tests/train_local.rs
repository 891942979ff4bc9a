//! `hearth-host train-local` as a user runs it, on real MNIST subsets.

use std::process::Command;

use hearth_e2e::{binary, bundled_mnist_copy, run, text};

#[test]
fn trains_on_a_real_mnist_subset_and_writes_results_and_model() {
    let out_dir = tempfile::tempdir().unwrap();
    let out = run(Command::new(binary("hearth-host")).args([
        "train-local",
        "--arch",
        "lenet5",
        "--epochs",
        "2",
        "--train-limit",
        "3000",
        "--test-limit",
        "1000",
        "--quiet",
        "--out",
        out_dir.path().to_str().unwrap(),
    ]));
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("epoch  1/2") && stdout.contains("img/s"),
        "{}",
        text(&out)
    );

    let results: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out_dir.path().join("results.json")).unwrap())
            .unwrap();
    assert_eq!(results["backend"], "wasmtime");
    assert_eq!(results["param_count"], 61_706);
    assert_eq!(results["train_samples"], 3000);
    assert_eq!(results["per_epoch"].as_array().unwrap().len(), 2);
    let acc = results["final_test_accuracy"].as_f64().unwrap();
    // 2 epochs on 3,000 real images: well above chance, short of the full run.
    assert!(acc > 0.85, "test accuracy {acc}");
    assert_eq!(results["component_sha256"].as_str().unwrap().len(), 64);

    let bytes = std::fs::read(out_dir.path().join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let total: usize = st
        .tensors()
        .iter()
        .map(|(_, v)| v.shape().iter().product::<usize>())
        .sum();
    assert_eq!(total, 61_706);
    assert_eq!(st.tensor("c3.weight").unwrap().shape(), &[16, 6, 5, 5]);
}

#[test]
fn truncated_data_fails_with_a_message_naming_the_file() {
    let dir = bundled_mnist_copy();
    // Cut the test labels short (a checksum mismatch is caught first, so drop SHA256SUMS).
    std::fs::remove_file(dir.path().join("SHA256SUMS")).unwrap();
    let labels = dir.path().join("t10k-labels-idx1-ubyte.gz");
    let mut raw = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::GzDecoder::new(std::fs::File::open(&labels).unwrap()),
        &mut raw,
    )
    .unwrap();
    raw.truncate(raw.len() - 10);
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut enc, &raw).unwrap();
    std::fs::write(&labels, enc.finish().unwrap()).unwrap();

    let out = run(Command::new(binary("hearth-host"))
        .args(["train-local", "--epochs", "1", "--quiet", "--data"])
        .arg(dir.path()));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("t10k-labels-idx1-ubyte.gz") && err.contains("promises 10000 bytes"),
        "{}",
        text(&out)
    );
    assert!(!err.contains("panicked"), "{}", text(&out));
}

#[test]
fn tampered_checksums_and_unknown_architectures_are_refused() {
    let dir = bundled_mnist_copy();
    let sums = dir.path().join("SHA256SUMS");
    let text_sums = std::fs::read_to_string(&sums)
        .unwrap()
        .replacen("1a1a", "0000", 1);
    std::fs::write(&sums, text_sums).unwrap();
    let out = run(Command::new(binary("hearth-host"))
        .args(["train-local", "--quiet", "--data"])
        .arg(dir.path()));
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("checksum mismatch"),
        "{}",
        text(&out)
    );

    let out = run(Command::new(binary("hearth-host")).args([
        "train-local",
        "--arch",
        "resnet50",
        "--quiet",
        "--train-limit",
        "64",
    ]));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown architecture \"resnet50\"") && err.contains("lenet-mxnet"),
        "{}",
        text(&out)
    );
}
