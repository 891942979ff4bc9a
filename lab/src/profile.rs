//! Device and link profiles: how much CPU an emulated device gets and how
//! its link is shaped, and the household specs (`11`, `pi3:6,pi4:3,laptop:2`)
//! that name them.
//!
//! A device's CPU quota comes from a public benchmark figure, never from a
//! target throughput: the profile's single-thread `sysbench cpu` score (1.0.20,
//! `sysbench cpu --threads=1 --time=60 run`, primes up to 10,000) over the
//! same benchmark's score on this machine's core. A faster training kernel
//! then makes an emulated Pi faster exactly as it would make a real one.
//! Each emulated device stands for **one core** of the device it names
//! (hosts train with one thread).

/// How a device profile's CPU quota is set.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Cpu {
    /// Its public single-thread sysbench score (events/s), divided by this
    /// machine's.
    Sysbench(f64),
    /// This fraction of one core of this machine, whatever its score.
    Fixed(f64),
}

/// One kind of emulated device.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceProfile {
    /// Its name on the command line.
    pub name: &'static str,
    /// How its CPU quota is set.
    pub cpu: Cpu,
    /// CFS period of its quota, microseconds: short, so the device runs
    /// slowly all the time as a real one does, rather than at full speed
    /// for a slice of every long period.
    pub period_us: u64,
    /// What it stands for, and where its figure comes from.
    pub about: &'static str,
}

impl DeviceProfile {
    /// Its quota, in cores of this machine, given this machine's
    /// single-thread sysbench score.
    pub fn cores(&self, host_sysbench: f64) -> f64 {
        match self.cpu {
            Cpu::Sysbench(score) => score / host_sysbench,
            Cpu::Fixed(cores) => cores,
        }
    }
}

/// Raspberry Pi 3 Model B+ (Cortex-A53 at 1.4 GHz), single thread, from
/// "Raspberry Pi CPU Benchmarks", leoncode.co.uk/articles/raspberry-pi-benchmarks
/// (sysbench 1.0.20; Pi 4: 1,477.83; Pi 5: 2,737.49).
const PI3_PLUS_SYSBENCH: f64 = 687.45;
/// The same page's Raspberry Pi 4 (Cortex-A72 at 1.5 GHz) figure.
const PI4_SYSBENCH: f64 = 1477.83;

/// CFS period of the profiles derived from hardware figures: 10 ms.
const SMOOTH_PERIOD_US: u64 = 10_000;

/// The device profiles. Edit here to add one: a name, a figure and what it is.
pub const DEVICES: &[DeviceProfile] = &[
    DeviceProfile {
        name: "pi3",
        // The study's boards are Pi 3 Model B: the same Cortex-A53 at 1.2 GHz,
        // so the B+ figure scaled by clock (an integer loop scales with it).
        cpu: Cpu::Sysbench(PI3_PLUS_SYSBENCH * 1.2 / 1.4),
        period_us: SMOOTH_PERIOD_US,
        about: "one Cortex-A53 core of a Raspberry Pi 3 Model B at 1.2 GHz \
                (sysbench 687.45 events/s for the 1.4 GHz Pi 3 B+, scaled by clock)",
    },
    DeviceProfile {
        name: "pi4",
        cpu: Cpu::Sysbench(PI4_SYSBENCH),
        period_us: SMOOTH_PERIOD_US,
        about: "one Cortex-A72 core of a Raspberry Pi 4 at 1.5 GHz (sysbench 1,477.83 events/s)",
    },
    DeviceProfile {
        name: "laptop",
        cpu: Cpu::Fixed(1.0),
        period_us: SMOOTH_PERIOD_US,
        about: "one x86-64 laptop-class core: one core of this machine",
    },
    DeviceProfile {
        name: "mxnet-pi3",
        cpu: Cpu::Fixed(0.15),
        // As measured: 15,000 µs of every 100,000.
        period_us: 100_000,
        about: "the emulation the issue's MXNet dist_sync figures were measured on: \
                15 % of a core of this machine per device",
    },
];

/// One kind of link.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkProfile {
    /// Its name on the command line.
    pub name: &'static str,
    /// Rate in each direction, kbit/s (`tc tbf rate`).
    pub rate_kbit: u64,
    /// `tc tbf` burst, bytes.
    pub burst_bytes: u64,
    /// What it stands for.
    pub about: &'static str,
}

