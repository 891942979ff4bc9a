//! The federated algorithm behind a small trait with the phases of a
//! federated strategy (Flower's `configure_fit`, `aggregate_fit(results,
//! failures)`, `configure_evaluate`), so strategies are interchangeable and
//! testable without sockets. The round engine calls it; the strategy never
//! sees a connection.

mod aggregate;
mod fedavgm;
mod shares;

use std::collections::BTreeMap;

use hearth_protocol::UpdateKind;
use hearth_worker::OptimizerConfig;
use serde::{Deserialize, Serialize};

pub use fedavgm::{FedAvgM, LrScaling, MomentumOn, StepSplit};

/// How a round's updates are combined into one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Aggregate {
    /// The mean weighted by samples (FedAvg).
    Mean,
    /// The coordinate-wise median (robust to a minority of bad updates).
    Median,
    /// The coordinate-wise mean of what is left after dropping the largest
    /// and smallest fifth (at least one each with three or more updates).
    TrimmedMean,
}

/// A connected worker as a strategy sees it.
#[derive(Debug, Clone)]
pub struct WorkerView {
    /// Worker name.
    pub name: String,
    /// Measured training throughput (0 until its first result).
    pub images_per_second: f64,
}

/// The round being configured.
#[derive(Debug, Clone, Copy)]
pub struct RoundContext {
    /// Round number.
    pub round: u64,
    /// Batches of the epoch waiting in the queue.
    pub pending: usize,
    /// The run's learning rate for this round (from its schedule).
    pub learning_rate: f32,
    /// The largest rate a strategy that scales the learning rate with the
    /// devices may give (`--lr-max`; by default the run's peak, `--lr`).
    pub max_learning_rate: f32,
    /// Local steps are the strategy's times this (the engine grows it when
    /// devices wait on the link; 1 otherwise).
    pub growth: usize,
    /// One of the run's first, synchronous epochs (`--train-ahead-after`):
    /// a strategy may average more often while the model changes fastest.
    pub early: bool,
}

/// What one worker is asked to do in a round (Flower's `FitIns`). Per-worker
/// options, such as an update encoding, are fields of this struct.
#[derive(Debug, Clone, PartialEq)]
pub struct FitInstruction {
    /// Batches to train on (0: sit this round out).
    pub batches: usize,
    /// Local steps their samples are trained in, of near-equal size (at
    /// least one; one per batch is the study's recipe).
    pub steps: usize,
    /// Learning rate of its local steps.
    pub learning_rate: f32,
    /// What its result must carry.
    pub reply: UpdateKind,
}

impl FitInstruction {
    /// Local steps for `taken` batches (the ledger may have had fewer than
    /// [`batches`](Self::batches) left, or the worker holds others sent
    /// ahead): the instruction's steps per batch, at least one per batch.
    pub fn steps_for(&self, taken: usize) -> usize {
        if self.batches == 0 {
            return taken;
        }
        let per_batch = self.steps as f64 / self.batches as f64;
        ((taken as f64 * per_batch).round() as usize).max(taken)
    }

    /// Gives the worker `batches` batches instead, at the same steps per batch.
    pub fn set_batches(&mut self, batches: usize) {
        self.steps = self.steps_for(batches);
        self.batches = batches;
    }
}

/// `samples` split into `steps` local steps of near-equal size (the larger
/// ones first), in order; no empty step.
pub fn split_steps(samples: usize, steps: usize) -> Vec<u32> {
    let steps = steps.clamp(1, samples.max(1));
    let (size, rest) = (samples / steps, samples % steps);
    (0..steps)
        .map(|i| (size + usize::from(i < rest)) as u32)
        .filter(|&n| n > 0)
        .collect()
}

/// One worker's validated result of a round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FitResult {
    /// Worker name.
    pub worker: String,
    /// Samples it trained on.
    pub samples: u32,
    /// What it sent: the change of the parameters, or the parameters (as its
    /// instruction asked).
    pub update: Vec<f32>,
}

