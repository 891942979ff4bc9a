//! The Raspberry Pi build under qemu (needs the aarch64 cross build and
//! qemu-user; `scripts/test.sh` makes both and sets `HEARTH_AARCH64_HOST`
//! and `HEARTH_QEMU`; without them the test is skipped, and says so, unless
//! `HEARTH_AARCH64_TESTS=1` makes that a failure).

use std::process::{Command, Stdio};

use hearth_e2e::{Reaped, assert_each_sample_once, binary, in_test_household, run, serve, text};

/// The aarch64 `hearth-host` as a command under qemu, if there is one.
fn aarch64_host() -> Option<Command> {
    let (Some(host), Some(qemu)) = (
        std::env::var_os("HEARTH_AARCH64_HOST"),
        std::env::var("HEARTH_QEMU").ok(),
    ) else {
        assert!(
            std::env::var_os("HEARTH_AARCH64_TESTS").is_none(),
            "HEARTH_AARCH64_TESTS is set but HEARTH_AARCH64_HOST or HEARTH_QEMU is not"
        );
        eprintln!("skipped: no aarch64 build (run scripts/test.sh, which makes one under qemu)");
        return None;
    };
    let mut words = qemu.split_whitespace();
    let mut cmd = Command::new(words.next().expect("HEARTH_QEMU names a program"));
    cmd.args(words).arg(host);
    Some(cmd)
}

#[test]
fn an_aarch64_host_under_qemu_computes_the_same_bits_and_trains_for_a_native_coordinator() {
    let Some(mut selftest) = aarch64_host() else {
        return;
    };
    let data = hearth_e2e::bundled_mnist();
    let arm = run(selftest.arg("selftest").arg("--data").arg(&data));
    assert!(arm.status.success(), "{}", text(&arm));
    let x86 = run(Command::new(binary("hearth-host"))
        .arg("selftest")
        .arg("--data")
        .arg(&data));
    assert!(x86.status.success(), "{}", text(&x86));
    let (arm, x86) = (
        String::from_utf8_lossy(&arm.stdout).to_string(),
        String::from_utf8_lossy(&x86.stdout).to_string(),
    );
    assert!(arm.contains("params sha256"), "{arm}");
    assert_eq!(
        arm, x86,
        "the component's training steps differ between aarch64 and x86-64"
    );

    let out = tempfile::tempdir().unwrap();
    let (mut coordinator, url) = serve(&[
        "--min-workers",
        "1",
        "--epochs",
        "1",
        "--train-limit",
        "640",
        "--test-limit",
        "200",
        "--local-steps",
        "1",
        "--out",
        out.path().to_str().unwrap(),
    ]);
    let mut cmd = aarch64_host().expect("checked above");
    let _pi = Reaped(
        in_test_household(&mut cmd)
            .args(["work", "--coordinator", &url, "--name", "pi-qemu"])
            .stdout(Stdio::null())
            .spawn()
            .expect("start the aarch64 host under qemu"),
    );
    assert!(
        hearth_e2e::wait_success(&mut coordinator, 600),
        "the coordinator failed"
    );
    assert_each_sample_once(out.path(), 640, 1);
    let ledger = std::fs::read_to_string(out.path().join("ledger.jsonl")).unwrap();
    assert!(
        ledger.lines().all(|l| l.contains("\"worker\":\"pi-qemu\"")),
        "every batch was trained by the aarch64 host"
    );
}
