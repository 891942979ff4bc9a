//! [`WorkerSession`]: the worker's half of a session, frames in, frames out.

use std::collections::VecDeque;

use hearth_protocol::auth::{DeviceKey, NONCE_LEN};
use hearth_protocol::{self as proto, Message};
use hearth_worker::ModelConfig;

use crate::cache::SampleCache;
use crate::compact::Compact;
use crate::watch::{WATCH_ROUNDS, Watch, watched_problem};
use crate::{Trainer, run_round};

/// Who the worker is, as its hello presents it.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Stable name of the device (survives reconnects).
    pub worker_id: String,
    /// The device's key (it proves the key, never sends it).
    pub key: DeviceKey,
    /// Digest of the code it starts on ([`hearth_protocol::digest`] of the
    /// component or module; a swap changes what later hellos announce).
    pub component_digest: String,
    /// Host or browser.
    pub kind: proto::WorkerKind,
    /// Threads it trains with.
    pub threads: u32,
    /// Memory it may use, in MiB (0: unknown).
    pub memory_mib: u32,
    /// Training samples it keeps so they need not be sent again (0: none;
    /// [`crate::DEFAULT_SAMPLE_CACHE`]: all of MNIST's, 47 MB).
    pub sample_cache: u32,
}

/// Where a session stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Hello sent (and the challenge answered), no welcome yet.
    Joining,
    /// Admitted, model built: answering rounds.
    Training,
    /// The coordinator said goodbye: training is over, do not reconnect.
    Finished,
    /// The coordinator refused this worker: reconnecting cannot help.
    Rejected,
    /// This worker cannot do what it was welcomed for (it could not build the
    /// model) and said goodbye: do not reconnect.
    Failed,
}

impl Phase {
    /// Lowercase name, for status pages and logs.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Joining => "joining",
            Phase::Training => "training",
            Phase::Finished => "finished",
            Phase::Rejected => "rejected",
            Phase::Failed => "failed",
        }
    }

    /// True when the session is over for good (no reconnect).
    pub fn is_final(self) -> bool {
        matches!(self, Phase::Finished | Phase::Rejected | Phase::Failed)
    }
}

/// What a session has done, over every connection it had.
#[derive(Debug, Clone, Default)]
pub struct SessionStats {
    /// Rounds answered with a result.
    pub rounds: u64,
    /// Rounds that failed (answered with an error report).
    pub failed_rounds: u64,
    /// Images trained on.
    pub images: u64,
    /// Mean training loss of the last round.
    pub last_loss: Option<f64>,
    /// Bytes received from the coordinator.
    pub bytes_in: u64,
    /// Bytes sent to it.
    pub bytes_out: u64,
    /// Local steps trained ahead of their round's assignment (on a head
    /// start, while the device would otherwise wait).
    pub steps_ahead: u64,
}

/// The worker side of the protocol around a [`Trainer`].
pub struct WorkerSession<T> {
    identity: Identity,
    trainer: T,
    phase: Phase,
    note: String,
    stats: SessionStats,
    /// This connection's nonce and hello frame (the challenge's proof covers them).
    joining: Option<([u8; NONCE_LEN], Vec<u8>)>,
    /// The challenge answered on this connection.
    challenge: Option<Vec<u8>>,
    /// Digest of the code it runs now.
    running: String,
    /// The component swapped to, while it is watched.
    watch: Option<Watch>,
    /// Frames to send when the driver next calls [`WorkerSession::poll`].
    outbox: VecDeque<Vec<u8>>,
    /// This connection's copy of the model and update residual.
    compact: Compact,
    /// The welcome's seed (of the image shifts).
    seed: u64,
    /// Seconds since some fixed moment, if the device has a clock.
    clock: Option<fn() -> f64>,
    /// Images sent ahead for a coming round.
    ahead: Option<proto::Prefetch>,
    /// The round trained ahead of its assignment, if any.
    early: Option<ahead::Early>,
    /// The last round answered with a result on this connection (a head
    /// start builds on what it ended with).
    answered: Option<u64>,
    /// This connection's samples, kept to be named again.
    cache: SampleCache,
}

impl<T: Trainer> WorkerSession<T> {
    /// A session for `identity`, training with `trainer`.
    pub fn new(identity: Identity, trainer: T) -> Self {
        Self {
            running: identity.component_digest.clone(),
            watch: None,
            outbox: VecDeque::new(),
            compact: Compact::default(),
            seed: 0,
            clock: None,
            ahead: None,
            early: None,
            answered: None,
            cache: SampleCache::new(identity.sample_cache),
            identity,
            trainer,
            phase: Phase::Joining,
            note: String::new(),
            stats: SessionStats::default(),
            joining: None,
            challenge: None,
        }
    }

