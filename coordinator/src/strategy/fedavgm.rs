//! FedAvg with server momentum: the coordinator's default strategy.

use hearth_protocol::UpdateKind;
use hearth_worker::OptimizerConfig;

use super::aggregate::combine;
use super::shares::shares;
use super::{
    Aggregate, FitFailure, FitInstruction, FitResult, RoundContext, Strategy, StrategyState,
    WorkerView,
};

/// Name of the server-momentum tensor in [`StrategyState`].
const VELOCITY: &str = "velocity";
/// Name of the one-value tensor of samples aggregated so far (the warm-up's clock).
const SEEN: &str = "samples_seen";

/// FedAvg with momentum on the workers (local SGD) or on the server (FedAvgM).
///
/// Workers run `local_steps` SGD steps from the global parameters and
/// return the change; the server averages the changes weighted by samples,
/// `Δ̄`. With [`MomentumOn::Workers`] each worker steps with momentum, its
/// velocity kept across rounds, and the server adds `Δ̄`: one device is
/// exactly SGD with momentum. With [`MomentumOn::Server`] workers step
/// without it and the server applies it like MXNet's parameter server:
/// `v ← m·v + Δ̄; w ← w + v`; with one local step `Δ̄` is then exactly
/// `−lr·(ḡ + wd·w)` for the mean gradient `ḡ` of the round, so the update is
/// synchronous SGD with momentum over the round's global batch.
///
/// A round of `n` workers averages `n` times the samples of one worker's
/// round into one step, so with more devices an epoch has `n` times fewer
/// steps. [`LrScaling`] makes up for part of it as large-batch SGD does
/// (Goyal et al., 2017: a learning rate that grows with the batch, reached
/// by a warm-up): the workers' learning rate is scaled by `√n_eff` (or
/// `n_eff`), where `n_eff` is the round's batches over its largest share,
/// ramped from 1 over the first `warmup_samples` samples of the run, and
/// never past the run's largest rate ([`RoundContext::max_learning_rate`]):
/// early on every device steps at the peak, and as the schedule decays,
/// more devices keep the rate up for longer.
pub struct FedAvgM {
    local_steps: usize,
    early_local_steps: usize,
    momentum: f32,
    rule: Aggregate,
    velocity: Vec<f32>,
    scaling: LrScaling,
    warmup_samples: f64,
    seen: f64,
    momentum_on: MomentumOn,
    split: StepSplit,
}

/// Where momentum is applied.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum MomentumOn {
    /// Each worker steps with momentum, its velocity kept from round to
    /// round; the server adds the average change (one device is then
    /// exactly SGD with momentum, the study's recipe).
    Workers,
    /// Workers step without it; the server applies it to the average
    /// change, as MXNet's parameter server does.
    Server,
}

/// How many local steps a worker's batches are trained in, for a round of
/// `n_eff` devices (its batches over its largest share).
///
/// Averaging the changes of `n` devices that each took steps of `b` samples
/// moves the model like steps of `n·b` samples: with more devices an epoch
/// has fewer, larger steps. Growing the learning rate makes up for it only
/// up to the curvature's limit (the linear rule diverges at 11 devices).
/// Splitting each device's batches into smaller steps at the same learning
/// rate keeps one step's noise (learning rate over batch) where `√n` times
/// the learning rate would put it, but takes `√n` times as many steps, each
/// as stable as one device's.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum StepSplit {
    /// One local step per batch, whatever the devices (the study's recipe).
    None,
    /// `√n_eff` local steps per batch (steps of `batch/√n_eff` samples).
    Sqrt,
}

/// How the workers' learning rate grows with the devices of a round.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum LrScaling {
    /// The run's learning rate, whatever the devices.
    None,
    /// Times the square root of the round's devices.
    Sqrt,
    /// Times the round's devices (the linear scaling rule).
    Linear,
}

/// A scaled learning rate, never past the run's largest (by default the
/// rate one device steps at at its peak; a scaled rate still decays with
/// the schedule, later).
fn capped(rate: f32, round: &RoundContext) -> f32 {
    rate.min(round.max_learning_rate.max(round.learning_rate))
}

