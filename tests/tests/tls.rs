//! TLS on the coordinator's port: a paired host pins the household's
//! certificate through its pairing string and trains over wss://; a host
//! pinning another certificate and a plain-HTTP client get nothing.

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hearth_e2e::{
    Reaped, assert_each_sample_once, binary, http_request, run, serve, text, wait_success,
};

fn host(args: &[&str]) -> Reaped {
    Reaped(
        hearth_e2e::in_test_household(&mut Command::new(binary("hearth-host")))
            .arg("work")
            .args(args)
            .args(["--max-backoff", "1"])
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start hearth-host"),
    )
}

#[test]
fn a_paired_host_trains_over_tls_and_nothing_else_gets_in() {
    let home = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let address = format!("127.0.0.1:{port}");
    let pair = run(Command::new(binary("hearth-coordinator"))
        .args([
            "pair",
            "--tls",
            "--no-qr",
            "--name",
            "secure-pi",
            "--address",
            &address,
            "--home",
        ])
        .arg(home.path()));
    assert!(pair.status.success(), "{}", text(&pair));
    let printed = String::from_utf8_lossy(&pair.stdout);
    let link = printed
        .split('\'')
        .find(|s| s.starts_with("hearth://"))
        .unwrap_or_else(|| panic!("no pairing string in {printed}"))
        .to_string();
    assert!(link.contains("&tls="), "{link}");
    assert!(printed.contains("https://"), "{printed}");

    let out = tempfile::tempdir().unwrap();
    let (mut coordinator, url) = serve(&[
        "--tls",
        "--listen",
        &address,
        "--home",
        home.path().to_str().unwrap(),
        "--epochs",
        "1",
        "--train-limit",
        "3000",
        "--test-limit",
        "500",
        "--out",
        out.path().to_str().unwrap(),
    ]);
    assert!(url.starts_with("wss://"), "{url}");

    // Pinning another certificate: the handshake fails, the host says why.
    let mut impostor = host(&[
        "--coordinator",
        &url,
        "--name",
        "other",
        "--tls-fingerprint",
        &"0".repeat(64),
    ]);
    let stderr = impostor.0.stderr.take().expect("stderr");
    let mut lines = std::io::BufReader::new(stderr).lines();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut said = String::new();
    while Instant::now() < deadline && !said.contains("pinned") {
        match lines.next() {
            Some(Ok(l)) => said = l,
            _ => break,
        }
    }
    assert!(
        said.contains("pinned"),
        "the host did not refuse the certificate: {said}"
    );
    drop(impostor);
    // Plain HTTP on the TLS port: no answer at all.
    let plain = http_request(&format!("http://{address}"), "/api/health", None);
    assert!(!matches!(plain, Ok((200, _))), "{plain:?}");

    let _paired = host(&["--pair", &link]);
    assert!(
        wait_success(&mut coordinator, 120),
        "the run over TLS did not finish"
    );
    assert_each_sample_once(out.path(), 3_000, 1);
}