    /// The same session timing its rounds with `clock` (seconds since a
    /// fixed moment): results then say how long training took.
    pub fn with_clock(self, clock: fn() -> f64) -> Self {
        Self {
            clock: Some(clock),
            ..self
        }
    }

    /// The first frame of a connection (call it on every new connection),
    /// with a fresh random `nonce` (the caller draws it: the OS on a host,
    /// `crypto.getRandomValues` in a browser).
    pub fn hello(&mut self, nonce: [u8; NONCE_LEN]) -> Result<Vec<u8>, T::Error> {
        let architectures = self.trainer.architectures()?;
        self.phase = Phase::Joining;
        self.compact.reset();
        self.ahead = None;
        self.early = None;
        self.answered = None;
        self.cache.clear();
        let id = &self.identity;
        let frame = self.count_out(&Message::Hello(proto::Hello {
            worker_id: id.worker_id.clone(),
            nonce: nonce.to_vec(),
            component_digest: self.running.clone(),
            capabilities: proto::Capabilities {
                kind: id.kind,
                architectures,
                threads: id.threads,
                memory_mib: id.memory_mib,
                images_per_second: 0.0,
                encodings: proto::encoding::ENCODINGS.to_vec(),
                sample_cache: id.sample_cache,
            },
        }));
        self.joining = Some((nonce, frame.clone()));
        self.challenge = None;
        Ok(frame)
    }

    /// Handles one binary frame from the coordinator; returns the frame to
    /// send back, if any. Nothing the coordinator sends can make it panic:
    /// a frame it cannot use is answered with an error report.
    pub fn handle(&mut self, frame: &[u8]) -> Option<Vec<u8>> {
        self.stats.bytes_in += frame.len() as u64;
        let reply = match proto::decode(frame) {
            Ok(message) => self.on_message(message),
            Err(e) => Some(self.error(None, format!("malformed frame from the coordinator: {e}"))),
        }?;
        Some(self.count_out(&reply))
    }

    /// A frame to send that no incoming frame asked for (a component that
    /// became ready, a rollback found at start-up), if any. Call it after
    /// every [`handle`](Self::handle), and now and then while nothing
    /// arrives (a preparation finishes on its own).
    pub fn poll(&mut self) -> Option<Vec<u8>> {
        if let Some(frame) = self.outbox.pop_front() {
            return Some(frame);
        }
        if self.phase != Phase::Training {
            return None;
        }
        let (digest, outcome) = self.trainer.poll_ready()?;
        let (state, reason) = match outcome {
            Ok(()) => (proto::ComponentState::Ready, String::new()),
            Err(reason) => {
                self.note = format!("refused component {}: {reason}", short(&digest));
                (proto::ComponentState::Refused, reason)
            }
        };
        let status = Message::ComponentStatus(proto::ComponentStatus {
            digest,
            state,
            round: None,
            reason,
        });
        Some(self.count_out(&status))
    }

    /// The trainer.
    pub fn trainer(&self) -> &T {
        &self.trainer
    }

    /// The trainer, to change it between frames.
    pub fn trainer_mut(&mut self) -> &mut T {
        &mut self.trainer
    }

    /// Digest of the code it runs now.
    pub fn running(&self) -> &str {
        &self.running
    }

    /// Where the session stands.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The last thing worth telling a person (joined, refused, a failure).
    pub fn note(&self) -> &str {
        &self.note
    }

    /// Totals so far.
    pub fn stats(&self) -> &SessionStats {
        &self.stats
    }

    fn count_out(&mut self, message: &Message) -> Vec<u8> {
        let frame = proto::encode(message);
        self.stats.bytes_out += frame.len() as u64;
        frame
    }

    fn error(&mut self, round: Option<u64>, reason: String) -> Message {
        self.note = reason.clone();
        Message::Error(proto::ErrorReport { round, reason })
    }

