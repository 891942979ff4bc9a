//! Workers coming and going, and what they send: admission's welcome, the
//! one path by which a lost round goes back to the queue, refusals,
//! deadlines.

use hearth_protocol::{self as proto, Message};

use super::downlink::Mirror;
use super::notice::{Notice, Requeue};
use super::state::{ConnId, Now, Phase, WorkerSlot};
use super::{Admitted, Engine, Output};
use crate::strategy::{FailureReason, FitFailure};

impl Engine {
    pub(super) fn publish_workers(&mut self) {
        let rows = self.state.reports();
        self.notice(Notice::Workers(rows));
    }

    pub(super) fn join(&mut self, conn: ConnId, worker: Admitted) {
        if self.state.phase == Phase::Finished {
            // Joined after the end: tell it, so it stops instead of reconnecting.
            self.goodbye(conn);
            return;
        }
        let o = &self.state.options;
        let wanted = o.encoding;
        let keeps = if o.keep_samples {
            worker.sample_cache
        } else {
            0
        };
        // The run's encoding if the device can read and write it.
        let encoding = if worker.encodings.contains(&wanted) {
            wanted
        } else {
            proto::Encoding::F32
        };
        // No round has changed the model yet: the device builds the same,
        // and a lossy encoding then sends only the change from it.
        let initial = (self.state.version == 0 && encoding.is_lossy())
            .then(|| Mirror::initial(&self.state.global));
        let welcome = Message::Welcome(proto::Welcome {
            session: conn,
            arch: o.arch.clone(),
            seed: o.seed,
            optimizer: self.strategy.worker_optimizer(o.optimizer()),
            proof: worker.proof.clone(),
            initial: initial.as_ref().map(|m| proto::params_digest(&m.copy)),
        });
        self.notice(Notice::Joined {
            worker: worker.name.clone(),
            kind: worker.kind,
        });
        let mut slot = WorkerSlot::new(worker.name, worker.kind, worker.component, encoding);
        slot.samples = proto::SampleSet::new(keeps as usize);
        slot.mirror = initial;
        self.state.workers.insert(conn, slot);
        self.send(conn, &welcome);
        self.publish_workers();
        if self.state.phase != Phase::Round {
            self.rollout_step(self.state.clock);
        }
    }

    /// The one way a worker leaves: its round's batches go back first.
    pub(super) fn leave(&mut self, conn: ConnId) {
        self.release(conn, Requeue::Left);
        let Some(w) = self.state.workers.remove(&conn) else {
            return;
        };
        self.notice(Notice::Left {
            worker: w.name.clone(),
        });
        self.state.depart(&w);
        self.publish_workers();
    }

    /// Puts `conn`'s batches of the round in flight back in the queue (one
    /// path for every way a round can be lost); returns how many went back.
    pub(super) fn release(&mut self, conn: ConnId, why: Requeue) -> usize {
        // Its images sent ahead go back too: it may not be there to use them.
        let ahead = self.drop_prefetch(conn);
        self.state.round_progress.totals.requeued += ahead as u64;
        let Some(w) = self.state.workers.get_mut(&conn) else {
            return 0;
        };
        let Some(busy) = w.busy.take() else {
            return 0;
        };
        let name = w.name.clone();
        w.abandoned += 1;
        if matches!(why, Requeue::MissedDeadline { .. }) {
            w.missed = true;
        }
        let n = match self.state.current.as_mut() {
            Some(epoch) => epoch.ledger.requeue(&name, &busy.batches),
            None => 0,
        };
        let rp = &mut self.state.round_progress;
        rp.totals.requeued += n as u64;
        rp.failures.push(FitFailure {
            worker: name.clone(),
            batches: busy.batches.len(),
            reason: match &why {
                Requeue::Left => FailureReason::Left,
                Requeue::MissedDeadline { .. } => FailureReason::MissedDeadline,
                Requeue::Failed(r) => FailureReason::Reported(r.clone()),
                Requeue::Rejected => FailureReason::Rejected,
            },
        });
        self.notice(Notice::Requeued {
            worker: name,
            batches: n,
            why,
        });
        n
    }

