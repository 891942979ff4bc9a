//! The federated algorithm behind a small trait with the phases of a
//! federated strategy (Flower's `configure_fit`, `aggregate_fit(results,
//! failures)`, `configure_evaluate`), so strategies are interchangeable and
//! testable without sockets. The round engine calls it; the strategy never
//! sees a connection.

mod aggregate;
mod fedavgm;

use std::collections::BTreeMap;

use hearth_protocol::UpdateKind;
use hearth_worker::OptimizerConfig;
use serde::{Deserialize, Serialize};

pub use fedavgm::{FedAvgM, LrScaling, MomentumOn};

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
}

/// What one worker is asked to do in a round (Flower's `FitIns`). Per-worker
/// options, such as an update encoding, are fields of this struct.
#[derive(Debug, Clone, PartialEq)]
pub struct FitInstruction {
    /// Batches to train on, one local step each (0: sit this round out).
    pub batches: usize,
    /// Learning rate of its local steps.
    pub learning_rate: f32,
    /// What its result must carry.
    pub reply: UpdateKind,
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
