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

mod carry;
mod checks;
mod downlink;
mod epoch;
mod guard;
mod notice;
mod pace;
mod prefetch;
mod rollout;
mod round;
mod state;
#[cfg(test)]
mod tests;
mod workers;

use std::sync::Arc;

use hearth_mnist::Split;
use hearth_protocol::{self as proto, Message, WorkerKind};

use crate::options::TrainingOptions;
use crate::strategy::Strategy;

pub use downlink::Mirror;
pub use guard::{GuardState, UpdateGuard, Verdict};
pub use notice::{ComponentEvent, EpochMetrics, Notice, Requeue, RoundReport};
pub use pace::{BUSY_ENOUGH, BUSY_TARGET};
pub use rollout::{CANARY_ROUNDS, ComponentInfo, Rollout, Stage};
pub use state::{ConnId, Now, Phase, RunState, UNLIKE_RATES, WorkerReport, WorkerSlot};

/// A worker the transport admitted.
#[derive(Debug, Clone)]
pub struct Admitted {
    /// Name from its hello.
    pub name: String,
    /// Host or browser.
    pub kind: WorkerKind,
    /// Digest of the code it runs.
    pub component: String,
    /// Vector encodings it can read and write (its hello's).
    pub encodings: Vec<proto::Encoding>,
    /// Training samples it can keep (its hello's; 0: none).
    pub sample_cache: u32,
    /// The coordinator's proof of the device key, for the welcome (the
    /// session computed it at admission).
    pub proof: Vec<u8>,
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
    /// A signed component the driver verified (pushed by the household's
    /// owner): roll it out.
    Component {
        /// What it is.
        info: ComponentInfo,
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
    /// Send the offer of component `digest` (the driver holds its bytes).
    Offer {
        /// Connection.
        conn: ConnId,
        /// The component.
        digest: String,
    },
    /// The canary proved component `digest`: score the global model with
    /// it from now on.
    UseComponent {
        /// The component.
        digest: String,
    },
    /// Component `digest` failed on a device: admit no worker that runs it.
    Banned {
        /// The component.
        digest: String,
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
    /// The next round's images, held back until this round's assignments
    /// have had the link to themselves (not part of the run state: they
    /// are only ever pending inside a round).
    prefetch_due: Option<prefetch::DuePrefetch>,
    /// The changes sent down for the current version, once per copy (a
    /// cache: not part of the run state).
    downlinks: downlink::Memo,
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
            guard_rate: 0.0,
            pace: Default::default(),
            phase: Phase::Idle,
            current: None,
            round_progress: Default::default(),
            workers: Default::default(),
            departed: Default::default(),
            guard: Default::default(),
            clock: Now::ZERO,
            last_checkpoint: Now::ZERO,
            checkpoint_due: false,
            history: Vec::new(),
            evaluations: Vec::new(),
            component: ComponentInfo::default(),
            components: Default::default(),
            rollout: None,
            failed_components: Default::default(),
        };
        Self {
            state,
            strategy,
            train,
            out: Vec::new(),
            prefetch_due: None,
            downlinks: downlink::Memo::default(),
        }
    }

    /// An engine that continues from a saved state (same training data).
    pub fn restore(
        state: RunState,
        train: Arc<Split>,
        mut strategy: Box<dyn Strategy>,
    ) -> Result<Self, String> {
        strategy.restore(state.strategy.clone())?;
        // Scores that were still awaited are asked for again.
        let out = state
            .evaluations
            .iter()
            .map(|e| Output::Evaluate {
                epoch: e.metrics.epoch,
                params: e.params.clone(),
            })
            .collect();
        Ok(Self {
            state,
            strategy,
            train,
            out,
            prefetch_due: None,
            downlinks: downlink::Memo::default(),
        })
    }

    /// Names the component the coordinator and its devices start on.
    pub fn with_component(mut self, info: ComponentInfo) -> Self {
        self.state
            .components
            .insert(info.digest.clone(), info.clone());
        self.state.component = info;
        self
    }

