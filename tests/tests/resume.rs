//! The coordinator killed mid-epoch (SIGKILL) and started again with
//! `--resume`: the hosts reconnect on their own and the run completes with
//! every sample used exactly once per epoch.

use std::time::{Duration, Instant};

use hearth_e2e::{assert_each_sample_once, rounds_of, serve, wait_success, worker};

/// A loopback address with a port that was free a moment ago.
fn free_address() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("address").to_string()
}

#[test]
fn a_coordinator_killed_mid_epoch_resumes_and_no_sample_is_lost_or_doubled() {
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().to_str().unwrap();
    let listen = free_address();
    let (mut first, url) = serve(&[
        "--listen",
        &listen,
        "--min-workers",
        "2",
        "--epochs",
        "3",
        "--train-limit",
        "30000",
        "--test-limit",
        "2000",
        "--local-steps",
        "2",
        "--checkpoint-every",
        "1",
        "--out",
        dir,
    ]);
    let _hosts = [worker(&url, "host-1"), worker(&url, "host-2")];
    let deadline = Instant::now() + Duration::from_secs(120);
    while rounds_of(&url, "host-1") < 15 || !out.path().join("run-state.bin").is_file() {
        assert!(Instant::now() < deadline, "the run never got going");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Past a checkpoint, mid-epoch: pull the plug.
    std::thread::sleep(Duration::from_millis(1000));
    first.0.kill().expect("kill the coordinator");
    let _ = first.0.wait();
    let (mut second, _) = serve(&["--resume", dir, "--listen", &listen]);
    assert!(
        wait_success(&mut second, 240),
        "the resumed coordinator failed"
    );
    assert_each_sample_once(out.path(), 30_000, 3);
    let s: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("summary.json")).unwrap()).unwrap();
    assert_eq!(s["test_accuracy"].as_array().map(Vec::len), Some(3), "{s}");
    let acc = s["final_test_accuracy"].as_f64().unwrap();
    assert!(acc > 0.9, "test accuracy after the resumed run: {acc}");
}
