//! What the engine tells its observers: one event type for the metrics and
//! ledger files, the progress bars and tables, the dashboard and the logs.

use std::sync::Arc;
use std::time::Duration;

use hearth_protocol::WorkerKind;
use serde::{Deserialize, Serialize};

use super::state::{RunState, WorkerReport};
use crate::ledger::LedgerEntry;

/// Why a worker's batches went back to the queue.
#[derive(Debug, Clone, PartialEq)]
pub enum Requeue {
    /// It left mid-round (closed, failed, or said goodbye).
    Left,
    /// It did not answer by its deadline, after `waited`.
    MissedDeadline {
        /// Time since the assignment.
        waited: Duration,
    },
    /// It reported that it could not do the round.
    Failed(String),
    /// Its result was refused.
    Rejected,
}

/// What happened to a component (see [`Notice::Component`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ComponentEvent {
    /// A verified component arrived; its rollout begins.
    Arrived,
    /// It arrived but is not rolled out (it runs already, failed before, or is under way).
    Ignored,
    /// Offered to a device.
    Offered,
    /// A device verified, compiled and self-tested it.
    Ready,
    /// A device refused it.
    Refused,
    /// A device cannot take components (no trusted key): another one is tried.
    Unable,
    /// A device swapped to it at a round boundary.
    Swapped,
    /// A device rolled back from it.
    RolledBack,
    /// The canary proved it: every device is offered it, and the coordinator scores with it.
    Wide,
    /// Every connected device runs it.
    Done,
    /// Its rollout stopped.
    Halted,
}

impl ComponentEvent {
    /// Lowercase words, for logs.
    pub fn name(self) -> &'static str {
        match self {
            ComponentEvent::Arrived => "arrived",
            ComponentEvent::Ignored => "ignored",
            ComponentEvent::Offered => "offered",
            ComponentEvent::Ready => "ready",
            ComponentEvent::Refused => "refused",
            ComponentEvent::Unable => "cannot be taken by this device",
            ComponentEvent::Swapped => "swapped",
            ComponentEvent::RolledBack => "rolled back",
            ComponentEvent::Wide => "canary passed, rolling out to every device",
            ComponentEvent::Done => "every device runs it",
            ComponentEvent::Halted => "rollout halted",
        }
    }
}

/// One line of `metrics.jsonl`: a finished epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    /// Epoch (1-based).
    pub epoch: usize,
    /// Rounds it took.
    pub rounds: u64,
    /// Wall time of its rounds (evaluation not included).
    pub wall_seconds: f64,
    /// Mean training loss of its samples (before each step).
    pub train_loss: f64,
    /// Training accuracy of its samples (before each step).
    pub train_accuracy: f64,
    /// Test loss of the global model after it.
    pub test_loss: f64,
    /// Test accuracy of the global model after it.
    pub test_accuracy: f64,
    /// Workers connected at its end.
    pub workers: usize,
    /// Bytes the coordinator sent.
    pub bytes_sent: u64,
    /// Bytes it received.
    pub bytes_received: u64,
    /// Batches that went back to the queue.
    pub requeued_batches: u64,
    /// Messages refused.
    pub rejected_results: u64,
    /// Name and version of every component that trained in it (more than
    /// one when a swap happened during it).
    #[serde(default)]
    pub components: Vec<String>,
}

/// A finished round.
#[derive(Debug, Clone, PartialEq)]
pub struct RoundReport {
    /// Its epoch.
    pub epoch: usize,
    /// Round number.
    pub round: u64,
    /// Mean training loss of its credited samples.
    pub train_loss: f64,
    /// Training accuracy of its credited samples.
    pub train_accuracy: f64,
    /// Samples credited.
    pub samples: u64,
    /// Batches of the epoch done, and in all.
    pub epoch_batches: (usize, usize),
    /// Batches of the run done, and in all.
    pub run_batches: (u64, u64),
    /// Workers connected.
    pub connected: usize,
    /// The new global parameters and their version, if the round changed them.
    pub model: Option<(u64, Arc<Vec<f32>>)>,
}

/// Something that happened in the engine.
#[derive(Debug, Clone, PartialEq)]
pub enum Notice {
    /// A worker was admitted.
    Joined {
        /// Its name.
        worker: String,
        /// Host or browser.
        kind: WorkerKind,
    },
    /// A worker's connection ended.
    Left {
        /// Its name.
        worker: String,
    },
    /// The worker list changed (joins, leaves, credited rounds).
    Workers(Vec<WorkerReport>),
    /// Too few workers for the next round.
    Waiting {
        /// Connected workers.
        connected: usize,
        /// Connected workers that are not silent past a deadline.
        available: usize,
        /// Workers needed.
        needed: usize,
    },
    /// An epoch began.
    EpochStarted {
        /// The epoch (1-based).
        epoch: usize,
        /// Epochs planned.
        epochs: usize,
        /// Its batches.
        batches: usize,
        /// Batches of the run done, and in all.
        run_batches: (u64, u64),
    },
    /// A message was refused (the model was not touched).
    Refused {
        /// Whose.
        worker: String,
        /// The round it named, if any.
        round: Option<u64>,
        /// Why.
        reason: String,
    },
    /// A worker's batches went back to the queue.
    Requeued {
        /// Whose.
        worker: String,
        /// How many.
        batches: usize,
        /// Why.
        why: Requeue,
    },
    /// A worker's messages were refused `strikes` times in a row: it is on
    /// probation (one batch a round) until it sends as many good results.
    Suspect {
        /// Its name.
        worker: String,
        /// The last refusal's reason.
        reason: String,
    },
    /// A worker on probation sent enough good results in a row.
    Trusted {
        /// Its name.
        worker: String,
    },
    /// An update past the norm bound was scaled down to it.
    Clipped {
        /// Whose.
        worker: String,
        /// Its norm as sent.
        from: f64,
        /// The bound.
        to: f64,
    },
    /// A worker that had missed a deadline answers again.
    Back {
        /// Its name.
        worker: String,
    },
    /// The devices trained less than [`super::pace::BUSY_TARGET`] of the
    /// time ([`super::pace::BUSY_TARGET_GROWN`] once grown; they waited on
    /// the link): rounds now have more local steps; or at least
    /// [`super::pace::BUSY_ENOUGH`] of it: fewer again.
    Paced {
        /// Local steps per device per round now (the run's, times the growth).
        local_steps: usize,
        /// More than before (or fewer).
        more: bool,
        /// The devices' busy share over the last window of rounds.
        busy: f64,
    },
    /// A worker reported an error that concerns no round of its.
    WorkerError {
        /// Its name.
        worker: String,
        /// What it said.
        reason: String,
    },
    /// Batches credited to a worker: the ledger's lines.
    Completed(Vec<LedgerEntry>),
    /// Something happened to a component on its way to the devices.
    Component {
        /// The device concerned, if one is.
        worker: Option<String>,
        /// The component's digest.
        digest: String,
        /// Its name and version ("unknown" if it was never accepted here).
        label: String,
        /// What happened.
        event: ComponentEvent,
        /// Why, or more about it.
        detail: String,
    },
    /// A round ended.
    RoundFinished(RoundReport),
    /// An epoch ended and was evaluated.
    EpochFinished(EpochMetrics),
    /// A consistent point to save: between rounds (no round in flight), the
    /// whole state. Written by the run files so a crash loses at most what
    /// came after it.
    Checkpoint(Box<RunState>),
    /// Every epoch is done.
    TrainingFinished {
        /// Strategy name.
        strategy: String,
        /// Totals per worker.
        workers: Vec<WorkerReport>,
    },
}