    /// One assignment: swap first if it names a ready component, train,
    /// and while a swapped-to component is watched, roll back on a problem.
    fn round(&mut self, mut a: proto::Assign) -> Option<Message> {
        self.answered = None;
        // First of all (the coordinator mirrors the cache in message order).
        if let Some(refs) = a.cache.take() {
            match self.cache.expand(&refs, &a.pixels, &a.labels) {
                Ok((pixels, labels)) => (a.pixels, a.labels) = (pixels, labels),
                Err(reason) => {
                    self.stats.failed_rounds += 1;
                    return Some(self.error(Some(a.round), reason));
                }
            }
        }
        if let Some(early) = self.early_for(&a) {
            self.ahead = None;
            return Some(self.finish_early(&a, early));
        }
        if a.prefetched {
            match self.ahead.take() {
                Some(p) if p.round == a.round => {
                    a.pixels = p.pixels;
                    a.labels = p.labels;
                }
                _ => {
                    self.stats.failed_rounds += 1;
                    let reason = format!("no images were sent ahead for round {}", a.round);
                    return Some(self.error(Some(a.round), reason));
                }
            }
        }
        if !a.component.is_empty() && a.component != self.running {
            if let Err(e) = self.trainer.swap(&a.component) {
                self.stats.failed_rounds += 1;
                let reason = format!("cannot run component {}: {e}", short(&a.component));
                return Some(self.error(Some(a.round), reason));
            }
            self.note = format!("swapped to component {}", short(&a.component));
            self.watch = Some(Watch {
                digest: a.component.clone(),
                previous: std::mem::replace(&mut self.running, a.component.clone()),
                rounds_left: WATCH_ROUNDS,
                baseline: self.stats.last_loss,
            });
        }
        let params = match self.compact.params(&a) {
            Ok(p) => p,
            Err(reason) => {
                self.stats.failed_rounds += 1;
                return Some(self.error(Some(a.round), reason));
            }
        };
        let pixels = shifted(self.seed, a.round, a.shift, &a.pixels);
        let started = self.clock.map(|c| c());
        let outcome = run_round(&mut self.trainer, &a, params, &pixels).map(|mut r| {
            if let (Some(clock), Some(t0)) = (self.clock, started) {
                r.compute_seconds = (clock() - t0).max(0.0) as f32;
            }
            self.compact.pack(&mut r, a.reply_encoding);
            r
        });
        if let Some(watch) = self.watch.as_mut() {
            let problem = match &outcome {
                Ok(result) => watched_problem(result, watch.baseline),
                Err(e) => Some(format!("round {} failed: {e}", a.round)),
            };
            if let Some(reason) = problem {
                let watch = self.watch.take()?;
                self.stats.failed_rounds += 1;
                let back = self.trainer.roll_back(&reason);
                self.running = watch.previous;
                self.note = match &back {
                    Ok(()) => format!("rolled back from {}: {reason}", short(&watch.digest)),
                    Err(e) => {
                        self.phase = Phase::Failed;
                        format!("cannot roll back from {}: {e}", short(&watch.digest))
                    }
                };
                return Some(Message::ComponentStatus(proto::ComponentStatus {
                    digest: watch.digest,
                    state: proto::ComponentState::RolledBack,
                    round: Some(a.round),
                    reason,
                }));
            }
            watch.rounds_left -= 1;
            if watch.rounds_left == 0 {
                self.watch = None;
                self.trainer.commit();
                self.note = format!(
                    "component {} passed its watched rounds",
                    short(&self.running)
                );
            }
        }
        match outcome {
            Ok(result) => {
                self.answered = Some(a.round);
                Some(self.answered_with(result))
            }
            Err(e) => {
                self.stats.failed_rounds += 1;
                Some(self.error(Some(a.round), format!("round {} failed: {e}", a.round)))
            }
        }
    }

    /// Holds the model just built as version 0 if it is the run's initial
    /// model `initial` names (the first assignment then sends only the
    /// change from it); otherwise the coordinator's first assignment to
    /// it fails, and the next one brings the whole model.
    fn hold_initial(&mut self, initial: Option<&str>) {
        let Some(initial) = initial else {
            return;
        };
        if let Ok(params) = self.trainer.params()
            && proto::params_digest(&params) == initial
        {
            self.compact.hold(0, params);
        }
    }

    /// Counts a round's result and sends it.
    fn answered_with(&mut self, result: proto::RoundResult) -> Message {
        self.stats.rounds += 1;
        self.stats.images += u64::from(result.samples);
        self.stats.last_loss = Some(result.loss_sum / f64::from(result.samples.max(1)));
        Message::Result(result)
    }