/// The link profiles.
pub const LINKS: &[LinkProfile] = &[
    LinkProfile {
        name: "100mbit",
        rate_kbit: 100_000,
        burst_bytes: 4_000,
        about: "the study's 100 Mbit/s switched Ethernet",
    },
    LinkProfile {
        name: "wifi",
        // The Pi 3's BCM43438 is single-stream 802.11n at 2.4 GHz (72.2 Mbit/s
        // PHY at 20 MHz); TCP gets about half of a PHY rate.
        rate_kbit: 35_000,
        burst_bytes: 4_000,
        about: "single-stream 2.4 GHz 802.11n as on a Pi 3 (72 Mbit/s PHY, about 35 Mbit/s of TCP)",
    },
];

/// The device profile called `name`.
pub fn device(name: &str) -> Result<&'static DeviceProfile, String> {
    DEVICES.iter().find(|p| p.name == name).ok_or_else(|| {
        let known: Vec<_> = DEVICES.iter().map(|p| p.name).collect();
        format!("no device profile {name:?} (known: {})", known.join(", "))
    })
}

/// The link profile called `name`.
pub fn link(name: &str) -> Result<&'static LinkProfile, String> {
    LINKS.iter().find(|p| p.name == name).ok_or_else(|| {
        let known: Vec<_> = LINKS.iter().map(|p| p.name).collect();
        format!("no link profile {name:?} (known: {})", known.join(", "))
    })
}

/// The devices of a household spec: a count (`11`, each of `default`) or
/// `profile:count` pairs (`pi3:6,pi4:3,laptop:2`), in order.
pub fn household(
    spec: &str,
    default: &'static DeviceProfile,
) -> Result<Vec<&'static DeviceProfile>, String> {
    let spec = spec.trim();
    if let Ok(n) = spec.parse::<usize>() {
        if n == 0 {
            return Err("a household needs at least one device".into());
        }
        return Ok(vec![default; n]);
    }
    let mut devices = Vec::new();
    for part in spec.split(',') {
        let (name, count) = part
            .trim()
            .split_once(':')
            .ok_or_else(|| format!("{part:?} is not PROFILE:COUNT"))?;
        let count: usize = count
            .parse()
            .map_err(|_| format!("{count:?} in {part:?} is not a count"))?;
        let profile = device(name)?;
        devices.extend(std::iter::repeat_n(profile, count));
    }
    if devices.is_empty() {
        return Err("a household needs at least one device".into());
    }
    Ok(devices)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_are_found_by_name_and_an_unknown_one_lists_the_known() {
        assert_eq!(device("mxnet-pi3").map(|p| p.cores(2000.0)), Ok(0.15));
        assert_eq!(link("100mbit").map(|l| l.rate_kbit), Ok(100_000));
        assert!(device("pi9").unwrap_err().contains("pi3"));
        assert!(link("carrier-pigeon").unwrap_err().contains("wifi"));
    }

    #[test]
    fn a_quota_is_the_public_figure_over_this_machines() {
        let pi4 = device("pi4").unwrap();
        assert!((pi4.cores(1477.83 * 2.0) - 0.5).abs() < 1e-9);
        let pi3 = device("pi3").unwrap();
        assert!((pi3.cores(687.45) - 1.2 / 1.4).abs() < 1e-9);
    }

    #[test]
    fn households_are_a_count_or_profile_counts() {
        let pi3 = device("pi3").unwrap();
        assert_eq!(household("3", pi3).unwrap().len(), 3);
        let mixed = household("pi3:6,pi4:3,laptop:2", pi3).unwrap();
        let names: Vec<_> = mixed.iter().map(|p| p.name).collect();
        assert_eq!(names.len(), 11);
        assert_eq!(
            (names[0], names[6], names[9]),
            ("pi3", "pi4", "laptop"),
            "in order"
        );
        assert!(household("0", pi3).is_err());
        assert!(household("pi3", pi3).unwrap_err().contains("PROFILE:COUNT"));
        assert!(household("pi3:x", pi3).unwrap_err().contains("count"));
        assert!(household("pi7:2", pi3).unwrap_err().contains("known"));
    }
}
