//! What keeps one bad device from wrecking the run: statistics in range, an
//! update norm bounded by the recent honest ones, nothing-updates refused,
//! and probation for workers whose messages keep being refused.

use std::collections::{BTreeMap, VecDeque};

use hearth_protocol::RoundResult;
use serde::{Deserialize, Serialize};

/// What to do with an update whose norm is past the bound (one more than
/// [`ABSURD`] times the bound is refused either way).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum UpdateGuard {
    /// Scale it down to the bound and use it (an honest batch that is merely
    /// unusual still counts).
    Clip,
    /// Refuse it: its batches go back to the queue. With a single worker an
    /// honest outlier batch is then retried from the same parameters and
    /// refused again, so this suits households with several devices.
    Reject,
}

/// Past this many times the bound an update is refused, clipped or not: no
/// honest step is that far from the others.
pub const ABSURD: f64 = 100.0;

/// Accepted update norms (per batch, per unit of learning rate) the bound
/// is computed from.
const WINDOW: usize = 64;
/// Norms needed before the bound follows them (until then: the model's own norm).
const CALIBRATED: usize = 3;
/// An update below this fraction of the median norm did no training.
const FLOOR: f64 = 1e-4;
/// Below this size relative to the model an honest update may be nothing
/// at all: f32 parameters (relative resolution 1.2e-7) do not move by
/// steps that small, so the floor is not applied.
const RESOLUTION: f64 = 1e-5;
/// Largest mean per-sample loss taken as real (cross-entropy of a badly
/// wrong f32 prediction stays far below it).
const MAX_MEAN_LOSS: f64 = 1e3;

/// The Euclidean norm of `values`, summed in f64 over eight independent
/// lanes (a single running sum waits on each add: eight times slower).
pub fn norm(values: &[f32]) -> f64 {
    let mut lanes = [0.0f64; 8];
    let chunks = values.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for (l, &x) in lanes.iter_mut().zip(c) {
            *l += f64::from(x) * f64::from(x);
        }
    }
    let tail: f64 = rest.iter().map(|&x| f64::from(x) * f64::from(x)).sum();
    (lanes.iter().sum::<f64>() + tail).sqrt()
}

/// The guard's memory, part of the run state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GuardState {
    /// Recent accepted update norms, per batch and per unit of learning rate
    /// (a step's size follows its learning rate: a cosine schedule's last
    /// steps are a million times smaller than its first, and honest).
    pub recent: VecDeque<f64>,
    /// Workers on probation, by name, with the last reason.
    pub suspects: BTreeMap<String, String>,
}

/// How an update passed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    /// As sent.
    Accepted,
    /// As sent, but too small to tell from nothing (the learning rate is so
    /// low that f32 parameters barely move): it counts as done, and proves
    /// nothing about the worker (probation neither starts nor ends on it).
    Unmeasured,
    /// Scaled down from `from` to `to` (norms).
    Clipped {
        /// Its norm as sent.
        from: f64,
        /// The bound.
        to: f64,
    },
}

impl GuardState {
    fn median(&self) -> Option<f64> {
        if self.recent.len() < CALIBRATED {
            return None;
        }
        let mut v: Vec<f64> = self.recent.iter().copied().collect();
        v.sort_by(f64::total_cmp);
        Some(v[v.len() / 2])
    }

