//! `hearth-lab`: an emulated household on one machine (see the crate README).

mod lab;
mod profile;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use hearth_coordinator::household::{Household, HouseholdOptions};
use hearth_protocol::auth::PairingLink;

/// Emulated Raspberry Pi households: namespaces, shaped links, CPU quotas.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Action,
}

#[derive(Subcommand)]
enum Action {
    /// Build a household of emulated devices, train in it with the real
    /// coordinator and hosts, tear it down (also on Ctrl-C and on failure).
    Cluster(ClusterArgs),
}

#[derive(clap::Args, Debug)]
struct ClusterArgs {
    /// Emulated devices.
    #[arg(long, default_value_t = 2)]
    devices: usize,
    /// Device profile (CPU quota of each device).
    #[arg(long, default_value = "pi3")]
    profile: String,
    /// Link profile (both ends of every link).
    #[arg(long, default_value = "100mbit")]
    link: String,
    /// Where the run's files and the processes' logs go.
    #[arg(long, default_value = "runs/lab")]
    out: PathBuf,
    /// Training flags for the coordinator (after `--`).
    #[arg(last = true)]
    run_args: Vec<String>,
}

/// Set by SIGINT or SIGTERM: tear down and stop.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// The binary `name` next to this one (the same build).
fn sibling(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe().context("finding this program")?;
    let path = exe.with_file_name(name);
    if !path.is_file() {
        bail!(
            "{} is missing: build the workspace (cargo build --release)",
            path.display()
        );
    }
    Ok(path)
}

fn cluster(args: ClusterArgs) -> Result<()> {
    let device = profile::device(&args.profile).map_err(anyhow::Error::msg)?;
    let link = profile::link(&args.link).map_err(anyhow::Error::msg)?;
    if args.devices == 0 {
        bail!("--devices must be at least 1");
    }
    let (coordinator_bin, host_bin) = (sibling("hearth-coordinator")?, sibling("hearth-host")?);
    let mut lab = lab::Lab::new()?;
    // SAFETY: on_signal only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    std::fs::create_dir_all(&args.out)?;
    let logs = args.out.join("logs");
    std::fs::create_dir_all(&logs)?;
    let home = tempfile::tempdir()?;
    let household = Household::open(&HouseholdOptions {
        home: Some(home.path().to_path_buf()),
        secret: None,
    })?
    .ensure_secret()?;

    lab.build_switch()?;
    let (c_ns, c_addr) = lab.coordinator();
    lab.add_node(&c_ns, &c_addr, 0, link)?;
    for i in 1..=args.devices {
        let (ns, addr) = lab.device(i);
        lab.add_node(&ns, &addr, i, link)?;
    }
    let listen = format!("{c_addr}:7070");
    let mut serve: Vec<String> = ["serve", "--listen", &listen, "--min-workers"]
        .map(String::from)
        .into();
    serve.push(args.devices.to_string());
    serve.push("--home".into());
    serve.push(home.path().display().to_string());
    serve.push("--out".into());
    serve.push(args.out.join("run").display().to_string());
    serve.extend(args.run_args.iter().cloned());
    let coordinator = lab.start(
        &c_ns,
        None,
        &coordinator_bin,
        &serve,
        &logs.join("coordinator.log"),
    )?;
    println!(
        "{} devices ({}: {} % of a core each, {}), links {} both ways; coordinator at {listen}",
        args.devices, device.name, device.cpu_percent, device.about, link.name
    );
    for i in 1..=args.devices {
        let name = format!("device-{i}");
        let key = household.pair(&name)?;
        let pairing = PairingLink {
            address: listen.clone(),
            device: name.clone(),
            key,
            tls: None,
        };
        let cgroup = lab.add_cgroup(i, device)?;
        let (ns, _) = lab.device(i);
        let work = vec![
            "work".to_string(),
            "--pair".into(),
            pairing.to_string(),
            "--threads".into(),
            "1".into(),
            "--state-dir".into(),
            home.path().join(&name).display().to_string(),
            "--exit-with-parent".into(),
        ];
        lab.start(
            &ns,
            Some(&cgroup),
            &host_bin,
            &work,
            &logs.join(format!("{name}.log")),
        )?;
    }
    let outcome = loop {
        if STOP.load(Ordering::SeqCst) {
            break Err(anyhow::anyhow!("stopped by a signal"));
        }
        if let Some(code) = lab.ended(coordinator) {
            break match code {
                Some(0) => Ok(()),
                other => Err(anyhow::anyhow!(
                    "the coordinator ended with {other:?} (see {})",
                    logs.join("coordinator.log").display()
                )),
            };
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let left = lab.tear_down();
    if !left.is_empty() {
        bail!("could not remove: {}", left.join("; "));
    }
    println!(
        "torn down: namespaces, cgroups and processes of {} removed",
        lab.id
    );
    outcome?;
    summary(&args.out.join("run"))
}

/// Prints the run's epochs from its `metrics.jsonl`.
fn summary(run: &Path) -> Result<()> {
    let text = std::fs::read_to_string(run.join("metrics.jsonl"))
        .with_context(|| format!("reading {}", run.join("metrics.jsonl").display()))?;
    println!("epoch  seconds  test accuracy");
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line)?;
        println!(
            "{:>5}  {:>7.1}  {:>12.2} %",
            v["epoch"],
            v["wall_seconds"].as_f64().unwrap_or(f64::NAN),
            100.0 * v["test_accuracy"].as_f64().unwrap_or(f64::NAN)
        );
    }
    Ok(())
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Action::Cluster(args) => cluster(args),
    }
}
