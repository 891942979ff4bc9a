//! What a run measured, read back from its files, and the sweep's table
//! with the physical lower limits next to the measured figures.

use std::path::Path;

use anyhow::{Context, Result};

/// One epoch of a run, from its `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq)]
pub struct Epoch {
    /// Wall seconds of the epoch (as measured, before any time scale).
    pub seconds: f64,
    /// Training accuracy (0..1).
    pub train: f64,
    /// Test accuracy (0..1).
    pub test: f64,
    /// Bytes the coordinator sent.
    pub sent: u64,
    /// Bytes the coordinator received.
    pub received: u64,
}

impl Epoch {
    /// The share of the epoch the coordinator's busier direction spent
    /// carrying its bytes at `link_bits` bit/s (emulated; the epoch lasted
    /// `seconds × scale` emulated seconds). Counted on the messages' bytes,
    /// not on TCP/IP's headers, so a saturated link shows a little below 1.
    pub fn link_busy(&self, link_bits: f64, scale: f64) -> f64 {
        let busy = link_seconds(self.sent as f64, self.received as f64, link_bits);
        busy / (self.seconds * scale).max(1e-9)
    }
}

/// Seconds the coordinator's link needs for `down` and `up` bytes at
/// `link_bits` bit/s each way: its busier direction's.
fn link_seconds(down: f64, up: f64, link_bits: f64) -> f64 {
    8.0 * down.max(up) / link_bits.max(1.0)
}

/// The epochs of the run in `run_dir`.
pub fn read_epochs(run_dir: &Path) -> Result<Vec<Epoch>> {
    let path = run_dir.join("metrics.jsonl");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut epochs = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let v: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("{} line {}", path.display(), n + 1))?;
        let number = |k: &str| v[k].as_f64().unwrap_or(f64::NAN);
        epochs.push(Epoch {
            seconds: number("wall_seconds"),
            train: number("train_accuracy"),
            test: number("test_accuracy"),
            sent: v["bytes_sent"].as_u64().unwrap_or(0),
            received: v["bytes_received"].as_u64().unwrap_or(0),
        });
    }
    anyhow::ensure!(!epochs.is_empty(), "{} holds no epoch", path.display());
    Ok(epochs)
}

/// Training samples in the run in `run_dir` per epoch (from its summary).
pub fn samples_per_epoch(run_dir: &Path, epochs: usize) -> Result<f64> {
    let path = run_dir.join("summary.json");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let images: u64 = v["workers"]
        .as_array()
        .map(|ws| ws.iter().filter_map(|w| w["images"].as_u64()).sum())
        .unwrap_or(0);
    Ok(images as f64 / epochs.max(1) as f64)
}

/// The sum of the devices' training rates (img/s) in the run in
/// `run_dir`, each by its own clock (the training time its results
/// reported), from the run's summary.
pub fn training_rate(run_dir: &Path) -> Result<f64> {
    let path = run_dir.join("summary.json");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    Ok(v["workers"]
        .as_array()
        .map(|ws| {
            ws.iter()
                .filter_map(|w| w["images_per_second"].as_f64())
                .sum()
        })
        .unwrap_or(0.0))
}

/// One point of the sweep: a household size and what its run measured.
#[derive(Debug, Clone)]
pub struct Point {
    /// Devices.
    pub devices: usize,
    /// Its epochs.
    pub epochs: Vec<Epoch>,
    /// Time scale of the run (seconds are reported divided by... times it).
    pub scale: f64,
    /// Training samples per epoch.
    pub samples: f64,
    /// Σ of the devices' training rates under their quotas, img/s, as they
    /// measured them during the run (in emulated time).
    pub compute_rate: f64,
    /// The link's rate, bit/s (emulated).
    pub link_bits: f64,
}

impl Point {
    /// The point of the run in `dir` (`dir/run`, and `dir/scale`, the time
    /// scale it ran at) of `devices` devices on a link of `link_bits`.
    pub fn load(dir: &Path, devices: usize, link_bits: f64) -> Result<Point> {
        let scale_file = dir.join("scale");
        let scale: f64 = std::fs::read_to_string(&scale_file)
            .with_context(|| format!("reading {}", scale_file.display()))?
            .trim()
            .parse()
            .with_context(|| format!("{} is not a number", scale_file.display()))?;
        let run = dir.join("run");
        let epochs = read_epochs(&run)?;
        Ok(Point {
            devices,
            samples: samples_per_epoch(&run, epochs.len())?,
            compute_rate: training_rate(&run)? / scale,
            epochs,
            scale,
            link_bits,
        })
    }

    /// Mean seconds per epoch, in emulated time.
    pub fn seconds_per_epoch(&self) -> f64 {
        let n = self.epochs.len().max(1) as f64;
        self.epochs.iter().map(|e| e.seconds).sum::<f64>() / n * self.scale
    }

