//! What the web dashboard shows: a snapshot of the run that the engine's
//! notices update after every round and epoch (the dashboard is one of its
//! observers), and the HTTP handlers read.
//!
//! The training loop only ever holds the lock to copy a few numbers in, so a
//! slow page can never stall a round.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;

use crate::engine::{EpochMetrics, Notice, WorkerReport};
use crate::observe::Observer;

/// Rounds kept for the loss chart (older ones are dropped).
const ROUND_HISTORY: usize = 5_000;

/// One round, for the loss chart.
#[derive(Debug, Clone, Serialize)]
pub struct RoundPoint {
    /// Round number.
    pub round: u64,
    /// Epoch it belongs to.
    pub epoch: usize,
    /// Mean training loss of its samples.
    pub train_loss: f64,
    /// Training accuracy of its samples (before each step).
    pub train_accuracy: f64,
    /// Samples trained on.
    pub samples: u64,
}

/// One finished epoch.
#[derive(Debug, Clone, Serialize)]
pub struct EpochPoint {
    /// Epoch number.
    pub epoch: usize,
    /// Wall time of the epoch.
    pub seconds: f64,
    /// Training loss and accuracy over the epoch.
    pub train_loss: f64,
    /// Training accuracy over the epoch.
    pub train_accuracy: f64,
    /// Test loss of the global model after the epoch.
    pub test_loss: f64,
    /// Test accuracy of the global model after the epoch.
    pub test_accuracy: f64,
    /// Bytes on the wire in both directions.
    pub bytes: u64,
}

impl From<&EpochMetrics> for EpochPoint {
    fn from(m: &EpochMetrics) -> Self {
        EpochPoint {
            epoch: m.epoch,
            seconds: m.wall_seconds,
            train_loss: m.train_loss,
            train_accuracy: m.train_accuracy,
            test_loss: m.test_loss,
            test_accuracy: m.test_accuracy,
            bytes: m.bytes_sent + m.bytes_received,
        }
    }
}

/// A worker as the dashboard lists it: its report and the architecture it trains.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerRow {
    /// Its totals.
    #[serde(flatten)]
    pub report: WorkerReport,
    /// Architecture it trains.
    pub arch: String,
}

/// Component events the dashboard keeps (the newest).
pub const COMPONENT_HISTORY: usize = 100;

/// Something that happened to a component, as the dashboard lists it.
#[derive(Debug, Clone, Serialize)]
pub struct ComponentLine {
    /// Seconds since the coordinator started.
    pub seconds: f64,
    /// The device concerned, if one is.
    pub worker: Option<String>,
    /// The component's name and version.
    pub label: String,
    /// Its digest.
    pub digest: String,
    /// What happened, in words.
    pub event: String,
    /// Why, or more about it.
    pub detail: String,
}

/// The whole snapshot, served as `/api/status`.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// `waiting`, `training`, `finished` or `failed`.
    pub phase: String,
    /// Architecture of the global model.
    pub arch: String,
    /// Its parameter count.
    pub param_count: usize,
    /// Epochs planned.
    pub epochs: usize,
    /// Current epoch (1-based; 0 before the first).
    pub epoch: usize,
    /// Rounds played.
    pub round: u64,
    /// Version of the global parameters (one per aggregation).
    pub model_version: u64,
    /// Batches done and total in the current epoch.
    pub epoch_batches_done: usize,
    /// Batches in an epoch.
    pub epoch_batches: usize,
    /// Recent rounds.
    pub rounds: VecDeque<RoundPoint>,
    /// Finished epochs.
    pub epoch_history: Vec<EpochPoint>,
    /// Every worker seen, connected ones first.
    pub workers: Vec<WorkerRow>,
    /// Recent component events (pushes, offers, swaps, rollbacks, rollouts).
    pub components: VecDeque<ComponentLine>,
}

/// The global parameters as of some version.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Version (number of aggregations so far).
    pub version: u64,
    /// Architecture name.
    pub arch: String,
    /// The parameters.
    pub params: Arc<Vec<f32>>,
}

struct Inner {
    status: Status,
    model: Snapshot,
    started: std::time::Instant,
}

/// Shared handle to the dashboard's state.
#[derive(Clone)]
pub struct Dashboard(Arc<Mutex<Inner>>);