    /// The component it started on was rolled out in an earlier run (the
    /// devices ran `previous` before): hosts that join on another are
    /// offered it, as after a finished rollout.
    pub fn settle(&mut self, previous: String) {
        self.state.rollout = Some(Rollout {
            target: self.state.component.clone(),
            previous,
            stage: Stage::Done,
            canary: None,
            canary_rounds: 0,
            canary_gone: None,
            started: self.state.clock,
        });
    }

    /// Names a component devices may come back on (accepted in an earlier
    /// run), so tables show its name and version.
    pub fn know(&mut self, info: ComponentInfo) {
        self.state.components.insert(info.digest.clone(), info);
    }

    /// The whole run state, with the strategy's.
    pub fn state(&self) -> RunState {
        RunState {
            strategy: self.strategy.state(),
            ..self.state.clone()
        }
    }

    /// The run state as it stands (the strategy's part as of the last
    /// [`state`](Self::state) call; for reading figures without a copy).
    pub fn view(&self) -> &RunState {
        &self.state
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
        let prefetch = self.prefetch_due.as_ref().map(|p| p.at);
        busy.into_iter().chain(join).chain(prefetch).min()
    }

    /// Handles one input at time `now`; returns what to do.
    pub fn handle(&mut self, now: Now, input: Input) -> Vec<Output> {
        self.state.clock = self.state.clock.max(now);
        // What fell due before this input happened before it.
        self.send_due_prefetches(now);
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
            Input::Component { info } => self.component_arrived(now, info),
            Input::Tick => self.tick(now),
        }
        self.advance(now);
        std::mem::take(&mut self.out)
    }

    pub(super) fn notice(&mut self, notice: Notice) {
        self.out.push(Output::Notice(notice));
    }

    /// Encodes `message` for `conn`, counting its bytes.
    pub(super) fn send(&mut self, conn: ConnId, message: &Message) {
        self.send_frame(conn, proto::encode(message));
    }

    /// Sends an encoded frame to `conn`, counting its bytes.
    pub(super) fn send_frame(&mut self, conn: ConnId, frame: Vec<u8>) {
        if let Some(w) = self.state.workers.get_mut(&conn) {
            w.bytes_out += frame.len() as u64;
        }
        self.out.push(Output::Send { conn, frame });
    }

    pub(super) fn goodbye(&mut self, conn: ConnId) {
        let bye = Message::Goodbye(proto::Goodbye {
            reason: "training finished".into(),
        });
        self.send(conn, &bye);
        self.out.push(Output::Close { conn });
    }

    /// Connected workers that are not silent past a deadline.
    pub(super) fn available(&self) -> usize {
        self.state.workers.values().filter(|w| !w.missed).count()
    }

    /// `min_workers` before the first round, one after that (workers come
    /// and go during training).
    pub(super) fn workers_needed(&self) -> usize {
        if self.state.round == 0 {
            self.state.options.min_workers.max(1)
        } else {
            1
        }
    }

    /// Batches per epoch and in the whole run.
    pub(super) fn batches_per_epoch(&self) -> u64 {
        self.train.len().div_ceil(self.state.options.batch.max(1)) as u64
    }

    pub(super) fn run_batches(&self) -> (u64, u64) {
        let total = self.batches_per_epoch() * self.state.options.epochs as u64;
        (self.state.steps_done, total)
    }

    /// Moves the run forward as far as it can go without new input.
    fn advance(&mut self, now: Now) {
        loop {
            match self.state.phase {
                Phase::Finished => return,
                Phase::Round => {
                    if self.state.workers.values().any(|w| w.busy.is_some()) {
                        return;
                    }
                    self.close_round(now);
                }
                Phase::Idle | Phase::Waiting { .. } => {
                    self.maybe_checkpoint(now);
                    self.rollout_step(now);
                    if self.state.current.is_none() {
                        if self.state.epoch >= self.state.options.epochs {
                            // The last epochs' scores come first.
                            if self.state.evaluations.is_empty() {
                                self.finish();
                            }
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
                    self.start_epoch_clock(now);
                    if !self.start_round(now) {
                        // The strategy handed out nothing: wait for a change.
                        self.state.phase = Phase::Waiting { since: now };
                        return;
                    }
                }
            }
        }
    }
}