/// Why a worker of the round produced nothing usable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum FailureReason {
    /// The connection closed, or the worker said goodbye.
    Left,
    /// No answer by its deadline.
    MissedDeadline,
    /// It reported that the round failed.
    Reported(String),
    /// Its result was refused (the reason went to the worker and the log).
    Rejected,
}

/// A worker of the round whose batches went back to the queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FitFailure {
    /// Worker name.
    pub worker: String,
    /// Batches it held.
    pub batches: usize,
    /// What happened.
    pub reason: FailureReason,
}

/// A strategy's own state (server momentum and the like): named tensors, so a
/// run state can carry it bit for bit.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StrategyState {
    /// Tensors by name.
    pub tensors: BTreeMap<String, Vec<f32>>,
}

/// A federated training strategy.
pub trait Strategy: Send {
    /// Short name for logs and the run summary.
    fn name(&self) -> String;
    /// Starts from these global parameters.
    fn initialize(&mut self, params: &[f32]);
    /// The optimizer workers step with, given the run's settings.
    fn worker_optimizer(&self, run: OptimizerConfig) -> OptimizerConfig;
    /// Phase 1: one instruction per worker (same order as `workers`); the
    /// batches must not add up to more than `round.pending`.
    fn configure_fit(
        &mut self,
        round: &RoundContext,
        workers: &[WorkerView],
    ) -> Vec<FitInstruction>;
    /// Phase 2: folds the round's results (in worker-name order, whatever
    /// order they arrived in) into `global`; `failures` are the workers whose
    /// batches went back to the queue. Returns whether `global` changed.
    fn aggregate_fit(
        &mut self,
        global: &mut [f32],
        results: &[FitResult],
        failures: &[FitFailure],
    ) -> bool;
    /// Phase 3: the parameters to evaluate on the test set after `epoch`
    /// (`None`: skip this epoch's evaluation).
    fn configure_evaluate(&self, epoch: usize, global: &[f32]) -> Option<Vec<f32>> {
        let _ = epoch;
        Some(global.to_vec())
    }
    /// Its state, to be saved with the run.
    fn state(&self) -> StrategyState;
    /// Takes back a state [`state`](Self::state) handed out.
    fn restore(&mut self, state: StrategyState) -> Result<(), String>;
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A worker named `name` measured at `speed` images a second (0: not yet).
    pub(crate) fn view(name: &str, speed: f64) -> WorkerView {
        WorkerView {
            name: name.into(),
            images_per_second: speed,
        }
    }

    #[test]
    fn steps_split_their_samples_exactly() {
        assert_eq!(split_steps(256, 13).iter().sum::<u32>(), 256);
        assert_eq!(split_steps(256, 13)[..2], [20, 20]);
        assert_eq!(*split_steps(256, 13).last().unwrap(), 19);
        assert_eq!(split_steps(64, 1), vec![64]);
        // Never more steps than samples, never an empty step.
        assert_eq!(split_steps(3, 8), vec![1, 1, 1]);
        assert_eq!(split_steps(0, 4), Vec::<u32>::new());
        assert_eq!(split_steps(5, 0), vec![5]);
    }

    #[test]
    fn fewer_batches_keep_the_steps_per_batch() {
        let fit = FitInstruction {
            batches: 4,
            steps: 13,
            learning_rate: 0.05,
            reply: UpdateKind::Delta,
        };
        assert_eq!(fit.steps_for(4), 13);
        assert_eq!(fit.steps_for(2), 7);
        assert_eq!(fit.steps_for(0), 0);
        let none = FitInstruction {
            batches: 0,
            steps: 0,
            ..fit
        };
        assert_eq!(none.steps_for(3), 3, "one per batch");
        let mut fit = fit;
        fit.set_batches(1);
        assert_eq!((fit.batches, fit.steps), (1, 3));
        fit.set_batches(0);
        assert_eq!((fit.batches, fit.steps), (0, 0));
    }
}
