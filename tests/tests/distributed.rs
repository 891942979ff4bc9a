//! The coordinator and real `hearth-host` processes over loopback WebSockets,
//! on real MNIST.

use std::process::Command;
use std::time::Duration;

use hearth_e2e::{assert_each_sample_once, binary, run, serve, text, wait_success, worker};

fn summary(dir: &std::path::Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("summary.json")).expect("summary.json"))
        .expect("JSON")
}

/// Waits until the coordinator at `url` credits `name` with `rounds` rounds
/// (read from the dashboard's `/api/status`).
fn wait_for_rounds(url: &str, name: &str, rounds: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while hearth_e2e::rounds_of(url, name) < rounds {
        assert!(
            std::time::Instant::now() < deadline,
            "{name} never completed {rounds} rounds"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn three_hosts_train_one_epoch_using_every_sample_once() {
    let out = tempfile::tempdir().unwrap();
    let result = run(hearth_e2e::in_test_household(&mut Command::new(binary(
        "hearth-coordinator",
    )))
    .args([
        "train",
        "--local-workers",
        "3",
        "--min-workers",
        "3",
        "--epochs",
        "1",
        "--local-steps",
        "2",
        "--quiet",
        "--out",
        out.path().to_str().unwrap(),
    ]));
    assert!(result.status.success(), "{}", text(&result));
    assert_each_sample_once(out.path(), 60_000, 1);
    let s = summary(out.path());
    let acc = s["final_test_accuracy"].as_f64().unwrap();
    assert!(acc >= 0.97, "test accuracy after one epoch: {acc}");
    let workers = s["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 3);
    for w in workers {
        assert!(w["images"].as_u64().unwrap() > 0, "{w}");
        assert!(
            w["bytes_sent_to"].as_u64().unwrap() > 0
                && w["bytes_received_from"].as_u64().unwrap() > 0
        );
    }
    let metrics = std::fs::read_to_string(out.path().join("metrics.jsonl")).unwrap();
    let epoch: serde_json::Value = serde_json::from_str(metrics.lines().next().unwrap()).unwrap();
    // The images are 47 MB raw and 12.0 MB run-length coded; the model
    // goes down in int4 after the first assignment.
    let sent = epoch["bytes_sent"].as_u64().unwrap();
    assert!(
        (12_000_000..47_000_000).contains(&sent),
        "every image, coded: {epoch}"
    );
    assert!(out.path().join("model.safetensors").is_file());
}

#[test]
fn a_host_killed_mid_epoch_loses_no_samples() {
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().to_str().unwrap();
    let (mut coordinator, url) = serve(&[
        "--min-workers",
        "2",
        "--epochs",
        "2",
        "--train-limit",
        "12000",
        "--test-limit",
        "2000",
        "--local-steps",
        "2",
        "--out",
        dir,
    ]);
    let _a = worker(&url, "steady-1");
    let _b = worker(&url, "steady-2");
    let mut doomed = worker(&url, "doomed");
    // Let it take part in some rounds, then pull the plug without a goodbye.
    wait_for_rounds(&url, "doomed", 2);
    let _ = doomed.0.kill();
    assert!(wait_success(&mut coordinator, 180), "coordinator failed");
    assert_each_sample_once(out.path(), 12_000, 2);
    let s = summary(out.path());
    let names: Vec<&str> = s["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"doomed") && names.contains(&"steady-1"),
        "{names:?}"
    );
    assert!(s["final_test_accuracy"].as_f64().unwrap() > 0.9, "{s}");
}

#[test]
fn a_host_started_before_the_coordinator_keeps_retrying_and_joins() {
    // A free port, released for the coordinator that starts later.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("ws://127.0.0.1:{port}/ws");
    let mut early = hearth_e2e::Reaped(
        hearth_e2e::in_test_household(&mut Command::new(binary("hearth-host")))
            .args([
                "work",
                "--coordinator",
                &url,
                "--name",
                "early-bird",
                "--max-backoff",
                "1",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        early.0.try_wait().unwrap().is_none(),
        "the host gave up instead of retrying"
    );
    let out = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{port}");
    let mut coordinator = hearth_e2e::Reaped(
        hearth_e2e::in_test_household(&mut Command::new(binary("hearth-coordinator")))
            .args([
                "serve",
                "--quiet",
                "--listen",
                &listen,
                "--epochs",
                "1",
                "--train-limit",
                "3000",
            ])
            .args(["--test-limit", "500", "--out", out.path().to_str().unwrap()])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    assert!(wait_success(&mut coordinator, 120), "coordinator failed");
    assert_each_sample_once(out.path(), 3_000, 1);
    // After the goodbye the host exits by itself, successfully.
    assert!(
        wait_success(&mut early, 20),
        "the host did not stop after the goodbye"
    );
}

/// A host frozen with SIGSTOP keeps its connection open but never answers.
/// Its batches go back to the queue at its own deadline (a few times its
/// measured round time), it gets no new ones, and the run finishes long
/// before the 10-minute round timeout set here.
#[test]
fn a_frozen_host_costs_seconds_not_the_round_timeout() {
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().to_str().unwrap();
    let n = 30_000u64;
    let (mut coordinator, url) = serve(&[
        "--min-workers",
        "2",
        "--epochs",
        "1",
        "--train-limit",
        &n.to_string(),
        "--test-limit",
        "500",
        "--local-steps",
        "2",
        "--round-timeout",
        "600",
        "--out",
        dir,
    ]);
    let _steady = worker(&url, "steady");
    let frozen = worker(&url, "frozen");
    // Let a few rounds measure both workers' speed, then freeze one.
    wait_for_rounds(&url, "frozen", 3);
    // (The dashboard API hands out rounds incrementally.)
    let rounds = |since: u64| -> Vec<u64> {
        let body = hearth_e2e::http_get(&url, &format!("/api/status?since={since}")).unwrap();
        let status: serde_json::Value = serde_json::from_str(&body).unwrap();
        status["rounds"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["round"].as_u64().unwrap())
            .collect()
    };
    let all = rounds(0);
    assert!(
        all.len() >= 3 && all.windows(2).all(|w| w[0] < w[1]),
        "{all:?}"
    );
    assert!(rounds(all[1]).iter().all(|&r| r > all[1]));
    let pid = frozen.0.id().to_string();
    let stopped = Command::new("kill").args(["-STOP", &pid]).status();
    assert!(
        stopped.is_ok_and(|s| s.success()),
        "could not SIGSTOP the host"
    );
    assert!(
        wait_success(&mut coordinator, 240),
        "the run did not finish: a frozen worker held up the rounds"
    );
    let _ = Command::new("kill").args(["-CONT", &pid]).status();
    assert_each_sample_once(out.path(), n, 1);
    let s = summary(out.path());
    let frozen_report = s["workers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == "frozen")
        .cloned()
        .unwrap();
    assert!(
        frozen_report["images"].as_u64().unwrap() < n / 2,
        "the frozen host got no work after it froze: {frozen_report}"
    );
}
