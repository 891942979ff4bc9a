//! What anything on the LAN can do before it has a key: fuzzed frames, a
//! flood of idle and slow connections, a replayed join, wrong or missing
//! credentials. A real coordinator and a real honest host; the run must
//! finish with every sample once, and nothing of the data may leak.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use hearth_e2e::raw::{Socket, connect, dev_key, join_as, next};
use hearth_e2e::{assert_each_sample_once, http_request, serve, wait_success, worker};
use hearth_protocol::fuzz::{Rng, mutate, seeds};
use hearth_protocol::{self as proto, Message};
use tungstenite::Message as Ws;

fn digest() -> String {
    hearth_runtime::digest(hearth_runtime::BUILTIN_COMPONENT)
}

fn address(url: &str) -> SocketAddr {
    url.trim_start_matches("ws://")
        .trim_end_matches("/ws")
        .parse()
        .expect("a socket address")
}

/// Reads whatever the coordinator sent, without waiting, and keeps a valid
/// result for every assignment as a seed; false once the socket is closed.
fn poll(s: &mut Socket, pool: &mut Vec<Vec<u8>>) -> bool {
    loop {
        match s.read() {
            Ok(Ws::Binary(b)) => {
                if let Ok(Message::Assign(a)) = proto::decode(&b)
                    && pool.len() < 64
                {
                    let r = hearth_e2e::raw::result_for(&a, vec![1e-3; a.params.len()], 1.0, 1);
                    pool.push(proto::encode(&r));
                }
            }
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return true;
            }
            Err(_) => return false,
        }
    }
}

#[test]
fn fuzzed_frames_before_and_after_admission_never_stop_honest_training() {
    let out = tempfile::tempdir().unwrap();
    let (mut coordinator, url) = serve(&[
        "--min-workers",
        "2",
        // Long enough that the fuzzing ends well before the run does, even
        // on a loaded 2-core machine (about 5 s of training here).
        "--epochs",
        "6",
        "--train-limit",
        "12000",
        "--test-limit",
        "2000",
        "--local-steps",
        "1",
        // The fuzzer sends as fast as it can: the rate limit is not under test here.
        "--max-message-rate",
        "100000",
        "--out",
        out.path().to_str().unwrap(),
    ]);
    let digest = digest();
    let mut rng = Rng::new(11);
    let mut pool = seeds();

    // Before admission: 2,000 connections, each opening with a mutant.
    let mut refused = 0;
    for _ in 0..2_000 {
        let mut s = connect(&url);
        s.send(Ws::Binary(mutate(&mut rng, &pool).into())).unwrap();
        match next(&mut s) {
            Some(Message::Reject(_)) | None => refused += 1,
            Some(Message::Challenge(_)) => {
                // A mutant that is a well-formed hello: it gets a challenge it cannot answer.
                s.send(Ws::Binary(mutate(&mut rng, &pool).into())).unwrap();
                assert!(matches!(next(&mut s), Some(Message::Reject(_)) | None));
                refused += 1;
            }
            Some(other) => panic!("an unadmitted connection was sent {other:?}"),
        }
    }
    assert_eq!(refused, 2_000);

    // After admission: 10,000 mutants of real results and of every kind,
    // while the honest host trains.
    let _honest = worker(&url, "honest");
    let mut sent = 0;
    let mut joins = 0;
    while sent < 10_000 {
        let mut s = connect(&url);
        match join_as(&mut s, "fuzzer", &dev_key("fuzzer"), &digest) {
            Some(Message::Welcome(_)) => joins += 1,
            // The run is over (the assertion below says if that was too soon).
            Some(Message::Goodbye(_)) | None => break,
            other => panic!("the fuzzer was not admitted: {other:?}"),
        }
        if let tungstenite::stream::MaybeTlsStream::Plain(tcp) = s.get_mut() {
            tcp.set_read_timeout(Some(Duration::from_millis(2)))
                .unwrap();
        }
        while sent < 10_000 && poll(&mut s, &mut pool) {
            for _ in 0..20 {
                if s.send(Ws::Binary(mutate(&mut rng, &pool).into())).is_err() {
                    break;
                }
                sent += 1;
            }
        }
    }
    eprintln!(
        "fuzzed: 2000 connections before admission, {sent} frames after it over {joins} joins"
    );
    assert!(
        sent >= 10_000,
        "only {sent} frames were sent before the run ended"
    );
    assert!(wait_success(&mut coordinator, 240), "coordinator failed");
    assert_each_sample_once(out.path(), 12_000, 6);
    let s: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("summary.json")).unwrap()).unwrap();
    let acc = s["final_test_accuracy"].as_f64().unwrap_or(0.0);
    assert!(acc > 0.9, "accuracy {acc} after the fuzzing");
}

