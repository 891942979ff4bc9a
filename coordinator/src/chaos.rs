//! `hearth-coordinator chaos`: a run that survives what a home does to it.
//!
//! Trains once cleanly (`train`, OUT/clean), then again (`serve`, OUT/chaos)
//! with `--hosts` `hearth-host` processes of its own while it SIGKILLs a
//! random host every `--kill-every` seconds (and starts it again, as a
//! rebooted device would come back), and SIGKILLs the coordinator once,
//! `--restart-after` seconds in, restarting it with `--resume`. At the end
//! it checks the chaos run's ledger (every sample exactly once per epoch)
//! and prints both accuracies, the kills and the rounds lost at the restart.
//!
//! Training flags after `--` go to both runs: `hearth-coordinator chaos --
//! --epochs 3 --train-limit 20000`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use hearth_protocol::auth::{DEV_SECRET, DeviceKey};
use rand::{Rng, SeedableRng};

use crate::ledger;
use crate::observe::RunFiles;

/// Options of `chaos`.
#[derive(clap::Args, Debug)]
pub struct ChaosArgs {
    /// Hosts to train with (at least 4).
    #[arg(long, default_value_t = 4)]
    pub hosts: usize,
    /// Seconds between two host kills.
    #[arg(long, default_value_t = 10.0)]
    pub kill_every: f64,
    /// Seconds after the chaos run starts at which the coordinator is killed
    /// and restarted from its checkpoint.
    #[arg(long, default_value_t = 25.0)]
    pub restart_after: f64,
    /// Where the two runs go (OUT/clean, OUT/chaos).
    #[arg(long, default_value = "runs/chaos")]
    pub out: PathBuf,
    /// Seed of the kill schedule.
    #[arg(long, default_value_t = 7)]
    pub chaos_seed: u64,
    /// Training flags for both runs (after `--`).
    #[arg(last = true)]
    pub run_args: Vec<String>,
}

/// A child process killed (SIGKILL) when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn binary(name: &str) -> Result<PathBuf> {
    let path = std::env::current_exe()?.with_file_name(name);
    ensure!(path.is_file(), "{} is not built", path.display());
    Ok(path)
}

/// What both runs share: an empty household (the development secret; the
/// runs only listen on loopback).
fn household(cmd: &mut Command, home: &Path) {
    cmd.arg("--home")
        .arg(home)
        .env_remove("HEARTH_SECRET")
        .stdin(Stdio::null());
}

fn host(address: &str, name: &str, home: &Path) -> Result<Process> {
    let mut cmd = Command::new(binary("hearth-host")?);
    cmd.args(["work", "--coordinator", &format!("ws://{address}/ws")])
        .args(["--name", name, "--max-backoff", "2", "--threads", "1"])
        .env("HEARTH_HOME", home)
        .env_remove("HEARTH_SECRET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    Ok(Process(cmd.spawn().context("starting hearth-host")?))
}

fn coordinator(
    address: &str,
    out: &Path,
    home: &Path,
    args: &ChaosArgs,
    resume: bool,
) -> Result<Process> {
    let mut cmd = Command::new(binary("hearth-coordinator")?);
    cmd.args(["serve", "--quiet", "--listen", address]);
    household(&mut cmd, home);
    if resume {
        cmd.arg("--resume").arg(out);
    } else {
        cmd.arg("--out").arg(out).args(&args.run_args);
    }
    cmd.stdout(Stdio::null())
        .stderr(log(out, "coordinator.log")?);
    Ok(Process(cmd.spawn().context("starting the coordinator")?))
}

/// An appending log file `name` next to `dir`, for a child's stderr.
fn log(dir: &Path, name: &str) -> Result<Stdio> {
    let parent = dir.parent().unwrap_or(dir);
    std::fs::create_dir_all(parent)?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(parent.join(name))?;
    Ok(Stdio::from(file))
}

/// `GET path` from the coordinator at `address` with a credential; the body.
fn get(address: &str, path: &str) -> Option<String> {
    let token = DeviceKey::derive(DEV_SECRET, "chaos").http_token("chaos");
    let mut s = TcpStream::connect(address).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_string())
}