    fn on_message(&mut self, message: Message) -> Option<Message> {
        match message {
            Message::Challenge(c) => {
                let Some((_, hello)) = self.joining.as_ref().filter(|_| self.challenge.is_none())
                else {
                    return Some(self.error(None, "a challenge outside the join".into()));
                };
                let mac = self.identity.key.worker_proof(&c.nonce, hello);
                self.challenge = Some(c.nonce);
                Some(Message::Proof(proto::Proof { mac }))
            }
            Message::Welcome(w) => {
                let proven = match (&self.joining, &self.challenge) {
                    (Some((nonce, _)), Some(challenge)) => self
                        .identity
                        .key
                        .check_coordinator_proof(nonce, challenge, &w.proof),
                    _ => false,
                };
                self.joining = None;
                if !proven {
                    // Whoever this is does not know our key: not our household's coordinator.
                    self.phase = Phase::Rejected;
                    self.note = "the coordinator could not prove it knows this device's key \
                                 (a different household, or an impostor)"
                        .into();
                    return None;
                }
                let config = ModelConfig {
                    arch: w.arch.clone(),
                    seed: w.seed,
                    optimizer: w.optimizer,
                };
                match self.trainer.build(&config) {
                    Ok(()) => {
                        self.phase = Phase::Training;
                        self.seed = w.seed;
                        self.hold_initial(w.initial.as_deref());
                        self.note = format!("joined (session {}): training {}", w.session, w.arch);
                        if let Some((digest, reason)) = self.trainer.pending_rollback() {
                            let status = Message::ComponentStatus(proto::ComponentStatus {
                                digest,
                                state: proto::ComponentState::RolledBack,
                                round: None,
                                reason,
                            });
                            let frame = self.count_out(&status);
                            self.outbox.push_back(frame);
                        }
                        None
                    }
                    Err(e) => {
                        self.phase = Phase::Failed;
                        self.note = format!("cannot build {}: {e}", w.arch);
                        Some(Message::Goodbye(proto::Goodbye {
                            reason: self.note.clone(),
                        }))
                    }
                }
            }
            Message::Reject(r) => {
                self.phase = Phase::Rejected;
                self.note = format!("rejected: {}", r.reason);
                None
            }
            Message::Goodbye(g) => {
                self.phase = Phase::Finished;
                self.note = format!("coordinator said goodbye: {}", g.reason);
                None
            }
            Message::Error(e) => {
                self.note = format!("coordinator refused a message: {}", e.reason);
                None
            }
            Message::Assign(a) => {
                if self.phase != Phase::Training {
                    return Some(
                        self.error(Some(a.round), "an assignment before the welcome".into()),
                    );
                }
                self.round(a)
            }
            Message::Prefetch(p) => {
                if self.phase != Phase::Training {
                    return Some(self.error(Some(p.round), "images before the welcome".into()));
                }
                self.early = None;
                self.ahead = None;
                let mut p = p;
                if let Some(refs) = p.cache.take() {
                    match self.cache.expand(&refs, &p.pixels, &p.labels) {
                        Ok((pixels, labels)) => (p.pixels, p.labels) = (pixels, labels),
                        // Its assignment finds no images and fails: the
                        // coordinator then starts the cache over.
                        Err(reason) => return Some(self.error(Some(p.round), reason)),
                    }
                }
                self.ahead = Some(p);
                self.start_ahead();
                None
            }
            Message::Stock(stock) => {
                if self.phase != Phase::Training {
                    return Some(self.error(None, "images before the welcome".into()));
                }
                // Kept for a later round, which names them as held; if they
                // cannot be, that round finds no images and fails, and the
                // coordinator starts the cache over.
                match self.cache.keep(&stock.cache, &stock.pixels, &stock.labels) {
                    Ok(()) => None,
                    Err(reason) => Some(self.error(None, reason)),
                }
            }
            Message::Offer(offer) => {
                let digest = proto::digest(&offer.component);
                if self.phase != Phase::Training {
                    return Some(self.error(None, "an offer before the welcome".into()));
                }
                match self.trainer.prepare(offer) {
                    Ok(()) => {
                        self.note = format!("preparing component {}", short(&digest));
                        None
                    }
                    Err(reason) => {
                        self.note = format!("cannot take component {}: {reason}", short(&digest));
                        Some(Message::ComponentStatus(proto::ComponentStatus {
                            digest,
                            state: proto::ComponentState::Unable,
                            round: None,
                            reason,
                        }))
                    }
                }
            }
            other @ (Message::Hello(_)
            | Message::Result(_)
            | Message::Proof(_)
            | Message::ComponentStatus(_)) => Some(self.error(
                None,
                format!(
                    "a {} is not a message a coordinator sends",
                    Message::kind_name(other.kind())
                ),
            )),
        }
    }
}

/// `pixels` of round `round` shifted by up to `shift` pixels (seeded by
/// the run's `seed` and the round).
fn shifted(seed: u64, round: u64, shift: u8, pixels: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    let mut pixels = std::borrow::Cow::Borrowed(pixels);
    if shift > 0 {
        let seed = hearth_worker::augment::mix(seed ^ round.rotate_left(32));
        hearth_worker::augment::shift(pixels.to_mut(), shift.min(8), seed);
    }
    pixels
}

/// The first 12 hex digits of a digest, for notes.
fn short(digest: &str) -> &str {
    digest.get(..12).unwrap_or(digest)
}

mod ahead;
#[cfg(test)]
mod tests;