    /// Checks the statistics and the norm of `r` (already well formed, for
    /// `batches` batches trained at learning rate `lr`, against a model of
    /// norm `model_norm`); clips it in place if `guard` says so. The error is
    /// the reason to refuse it.
    pub fn judge(
        &mut self,
        r: &mut RoundResult,
        batches: usize,
        lr: f64,
        model_norm: f64,
        guard: UpdateGuard,
        factor: f64,
    ) -> Result<Verdict, String> {
        let samples = f64::from(r.samples.max(1));
        if !r.loss_sum.is_finite() || r.loss_sum < 0.0 || r.loss_sum > samples * MAX_MEAN_LOSS {
            return Err(format!(
                "loss sum {} is not a loss of {} samples",
                r.loss_sum, r.samples
            ));
        }
        if r.correct > r.samples {
            return Err(format!("{} correct of {} samples", r.correct, r.samples));
        }
        let batches = batches.max(1) as f64;
        let norm = norm(&r.values);
        if lr.is_nan() || lr <= 0.0 {
            // A step at learning rate 0 changes nothing: only nothing is honest.
            return if norm == 0.0 {
                Ok(Verdict::Unmeasured)
            } else {
                Err(format!("update norm {norm:.3e} at learning rate 0"))
            };
        }
        let per_batch = norm / batches / lr;
        let median = self.median();
        // Whether an honest update this round can be told from nothing.
        let resolvable = median.is_none_or(|m| m * batches * lr >= RESOLUTION * model_norm);
        if resolvable && (norm == 0.0 || median.is_some_and(|m| per_batch < FLOOR * m)) {
            return Err(format!(
                "update norm {norm:.3e} is next to nothing for learning rate {lr:.3e}: no training happened"
            ));
        }
        let bound = match median {
            Some(m) => factor * m * batches * lr,
            // Before the bound is calibrated: no honest round moves the
            // model by as much as its whole size.
            None => model_norm.max(1.0),
        };
        let verdict = if norm <= bound && !resolvable {
            Verdict::Unmeasured
        } else if norm <= bound {
            Verdict::Accepted
        } else if guard == UpdateGuard::Clip && norm <= ABSURD * bound {
            let scale = (bound / norm) as f32;
            r.values.iter_mut().for_each(|x| *x *= scale);
            Verdict::Clipped {
                from: norm,
                to: bound,
            }
        } else {
            return Err(format!(
                "update norm {norm:.3e} is past the bound {bound:.3e} ({factor} times the recent median per batch)"
            ));
        };
        if resolvable {
            self.recent.push_back(per_batch.min(bound / batches / lr));
        }
        while self.recent.len() > WINDOW {
            self.recent.pop_front();
        }
        Ok(verdict)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hearth_protocol::UpdateKind;

    fn result(values: Vec<f32>) -> RoundResult {
        RoundResult {
            round: 1,
            params_version: 0,
            samples: 64,
            loss_sum: 64.0 * 2.3,
            correct: 6,
            kind: UpdateKind::Delta,
            values,
            encoding: hearth_protocol::Encoding::F32,
            compute_seconds: 0.0,
        }
    }

    #[test]
    fn statistics_out_of_range_are_refused() {
        let mut g = GuardState::default();
        for (loss, correct) in [(f64::NAN, 0), (-1.0, 0), (1e300, 0), (1.0, 65)] {
            let mut r = result(vec![0.1; 4]);
            (r.loss_sum, r.correct) = (loss, correct);
            assert!(
                g.judge(&mut r, 1, 1.0, 1.0, UpdateGuard::Reject, 10.0)
                    .is_err()
            );
        }
    }

    #[test]
    fn huge_and_empty_updates_are_refused_or_clipped() {
        let mut g = GuardState::default();
        let mut huge = result(vec![1e30; 4]);
        let e = g
            .judge(&mut huge, 1, 1.0, 5.0, UpdateGuard::Clip, 10.0)
            .unwrap_err();
        assert!(
            e.contains("bound"),
            "absurd is refused even when clipping: {e}"
        );
        assert!(
            g.judge(
                &mut result(vec![0.0; 4]),
                1,
                1.0,
                5.0,
                UpdateGuard::Reject,
                10.0
            )
            .is_err()
        );
        for _ in 0..5 {
            let v = g.judge(
                &mut result(vec![0.01; 4]),
                1,
                1.0,
                5.0,
                UpdateGuard::Reject,
                10.0,
            );
            assert_eq!(v, Ok(Verdict::Accepted));
        }
        // Calibrated: 0.02 per batch is the median; 2 batches may reach 0.4.
        assert!(
            g.judge(
                &mut result(vec![0.15; 4]),
                2,
                1.0,
                5.0,
                UpdateGuard::Reject,
                10.0
            )
            .is_ok()
        );
        let mut big = result(vec![1.0; 4]);
        let v = g
            .judge(&mut big, 2, 1.0, 5.0, UpdateGuard::Clip, 10.0)
            .unwrap();
        assert!(
            matches!(v, Verdict::Clipped { from, to } if from == 2.0 && (to - 0.4).abs() < 1e-6)
        );
        let clipped: f64 = big
            .values
            .iter()
            .map(|&x| f64::from(x * x))
            .sum::<f64>()
            .sqrt();
        assert!((clipped - 0.4).abs() < 1e-6, "{clipped}");
        let e = g
            .judge(
                &mut result(vec![1e-9; 4]),
                1,
                1.0,
                5.0,
                UpdateGuard::Reject,
                10.0,
            )
            .unwrap_err();
        assert!(e.contains("nothing"), "{e}");
    }

    #[test]
    fn the_bound_and_the_floor_follow_the_learning_rate() {
        let mut g = GuardState::default();
        for _ in 0..5 {
            let r = g.judge(
                &mut result(vec![0.01; 4]),
                1,
                0.05,
                5.0,
                UpdateGuard::Reject,
                10.0,
            );
            assert_eq!(r, Ok(Verdict::Accepted));
        }
        // The last steps of a cosine schedule: a million times smaller, honest.
        let tiny = g.judge(
            &mut result(vec![1e-8; 4]),
            1,
            5e-8,
            5.0,
            UpdateGuard::Reject,
            10.0,
        );
        assert_eq!(tiny, Ok(Verdict::Unmeasured));
        // The same update at the peak rate did no training.
        let e = g
            .judge(
                &mut result(vec![1e-8; 4]),
                1,
                0.05,
                5.0,
                UpdateGuard::Reject,
                10.0,
            )
            .unwrap_err();
        assert!(e.contains("nothing"), "{e}");
        // And a peak-sized step at a tiny rate is far past the bound.
        let far = g.judge(
            &mut result(vec![0.01; 4]),
            1,
            5e-8,
            5.0,
            UpdateGuard::Reject,
            10.0,
        );
        assert!(far.is_err());
        // So small a step that f32 parameters may not move at all: nothing is honest.
        let vanished = g.judge(
            &mut result(vec![0.0; 4]),
            1,
            1e-12,
            5.0,
            UpdateGuard::Reject,
            10.0,
        );
        assert_eq!(vanished, Ok(Verdict::Unmeasured));
        // Learning rate 0: only an update of exactly nothing is honest.
        let zero = g.judge(
            &mut result(vec![0.0; 4]),
            1,
            0.0,
            5.0,
            UpdateGuard::Reject,
            10.0,
        );
        assert_eq!(zero, Ok(Verdict::Unmeasured));
        assert!(
            g.judge(
                &mut result(vec![1e-9; 4]),
                1,
                0.0,
                5.0,
                UpdateGuard::Reject,
                10.0
            )
            .is_err()
        );
    }
}