    /// Mean bytes per epoch each way through the coordinator's link: (to the
    /// devices, from them).
    pub fn bytes_per_epoch(&self) -> (f64, f64) {
        let n = self.epochs.len().max(1) as f64;
        (
            self.epochs.iter().map(|e| e.sent as f64).sum::<f64>() / n,
            self.epochs.iter().map(|e| e.received as f64).sum::<f64>() / n,
        )
    }

    /// Lower limit of an epoch set by the devices' compute alone.
    pub fn compute_bound(&self) -> f64 {
        self.samples / self.compute_rate.max(1e-9)
    }

    /// Lower limit of an epoch set by the coordinator's link alone (its
    /// busier direction: each way carries its own 100 Mbit/s).
    pub fn link_bound(&self) -> f64 {
        let (down, up) = self.bytes_per_epoch();
        link_seconds(down, up, self.link_bits)
    }

    /// Emulated seconds from the start until test accuracy first reached
    /// `target`, if it did.
    pub fn time_to(&self, target: f64) -> Option<f64> {
        let mut t = 0.0;
        for e in &self.epochs {
            t += e.seconds * self.scale;
            if e.test >= target {
                return Some(t);
            }
        }
        None
    }
}

/// The sweep's Markdown table; the first point is the baseline of speedup
/// and efficiency.
pub fn table(points: &[Point]) -> String {
    let mut out = String::from(
        "| devices | s/epoch | speedup | efficiency | MB/epoch via coordinator (down + up) \
         | compute bound s | link bound s | measured / max(bounds) | time to 99 % | \
         test acc. epoch 1 | final test acc. |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let Some(base) = points.first() else {
        return out;
    };
    let base_work = base.seconds_per_epoch() * base.devices as f64;
    for p in points {
        let t = p.seconds_per_epoch();
        let speedup = base.seconds_per_epoch() * base.devices as f64 / t;
        let efficiency = base_work / (t * p.devices as f64);
        let (down, up) = p.bytes_per_epoch();
        let bound = p.compute_bound().max(p.link_bound());
        let to99 = p
            .time_to(0.99)
            .map_or_else(|| "not reached".to_string(), |s| format!("{s:.1} s"));
        let first = p.epochs.first().map_or(f64::NAN, |e| e.test);
        let last = p.epochs.last().map_or(f64::NAN, |e| e.test);
        out.push_str(&format!(
            "| {} | {t:.2} | {speedup:.2} | {efficiency:.2} | {:.1} + {:.1} | {:.2} | {:.2} | {:.2} | {to99} | {:.2} % | {:.2} % |\n",
            p.devices,
            down / 1e6,
            up / 1e6,
            p.compute_bound(),
            p.link_bound(),
            t / bound,
            100.0 * first,
            100.0 * last,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn epoch(seconds: f64, test: f64) -> Epoch {
        Epoch {
            seconds,
            train: test,
            test,
            sent: 8_000_000,
            received: 4_000_000,
        }
    }

    fn point(devices: usize, seconds: f64) -> Point {
        Point {
            devices,
            epochs: vec![epoch(seconds, 0.98), epoch(seconds, 0.991)],
            scale: 1.0,
            samples: 60_000.0,
            compute_rate: 1_000.0 * devices as f64,
            link_bits: 100e6,
        }
    }

    #[test]
    fn bounds_speedup_and_efficiency_follow_from_the_measurements() {
        let one = point(1, 60.0);
        assert!((one.compute_bound() - 60.0).abs() < 1e-9);
        // 8 MB down per epoch at 100 Mbit/s: 0.64 s.
        assert!((one.link_bound() - 0.64).abs() < 1e-9);
        assert_eq!(one.time_to(0.99), Some(120.0));
        assert_eq!(one.time_to(0.995), None);
        let table = table(&[one, point(4, 20.0)]);
        let row = table.lines().nth(3).unwrap();
        assert!(
            row.starts_with("| 4 | 20.00 | 3.00 | 0.75 | 8.0 + 4.0 | 15.00 | 0.64 | 1.33 |"),
            "{row}"
        );
        assert!(table.lines().nth(2).unwrap().contains("| 120.0 s |"));
    }

    #[test]
    fn the_link_is_as_busy_as_its_busier_direction() {
        // 8 MB down in 1.28 emulated seconds at 100 Mbit/s: half the time.
        let e = epoch(2.56, 0.99);
        assert!((e.link_busy(100e6, 0.5) - 0.5).abs() < 1e-9);
        let up = Epoch {
            received: 16_000_000,
            ..e
        };
        assert!((up.link_busy(100e6, 0.5) - 1.0).abs() < 1e-9);
    }

    #[test]
    fn a_scaled_run_reports_emulated_time() {
        let mut p = point(2, 10.0);
        p.scale = 0.5;
        assert!((p.seconds_per_epoch() - 5.0).abs() < 1e-9);
        assert_eq!(p.time_to(0.99), Some(10.0));
    }
}
