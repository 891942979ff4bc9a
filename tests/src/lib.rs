//! Helpers for end-to-end tests: find the workspace's built binaries and run them.
//!
//! `cargo test --workspace` builds every binary of the workspace before the
//! tests run; the binaries sit next to this crate's test executables.

pub mod household;
pub mod raw;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Path of a workspace binary built with the same profile as the running test.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is not built: run `cargo test --workspace` (or `cargo build -p {name}`) first",
        path.display()
    );
    path
}

/// The MNIST copy bundled in the repository.
pub fn bundled_mnist() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("data")
        .join("mnist")
}

/// A private copy of the bundled MNIST directory, for tests that damage it.
pub fn bundled_mnist_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    for entry in std::fs::read_dir(bundled_mnist()).expect("bundled MNIST") {
        let path = entry.expect("dir entry").path();
        if let Some(name) = path.file_name() {
            std::fs::copy(&path, dir.path().join(name)).expect("copy MNIST file");
        }
    }
    dir
}

/// Runs `cmd`, returning its output; panics with both streams if it could not start.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"))
}

/// Standard output and error of `out` as text, for assertion messages.
pub fn text(out: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Reads `dir/ledger.jsonl` and returns, per epoch, every sample index trained on
/// (with repetitions, if any) and the batches seen.
pub fn ledger_samples(dir: &Path) -> std::collections::BTreeMap<u64, (Vec<u64>, Vec<u64>)> {
    let text = std::fs::read_to_string(dir.join("ledger.jsonl")).expect("ledger.jsonl");
    let mut epochs: std::collections::BTreeMap<u64, (Vec<u64>, Vec<u64>)> = Default::default();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("ledger line is JSON");
        let e = epochs
            .entry(v["epoch"].as_u64().expect("epoch"))
            .or_default();
        e.1.push(v["batch"].as_u64().expect("batch"));
        e.0.extend(
            v["samples"]
                .as_array()
                .expect("samples")
                .iter()
                .map(|s| s.as_u64().expect("index")),
        );
    }
    epochs
}

/// Asserts that every epoch of the ledger used each of `n` samples exactly once.
pub fn assert_each_sample_once(dir: &Path, n: u64, epochs: u64) {
    let ledger = ledger_samples(dir);
    assert_eq!(ledger.len() as u64, epochs, "epochs in the ledger");
    for (epoch, (mut samples, mut batches)) in ledger {
        samples.sort_unstable();
        assert_eq!(
            samples,
            (0..n).collect::<Vec<_>>(),
            "epoch {epoch}: samples not used exactly once"
        );
        let count = batches.len();
        batches.dedup();
        assert_eq!(
            batches.len(),
            count,
            "epoch {epoch}: a batch was completed twice"
        );
    }
}

/// Batches a run's `metrics.jsonl` reports as given back to the queue
/// (because their worker left or failed mid-round), summed over epochs.
pub fn requeued_batches(dir: &Path) -> u64 {
    let metrics = std::fs::read_to_string(dir.join("metrics.jsonl")).expect("metrics.jsonl");
    metrics
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|m| m["requeued_batches"].as_u64())
        .sum()
}