impl Dashboard {
    /// A dashboard for a run of `epochs` epochs on `arch` starting from `params`.
    pub fn new(arch: &str, epochs: usize, params: Vec<f32>) -> Self {
        let status = Status {
            phase: "waiting".into(),
            arch: arch.to_string(),
            param_count: params.len(),
            epochs,
            epoch: 0,
            round: 0,
            model_version: 0,
            epoch_batches_done: 0,
            epoch_batches: 0,
            rounds: VecDeque::new(),
            epoch_history: Vec::new(),
            workers: Vec::new(),
            components: VecDeque::new(),
        };
        let model = Snapshot {
            version: 0,
            arch: arch.to_string(),
            params: Arc::new(params),
        };
        Self(Arc::new(Mutex::new(Inner {
            status,
            model,
            started: std::time::Instant::now(),
        })))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere while holding the lock leaves plain numbers behind:
        // still fine to show.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A copy of the status.
    pub fn status(&self) -> Status {
        self.lock().status.clone()
    }

    /// The latest global parameters.
    pub fn model(&self) -> Snapshot {
        self.lock().model.clone()
    }

    /// Changes the phase.
    pub fn set_phase(&self, phase: &str) {
        self.lock().status.phase = phase.to_string();
    }

    /// Progress within the epoch.
    pub fn set_progress(&self, epoch: usize, done: usize, total: usize) {
        let s = &mut self.lock().status;
        s.epoch = epoch;
        s.epoch_batches_done = done;
        s.epoch_batches = total;
    }

    /// Records a finished round and, if it changed them, the new parameters.
    pub fn record_round(&self, point: RoundPoint, model: Option<(u64, Arc<Vec<f32>>)>) {
        let mut inner = self.lock();
        inner.status.round = point.round;
        if point.samples > 0 {
            inner.status.rounds.push_back(point);
            while inner.status.rounds.len() > ROUND_HISTORY {
                inner.status.rounds.pop_front();
            }
        }
        if let Some((version, params)) = model {
            inner.status.model_version = version;
            inner.model.params = params;
            inner.model.version = version;
        }
    }

    /// Records a finished epoch.
    pub fn record_epoch(&self, point: EpochPoint) {
        self.lock().status.epoch_history.push(point);
    }

    /// Replaces the worker list.
    pub fn set_workers(&self, workers: Vec<WorkerRow>) {
        self.lock().status.workers = workers;
    }
}

impl Observer for Dashboard {
    fn notice(&mut self, notice: &Notice) -> anyhow::Result<()> {
        match notice {
            Notice::Waiting { .. } => self.set_phase("waiting"),
            Notice::EpochStarted { epoch, batches, .. } => {
                self.set_phase("training");
                self.set_progress(*epoch, 0, *batches);
            }
            Notice::RoundFinished(r) => {
                self.set_phase("training");
                self.set_progress(r.epoch, r.epoch_batches.0, r.epoch_batches.1);
                self.record_round(
                    RoundPoint {
                        round: r.round,
                        epoch: r.epoch,
                        train_loss: r.train_loss,
                        train_accuracy: r.train_accuracy,
                        samples: r.samples,
                    },
                    r.model.clone(),
                );
            }
            Notice::Workers(reports) => {
                let arch = self.lock().status.arch.clone();
                let mut rows: Vec<WorkerRow> = reports
                    .iter()
                    .map(|r| WorkerRow {
                        report: r.clone(),
                        arch: arch.clone(),
                    })
                    .collect();
                rows.sort_by_key(|r| !r.report.connected);
                self.set_workers(rows);
            }
            Notice::EpochFinished(m) => self.record_epoch(EpochPoint::from(m)),
            Notice::Component {
                worker,
                digest,
                label,
                event,
                detail,
            } => {
                let mut inner = self.lock();
                let seconds = inner.started.elapsed().as_secs_f64();
                let lines = &mut inner.status.components;
                if lines.len() == COMPONENT_HISTORY {
                    lines.pop_front();
                }
                lines.push_back(ComponentLine {
                    seconds,
                    worker: worker.clone(),
                    label: label.clone(),
                    digest: digest.clone(),
                    event: event.name().to_string(),
                    detail: detail.clone(),
                });
            }
            Notice::TrainingFinished { .. } => self.set_phase("finished"),
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_are_capped_and_the_model_follows_aggregations() {
        let d = Dashboard::new("lenet5", 2, vec![0.0; 4]);
        let held = d.model();
        for r in 1..=(ROUND_HISTORY as u64 + 10) {
            let point = RoundPoint {
                round: r,
                epoch: 1,
                train_loss: 1.0,
                train_accuracy: 0.5,
                samples: 64,
            };
            d.record_round(point, Some((r, Arc::new(vec![r as f32; 4]))));
        }
        let s = d.status();
        assert_eq!(s.rounds.len(), ROUND_HISTORY);
        assert_eq!(s.rounds.front().map(|p| p.round), Some(11));
        assert_eq!(s.model_version, ROUND_HISTORY as u64 + 10);
        let m = d.model();
        assert_eq!(m.params[0], (ROUND_HISTORY + 10) as f32);
        // A snapshot taken earlier is not changed under its reader.
        assert_eq!(held.params[0], 0.0);
    }
}
