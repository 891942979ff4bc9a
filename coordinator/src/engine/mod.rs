//! The round engine: every rule of training rounds, with no I/O.
//!
//! The engine is a state machine in the "sans-IO" style: the driver (the
//! server's training thread, or a test) feeds it [`Input`]s — a worker was
//! admitted or left, a frame arrived, an evaluation finished, time passed —
//! together with the current time, and carries out the [`Output`]s it
//! returns: send this frame to that connection, close it, evaluate these
//! parameters, training finished. Sockets, clocks, files, threads and
//! wasmtime stay outside, so every rule (deadlines, requeues, rejections,
//! exactly-once batches) is tested in microseconds with a fake clock.
//!
//! What happens in a round is the [`Strategy`]'s business (who gets how
//! many batches, how results are combined); everything the engine knows is
//! one serializable [`RunState`].

mod checks;
mod notice;
mod round;
mod state;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use hearth_mnist::Split;
use hearth_protocol::{self as proto, Message, WorkerKind};

use crate::ledger::Ledger;
use crate::options::TrainingOptions;
use crate::strategy::{FailureReason, FitFailure, Strategy};

pub use notice::{EpochMetrics, Notice, Requeue, RoundReport};
pub use state::{ConnId, Now, Phase, RunState, WorkerReport, WorkerSlot};

/// A worker the transport admitted.
#[derive(Debug, Clone)]
pub struct Admitted {
    /// Name from its hello.
    pub name: String,
    /// Host or browser.
    pub kind: WorkerKind,
    /// Digest of the code it runs.
    pub component: String,
}

/// The test-set score of some parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Evaluation {
    /// Sum of per-sample losses.
    pub loss_sum: f64,
    /// Samples classified right.
    pub correct: u64,
    /// Samples scored.
    pub count: u64,
}

/// What the engine is told.
#[derive(Debug, Clone)]
pub enum Input {
    /// A worker was admitted on `conn` (the engine sends its welcome).
    Joined {
        /// Connection.
        conn: ConnId,
        /// Who it is.
        worker: Admitted,
    },
    /// The connection closed or failed.
    Left {
        /// Connection.
        conn: ConnId,
    },
    /// A well-formed message and its size on the wire.
    Frame {
        /// Connection.
        conn: ConnId,
        /// Bytes received.
        bytes: usize,
        /// The message.
        message: Message,
    },
    /// Bytes that are not a message of the protocol.
    Garbage {
        /// Connection.
        conn: ConnId,
        /// Bytes received.
        bytes: usize,
        /// Why they were refused.
        error: String,
    },
    /// The evaluation asked for by [`Output::Evaluate`] is done.
    Evaluated {
        /// The epoch it was for.
        epoch: usize,
        /// Its score.
        score: Evaluation,
    },
    /// Time passed (deadlines may have expired).
    Tick,
}

/// What the engine asks its driver to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Send a frame on a connection.
    Send {
        /// Connection.
        conn: ConnId,
        /// The encoded message.
        frame: Vec<u8>,
    },
    /// Close a connection after what was sent on it.
    Close {
        /// Connection.
        conn: ConnId,
    },
    /// Score these parameters on the test set and answer with [`Input::Evaluated`].
    Evaluate {
        /// The epoch just finished.
        epoch: usize,
        /// The parameters.
        params: Vec<f32>,
    },
    /// Tell the observers.
    Notice(Notice),
    /// Training is over: every epoch is done and every worker told.
    Finished,
    /// Training cannot go on.
    Failed(String),
}

/// The round engine.
pub struct Engine {
    state: RunState,
    strategy: Box<dyn Strategy>,
    train: Arc<Split>,
    out: Vec<Output>,
}

impl Engine {
    /// A new run from the initial global parameters `global`.
    pub fn new(
        options: TrainingOptions,
        train: Arc<Split>,
        mut strategy: Box<dyn Strategy>,
        global: Vec<f32>,
    ) -> Self {
        strategy.initialize(&global);
        let state = RunState {
            options,
            epoch: 0,
            round: 0,
            version: 0,
            global,
            strategy: strategy.state(),
            steps_done: 0,
            phase: Phase::Idle,
            current: None,
            round_progress: Default::default(),
            workers: Default::default(),
            departed: Default::default(),
        };
        Self {
            state,
            strategy,
            train,
            out: Vec::new(),
        }
    }

    /// An engine that continues from a saved state (same training data).
    pub fn restore(
        state: RunState,
        train: Arc<Split>,
        mut strategy: Box<dyn Strategy>,
    ) -> Result<Self, String> {
        strategy.restore(state.strategy.clone())?;
        Ok(Self {
            state,
            strategy,
            train,
            out: Vec::new(),
        })
    }

