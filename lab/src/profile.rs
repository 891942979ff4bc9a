//! Device and link profiles: how much CPU an emulated device gets and how
//! its link is shaped.

/// One kind of emulated device.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceProfile {
    /// Its name on the command line.
    pub name: &'static str,
    /// Its CPU quota, in percent of one core of this machine.
    pub cpu_percent: u32,
    /// What it stands for.
    pub about: &'static str,
}

/// The device profiles.
pub const DEVICES: &[DeviceProfile] = &[DeviceProfile {
    name: "pi3",
    cpu_percent: 15,
    about: "one Cortex-A53 core of a Raspberry Pi 3 as the study's MXNet emulation \
            measured it (15 % of a core of this machine)",
}];

/// One kind of link.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkProfile {
    /// Its name on the command line.
    pub name: &'static str,
    /// `tc tbf` rate.
    pub rate: &'static str,
    /// `tc tbf` burst.
    pub burst: &'static str,
}

/// The link profiles.
pub const LINKS: &[LinkProfile] = &[LinkProfile {
    name: "100mbit",
    rate: "100mbit",
    burst: "32kbit",
}];

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_are_found_by_name_and_an_unknown_one_lists_the_known() {
        assert_eq!(device("pi3").map(|p| p.cpu_percent), Ok(15));
        assert_eq!(link("100mbit").map(|l| l.rate), Ok("100mbit"));
        assert!(device("pi9").unwrap_err().contains("pi3"));
        assert!(link("carrier-pigeon").unwrap_err().contains("100mbit"));
    }
}
