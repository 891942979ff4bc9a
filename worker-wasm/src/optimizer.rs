//! SGD with momentum and weight decay, in MXNet's formulation:
//! `v ← momentum·v − lr·(g + wd·w);  w ← w + v`, with no decay on biases.

use crate::error::{Error, Result};

/// Hyper-parameters of [`sgd_step`]: the one definition used by the
/// compute, the wire protocol (the coordinator's welcome) and the hosts.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OptimizerConfig {
    /// Step size (`lr`).
    pub learning_rate: f32,
    /// Momentum coefficient in `[0, 1)`.
    pub momentum: f32,
    /// L2 weight decay (applied to weights, not biases).
    pub weight_decay: f32,
}

impl Default for OptimizerConfig {
    /// MXNet's LeNet example defaults: lr 0.05, momentum 0.9, wd 1e-4.
    fn default() -> Self {
        Self {
            learning_rate: 0.05,
            momentum: 0.9,
            weight_decay: 1e-4,
        }
    }
}

impl OptimizerConfig {
    /// The same settings with another learning rate (a schedule's step).
    pub fn with_learning_rate(self, learning_rate: f32) -> Self {
        Self {
            learning_rate,
            ..self
        }
    }

    /// Checks that every value is finite and in range.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidOptimizer(m));
        if !self.learning_rate.is_finite() || self.learning_rate < 0.0 {
            return bad(format!(
                "learning rate must be finite and >= 0, got {}",
                self.learning_rate
            ));
        }
        if !(0.0..1.0).contains(&self.momentum) {
            return bad(format!("momentum must be in [0, 1), got {}", self.momentum));
        }
        if !self.weight_decay.is_finite() || self.weight_decay < 0.0 {
            return bad(format!(
                "weight decay must be finite and >= 0, got {}",
                self.weight_decay
            ));
        }
        Ok(())
    }
}

/// One update of `params` (and `velocity`) from the mean gradient `grads`,
/// for one tensor whose decay multiplier is `wd_mult`.
pub fn sgd_step(
    cfg: &OptimizerConfig,
    wd_mult: f32,
    params: &mut [f32],
    velocity: &mut [f32],
    grads: &[f32],
) {
    let (lr, mom, wd) = (cfg.learning_rate, cfg.momentum, cfg.weight_decay * wd_mult);
    for ((w, v), &g) in params.iter_mut().zip(velocity.iter_mut()).zip(grads) {
        let step = lr * (g + wd * *w);
        *v = mom * *v - step;
        if cfg!(feature = "variant-v2") {
            // The test v2 steps with Nesterov momentum (the same as plain
            // momentum when momentum is 0, as on FedAvgM workers).
            *w += mom * *v - step;
        } else {
            *w += *v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn momentum_accumulates_and_decay_pulls_to_zero() {
        let cfg = OptimizerConfig {
            learning_rate: 0.5,
            momentum: 0.5,
            weight_decay: 0.0,
        };
        let (mut w, mut v) = (vec![1.0], vec![0.0]);
        sgd_step(&cfg, 1.0, &mut w, &mut v, &[1.0]);
        assert_eq!((w[0], v[0]), (0.5, -0.5));
        sgd_step(&cfg, 1.0, &mut w, &mut v, &[1.0]);
        assert_eq!((w[0], v[0]), (-0.25, -0.75));
        let decay = OptimizerConfig {
            learning_rate: 0.1,
            momentum: 0.0,
            weight_decay: 1.0,
        };
        let (mut w, mut v) = (vec![2.0], vec![0.0]);
        sgd_step(&decay, 1.0, &mut w, &mut v, &[0.0]);
        assert!((w[0] - 1.8).abs() < 1e-6);
        sgd_step(&decay, 0.0, &mut w, &mut v, &[0.0]);
        assert!(
            (w[0] - 1.8).abs() < 1e-6,
            "bias-like tensors are not decayed"
        );
    }

    #[test]
    fn rejects_out_of_range_hyper_parameters() {
        let ok = OptimizerConfig::default();
        assert!(ok.validate().is_ok());
        for bad in [
            OptimizerConfig {
                learning_rate: f32::NAN,
                ..ok
            },
            OptimizerConfig {
                learning_rate: -1.0,
                ..ok
            },
            OptimizerConfig {
                momentum: 1.0,
                ..ok
            },
            OptimizerConfig {
                weight_decay: f32::INFINITY,
                ..ok
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }
}