    /// The whole run state, with the strategy's.
    pub fn state(&self) -> RunState {
        RunState {
            strategy: self.strategy.state(),
            ..self.state.clone()
        }
    }

    /// The global parameters.
    pub fn global(&self) -> &[f32] {
        &self.state.global
    }

    /// Strategy name.
    pub fn strategy_name(&self) -> String {
        self.strategy.name()
    }

    /// The earliest time at which a [`Input::Tick`] can change anything.
    pub fn next_deadline(&self) -> Option<Now> {
        let busy = self
            .state
            .workers
            .values()
            .filter_map(|w| w.busy.as_ref().map(|b| b.deadline))
            .min();
        let join = match (&self.state.phase, self.state.options.join_timeout()) {
            (Phase::Waiting { since }, Some(limit)) => Some(*since + limit),
            _ => None,
        };
        busy.into_iter().chain(join).min()
    }

    /// Handles one input at time `now`; returns what to do.
    pub fn handle(&mut self, now: Now, input: Input) -> Vec<Output> {
        match input {
            Input::Joined { conn, worker } => self.join(conn, worker),
            Input::Left { conn } => self.leave(conn),
            Input::Frame {
                conn,
                bytes,
                message,
            } => self.frame(now, conn, bytes, message),
            Input::Garbage { conn, bytes, error } => {
                if let Some(w) = self.state.workers.get_mut(&conn) {
                    w.bytes_in += bytes as u64;
                }
                self.refuse(conn, None, format!("malformed frame: {error}"));
            }
            Input::Evaluated { epoch, score } => self.evaluated(epoch, score),
            Input::Tick => self.tick(now),
        }
        self.advance(now);
        std::mem::take(&mut self.out)
    }

    fn notice(&mut self, notice: Notice) {
        self.out.push(Output::Notice(notice));
    }

    /// Encodes `message` for `conn`, counting its bytes.
    fn send(&mut self, conn: ConnId, message: &Message) {
        let frame = proto::encode(message);
        if let Some(w) = self.state.workers.get_mut(&conn) {
            w.bytes_out += frame.len() as u64;
        }
        self.out.push(Output::Send { conn, frame });
    }

    fn goodbye(&mut self, conn: ConnId) {
        let bye = Message::Goodbye(proto::Goodbye {
            reason: "training finished".into(),
        });
        self.send(conn, &bye);
        self.out.push(Output::Close { conn });
    }

    fn publish_workers(&mut self) {
        let rows = self.state.reports();
        self.notice(Notice::Workers(rows));
    }

    fn join(&mut self, conn: ConnId, worker: Admitted) {
        if self.state.phase == Phase::Finished {
            // Joined after the end: tell it, so it stops instead of reconnecting.
            self.goodbye(conn);
            return;
        }
        let o = &self.state.options;
        let welcome = Message::Welcome(proto::Welcome {
            session: conn,
            arch: o.arch.clone(),
            seed: o.seed,
            optimizer: self.strategy.worker_optimizer(o.optimizer()),
        });
        self.notice(Notice::Joined {
            worker: worker.name.clone(),
            kind: worker.kind,
        });
        self.state.workers.insert(
            conn,
            WorkerSlot::new(worker.name, worker.kind, worker.component),
        );
        self.send(conn, &welcome);
        self.publish_workers();
    }

    /// The one way a worker leaves: its round's batches go back first.
    fn leave(&mut self, conn: ConnId) {
        self.release(conn, Requeue::Left);
        let Some(w) = self.state.workers.remove(&conn) else {
            return;
        };
        self.notice(Notice::Left {
            worker: w.name.clone(),
        });
        let r = w.report(false);
        match self.state.departed.get_mut(&r.name) {
            Some(e) => e.absorb(r),
            None => {
                self.state.departed.insert(r.name.clone(), r);
            }
        }
        self.publish_workers();
    }

