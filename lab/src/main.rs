//! `hearth-lab`: an emulated household on one machine (see the crate README).

mod calibrate;
mod cluster;
mod lab;
mod profile;
mod report;
mod reproduce;

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::{Parser, Subcommand};

use crate::cluster::{Binaries, Setup};

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
    /// The study's experiment: time per epoch and accuracy against the
    /// number of devices, with the two figures and a table.
    Reproduce(ReproduceArgs),
    /// List the device and link profiles, with this machine's quotas.
    Profiles(MachineArgs),
}

/// How the emulation fits this machine.
#[derive(clap::Args, Debug)]
struct MachineArgs {
    /// This machine's single-thread `sysbench cpu` score (events/s); measured
    /// (10 s) when not given.
    #[arg(long)]
    host_sysbench: Option<f64>,
    /// Time scale: every quota and link rate times this, and every reported
    /// time times it too (auto: 1, or what fits the household on this
    /// machine with room for the coordinator).
    #[arg(long, default_value = "auto")]
    scale: String,
    /// CFS period of every device's quota, µs (default: the profile's:
    /// 10,000 for the profiles from hardware figures, 100,000 for mxnet-pi3).
    #[arg(long)]
    cfs_period_us: Option<u64>,
}

impl MachineArgs {
    fn host_sysbench(&self, needed: bool) -> Result<f64> {
        match self.host_sysbench {
            Some(s) if s > 0.0 && s.is_finite() => Ok(s),
            Some(s) => bail!("--host-sysbench {s} is not a score"),
            // Profiles with a fixed quota do not use it.
            None if !needed => Ok(1.0),
            None => {
                let score = calibrate::host_sysbench(10)?;
                println!("this machine: sysbench cpu, 1 thread: {score:.0} events/s");
                Ok(score)
            }
        }
    }

    fn scale(&self) -> Result<Option<f64>> {
        if self.scale == "auto" {
            return Ok(None);
        }
        match self.scale.parse::<f64>() {
            Ok(s) if s > 0.0 && s <= 1.0 => Ok(Some(s)),
            _ => bail!("--scale must be auto or a number in (0, 1]"),
        }
    }
}

fn needs_sysbench(devices: &[&profile::DeviceProfile]) -> bool {
    devices
        .iter()
        .any(|d| matches!(d.cpu, profile::Cpu::Sysbench(_)))
}

#[derive(clap::Args, Debug)]
struct ClusterArgs {
    /// Devices: a count (of --profile) or PROFILE:COUNT,... (pi3:6,pi4:3,laptop:2).
    #[arg(long, default_value = "2")]
    devices: String,
    /// Device profile of a plain count.
    #[arg(long, default_value = "pi3")]
    profile: String,
    /// Link profile (both ends of every link).
    #[arg(long, default_value = "100mbit")]
    link: String,
    #[command(flatten)]
    machine: MachineArgs,
    /// Where the run's files and the processes' logs go.
    #[arg(long, default_value = "runs/lab")]
    out: PathBuf,
    /// Training flags for the coordinator (after `--`).
    #[arg(last = true)]
    run_args: Vec<String>,
}

#[derive(clap::Args, Debug)]
struct ReproduceArgs {
    /// Household sizes.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8,11")]
    sizes: Vec<usize>,
    /// Device profile.
    #[arg(long, default_value = "pi3")]
    profile: String,
    /// Link profile.
    #[arg(long, default_value = "100mbit")]
    link: String,
    /// Epochs of each run.
    #[arg(long, default_value_t = 10)]
    epochs: usize,
    /// A smoke run: households of 1 and 2, 2 epochs of 1,280 training and
    /// 500 test images (sizes and epochs unless given otherwise).
    #[arg(long)]
    quick: bool,
    /// Only rebuild the table and figures from the runs already in OUT.
    #[arg(long)]
    rewrite: bool,
    #[command(flatten)]
    machine: MachineArgs,
    /// Output directory: OUT/table.md, OUT/epoch_time.png,
    /// OUT/accuracy.png, OUT/nN/ per household.
    #[arg(long, default_value = "runs/reproduce")]
    out: PathBuf,
    /// More training flags for every run (after `--`).
    #[arg(last = true)]
    run_args: Vec<String>,
}

