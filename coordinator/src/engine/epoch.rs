//! Epochs: a new ledger at the start, the evaluation and the metrics at the
//! end, and the goodbyes when the last one is done.

use std::time::Duration;

use super::notice::{EpochMetrics, Notice};
use super::state::{ConnId, EpochProgress, Now, PendingEvaluation, Phase};
use super::{Engine, Evaluation, Output};
use crate::ledger::Ledger;

impl Engine {
    pub(super) fn start_epoch(&mut self, now: Now) {
        self.state.epoch += 1;
        self.state.pace.restart();
        let o = &self.state.options;
        // Devices that keep samples get batches of their own samples.
        let mut keepers: Vec<(String, &hearth_protocol::SampleSet)> = self
            .state
            .workers
            .values()
            .filter(|w| !w.samples.is_empty())
            .map(|w| (w.name.clone(), &w.samples))
            .collect();
        keepers.sort_by(|a, b| a.0.cmp(&b.0));
        let ledger = Ledger::with_keepers(
            self.state.epoch,
            self.train.len(),
            o.batch,
            o.seed,
            &keepers,
        );
        let batches = ledger.batches();
        self.state.current = Some(EpochProgress {
            ledger,
            started: now,
            first_round: self.state.round,
            bytes_before: self.state.bytes(),
            totals: Default::default(),
            components: Default::default(),
        });
        let notice = Notice::EpochStarted {
            epoch: self.state.epoch,
            epochs: self.state.options.epochs,
            batches,
            run_batches: self.run_batches(),
        };
        self.notice(notice);
    }

    /// Starts the epoch's clock at its first round: the time an epoch
    /// takes is its training, not the wait for the household to join
    /// (processes starting, components compiling on slow devices) before
    /// the run's first round.
    pub(super) fn start_epoch_clock(&mut self, now: Now) {
        let round = self.state.round;
        if let Some(current) = self.state.current.as_mut()
            && current.first_round == round
        {
            current.started = now;
        }
    }

    /// The epoch's rounds are done after `wall`: its metrics wait for the
    /// test-set score while the next epoch trains (a coordinator scoring
    /// 10,000 images would otherwise hold every device idle: about 0.3 s
    /// of an emulated Pi cluster's 3 s epoch, seconds on a Pi).
    pub(super) fn end_epoch(&mut self, wall: Duration) {
        let Some(current) = self.state.current.take() else {
            return;
        };
        let (sent, received) = self.state.bytes();
        let t = &current.totals;
        let epoch = self.state.epoch;
        let metrics = EpochMetrics {
            epoch,
            rounds: self.state.round - current.first_round,
            wall_seconds: wall.as_secs_f64(),
            train_loss: t.loss_sum / t.samples.max(1) as f64,
            train_accuracy: t.correct as f64 / t.samples.max(1) as f64,
            test_loss: f64::NAN,
            test_accuracy: 0.0,
            workers: self.state.workers.len(),
            bytes_sent: sent - current.bytes_before.0,
            bytes_received: received - current.bytes_before.1,
            requeued_batches: t.requeued,
            rejected_results: t.rejected,
            components: current
                .components
                .iter()
                .map(|d| {
                    self.state
                        .components
                        .get(d)
                        .map_or_else(|| d.clone(), |c| c.label())
                })
                .collect(),
        };
        match self.strategy.configure_evaluate(epoch, &self.state.global) {
            Some(params) => {
                self.out.push(Output::Evaluate {
                    epoch,
                    params: params.clone(),
                });
                self.state
                    .evaluations
                    .push(PendingEvaluation { metrics, params });
            }
            None => self.record(metrics),
        }
    }

    /// The score of `epoch`, asked for by [`end_epoch`](Self::end_epoch).
    pub(super) fn evaluated(&mut self, epoch: usize, score: Evaluation) {
        let Some(i) = self
            .state
            .evaluations
            .iter()
            .position(|e| e.metrics.epoch == epoch)
        else {
            return;
        };
        let mut metrics = self.state.evaluations.remove(i).metrics;
        metrics.test_loss = score.loss_sum / score.count.max(1) as f64;
        metrics.test_accuracy = score.correct as f64 / score.count.max(1) as f64;
        self.record(metrics);
    }

    /// A finished epoch's metrics: kept, told, and checkpointed at the
    /// next round boundary.
    fn record(&mut self, metrics: EpochMetrics) {
        self.state.history.push(metrics.clone());
        self.state.checkpoint_due = true;
        self.notice(Notice::EpochFinished(metrics));
    }

    /// Hands out the state if a checkpoint is due (called between rounds only).
    pub(super) fn maybe_checkpoint(&mut self, now: Now) {
        let every = self.state.options.checkpoint_every;
        let elapsed = now.saturating_sub(self.state.last_checkpoint);
        let timely = every > 0 && elapsed >= Duration::from_secs(every);
        if !(timely || self.state.checkpoint_due) {
            return;
        }
        self.state.last_checkpoint = now;
        self.state.checkpoint_due = false;
        let state = Box::new(self.state());
        self.notice(Notice::Checkpoint(state));
    }

    pub(super) fn finish(&mut self) {
        self.state.phase = Phase::Finished;
        let conns: Vec<ConnId> = self.state.workers.keys().copied().collect();
        for &conn in &conns {
            self.goodbye(conn);
        }
        let notice = Notice::TrainingFinished {
            strategy: self.strategy.name(),
            workers: self.state.reports(),
        };
        self.notice(notice);
        for conn in conns {
            self.leave(conn);
        }
        let state = Box::new(self.state());
        self.notice(Notice::Checkpoint(state));
        self.out.push(Output::Finished);
    }
}
