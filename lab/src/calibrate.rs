//! What the emulation is calibrated with: this machine's single-thread
//! sysbench score (the denominator of every sysbench-derived quota), and
//! the training throughput a device gets under its quota (the compute
//! bound's input), both measured, never assumed.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::lab::CpuCgroup;

/// The number after `label` on a line of `text`, e.g. `events per second:  2254.25`.
pub fn number_after(text: &str, label: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let (_, rest) = line.split_once(label)?;
        rest.trim()
            .split(|c: char| c.is_whitespace())
            .next()?
            .parse()
            .ok()
    })
}

/// This machine's single-thread `sysbench cpu` score (events/s), run the
/// way the profiles' public figures were (primes up to 10,000), for `seconds`.
pub fn host_sysbench(seconds: u32) -> Result<f64> {
    let out = Command::new("sysbench")
        .args(["cpu", "--threads=1", &format!("--time={seconds}"), "run"])
        .output()
        .context(
            "running sysbench (install it: apt-get install sysbench; or pass --host-sysbench)",
        )?;
    let text = String::from_utf8_lossy(&out.stdout);
    match number_after(&text, "events per second:") {
        Some(score) if out.status.success() && score > 0.0 => Ok(score),
        _ => bail!("sysbench printed no score: {}", text.trim()),
    }
}

/// Training throughput (img/s) of `hearth-host bench` in a cgroup of
/// `cores` of a core: what one device of that quota computes.
pub fn device_rate(host: &Path, cgroup: &CpuCgroup, seconds: u32) -> Result<f64> {
    let tasks = cgroup.dir.join("tasks");
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "echo $$ > '{}' && exec \"$0\" \"$@\"",
            tasks.display()
        ))
        .arg(host)
        .args(["bench", "--only", "watchdog", "--repeats", "1", "--seconds"])
        .arg(seconds.to_string())
        .env("HEARTH_CONFIG", "")
        .output()
        .with_context(|| format!("running {} bench", host.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let rate = text
        .lines()
        .find(|l| l.contains("img/s"))
        .and_then(|l| {
            l.split_whitespace()
                .rev()
                .skip_while(|w| !w.starts_with("img/s"))
                .nth(1)
        })
        .and_then(|w| w.parse::<f64>().ok());
    match rate {
        Some(r) if out.status.success() && r > 0.0 => Ok(r),
        _ => bail!(
            "the host bench at {:.1} % of a core printed no rate: {} {}",
            100.0 * cgroup.quota_us as f64 / cgroup.period_us as f64,
            text.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_score_is_read_from_sysbench_output() {
        let text = "CPU speed:\n    events per second:  2254.25\n\nGeneral statistics:";
        assert_eq!(number_after(text, "events per second:"), Some(2254.25));
        assert_eq!(number_after("nothing here", "events per second:"), None);
    }
}