/// A TCP connection to `to` from source address `from` (another loopback address).
fn connect_from(from: &str, to: SocketAddr) -> std::io::Result<TcpStream> {
    use socket2::{Domain, Socket as Raw, Type};
    let s = Raw::new(Domain::IPV4, Type::STREAM, None)?;
    let from: SocketAddr = format!("{from}:0").parse().expect("an address");
    s.bind(&from.into())?;
    s.connect_timeout(&to.into(), Duration::from_secs(2))?;
    Ok(s.into())
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn two_thousand_idle_and_slow_connections_from_one_address_stop_neither_training_nor_the_dashboard()
{
    let _ = rlimit::increase_nofile_limit(8192);
    let out = tempfile::tempdir().unwrap();
    let (mut coordinator, url) = serve(&[
        "--min-workers",
        "1",
        "--epochs",
        "2",
        "--train-limit",
        "12000",
        "--test-limit",
        "2000",
        "--local-steps",
        "1",
        "--header-timeout",
        "2",
        "--out",
        out.path().to_str().unwrap(),
    ]);
    let pid = coordinator.0.id();
    let addr = address(&url);
    let baseline = open_fds(pid);
    // 2,000 connections from 127.0.0.2: every other one starts an HTTP
    // header and never finishes it, the rest send nothing at all.
    let mut flood = Vec::new();
    for i in 0..2_000 {
        if let Ok(mut s) = connect_from("127.0.0.2", addr) {
            if i % 2 == 0 {
                let _ = s.write_all(b"GET /api/status HTTP/1.1\r\nHost: x\r\n");
            }
            flood.push(s);
        }
    }
    assert!(
        flood.len() >= 1_900,
        "only {} connections were made",
        flood.len()
    );
    let during = open_fds(pid);
    // The honest host and the dashboard, from 127.0.0.1, while the flood holds.
    let _honest = worker(&url, "honest");
    let start = Instant::now();
    let (status, body) = http_request(&url, "/api/status", Some(&hearth_e2e::api_credential()))
        .expect("the dashboard answers");
    assert_eq!(status, 200, "{body}");
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "the dashboard took {:?}",
        start.elapsed()
    );
    assert!(
        during <= baseline + 64 + 8,
        "the coordinator holds {during} descriptors ({baseline} before the flood)"
    );
    // Slow and idle connections alike are cut off at the header timeout.
    std::thread::sleep(Duration::from_secs(4));
    let mut cut = 0;
    for s in flood.iter_mut() {
        s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        let mut buf = [0u8; 256];
        // End of stream, hyper's timeout answer or a reset: closed. Only a
        // read that times out means the connection is still held open.
        match s.read(&mut buf) {
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            _ => cut += 1,
        }
    }
    assert_eq!(
        cut,
        flood.len(),
        "connections still open after the header timeout"
    );
    assert!(wait_success(&mut coordinator, 240), "coordinator failed");
    assert_each_sample_once(out.path(), 12_000, 2);
    drop(flood);
}

