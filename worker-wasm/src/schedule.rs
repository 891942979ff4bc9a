//! Learning-rate schedules over a whole run, shared by every driver of
//! training (local runs, the coordinator, the browser).

/// How the learning rate evolves from its peak over `total` steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LrSchedule {
    /// The peak rate throughout (MXNet's example within its first 10 epochs).
    Constant,
    /// Half-cosine from the peak down to zero at the last step.
    #[default]
    Cosine,
}

impl LrSchedule {
    /// The rate at `step` of `total` for peak rate `peak`.
    pub fn rate(self, peak: f32, step: usize, total: usize) -> f32 {
        match self {
            LrSchedule::Constant => peak,
            LrSchedule::Cosine => {
                let t = step.min(total) as f64 / total.max(1) as f64;
                (peak as f64 * 0.5 * (1.0 + (core::f64::consts::PI * t).cos())) as f32
            }
        }
    }

    /// Parses `constant` or `cosine`.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "constant" => Some(LrSchedule::Constant),
            "cosine" => Some(LrSchedule::Cosine),
            _ => None,
        }
    }
}

impl core::str::FromStr for LrSchedule {
    type Err = String;
    fn from_str(name: &str) -> Result<Self, String> {
        Self::parse(name)
            .ok_or_else(|| format!("unknown schedule {name:?}: use cosine or constant"))
    }
}

impl core::fmt::Display for LrSchedule {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            LrSchedule::Constant => "constant",
            LrSchedule::Cosine => "cosine",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_starts_at_peak_and_ends_at_zero() {
        let s = LrSchedule::Cosine;
        assert_eq!(s.rate(0.05, 0, 100), 0.05);
        assert!((s.rate(0.05, 50, 100) - 0.025).abs() < 1e-7);
        assert!(s.rate(0.05, 100, 100).abs() < 1e-9);
        assert_eq!(LrSchedule::Constant.rate(0.05, 99, 100), 0.05);
        assert_eq!(LrSchedule::parse("cosine"), Some(s));
        assert_eq!(LrSchedule::parse("linear"), None);
    }
}