/// The devices a round of `samples` samples (or batches) counts as when its
/// largest share is `largest`: at least one.
fn n_eff(samples: f64, largest: f64) -> f64 {
    (samples / largest.max(1.0)).max(1.0)
}

impl FedAvgM {
    /// The learning rate's factor for a round of `samples` samples (or
    /// batches) whose largest share is `largest`, after `seen` samples of
    /// the run.
    pub fn scale(&self, samples: f64, largest: f64) -> f64 {
        let n = n_eff(samples, largest);
        let target = match self.scaling {
            LrScaling::None => 1.0,
            LrScaling::Sqrt => n.sqrt(),
            LrScaling::Linear => n,
        };
        let ramp = if self.warmup_samples > 0.0 {
            (self.seen / self.warmup_samples).min(1.0)
        } else {
            1.0
        };
        1.0 + (target - 1.0) * ramp
    }

    /// Local steps for `batches` batches of a round whose `n_eff` is
    /// `samples / largest` (see [`scale`](Self::scale)): at least one, and
    /// at least one per batch.
    pub fn steps(&self, batches: usize, samples: f64, largest: f64) -> usize {
        let n = n_eff(samples, largest);
        let per_batch = match self.split {
            StepSplit::None => 1.0,
            StepSplit::Sqrt => n.sqrt(),
        };
        ((batches as f64 * per_batch).round() as usize).max(batches)
    }

    /// The same strategy training each batch in `split` local steps.
    pub fn with_split(self, split: StepSplit) -> Self {
        Self { split, ..self }
    }

    /// The same strategy with `steps` batches per worker per round in the
    /// run's first, synchronous epochs ([`RoundContext::early`]).
    pub fn with_early_local_steps(self, steps: usize) -> Self {
        Self {
            early_local_steps: steps.max(1),
            ..self
        }
    }

    /// The same strategy with momentum applied `on` the workers or the server.
    pub fn with_momentum_on(self, on: MomentumOn) -> Self {
        Self {
            momentum_on: on,
            ..self
        }
    }

    /// The same strategy scaling its workers' learning rate by `scaling`,
    /// warmed up over the first `warmup_samples` samples.
    pub fn with_scaling(self, scaling: LrScaling, warmup_samples: f64) -> Self {
        Self {
            scaling,
            warmup_samples: warmup_samples.max(0.0),
            ..self
        }
    }
}

impl FedAvgM {
    /// `local_steps` batches per worker per round (scaled by speed), server momentum `momentum`.
    pub fn new(local_steps: usize, momentum: f32) -> Self {
        Self {
            local_steps: local_steps.max(1),
            early_local_steps: local_steps.max(1),
            momentum,
            rule: Aggregate::Mean,
            velocity: Vec::new(),
            scaling: LrScaling::None,
            warmup_samples: 0.0,
            seen: 0.0,
            momentum_on: MomentumOn::Server,
            split: StepSplit::None,
        }
    }

    /// The same strategy combining updates by `rule` instead of the mean.
    pub fn with_aggregate(self, rule: Aggregate) -> Self {
        Self { rule, ..self }
    }
}

impl Strategy for FedAvgM {
    fn name(&self) -> String {
        format!(
            "fedavgm(local_steps={} ({} early), momentum={} on {:?}, aggregate={:?}, lr_scaling={:?}, split_steps={:?})",
            self.local_steps,
            self.early_local_steps,
            self.momentum,
            self.momentum_on,
            self.rule,
            self.scaling,
            self.split
        )
    }

    fn initialize(&mut self, params: &[f32]) {
        self.velocity = vec![0.0; params.len()];
    }

    /// Workers step without momentum: the server applies it to the average.
    fn worker_optimizer(&self, run: OptimizerConfig) -> OptimizerConfig {
        if self.momentum_on == MomentumOn::Workers {
            return OptimizerConfig {
                momentum: self.momentum,
                ..run
            };
        }
        OptimizerConfig {
            momentum: 0.0,
            ..run
        }
    }

