//! `hearth-lab reproduce`: the study's experiment. One household per size
//! of the sweep, each trained with the same settings; the study's two
//! figures as PNG, and a Markdown table with the compute and link lower
//! limits next to the measured figures.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use hearth_coordinator::figures;

use crate::calibrate;
use crate::cluster::{self, Binaries, Setup};
use crate::lab::Lab;
use crate::profile::{DeviceProfile, LinkProfile};
use crate::report::{self, Point};

/// Cores of this machine the coordinator, the kernel's switching and the
/// lab itself are left when quotas are fitted (`--scale auto`).
pub const COORDINATOR_RESERVE: f64 = 0.35;

/// The time scale that fits `cores` of quota on this machine with room for
/// the coordinator: 1, or less when they would not fit.
pub fn fitting_scale(cores: f64, machine_cores: f64) -> f64 {
    let budget = (machine_cores - COORDINATOR_RESERVE).max(0.1);
    (budget / cores.max(1e-9)).min(1.0)
}

/// This machine's cores.
pub fn machine_cores() -> f64 {
    std::thread::available_parallelism().map_or(1, |n| n.get()) as f64
}

/// A sweep's settings.
pub struct Sweep<'a> {
    /// Household sizes.
    pub sizes: &'a [usize],
    /// Every device's profile.
    pub profile: &'static DeviceProfile,
    /// Every link's profile.
    pub link: &'static LinkProfile,
    /// The quotas' denominator.
    pub host_sysbench: f64,
    /// A fixed time scale, or `None` to fit each household on this machine.
    pub scale: Option<f64>,
    /// Output directory.
    pub out: &'a Path,
    /// Training flags for every run.
    pub run_args: &'a [String],
    /// Seconds of each calibration bench.
    pub calibration_seconds: u32,
    /// A CFS period instead of the profile's, µs.
    pub period_us: Option<u64>,
}

/// The training rate of one device of `profile` at `scale`, measured in a
/// cgroup of the same quota; cached per quota.
fn rate_at(
    cache: &mut BTreeMap<(u64, u64), f64>,
    binaries: &Binaries,
    cores: f64,
    period_us: u64,
    seconds: u32,
) -> Result<f64> {
    let key = ((cores * 1e6).round() as u64, period_us);
    if let Some(&r) = cache.get(&key) {
        return Ok(r);
    }
    let mut lab = Lab::new()?;
    let cgroup = lab.add_cgroup("calibrate", cores, period_us)?;
    let rate = calibrate::device_rate(&binaries.host, &cgroup, seconds);
    let left = lab.tear_down();
    anyhow::ensure!(left.is_empty(), "could not remove: {}", left.join("; "));
    let rate = rate?;
    cache.insert(key, rate);
    Ok(rate)
}

/// Runs the sweep; returns its points (also written to `OUT`).
pub fn run(sweep: &Sweep) -> Result<Vec<Point>> {
    let binaries = Binaries::next_to_me()?;
    std::fs::create_dir_all(sweep.out)?;
    let mut rates = BTreeMap::new();
    let mut points = Vec::new();
    let one = sweep.profile.cores(sweep.host_sysbench);
    println!(
        "{}: {:.1} % of a core of this machine per device ({}); links {} ({})",
        sweep.profile.name,
        100.0 * one,
        sweep.profile.about,
        sweep.link.name,
        sweep.link.about
    );
    for &n in sweep.sizes {
        let scale = sweep
            .scale
            .unwrap_or_else(|| fitting_scale(one * n as f64, machine_cores()));
        let rate = rate_at(
            &mut rates,
            &binaries,
            one * scale,
            sweep.period_us.unwrap_or(sweep.profile.period_us),
            sweep.calibration_seconds,
        )?;
        let devices = vec![sweep.profile; n];
        let out = sweep.out.join(format!("n{n}"));
        println!(
            "{n} device(s): time scale {scale:.2}, each device {:.1} % of a core, \
             {rate:.0} img/s under it; training…",
            100.0 * one * scale
        );
        let outcome = cluster::run(&Setup {
            devices: &devices,
            link: sweep.link,
            host_sysbench: sweep.host_sysbench,
            scale,
            period_us: sweep.period_us,
            out: &out,
            run_args: sweep.run_args,
            binaries: &binaries,
        })
        .with_context(|| format!("the {n}-device run"))?;
        std::fs::write(out.join("scale"), scale.to_string())?;
        let trained = report::training_rate(&outcome.run_dir)?;
        let point = Point::load(&out, n, sweep.link.rate_kbit as f64 * 1000.0)?;
        println!(
            "  {:.2} s/epoch; the devices trained {:.0} img/s each by their clocks \
             ({rate:.0} in the bench); final test accuracy {:.2} %",
            point.seconds_per_epoch(),
            trained / n as f64,
            100.0 * point.epochs.last().map_or(f64::NAN, |e| e.test)
        );
        points.push(point);
        write(sweep, &points)?;
    }
    Ok(points)
}

/// Rebuilds the table and both figures from the runs already in `OUT`
/// (after a change to the report, or an interrupted sweep).
pub fn rewrite(sweep: &Sweep) -> Result<Vec<Point>> {
    let mut points = Vec::new();
    for &n in sweep.sizes {
        let dir = sweep.out.join(format!("n{n}"));
        if dir.join("run/metrics.jsonl").is_file() {
            points.push(Point::load(&dir, n, sweep.link.rate_kbit as f64 * 1000.0)?);
        }
    }
    anyhow::ensure!(!points.is_empty(), "no runs in {}", sweep.out.display());
    write(sweep, &points)?;
    Ok(points)
}

/// The table and both figures of `points` into `OUT`.
fn write(sweep: &Sweep, points: &[Point]) -> Result<()> {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# Time per epoch and accuracy against devices\n\n\
         Profile `{}` ({:.1} % of a core per device; {}), links `{}` ({}), \
         training flags `{}`. Seconds are emulated seconds (measured times the \
         time scale). The compute bound is the epoch's samples over the sum of \
         the devices' training rates under their quotas, as each device timed \
         its rounds during the run; the link bound \
         is the busier direction's bytes through the coordinator's link over its rate.\n",
        sweep.profile.name,
        100.0 * sweep.profile.cores(sweep.host_sysbench),
        sweep.profile.about,
        sweep.link.name,
        sweep.link.about,
        sweep.run_args.join(" ")
    );
    md.push_str(&report::table(points));
    std::fs::write(sweep.out.join("table.md"), &md)?;
    let times: Vec<(usize, f64)> = points
        .iter()
        .map(|p| (p.devices, p.seconds_per_epoch()))
        .collect();
    figures::epoch_time(&sweep.out.join("epoch_time.png"), &times, "devices")?;
    let curves: Vec<figures::Curves> = points
        .iter()
        .map(|p| figures::Curves {
            label: format!(
                "{} device{}",
                p.devices,
                if p.devices == 1 { "" } else { "s" }
            ),
            train: p.epochs.iter().map(|e| e.train).collect(),
            test: p.epochs.iter().map(|e| e.test).collect(),
        })
        .collect();
    figures::accuracy(&sweep.out.join("accuracy.png"), &curves)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotas_that_do_not_fit_are_scaled_to_fit() {
        assert_eq!(fitting_scale(1.0, 2.0), 1.0);
        let s = fitting_scale(11.0 * 0.256, 2.0);
        assert!((s * 11.0 * 0.256 - (2.0 - COORDINATOR_RESERVE)).abs() < 1e-9);
    }
}
