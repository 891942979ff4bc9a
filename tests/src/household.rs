//! A household of its own for a test: a home directory with a signing key,
//! components signed with it, a coordinator serving from it, pushes to it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::{Reaped, binary, run, text};

/// A test's own household (a temporary home with a signing key).
pub struct TestHousehold {
    /// The home directory.
    pub home: tempfile::TempDir,
    /// The public half of its signing key (hex).
    pub public_key: String,
}

impl TestHousehold {
    /// A new home with a signing key made by `hearth-coordinator keygen`.
    pub fn new() -> Self {
        let home = tempfile::tempdir().expect("temp dir");
        let out = run(Command::new(binary("hearth-coordinator"))
            .args(["keygen", "--home"])
            .arg(home.path()));
        assert!(out.status.success(), "keygen failed: {}", text(&out));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let public_key = stdout
            .lines()
            .find(|l| l.starts_with("public key"))
            .and_then(|l| l.rsplit(' ').next())
            .expect("keygen prints the public key")
            .to_string();
        Self { home, public_key }
    }

    /// A command of the coordinator binary in this household.
    pub fn coordinator(&self) -> Command {
        let mut cmd = Command::new(binary("hearth-coordinator"));
        cmd.env("HEARTH_HOME", self.home.path())
            .env_remove("HEARTH_SECRET")
            .env_remove("HEARTH_KEY")
            .env_remove("HEARTH_PAIR");
        cmd
    }

    /// Writes `bytes` to `dir/name` and signs it as `version` with `sign`.
    pub fn signed(&self, dir: &Path, name: &str, bytes: &[u8], version: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, bytes).expect("write component");
        let out = run(self
            .coordinator()
            .args(["sign", "--version", version])
            .arg(&path));
        assert!(out.status.success(), "sign failed: {}", text(&out));
        path
    }

    /// Its signing key, for signatures `sign` would refuse to make.
    pub fn signing_key(&self) -> hearth_signing::SigningKey {
        let text = std::fs::read_to_string(self.home.path().join("signing.key")).expect("key");
        hearth_signing::SigningKey::parse(&text).expect("a signing key")
    }

    /// `hearth-coordinator serve` in this household with `args` (and
    /// `env`), on a free loopback port; returns it and its WebSocket URL.
    pub fn serve(&self, args: &[&str], env: &[(&str, &str)]) -> (Reaped, String) {
        let mut cmd = self.coordinator();
        cmd.envs(env.iter().copied());
        crate::serve_with(cmd, args)
    }

    /// `hearth-coordinator component push FILE` to the coordinator at `url`
    /// (its WebSocket URL; `wss://` pushes over https).
    pub fn push(&self, url: &str, file: &Path) -> Output {
        let (scheme, rest) = match url.strip_prefix("wss://") {
            Some(rest) => ("https://", rest),
            None => ("", url.trim_start_matches("ws://")),
        };
        let address = format!("{scheme}{}", rest.split('/').next().unwrap_or_default());
        run(self
            .coordinator()
            .args(["component", "push", "--coordinator", &address])
            .arg(file))
    }

    /// A device's state directory (`local-N` devices of `--local-workers`).
    pub fn device(&self, name: &str) -> PathBuf {
        self.home.path().join(format!("device-{name}"))
    }

    /// The events of a device's audit file, in order.
    pub fn audit(&self, name: &str) -> Vec<(String, String, String)> {
        std::fs::read_to_string(self.device(name).join("audit.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .map(|v| {
                let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
                (s("event"), s("digest"), s("detail"))
            })
            .collect()
    }
}

impl Default for TestHousehold {
    fn default() -> Self {
        Self::new()
    }
}

/// `(worker, round, component)` of every ledger line in `dir`.
pub fn ledger_components(dir: &Path) -> Vec<(String, u64, String)> {
    std::fs::read_to_string(dir.join("ledger.jsonl"))
        .expect("ledger.jsonl")
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|v| {
            (
                v["worker"].as_str().unwrap_or_default().to_string(),
                v["round"].as_u64().unwrap_or_default(),
                v["component"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// The dashboard's component events (`event`, `digest`, `worker`) at `url`.
pub fn component_events(url: &str) -> Vec<(String, String, String)> {
    timed_component_events(url)
        .into_iter()
        .map(|(e, d, w, _)| (e, d, w))
        .collect()
}

/// The same with the seconds since the coordinator started.
pub fn timed_component_events(url: &str) -> Vec<(String, String, String, f64)> {
    let status = crate::http_get(url, "/api/status").unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(&status).unwrap_or_default();
    v["components"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|c| {
                    let s = |k: &str| c[k].as_str().unwrap_or_default().to_string();
                    let t = c["seconds"].as_f64().unwrap_or(0.0);
                    (s("event"), s("digest"), s("worker"), t)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The round the coordinator at `url` is in, and its finished epochs.
pub fn progress(url: &str) -> (u64, usize) {
    let status = crate::http_get(url, "/api/status").unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(&status).unwrap_or_default();
    (
        v["round"].as_u64().unwrap_or(0),
        v["epoch_history"].as_array().map_or(0, Vec::len),
    )
}

/// Waits up to `secs` for `done`, polling every 100 ms; panics with `what`.
pub fn wait_for(secs: u64, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < deadline {
        if done() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("waited {secs} s for {what}");
}