fn wait_ready(address: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while get(address, "/api/health").is_none() {
        ensure!(Instant::now() < deadline, "the coordinator did not come up");
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

fn current_round(address: &str) -> Option<u64> {
    let body = get(address, "/api/status")?;
    serde_json::from_str::<serde_json::Value>(&body).ok()?["round"].as_u64()
}

fn accuracy(dir: &Path) -> Result<f64> {
    let path = dir.join("summary.json");
    let v: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
    )?;
    v["final_test_accuracy"]
        .as_f64()
        .context("summary.json has no final accuracy")
}

/// Samples per epoch, from a complete ledger's first epoch.
fn samples_per_epoch(dir: &Path) -> Result<usize> {
    let text = std::fs::read_to_string(dir.join("ledger.jsonl"))?;
    let mut n = 0;
    for line in text.lines() {
        let e: ledger::LedgerEntry = serde_json::from_str(line)?;
        if e.epoch == 1 {
            n += e.samples.len();
        }
    }
    Ok(n)
}

/// Runs the clean run and the chaos run and prints the comparison.
pub fn run(args: ChaosArgs) -> Result<()> {
    ensure!(args.hosts >= 4, "--hosts must be at least 4");
    ensure!(
        args.kill_every > 0.0 && args.restart_after > 0.0,
        "--kill-every and --restart-after are positive seconds"
    );
    std::fs::create_dir_all(&args.out)?;
    for name in ["clean.log", "coordinator.log"] {
        let _ = std::fs::remove_file(args.out.join(name));
    }
    let home = args.out.join("household");
    let clean_dir = args.out.join("clean");
    let chaos_dir = args.out.join("chaos");
    for dir in [&clean_dir, &chaos_dir] {
        if dir.exists() {
            std::fs::remove_dir_all(dir).with_context(|| format!("clearing {}", dir.display()))?;
        }
    }

    println!(
        "clean run: {} local hosts → {}",
        args.hosts,
        clean_dir.display()
    );
    let mut cmd = Command::new(binary("hearth-coordinator")?);
    cmd.args([
        "train",
        "--quiet",
        "--local-workers",
        &args.hosts.to_string(),
    ]);
    household(&mut cmd, &home);
    cmd.arg("--out").arg(&clean_dir).args(&args.run_args);
    cmd.stdout(Stdio::null())
        .stderr(log(&clean_dir, "clean.log")?);
    let status = cmd.status().context("running the clean run")?;
    ensure!(
        status.success(),
        "the clean run failed (see {})",
        args.out.join("clean.log").display()
    );
    let clean = accuracy(&clean_dir)?;
    let samples = samples_per_epoch(&clean_dir)?;
    println!("clean run: final test accuracy {:.2} %", 100.0 * clean);

    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let address = format!("127.0.0.1:{port}");
    println!(
        "chaos run on {address}: a host SIGKILLed every {} s, the coordinator at {} s → {}",
        args.kill_every,
        args.restart_after,
        chaos_dir.display()
    );
    let mut server = coordinator(&address, &chaos_dir, &home, &args, false)?;
    wait_ready(&address)?;
    let names: Vec<String> = (1..=args.hosts).map(|i| format!("chaos-{i}")).collect();
    let mut hosts = names
        .iter()
        .map(|n| host(&address, n, &home))
        .collect::<Result<Vec<_>>>()?;
    let mut rng = rand_pcg::Pcg64Mcg::seed_from_u64(args.chaos_seed);
    let start = Instant::now();
    let mut next_kill = Duration::from_secs_f64(args.kill_every);
    let restart_at = Duration::from_secs_f64(args.restart_after);
    let (mut kills, mut restarted, mut lost) = (0u32, false, None);
    loop {
        if let Some(status) = server.0.try_wait()? {
            if status.success() {
                break;
            }
            bail!("the coordinator failed ({status})");
        }
        let t = start.elapsed();
        ensure!(
            t < Duration::from_secs(3600),
            "the chaos run did not finish in an hour"
        );
        if t >= next_kill {
            let i = rng.random_range(0..hosts.len());
            let _ = hosts[i].0.kill(); // SIGKILL
            let _ = hosts[i].0.wait();
            // The device boots again.
            hosts[i] = host(&address, &names[i], &home)?;
            kills += 1;
            println!(
                "  {:>6.1} s  killed {} (SIGKILL) and started it again",
                t.as_secs_f64(),
                names[i]
            );
            next_kill += Duration::from_secs_f64(args.kill_every);
        }
        if !restarted && t >= restart_at {
            let before = current_round(&address);
            drop(server);
            let saved = RunFiles::saved_state(&chaos_dir)?;
            lost = before.map(|b| b.saturating_sub(saved.round));
            println!(
                "  {:>6.1} s  killed the coordinator (SIGKILL) at round {}; restarting from its checkpoint at round {} (epoch {})",
                t.as_secs_f64(),
                before.map_or("?".into(), |b| b.to_string()),
                saved.round,
                saved.epoch
            );
            server = coordinator(&address, &chaos_dir, &home, &args, true)?;
            wait_ready(&address)?;
            restarted = true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(hosts);
    ensure!(
        restarted,
        "the run ended before the coordinator restart: raise the work or lower --restart-after"
    );
    let epochs = ledger::check_file(&chaos_dir.join("ledger.jsonl"), samples)
        .context("ledger check of the chaos run")?;
    let chaos = accuracy(&chaos_dir)?;
    println!("ledger: every one of {samples} samples used exactly once in each of {epochs} epochs");
    println!(
        "host kills: {kills}; rounds lost at the coordinator restart: {}",
        lost.map_or("unknown".into(), |l| l.to_string())
    );
    println!(
        "final test accuracy: clean {:.2} %, chaos {:.2} % ({:+.2} pp)",
        100.0 * clean,
        100.0 * chaos,
        100.0 * (chaos - clean)
    );
    Ok(())
}
