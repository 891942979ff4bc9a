//! One emulated household, start to end: the lab built, a household of its
//! own paired, the real coordinator and hosts run under their quotas, the
//! devices' CPU use sampled, everything torn down (also on a signal).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hearth_coordinator::household::{Household, HouseholdOptions};
use hearth_protocol::auth::PairingLink;

use crate::lab::{Lab, Shape};
use crate::profile::{DeviceProfile, LinkProfile};

/// Set by SIGINT or SIGTERM: tear down and stop.
pub static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Makes SIGINT and SIGTERM set [`STOP`].
pub fn catch_signals() {
    // SAFETY: on_signal only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
}

/// What a household run is made of.
pub struct Setup<'a> {
    /// Its devices, in order (device-1 first).
    pub devices: &'a [&'static DeviceProfile],
    /// Every link's profile.
    pub link: &'static LinkProfile,
    /// This machine's single-thread sysbench score (the quotas' denominator).
    pub host_sysbench: f64,
    /// Time scale: every quota and every link rate times this (1: real time).
    pub scale: f64,
    /// A CFS period for every device instead of its profile's, µs.
    pub period_us: Option<u64>,
    /// Where the run's files (`OUT/run`) and logs (`OUT/logs`) go.
    pub out: &'a Path,
    /// Training flags for the coordinator.
    pub run_args: &'a [String],
    /// `hearth-coordinator` and `hearth-host`.
    pub binaries: &'a Binaries,
}

/// The binaries the lab runs (the same build as `hearth-lab`).
pub struct Binaries {
    /// `hearth-coordinator`.
    pub coordinator: PathBuf,
    /// `hearth-host`.
    pub host: PathBuf,
}

impl Binaries {
    /// The binaries next to this one.
    pub fn next_to_me() -> Result<Self> {
        Ok(Self {
            coordinator: sibling("hearth-coordinator")?,
            host: sibling("hearth-host")?,
        })
    }
}

/// The binary `name` next to this one.
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

/// One device's CPU use over the run.
#[derive(Debug, Clone)]
pub struct DeviceUse {
    /// Its name in the household (`device-3`).
    pub name: String,
    /// Its profile.
    pub profile: &'static str,
    /// Its quota, cores of this machine (after scaling).
    pub cores: f64,
    /// CPU seconds it used while training ran (the epochs' wall time).
    pub cpu_seconds: f64,
    /// Wall seconds of that window.
    pub window_seconds: f64,
    /// The share of its quota it used in each epoch (CPU seconds in the
    /// epoch's wall time, the epochs laid end to end back from the moment
    /// the devices stopped training, over that time).
    pub per_epoch: Vec<f64>,
}

impl DeviceUse {
    /// The share of its quota it used.
    pub fn utilisation(&self) -> f64 {
        self.cpu_seconds / (self.cores * self.window_seconds).max(1e-9)
    }
}

/// What a household run left: its run directory and the devices' use.
pub struct Outcome {
    /// The lab's id (the prefix of its namespaces and cgroups), all removed.
    pub lab_id: String,
    /// `OUT/run`: metrics.jsonl, summary.json, the model.
    pub run_dir: PathBuf,
    /// Per device, in order.
    pub devices: Vec<DeviceUse>,
}

/// How often the devices' CPU time is read: an epoch of a mixed household
/// lasts about 3 s of real time, and the end of the last one is placed at
/// the first sample after the devices stopped (200 ms put up to 6 % of
/// an epoch's idle time in the last one).
const SAMPLE_EVERY: Duration = Duration::from_millis(50);

/// CPU-time samples of one process: (seconds since start, CPU seconds).
type Samples = Vec<(f64, f64)>;

/// The CPU seconds of `samples` between `from` and `to` (nearest samples).
fn used_between(samples: &Samples, from: f64, to: f64) -> f64 {
    let at = |t: f64| {
        samples
            .iter()
            .rev()
            .find(|s| s.0 <= t)
            .or(samples.first())
            .map_or(0.0, |s| s.1)
    };
    (at(to) - at(from)).max(0.0)
}