fn cluster(args: ClusterArgs) -> Result<()> {
    let default = profile::device(&args.profile).map_err(anyhow::Error::msg)?;
    let devices = profile::household(&args.devices, default).map_err(anyhow::Error::msg)?;
    let link = profile::link(&args.link).map_err(anyhow::Error::msg)?;
    let host_sysbench = args.machine.host_sysbench(needs_sysbench(&devices))?;
    let cores: f64 = devices.iter().map(|d| d.cores(host_sysbench)).sum();
    let scale = match args.machine.scale()? {
        Some(s) => s,
        None => reproduce::fitting_scale(cores, reproduce::machine_cores()),
    };
    let binaries = Binaries::next_to_me()?;
    cluster::catch_signals();
    println!(
        "{} devices ({:.2} cores of quota), links {} both ways, time scale {scale:.2}",
        devices.len(),
        cores,
        link.name
    );
    let outcome = cluster::run(&Setup {
        devices: &devices,
        link,
        host_sysbench,
        scale,
        period_us: args.machine.cfs_period_us,
        out: &args.out,
        run_args: &args.run_args,
        binaries: &binaries,
    })?;
    println!(
        "torn down: namespaces, cgroups and processes of {} removed",
        outcome.lab_id
    );
    println!("epoch  seconds  test accuracy  coordinator's link busy (busier direction)");
    let link_bits = link.rate_kbit as f64 * 1000.0;
    for (i, e) in report::read_epochs(&outcome.run_dir)?.iter().enumerate() {
        println!(
            "{:>5}  {:>7.2}  {:>12.2} %  {:>6.1} %",
            i + 1,
            e.seconds * scale,
            100.0 * e.test,
            100.0 * e.link_busy(link_bits, scale)
        );
    }
    println!("device      profile    quota  CPU used of its quota: the run, then each epoch");
    for d in &outcome.devices {
        let epochs: String = d
            .per_epoch
            .iter()
            .map(|u| format!(" {:>5.1} %", 100.0 * u))
            .collect();
        println!(
            "{:<11} {:<9} {:>5.1} %  {:>6.1} %  |{epochs}",
            d.name,
            d.profile,
            100.0 * d.cores / scale,
            100.0 * d.utilisation()
        );
    }
    Ok(())
}

fn reproduce(args: ReproduceArgs) -> Result<()> {
    let profile = profile::device(&args.profile).map_err(anyhow::Error::msg)?;
    let link = profile::link(&args.link).map_err(anyhow::Error::msg)?;
    let needed = needs_sysbench(&[profile]);
    let host_sysbench = args.machine.host_sysbench(needed)?;
    let sizes_given = args.sizes != [1, 2, 4, 8, 11];
    let (sizes, epochs) = if args.quick {
        (
            if sizes_given {
                args.sizes.clone()
            } else {
                vec![1, 2]
            },
            if args.epochs != 10 { args.epochs } else { 2 },
        )
    } else {
        (args.sizes.clone(), args.epochs)
    };
    if sizes.is_empty() || sizes.contains(&0) {
        bail!("--sizes must be household sizes of at least 1");
    }
    let mut run_args = vec!["--epochs".to_string(), epochs.to_string()];
    if args.quick {
        run_args.extend(["--train-limit", "1280", "--test-limit", "500"].map(String::from));
    }
    run_args.extend(args.run_args.iter().cloned());
    cluster::catch_signals();
    let sweep = reproduce::Sweep {
        sizes: &sizes,
        profile,
        link,
        host_sysbench,
        scale: args.machine.scale()?,
        out: &args.out,
        run_args: &run_args,
        calibration_seconds: if args.quick { 2 } else { 8 },
        period_us: args.machine.cfs_period_us,
    };
    let points = if args.rewrite {
        reproduce::rewrite(&sweep)?
    } else {
        reproduce::run(&sweep)?
    };
    println!("\n{}", report::table(&points));
    println!(
        "written: {} and {}, {}",
        args.out.join("table.md").display(),
        args.out.join("epoch_time.png").display(),
        args.out.join("accuracy.png").display()
    );
    Ok(())
}

fn profiles(args: MachineArgs) -> Result<()> {
    let host = args.host_sysbench(true)?;
    let machine = reproduce::machine_cores();
    println!("device profiles ({machine} cores here, sysbench {host:.0} events/s per core):");
    for d in profile::DEVICES {
        let cores = d.cores(host);
        let fit = ((machine - reproduce::COORDINATOR_RESERVE) / cores).floor();
        println!(
            "  {:<10} {:>6.1} % of a core; {fit:>3} fit in real time. {}",
            d.name,
            100.0 * cores,
            d.about
        );
    }
    println!("link profiles:");
    for l in profile::LINKS {
        println!(
            "  {:<10} {:>6} kbit/s each way. {}",
            l.name, l.rate_kbit, l.about
        );
    }
    Ok(())
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Action::Cluster(args) => cluster(args),
        Action::Reproduce(args) => reproduce(args),
        Action::Profiles(args) => profiles(args),
    }
}