    fn configure_fit(
        &mut self,
        round: &RoundContext,
        workers: &[WorkerView],
    ) -> Vec<FitInstruction> {
        let local_steps = if round.early {
            self.early_local_steps
        } else {
            self.local_steps
        };
        let shares = shares(workers, local_steps, round.growth, round.pending);
        let total: usize = shares.iter().sum();
        let largest = shares.iter().copied().max().unwrap_or(1);
        let local = self.scale(total as f64, largest as f64) as f32;
        shares
            .into_iter()
            .map(|batches| FitInstruction {
                batches,
                steps: self.steps(batches, total as f64, largest as f64),
                learning_rate: capped(round.learning_rate * local, round),
                // Results are deltas: averaged, then stepped with momentum.
                reply: UpdateKind::Delta,
            })
            .collect()
    }

    fn aggregate_fit(
        &mut self,
        global: &mut [f32],
        results: &[FitResult],
        _failures: &[FitFailure],
    ) -> bool {
        // A failed worker's batches are trained again in a later round, so
        // this round's average is simply over the results that came back.
        let total: f64 = results.iter().map(|c| c.samples as f64).sum();
        if total <= 0.0 {
            return false;
        }
        if self.velocity.len() != global.len() {
            self.velocity = vec![0.0; global.len()];
        }
        let mean = combine(self.rule, results, global.len());
        self.seen += total;
        let m = match self.momentum_on {
            MomentumOn::Workers => 0.0,
            MomentumOn::Server => self.momentum,
        };
        for ((w, v), d) in global.iter_mut().zip(self.velocity.iter_mut()).zip(&mean) {
            *v = m * *v + d;
            *w += *v;
        }
        true
    }

    fn state(&self) -> StrategyState {
        StrategyState {
            tensors: [
                (VELOCITY.to_string(), self.velocity.clone()),
                (SEEN.to_string(), vec![self.seen as f32]),
            ]
            .into(),
        }
    }