/// A child process that is killed when dropped (tests never leak processes).
pub struct Reaped(pub std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `hearth-coordinator serve --keep-serving` with `args`: it keeps
/// serving the dashboard and the final model after training (until the
/// returned process is dropped).
pub fn serve_lingering(args: &[&str]) -> (Reaped, String) {
    let mut all = vec!["--keep-serving"];
    all.extend_from_slice(args);
    serve(&all)
}

/// Starts `hearth-coordinator serve` with `args` (on a free loopback port
/// unless they say `--listen`; it exits when training is done); returns the
/// process and its WebSocket URL.
pub fn serve(args: &[&str]) -> (Reaped, String) {
    let mut cmd = Command::new(binary("hearth-coordinator"));
    in_test_household(&mut cmd);
    serve_with(cmd, args)
}

/// `cmd` (the coordinator binary, its environment set) run as `serve
/// --quiet` with `args`, on a free loopback port unless they say
/// `--listen`; returns it and the WebSocket URL it prints.
pub fn serve_with(mut cmd: Command, args: &[&str]) -> (Reaped, String) {
    use std::io::BufRead;
    cmd.args(["serve", "--quiet"]);
    if !args.contains(&"--listen") {
        cmd.args(["--listen", "127.0.0.1:0"]);
    }
    let mut child = cmd
        .args(args)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start hearth-coordinator");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = std::io::BufReader::new(stdout).lines();
    let url = lines
        .by_ref()
        .take(10)
        .map_while(Result::ok)
        .find_map(|l| {
            l.split_whitespace()
                .find(|w| w.starts_with("ws://") || w.starts_with("wss://"))
                .map(str::to_string)
        })
        .expect("the coordinator printed its URL");
    // Keep draining stdout so the coordinator never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (Reaped(child), url)
}

/// Starts `hearth-host work` against `url` as `name`.
pub fn worker(url: &str, name: &str) -> Reaped {
    Reaped(
        in_test_household(&mut Command::new(binary("hearth-host")))
            .args(["work", "--coordinator", url, "--name", name])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start hearth-host"),
    )
}

/// Waits up to `secs` for a process to exit; returns whether it succeeded.
pub fn wait_success(p: &mut Reaped, secs: u64) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < deadline {
        if let Ok(Some(status)) = p.0.try_wait() {
            return status.success();
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("process did not finish within {secs} s");
}

/// Waits up to `secs` for a process to exit; returns its status, or `None`
/// if it is still running.
pub fn wait_exit(p: &mut Reaped, secs: u64) -> Option<std::process::ExitStatus> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if let Ok(Some(status)) = p.0.try_wait() {
            return Some(status);
        }
        if std::time::Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// The home directory the tests' coordinators use: one that does not
/// exist, so they run with the development secret whatever the machine's
/// own household is.
pub fn test_home() -> PathBuf {
    std::env::temp_dir().join("hearth-e2e-no-household")
}

/// Points `cmd` at the tests' household (see [`test_home`]), with one
/// training thread per host.
pub fn in_test_household(cmd: &mut Command) -> &mut Command {
    cmd.env("HEARTH_HOME", test_home())
        // Test hosts share the machine: one training thread each, and
        // read no settings file this machine may have.
        .env("HEARTH_THREADS", "1")
        .env("HEARTH_CONFIG", "")
        .env_remove("HEARTH_SECRET")
        .env_remove("HEARTH_KEY")
        .env_remove("HEARTH_PAIR")
}

/// The page at `http` opened with the pairing link of device `name` in
/// the development household.
pub fn paired_page(http: &str, name: &str) -> String {
    format!("{http}#device={name}&key={}", raw::dev_key(name).code())
}

/// The HTTP credential of device `e2e` in the development household.
pub fn api_credential() -> String {
    raw::dev_key("e2e").http_token("e2e")
}

/// Body of `GET http://host:port/path` with the tests' credential.
pub fn http_get(base: &str, path: &str) -> std::io::Result<String> {
    http_request(base, path, Some(&api_credential())).map(|(_, body)| body)
}

/// Status and body of `GET http://host:port/path` (plain HTTP/1.1,
/// `Connection: close`), with `Authorization: Bearer CREDENTIAL` if given.
pub fn http_request(
    base: &str,
    path: &str,
    credential: Option<&str>,
) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let host = base
        .trim_start_matches("http://")
        .trim_start_matches("ws://")
        .split('/')
        .next()
        .unwrap_or_default()
        .to_string();
    let mut s = std::net::TcpStream::connect(&host)?;
    let auth = credential
        .map(|c| format!("Authorization: Bearer {c}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\n{auth}Connection: close\r\n\r\n"
    )?;
    let mut bytes = Vec::new();
    s.read_to_end(&mut bytes)?;
    let text = String::from_utf8_lossy(&bytes);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((
        status,
        text.split_once("\r\n\r\n")
            .map(|(_, body)| body.to_string())
            .unwrap_or_default(),
    ))
}

/// Rounds the coordinator at `url` (its WebSocket URL) credits to `name`, per `/api/status`.
pub fn rounds_of(url: &str, name: &str) -> u64 {
    http_get(url, "/api/status")
        .ok()
        .and_then(|body| serde_json::from_str::<serde_json::Value>(&body).ok())
        .and_then(|s| {
            s["workers"]
                .as_array()?
                .iter()
                .find(|w| w["name"] == name)
                .and_then(|w| w["rounds"].as_u64())
        })
        .unwrap_or(0)
}