    /// Puts `conn`'s batches of the round in flight back in the queue (one
    /// path for every way a round can be lost); returns how many went back.
    fn release(&mut self, conn: ConnId, why: Requeue) -> usize {
        let Some(w) = self.state.workers.get_mut(&conn) else {
            return 0;
        };
        let Some(busy) = w.busy.take() else {
            return 0;
        };
        let name = w.name.clone();
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
                Requeue::Rejected => FailureReason::Rejected(String::new()),
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
    fn refuse(&mut self, conn: ConnId, round: Option<u64>, reason: String) {
        let Some(w) = self.state.workers.get_mut(&conn) else {
            return;
        };
        w.rejected += 1;
        let worker = w.name.clone();
        self.state.round_progress.totals.rejected += 1;
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

    fn frame(&mut self, now: Now, conn: ConnId, bytes: usize, message: Message) {
        let Some(w) = self.state.workers.get_mut(&conn) else {
            return;
        };
        w.bytes_in += bytes as u64;
        let back = std::mem::replace(&mut w.missed, false);
        let worker = w.name.clone();
        let busy_round = w.busy.as_ref().map(|b| b.round);
        if back {
            self.notice(Notice::Back {
                worker: worker.clone(),
            });
        }
        match message {
            Message::Result(r) => self.result(now, conn, r),
            Message::Error(e) if busy_round.is_some() && e.round == busy_round => {
                // It could not do its round: the batches go back now instead
                // of at its deadline.
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

    fn tick(&mut self, now: Now) {
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

    /// Connected workers that are not silent past a deadline.
    fn available(&self) -> usize {
        self.state.workers.values().filter(|w| !w.missed).count()
    }

    /// `min_workers` before the first round, one after that (workers come
    /// and go during training).
    fn workers_needed(&self) -> usize {
        if self.state.round == 0 {
            self.state.options.min_workers.max(1)
        } else {
            1
        }
    }

    /// Batches per epoch and in the whole run.
    fn batches_per_epoch(&self) -> u64 {
        self.train.len().div_ceil(self.state.options.batch.max(1)) as u64
    }

    fn run_batches(&self) -> (u64, u64) {
        let total = self.batches_per_epoch() * self.state.options.epochs as u64;
        (self.state.steps_done, total)
    }

    /// Moves the run forward as far as it can go without new input.
    fn advance(&mut self, now: Now) {
        loop {
            match self.state.phase {
                Phase::Finished | Phase::Evaluating { .. } => return,
                Phase::Round => {
                    if self.state.workers.values().any(|w| w.busy.is_some()) {
                        return;
                    }
                    self.close_round(now);
                }
                Phase::Idle | Phase::Waiting { .. } => {
                    if self.state.current.is_none() {
                        if self.state.epoch >= self.state.options.epochs {
                            self.finish();
                            return;
                        }
                        self.start_epoch(now);
                    }
                    let needed = self.workers_needed();
                    if self.available() < needed {
                        if self.state.phase == Phase::Idle {
                            self.state.phase = Phase::Waiting { since: now };
                            let (connected, available) =
                                (self.state.workers.len(), self.available());
                            self.notice(Notice::Waiting {
                                connected,
                                available,
                                needed,
                            });
                        }
                        return;
                    }
                    if !self.start_round(now) {
                        // The strategy handed out nothing: wait for a change.
                        self.state.phase = Phase::Waiting { since: now };
                        return;
                    }
                }
            }
        }
    }

    fn start_epoch(&mut self, now: Now) {
        self.state.epoch += 1;
        let o = &self.state.options;
        let ledger = Ledger::new(self.state.epoch, self.train.len(), o.batch, o.seed);
        let batches = ledger.batches();
        self.state.current = Some(state::EpochProgress {
            ledger,
            started: now,
            first_round: self.state.round,
            bytes_before: self.state.bytes(),
            totals: Default::default(),
        });
        let notice = Notice::EpochStarted {
            epoch: self.state.epoch,
            epochs: self.state.options.epochs,
            batches,
            run_batches: self.run_batches(),
        };
        self.notice(notice);
    }

    fn evaluated(&mut self, epoch: usize, score: Evaluation) {
        let Phase::Evaluating { epoch: e, wall } = self.state.phase else {
            return;
        };
        if e != epoch {
            return;
        }
        self.finish_epoch(wall, Some(score));
    }

    fn finish_epoch(&mut self, wall: std::time::Duration, score: Option<Evaluation>) {
        let Some(current) = self.state.current.take() else {
            return;
        };
        let (sent, received) = self.state.bytes();
        let t = &current.totals;
        let score = score.unwrap_or(Evaluation {
            loss_sum: f64::NAN,
            correct: 0,
            count: 0,
        });
        let metrics = EpochMetrics {
            epoch: self.state.epoch,
            rounds: self.state.round - current.first_round,
            wall_seconds: wall.as_secs_f64(),
            train_loss: t.loss_sum / t.samples.max(1) as f64,
            train_accuracy: t.correct as f64 / t.samples.max(1) as f64,
            test_loss: score.loss_sum / score.count.max(1) as f64,
            test_accuracy: score.correct as f64 / score.count.max(1) as f64,
            workers: self.state.workers.len(),
            bytes_sent: sent - current.bytes_before.0,
            bytes_received: received - current.bytes_before.1,
            requeued_batches: t.requeued,
            rejected_results: t.rejected,
        };
        self.notice(Notice::EpochFinished(metrics));
        self.state.phase = Phase::Idle;
    }

    fn finish(&mut self) {
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
        self.out.push(Output::Finished);
    }
}
