//! A raw WebSocket client that speaks the protocol and misbehaves in every
//! way the coordinator must survive, while a real `hearth-host` trains.

use hearth_e2e::raw::{Socket, connect, dev_key, join_as, next, send};
use hearth_e2e::{assert_each_sample_once, serve, wait_success, worker};
use hearth_protocol::{self as proto, Message};
use tungstenite::Message as Ws;

fn hello(digest: &str) -> Message {
    hearth_e2e::raw::hello_as("mallory", digest)
}

fn assignment(s: &mut Socket) -> proto::Assign {
    loop {
        match next(s) {
            Some(Message::Assign(a)) => return a,
            Some(_) => {}
            None => panic!("connection closed while waiting for an assignment"),
        }
    }
}

fn expect_error(s: &mut Socket, needle: &str) {
    match next(s) {
        Some(Message::Error(e)) => assert!(
            e.reason.contains(needle),
            "{:?} does not mention {needle:?}",
            e.reason
        ),
        other => panic!("expected an error about {needle:?}, got {other:?}"),
    }
}

fn result(a: &proto::Assign, round: u64, kind: proto::UpdateKind, values: Vec<f32>) -> Message {
    Message::Result(proto::RoundResult {
        round,
        params_version: a.params_version,
        samples: a.steps.iter().sum::<u32>(),
        loss_sum: 1.0,
        correct: 0,
        kind,
        values,
        encoding: proto::Encoding::F32,
        compute_seconds: 0.0,
    })
}

#[test]
fn garbage_forgery_and_vanishing_never_corrupt_training() {
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().to_str().unwrap();
    let (mut coordinator, url) = serve(&[
        "--min-workers",
        "2",
        "--epochs",
        "1",
        "--train-limit",
        "6000",
        "--test-limit",
        "2000",
        "--local-steps",
        "1",
        "--round-timeout",
        "60",
        "--out",
        dir,
    ]);
    let digest = hearth_runtime::digest(hearth_runtime::BUILTIN_COMPONENT);

    // Not even a hello: refused.
    let mut s = connect(&url);
    s.send(Ws::Binary(b"\x01\x01garbage".to_vec().into()))
        .unwrap();
    assert!(matches!(next(&mut s), Some(Message::Reject(_))));
    // Wrong secret, or another component: refused with the reason.
    let wrong = hearth_protocol::auth::DeviceKey::derive("guess", "mallory");
    let mut s = connect(&url);
    let answer = join_as(&mut s, "mallory", &wrong, &digest);
    assert!(matches!(answer, Some(Message::Reject(r)) if r.reason.contains("wrong key")));
    let mut s = connect(&url);
    let answer = join_as(&mut s, "mallory", &dev_key("mallory"), &"0".repeat(64));
    assert!(matches!(answer, Some(Message::Reject(r)) if r.reason.contains("component")));
    // A "browser" must run the module the coordinator serves or a component
    // the household accepted (one it swapped to), nothing else.
    let mut s = connect(&url);
    let Message::Hello(mut h) = hello(&"f".repeat(64)) else {
        unreachable!()
    };
    h.capabilities.kind = proto::WorkerKind::Browser;
    send(&mut s, &Message::Hello(h));
    assert!(matches!(next(&mut s), Some(Message::Reject(r)) if r.reason.contains("component")));

    // Admitted, then every kind of bad result.
    let mut m = connect(&url);
    let Some(Message::Welcome(w)) = join_as(&mut m, "mallory", &dev_key("mallory"), &digest) else {
        panic!("not welcomed")
    };
    assert_eq!(w.arch, "lenet5");
    let _real = worker(&url, "honest");
    let n = 61_706;

    let a = assignment(&mut m);
    send(
        &mut m,
        &result(&a, a.round, proto::UpdateKind::Delta, vec![0.0; 10]),
    );
    expect_error(&mut m, "10 values");

    let a = assignment(&mut m);
    let mut poisoned = vec![0.0; n];
    poisoned[123] = f32::NAN;
    send(
        &mut m,
        &result(&a, a.round, proto::UpdateKind::Delta, poisoned),
    );
    expect_error(&mut m, "non-finite");

    let a = assignment(&mut m);
    send(
        &mut m,
        &result(&a, a.round + 1000, proto::UpdateKind::Delta, vec![0.0; n]),
    );
    expect_error(&mut m, "round");
    m.send(Ws::Binary(vec![1, 5, 255, 255, 255, 255, 0].into()))
        .unwrap();
    expect_error(&mut m, "malformed");
    m.send(Ws::Text("{\"hello\": true}".into())).unwrap();
    expect_error(&mut m, "binary");
    // A few kilobytes of deflated int4 that would decode to a million
    // values: refused from the header, before anything is inflated.
    send(
        &mut m,
        &Message::Result(proto::RoundResult {
            round: a.round,
            params_version: a.params_version,
            samples: a.steps.iter().sum::<u32>(),
            loss_sum: 1.0,
            correct: 0,
            kind: proto::UpdateKind::Delta,
            values: vec![0.0; 1 << 20],
            encoding: proto::Encoding::Int4,
            compute_seconds: 0.0,
        }),
    );
    expect_error(&mut m, "at most 61706");
    send(
        &mut m,
        &result(&a, a.round, proto::UpdateKind::Params, vec![1e30; n]),
    );
    expect_error(&mut m, "deltas");

    // Take one more assignment and vanish mid-round.
    let _ = assignment(&mut m);
    drop(m);

    assert!(wait_success(&mut coordinator, 180), "coordinator failed");
    assert_each_sample_once(out.path(), 6_000, 1);
    let s: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("summary.json")).unwrap()).unwrap();
    let mallory = s["workers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == "mallory")
        .expect("mallory in summary");
    assert_eq!(
        mallory["images"], 0,
        "none of mallory's results was aggregated"
    );
    assert!(
        mallory["rejected_results"].as_u64().unwrap() >= 6,
        "{mallory}"
    );
    let acc = s["final_test_accuracy"].as_f64().unwrap();
    assert!(acc > 0.85, "the global model was damaged: {acc}");
}