/// Runs one household (see the module doc).
pub fn run(setup: &Setup) -> Result<Outcome> {
    if setup.devices.is_empty() {
        bail!("a household needs at least one device");
    }
    let mut lab = Lab::new()?;
    std::fs::create_dir_all(setup.out)?;
    let logs = setup.out.join("logs");
    std::fs::create_dir_all(&logs)?;
    let run_dir = setup.out.join("run");
    // A run directory left from an earlier run would be resumed from: start afresh.
    if run_dir.exists() {
        std::fs::remove_dir_all(&run_dir)
            .with_context(|| format!("clearing {}", run_dir.display()))?;
    }
    let home = tempfile::tempdir()?;
    let household = Household::open(&HouseholdOptions {
        home: Some(home.path().to_path_buf()),
        secret: None,
    })?
    .ensure_secret()?;

    let shape = Shape {
        rate_kbit: ((setup.link.rate_kbit as f64 * setup.scale).round() as u64).max(64),
        burst_bytes: setup.link.burst_bytes,
    };
    lab.build_switch()?;
    let (c_ns, c_addr) = lab.coordinator();
    lab.add_node(&c_ns, &c_addr, 0, shape)?;
    for i in 1..=setup.devices.len() {
        let (ns, addr) = lab.device(i);
        lab.add_node(&ns, &addr, i, shape)?;
    }
    let listen = format!("{c_addr}:7070");
    let mut serve: Vec<String> = ["serve", "--quiet", "--listen", &listen, "--min-workers"]
        .map(String::from)
        .into();
    serve.push(setup.devices.len().to_string());
    serve.push("--home".into());
    serve.push(home.path().display().to_string());
    serve.push("--out".into());
    serve.push(run_dir.display().to_string());
    serve.extend(setup.run_args.iter().cloned());
    let coordinator = lab.start(
        &c_ns,
        None,
        &setup.binaries.coordinator,
        &serve,
        &logs.join("coordinator.log"),
    )?;
    let mut hosts = Vec::new();
    for (i, profile) in setup.devices.iter().enumerate() {
        let i = i + 1;
        let name = format!("device-{i}");
        let key = household.pair(&name)?;
        let pairing = PairingLink {
            address: listen.clone(),
            device: name.clone(),
            key,
            tls: None,
        };
        let cores = profile.cores(setup.host_sysbench) * setup.scale;
        let period = setup.period_us.unwrap_or(profile.period_us);
        let cgroup = lab.add_cgroup(&format!("d{i}"), cores, period)?;
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
        let pid = lab.start(
            &ns,
            Some(&cgroup),
            &setup.binaries.host,
            &work,
            &logs.join(format!("{name}.log")),
        )?;
        hosts.push((name, *profile, cores, pid, Samples::new()));
    }
    let started = Instant::now();
    let outcome = loop {
        if STOP.load(Ordering::SeqCst) {
            break Err(anyhow::anyhow!("stopped by a signal"));
        }
        let t = started.elapsed().as_secs_f64();
        for host in &mut hosts {
            if let Some(cpu) = Lab::cpu_seconds(host.3) {
                host.4.push((t, cpu));
            }
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
        std::thread::sleep(SAMPLE_EVERY);
    };
    let ended = started.elapsed().as_secs_f64();
    let left = lab.tear_down();
    if !left.is_empty() {
        bail!("could not remove: {}", left.join("; "));
    }
    outcome?;
    // The training window: the epochs' wall time, ending when the last one did.
    let epochs = crate::report::read_epochs(&run_dir)?;
    let trained: f64 = epochs.iter().map(|e| e.seconds).sum();
    let finished = last_epoch_end(&hosts, ended);
    let from = (finished - trained).max(0.0);
    let devices = hosts
        .into_iter()
        .map(|(name, profile, cores, _, samples)| {
            // Epochs follow each other without a gap (the test set is
            // scored while the next one trains): each ends where the next
            // begins, the last one at `finished`.
            let mut end = finished;
            let mut per_epoch: Vec<f64> = epochs
                .iter()
                .rev()
                .map(|e| {
                    let start = end - e.seconds;
                    let used = used_between(&samples, start, end);
                    end = start;
                    used / (cores * e.seconds).max(1e-9)
                })
                .collect();
            per_epoch.reverse();
            DeviceUse {
                name,
                profile: profile.name,
                cores,
                cpu_seconds: used_between(&samples, from, finished),
                window_seconds: trained,
                per_epoch,
            }
        })
        .collect();
    Ok(Outcome {
        lab_id: lab.id.clone(),
        run_dir,
        devices,
    })
}

/// When the last epoch ended: the last moment any device was still using
/// CPU (after it the hosts only wait for the goodbye), or the end.
fn last_epoch_end(hosts: &[(String, &DeviceProfile, f64, u32, Samples)], ended: f64) -> f64 {
    hosts
        .iter()
        .filter_map(|h| {
            let last = h.4.last()?.1;
            h.4.iter().find(|s| s.1 >= last).map(|s| s.0)
        })
        .fold(0.0f64, f64::max)
        .min(ended)
        .max(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_use_is_counted_between_two_moments() {
        let samples = vec![(0.0, 1.0), (1.0, 1.5), (2.0, 2.5), (3.0, 3.0)];
        assert!((used_between(&samples, 1.0, 3.0) - 1.5).abs() < 1e-9);
        assert!((used_between(&samples, 0.5, 2.2) - 1.5).abs() < 1e-9);
        assert_eq!(used_between(&Vec::new(), 0.0, 1.0), 0.0);
    }
}
