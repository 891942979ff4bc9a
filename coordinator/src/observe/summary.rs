//! The run summary (`summary.json`), gathered from the engine's notices.

use serde::Serialize;

use super::Observer;
use crate::engine::{Notice, WorkerReport};

/// What a finished run reports.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    /// Strategy name.
    pub strategy: String,
    /// Test accuracy after the last epoch.
    pub final_test_accuracy: f64,
    /// Per-epoch training accuracy (of the workers, before each step).
    pub train_accuracy: Vec<f64>,
    /// Per-epoch test accuracy.
    pub test_accuracy: Vec<f64>,
    /// Per-epoch wall time.
    pub epoch_seconds: Vec<f64>,
    /// Bytes on the wire per epoch (both directions).
    pub bytes_per_epoch: Vec<u64>,
    /// Totals per worker name.
    pub workers: Vec<WorkerReport>,
}

/// Builds the [`Summary`] as the run goes.
#[derive(Default)]
pub struct SummaryRecorder {
    /// The summary so far.
    pub summary: Summary,
}

impl SummaryRecorder {
    /// A recorder that already holds the epochs of a resumed run.
    pub fn resumed(history: &[crate::engine::EpochMetrics]) -> Self {
        let mut r = Self::default();
        for m in history {
            // Recording cannot fail.
            let _ = r.notice(&Notice::EpochFinished(m.clone()));
        }
        r
    }
}

impl Observer for SummaryRecorder {
    fn notice(&mut self, notice: &Notice) -> anyhow::Result<()> {
        let s = &mut self.summary;
        match notice {
            Notice::EpochFinished(m) => {
                s.train_accuracy.push(m.train_accuracy);
                s.test_accuracy.push(m.test_accuracy);
                s.epoch_seconds.push(m.wall_seconds);
                s.bytes_per_epoch.push(m.bytes_sent + m.bytes_received);
                s.final_test_accuracy = m.test_accuracy;
            }
            Notice::TrainingFinished { strategy, workers } => {
                s.strategy = strategy.clone();
                s.workers = workers.clone();
            }
            _ => {}
        }
        Ok(())
    }
}