/// A host whose component calls run past `--call-timeout` is restarted in
/// place by its watchdog: same process (it never exits), a fresh image that
/// says so and backs off, and the coordinator gives the interrupted rounds'
/// batches to the healthy host. Training completes with every sample once.
#[test]
fn a_host_whose_calls_overrun_restarts_in_place_and_no_sample_is_lost() {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().to_str().unwrap();
    let (mut coordinator, url) = serve(&[
        "--min-workers",
        "2",
        "--epochs",
        "1",
        "--train-limit",
        "6144",
        "--test-limit",
        "1000",
        // One step of 512 images takes ~50-100 ms here; creating the model
        // and setting parameters take a few ms: a 30 ms limit catches the
        // training step only.
        "--batch",
        "512",
        "--local-steps",
        "1",
        "--round-timeout",
        "60",
        "--out",
        dir,
    ]);
    let mut overrunner = hearth_e2e::Reaped(
        hearth_e2e::in_test_household(&mut Command::new(hearth_e2e::binary("hearth-host")))
            .args(["work", "--coordinator", &url, "--name", "overrunner"])
            .args(["--call-timeout", "0.03", "--max-backoff", "1"])
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start hearth-host"),
    );
    let stderr = overrunner.0.stderr.take().expect("stderr");
    let log = std::thread::spawn(move || {
        std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<String>>()
    });
    let _honest = worker(&url, "honest");
    assert!(wait_success(&mut coordinator, 240), "coordinator failed");
    // The overrunner was restarted in place (by exec), so it never ended on
    // the overrun: it is still backing off, or it rejoined and was told
    // training is over (a normal exit).
    let ended = hearth_e2e::wait_exit(&mut overrunner, 10);
    let _ = overrunner.0.kill();
    let _ = overrunner.0.wait();
    let log = log.join().expect("log reader");
    let log = log.join("\n");
    if let Some(status) = ended {
        assert!(
            status.success(),
            "the overrunning host ended with {status}: {log}"
        );
    }
    assert!(log.contains("restarting in place"), "{log}");
    assert!(
        log.contains("restarted after a component call overran"),
        "{log}"
    );
    assert_each_sample_once(out.path(), 6144, 1);
    let requeued = hearth_e2e::requeued_batches(out.path());
    assert!(
        requeued >= 1,
        "no batch of an interrupted round was requeued"
    );
}