    fn restore(&mut self, mut state: StrategyState) -> Result<(), String> {
        self.velocity = state
            .tensors
            .remove(VELOCITY)
            .ok_or_else(|| format!("the saved strategy state has no {VELOCITY:?}"))?;
        self.seen = state
            .tensors
            .remove(SEEN)
            .and_then(|t| t.first().copied())
            .map_or(0.0, f64::from);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::tests::view;
    use hearth_worker::{IMAGE_LEN, Model, ModelConfig};

    #[test]
    fn the_server_step_grows_with_the_round_after_a_warm_up() {
        let mut s = FedAvgM::new(4, 0.9).with_scaling(LrScaling::Linear, 1000.0);
        // 11 equal shares of 256: n_eff 11; nothing seen yet: factor 1.
        assert!((s.scale(11.0 * 256.0, 256.0) - 1.0).abs() < 1e-12);
        s.seen = 500.0;
        assert!((s.scale(11.0 * 256.0, 256.0) - 6.0).abs() < 1e-12);
        s.seen = 5000.0;
        assert!((s.scale(11.0 * 256.0, 256.0) - 11.0).abs() < 1e-12);
        // One device: no scaling, whatever the rule.
        assert!((s.scale(256.0, 256.0) - 1.0).abs() < 1e-12);
        let s = FedAvgM::new(4, 0.9).with_scaling(LrScaling::Sqrt, 0.0);
        assert!((s.scale(4.0 * 256.0, 256.0) - 2.0).abs() < 1e-12);
        let s = FedAvgM::new(4, 0.9);
        assert!((s.scale(4.0 * 256.0, 256.0) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn a_scaled_learning_rate_never_passes_the_runs_largest() {
        let mut s = FedAvgM::new(4, 0.9).with_scaling(LrScaling::Sqrt, 0.0);
        let four = [
            view("a", 0.0),
            view("b", 0.0),
            view("c", 0.0),
            view("d", 0.0),
        ];
        let rate = |s: &mut FedAvgM, now: f32, max: f32| {
            let round = RoundContext {
                round: 1,
                pending: 100,
                learning_rate: now,
                max_learning_rate: max,
                growth: 1,
                early: false,
            };
            s.configure_fit(&round, &four)[0].learning_rate
        };
        // At the peak: √4 = 2 would double it; it stays at the peak.
        assert_eq!(rate(&mut s, 0.05, 0.05), 0.05);
        // Later in the schedule: doubled, up to the peak.
        assert_eq!(rate(&mut s, 0.02, 0.05), 0.04);
        assert_eq!(rate(&mut s, 0.03, 0.05), 0.05);
        // A larger maximum (`--lr-max`) lets it grow past the peak, to there.
        assert_eq!(rate(&mut s, 0.05, 0.08), 0.08);
        assert_eq!(rate(&mut s, 0.03, 0.08), 0.06);
        // One device: the schedule's own rate.
        let one = s.configure_fit(
            &RoundContext {
                round: 1,
                pending: 100,
                learning_rate: 0.02,
                max_learning_rate: 0.05,
                growth: 1,
                early: false,
            },
            &four[..1],
        );
        assert_eq!(one[0].learning_rate, 0.02);
    }

    #[test]
    fn batches_split_into_sqrt_n_steps_only_when_asked() {
        let s = FedAvgM::new(4, 0.9).with_split(StepSplit::Sqrt);
        // 11 equal shares of 4 batches: √11 = 3.32 steps per batch.
        assert_eq!(s.steps(4, 44.0, 4.0), 13);
        // 4 devices: exactly 2 per batch; a share of one batch still splits.
        assert_eq!(s.steps(4, 16.0, 4.0), 8);
        assert_eq!(s.steps(1, 16.0, 4.0), 2);
        // One device, or nothing to do: the batches as they are.
        assert_eq!(s.steps(4, 4.0, 4.0), 4);
        assert_eq!(s.steps(0, 44.0, 4.0), 0);
        let plain = FedAvgM::new(4, 0.9);
        assert_eq!(plain.steps(4, 44.0, 4.0), 4);
        // Shares by speed: the round's n_eff, whatever one device's share.
        let mut s = s;
        let fit = s.configure_fit(
            &RoundContext {
                round: 1,
                pending: 100,
                learning_rate: 0.05,
                max_learning_rate: 0.05,
                growth: 1,
                early: false,
            },
            &[view("pi3", 1000.0), view("laptop", 3000.0)],
        );
        assert!(
            fit.iter()
                .all(|f| f.reply == UpdateKind::Delta && f.learning_rate == 0.05)
        );
        // Shares 2 and 6: n_eff 8/6, 1.15 steps per batch.
        let steps: Vec<usize> = fit.iter().map(|f| f.steps).collect();
        assert_eq!(steps, vec![2, 7]);
    }

    #[test]
    fn the_first_synchronous_epochs_have_their_own_local_steps() {
        let mut s = FedAvgM::new(4, 0.9).with_early_local_steps(2);
        let two = [view("a", 0.0), view("b", 0.0)];
        let batches = |s: &mut FedAvgM, early: bool| {
            let round = RoundContext {
                round: 1,
                pending: 100,
                learning_rate: 0.05,
                max_learning_rate: 0.05,
                growth: 1,
                early,
            };
            let fit = s.configure_fit(&round, &two);
            fit.iter().map(|f| f.batches).collect::<Vec<_>>()
        };
        assert_eq!(batches(&mut s, true), vec![2, 2]);
        assert_eq!(batches(&mut s, false), vec![4, 4]);
        // Unless asked, the same in every epoch.
        let mut plain = FedAvgM::new(4, 0.9);
        assert_eq!(batches(&mut plain, true), vec![4, 4]);
    }

    #[test]
    fn workers_step_without_momentum_and_the_state_round_trips() {
        let mut s = FedAvgM::new(1, 0.9);
        let opt = s.worker_optimizer(OptimizerConfig::default());
        assert_eq!((opt.momentum, opt.learning_rate), (0.0, 0.05));
        let mut global = vec![1.0f32; 3];
        s.initialize(&global);
        let r = FitResult {
            worker: "a".into(),
            samples: 2,
            update: vec![0.5, -0.25, 0.125],
        };
        assert!(s.aggregate_fit(&mut global, std::slice::from_ref(&r), &[]));
        assert!(!s.aggregate_fit(&mut global, &[], &[]), "nothing came back");
        let mut t = FedAvgM::new(1, 0.9);
        t.restore(s.state()).unwrap();
        let (mut a, mut b) = (global.clone(), global.clone());
        s.aggregate_fit(&mut a, std::slice::from_ref(&r), &[]);
        t.aggregate_fit(&mut b, std::slice::from_ref(&r), &[]);
        assert_eq!(a, b, "momentum carried over");
        assert!(t.restore(StrategyState::default()).is_err());
    }

    /// Deterministic MNIST-shaped bytes (unit test: no accuracy is claimed).
    fn batch(n: usize) -> (Vec<u8>, Vec<u8>) {
        let px = (0..n * IMAGE_LEN)
            .map(|i| ((i * 37 + i / 97) % 256) as u8)
            .collect();
        let lb = (0..n).map(|i| (i % 10) as u8).collect();
        (px, lb)
    }

    /// The mathematical check of synchronous SGD: with one local step, N
    /// workers each given b/N samples give the same new global parameters as
    /// one worker given all b — and as plain SGD with momentum on b.
    #[test]
    fn split_batch_equals_one_worker_and_plain_sgd_with_momentum() {
        let opt = OptimizerConfig {
            learning_rate: 0.05,
            momentum: 0.9,
            weight_decay: 1e-4,
        };
        let cfg = ModelConfig {
            arch: "lenet5".into(),
            seed: 3,
            optimizer: opt,
        };
        let worker_cfg = ModelConfig {
            optimizer: FedAvgM::new(1, 0.9).worker_optimizer(opt),
            ..cfg.clone()
        };
        let mut reference = Model::new(&cfg).unwrap();
        let w0 = reference.params().to_vec();
        let (px, lb) = batch(64);

        let run = |splits: usize, global: &mut Vec<f32>, strategy: &mut FedAvgM, step: usize| {
            let per = 64 / splits;
            let contributions: Vec<FitResult> = (0..splits)
                .map(|i| {
                    let mut m = Model::new(&worker_cfg).unwrap();
                    m.set_params(global).unwrap();
                    let r = i * per..(i + 1) * per;
                    m.train_batch(&px[r.start * IMAGE_LEN..r.end * IMAGE_LEN], &lb[r.clone()])
                        .unwrap();
                    let delta = m
                        .params()
                        .iter()
                        .zip(global.iter())
                        .map(|(a, b)| a - b)
                        .collect();
                    FitResult {
                        worker: format!("w{i}.{step}"),
                        samples: per as u32,
                        update: delta,
                    }
                })
                .collect();
            strategy.aggregate_fit(global, &contributions, &[]);
        };
        let (mut one, mut four) = (w0.clone(), w0.clone());
        let (mut s1, mut s4) = (FedAvgM::new(1, 0.9), FedAvgM::new(1, 0.9));
        s1.initialize(&one);
        s4.initialize(&four);
        for step in 0..3 {
            run(1, &mut one, &mut s1, step);
            run(4, &mut four, &mut s4, step);
            reference.train_batch(&px, &lb).unwrap();
        }
        let max_diff = |a: &[f32], b: &[f32]| {
            a.iter()
                .zip(b)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0f32, f32::max)
        };
        let moved = max_diff(&one, &w0);
        assert!(moved > 1e-3, "parameters moved by {moved}");
        // Float tolerance: the same sums in a different order.
        assert!(
            max_diff(&one, &four) < 1e-5,
            "1 vs 4 workers differ by {}",
            max_diff(&one, &four)
        );
        assert!(
            max_diff(&one, reference.params()) < 1e-5,
            "vs plain SGD: {}",
            max_diff(&one, reference.params())
        );
    }
}