    /// Logs a refused message and tells the worker why; the model is untouched.
    pub(super) fn refuse(&mut self, conn: ConnId, round: Option<u64>, reason: String) {
        let Some(w) = self.state.workers.get_mut(&conn) else {
            return;
        };
        w.rejected += 1;
        w.strikes += 1;
        w.streak = 0;
        let strikes = w.strikes;
        let worker = w.name.clone();
        self.state.round_progress.totals.rejected += 1;
        if strikes >= self.state.options.strikes.max(1)
            && !self.state.guard.suspects.contains_key(&worker)
        {
            self.state
                .guard
                .suspects
                .insert(worker.clone(), reason.clone());
            self.notice(Notice::Suspect {
                worker: worker.clone(),
                reason: reason.clone(),
            });
        }
        self.send(
            conn,
            &Message::Error(proto::ErrorReport {
                round,
                reason: reason.clone(),
            }),
        );
        self.notice(Notice::Refused {
            worker,
            round,
            reason,
        });
    }

    pub(super) fn frame(&mut self, now: Now, conn: ConnId, bytes: usize, message: Message) {
        let Some(w) = self.state.workers.get_mut(&conn) else {
            return;
        };
        w.bytes_in += bytes as u64;
        // Only a result shows it works again (anything else is cheap to send).
        let back = matches!(message, Message::Result(_)) && std::mem::replace(&mut w.missed, false);
        let worker = w.name.clone();
        let busy_round = w.busy.as_ref().map(|b| b.round);
        // A round it could not do (or images sent ahead it could not use):
        // the samples it keeps are in doubt, so its cache starts over.
        if matches!(&message, Message::Error(e) if e.round.is_some()) {
            w.samples_reset = true;
        }
        if back {
            self.notice(Notice::Back {
                worker: worker.clone(),
            });
        }
        match message {
            Message::Result(r) => self.result(now, conn, r),
            Message::ComponentStatus(s) => self.component_status(conn, s),
            Message::Error(e) if busy_round.is_some() && e.round == busy_round => {
                // It could not do its round: the batches go back now instead
                // of at its deadline; its copy of the model is in doubt, so
                // the next assignment sends the whole model.
                if let Some(w) = self.state.workers.get_mut(&conn) {
                    w.mirror = None;
                }
                self.release(conn, Requeue::Failed(e.reason));
            }
            Message::Error(e) => self.notice(Notice::WorkerError {
                worker,
                reason: e.reason,
            }),
            Message::Goodbye(_) => {
                self.leave(conn);
                self.out.push(Output::Close { conn });
            }
            other => {
                let reason = format!(
                    "a {} is not a message a worker sends in a session",
                    Message::kind_name(other.kind())
                );
                self.refuse(conn, None, reason);
            }
        }
    }

    pub(super) fn tick(&mut self, now: Now) {
        let expired: Vec<ConnId> = self
            .state
            .workers
            .iter()
            .filter(|(_, w)| w.busy.as_ref().is_some_and(|b| b.deadline <= now))
            .map(|(&c, _)| c)
            .collect();
        for conn in expired {
            let sent = self.state.workers[&conn]
                .busy
                .as_ref()
                .map_or(now, |b| b.sent);
            let waited = now.saturating_sub(sent);
            self.release(conn, Requeue::MissedDeadline { waited });
        }
        if let (Phase::Waiting { since }, Some(limit)) =
            (&self.state.phase, self.state.options.join_timeout())
            && now.saturating_sub(*since) > limit
        {
            let needed = self.workers_needed();
            let reason = format!(
                "only {} of {needed} workers connected within {} s (were they rejected? see their errors above)",
                self.available(),
                limit.as_secs()
            );
            self.state.phase = Phase::Finished;
            self.out.push(Output::Failed(reason));
        }
    }
}