#[test]
fn a_replayed_join_a_wrong_key_a_revoked_device_and_no_credential_get_no_data() {
    let home = tempfile::tempdir().unwrap();
    let revoke = hearth_e2e::run(
        std::process::Command::new(hearth_e2e::binary("hearth-coordinator"))
            .args(["revoke", "stolen-pi", "--home"])
            .arg(home.path()),
    );
    assert!(revoke.status.success(), "{}", hearth_e2e::text(&revoke));
    let out = tempfile::tempdir().unwrap();
    let (_coordinator, url) = hearth_e2e::serve_lingering(&[
        "--home",
        home.path().to_str().unwrap(),
        "--min-workers",
        "1",
        "--epochs",
        "1",
        "--train-limit",
        "3000",
        "--test-limit",
        "500",
        "--header-timeout",
        "2",
        "--out",
        out.path().to_str().unwrap(),
    ]);
    let digest = digest();
    let _honest = worker(&url, "honest");

    // A real join by "kitchen", recorded as an eavesdropper would see it.
    let key = dev_key("kitchen");
    let mut s = connect(&url);
    let hello = proto::encode(&hearth_e2e::raw::hello_as("kitchen", &digest));
    s.send(Ws::Binary(hello.clone().into())).unwrap();
    let Some(Message::Challenge(c)) = next(&mut s) else {
        panic!("no challenge")
    };
    let proof = proto::encode(&Message::Proof(proto::Proof {
        mac: key.worker_proof(&c.nonce, &hello),
    }));
    s.send(Ws::Binary(proof.clone().into())).unwrap();
    assert!(matches!(next(&mut s), Some(Message::Welcome(_))));
    drop(s);

    /// Everything a connection receives until it is closed.
    fn received(s: &mut Socket) -> Vec<Message> {
        std::iter::from_fn(|| next(s)).collect()
    }
    let no_data = |got: &[Message], who: &str| {
        assert!(
            got.iter()
                .all(|m| !matches!(m, Message::Assign(_) | Message::Welcome(_))),
            "{who} received {got:?}"
        );
        assert!(
            got.iter().any(|m| matches!(m, Message::Reject(_))) || got.is_empty(),
            "{who}: {got:?}"
        );
    };
    // The replay: same hello, same proof, a new connection (a new challenge).
    let mut s = connect(&url);
    s.send(Ws::Binary(hello.into())).unwrap();
    assert!(matches!(next(&mut s), Some(Message::Challenge(_))));
    s.send(Ws::Binary(proof.into())).unwrap();
    let got = received(&mut s);
    assert!(
        matches!(got.first(), Some(Message::Reject(r)) if r.reason.contains("wrong key")),
        "{got:?}"
    );
    no_data(&got, "the replay");
    // A wrong secret.
    let mut s = connect(&url);
    let wrong = hearth_protocol::auth::DeviceKey::derive("guess", "kitchen");
    let got: Vec<_> = join_as(&mut s, "kitchen", &wrong, &digest)
        .into_iter()
        .chain(received(&mut s))
        .collect();
    no_data(&got, "a wrong key");
    // A revoked device, with the right key.
    let mut s = connect(&url);
    let got: Vec<_> = join_as(&mut s, "stolen-pi", &dev_key("stolen-pi"), &digest)
        .into_iter()
        .chain(received(&mut s))
        .collect();
    assert!(
        matches!(got.first(), Some(Message::Reject(r)) if r.reason.contains("revoked")),
        "{got:?}"
    );
    no_data(&got, "a revoked device");
    // No proof at all: the challenge, then the join timeout closes it.
    let mut s = connect(&url);
    s.send(Ws::Binary(
        proto::encode(&hearth_e2e::raw::hello_as("lurker", &digest)).into(),
    ))
    .unwrap();
    let start = Instant::now();
    let got = received(&mut s);
    assert!(matches!(got.as_slice(), [Message::Challenge(_)]), "{got:?}");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "open for {:?}",
        start.elapsed()
    );

    // HTTP: the data and the model need a credential; health does not.
    for path in ["/api/samples?start=0&count=64", "/api/model", "/api/status"] {
        for credential in [
            None,
            Some("kitchen.00000000000000000000000000000000"),
            Some("garbage"),
        ] {
            let (status, body) = http_request(&url, path, credential).unwrap();
            assert_eq!(status, 401, "{path} with {credential:?}");
            assert!(
                body.len() < 300,
                "{path}: {} bytes without a credential",
                body.len()
            );
        }
    }
    let revoked = dev_key("stolen-pi").http_token("stolen-pi");
    assert_eq!(
        http_request(&url, "/api/model", Some(&revoked)).unwrap().0,
        401
    );
    let (status, body) = http_request(
        &url,
        "/api/samples?start=0&count=4",
        Some(&hearth_e2e::api_credential()),
    )
    .unwrap();
    assert_eq!(status, 200);
    assert!(!body.is_empty());
    assert_eq!(
        http_request(&url, "/api/health", None).unwrap(),
        (200, "ok".to_string())
    );
}

#[test]
fn a_device_revoked_while_connected_is_sent_away() {
    let home = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    // Two workers needed: the one device waits, connected, for a second.
    let (_coordinator, url) = serve(&[
        "--home",
        home.path().to_str().unwrap(),
        "--min-workers",
        "2",
        "--out",
        out.path().to_str().unwrap(),
    ]);
    let mut s = connect(&url);
    let welcome = join_as(&mut s, "den-pi", &dev_key("den-pi"), &digest());
    assert!(matches!(welcome, Some(Message::Welcome(_))), "{welcome:?}");
    let revoke = hearth_e2e::run(
        std::process::Command::new(hearth_e2e::binary("hearth-coordinator"))
            .args(["revoke", "den-pi", "--home"])
            .arg(home.path()),
    );
    assert!(revoke.status.success(), "{}", hearth_e2e::text(&revoke));
    let start = Instant::now();
    let bye = next(&mut s);
    assert!(
        matches!(&bye, Some(Message::Goodbye(g)) if g.reason.contains("revoked")),
        "{bye:?}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    let mut again = connect(&url);
    let answer = join_as(&mut again, "den-pi", &dev_key("den-pi"), &digest());
    assert!(matches!(answer, Some(Message::Reject(r)) if r.reason.contains("revoked")));
}
