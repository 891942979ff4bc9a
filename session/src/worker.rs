//! [`WorkerSession`]: the worker's half of a session, frames in, frames out.

use std::collections::VecDeque;

use hearth_protocol::auth::{DeviceKey, NONCE_LEN};
use hearth_protocol::{self as proto, Message};
use hearth_worker::ModelConfig;

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
}

/// Rounds a component swapped to is watched for: a failed round, NaN or
/// infinite values, or a diverging loss in them rolls the device back.
pub const WATCH_ROUNDS: u32 = 5;

/// A watched round's mean loss diverged when it exceeds both this many
/// times the last mean loss before the swap ...
const DIVERGE_FACTOR: f64 = 4.0;
/// ... and that loss plus this much.
const DIVERGE_MARGIN: f64 = 1.0;

/// A component swapped to and not yet proven.
#[derive(Debug, Clone)]
struct Watch {
    digest: String,
    previous: String,
    rounds_left: u32,
    /// Mean loss of the last round before the swap.
    baseline: Option<f64>,
}

/// What is wrong with a watched round's result, if anything.
fn watched_problem(result: &proto::RoundResult, baseline: Option<f64>) -> Option<String> {
    if let Some(i) = result.values.iter().position(|v| !v.is_finite()) {
        return Some(format!("value {i} of its result is {}", result.values[i]));
    }
    let mean = result.loss_sum / f64::from(result.samples.max(1));
    if !mean.is_finite() {
        return Some(format!("its training loss is {mean}"));
    }
    match baseline {
        Some(b) if mean > (DIVERGE_FACTOR * b).max(b + DIVERGE_MARGIN) => Some(format!(
            "its training loss diverged: {mean:.3} after {b:.3} before the swap"
        )),
        _ => None,
    }
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
}

impl<T: Trainer> WorkerSession<T> {
    /// A session for `identity`, training with `trainer`.
    pub fn new(identity: Identity, trainer: T) -> Self {
        Self {
            running: identity.component_digest.clone(),
            watch: None,
            outbox: VecDeque::new(),
            identity,
            trainer,
            phase: Phase::Joining,
            note: String::new(),
            stats: SessionStats::default(),
            joining: None,
            challenge: None,
        }
    }

    /// The first frame of a connection (call it on every new connection),
    /// with a fresh random `nonce` (the caller draws it: the OS on a host,
    /// `crypto.getRandomValues` in a browser).
    pub fn hello(&mut self, nonce: [u8; NONCE_LEN]) -> Result<Vec<u8>, T::Error> {
        let architectures = self.trainer.architectures()?;
        self.phase = Phase::Joining;
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
    fn round(&mut self, a: proto::Assign) -> Option<Message> {
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
        let outcome = run_round(&mut self.trainer, &a);
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
                    short(&a.component)
                );
            }
        }
        match outcome {
            Ok(result) => {
                self.stats.rounds += 1;
                self.stats.images += u64::from(result.samples);
                self.stats.last_loss = Some(result.loss_sum / f64::from(result.samples.max(1)));
                Some(Message::Result(result))
            }
            Err(e) => {
                self.stats.failed_rounds += 1;
                Some(self.error(Some(a.round), format!("round {} failed: {e}", a.round)))
            }
        }
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

/// The first 12 hex digits of a digest, for notes.
fn short(digest: &str) -> &str {
    digest.get(..12).unwrap_or(digest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::{IMAGE_LEN, UpdateKind};

    /// Adds the learning rate to every parameter per step; counts label 0 as
    /// right; fails on a step of exactly 3 samples or an unknown architecture.
    #[derive(Default)]
    struct Counter {
        params: Vec<f32>,
        lr: f32,
        steps: Vec<usize>,
        built: Option<ModelConfig>,
    }

    impl Trainer for Counter {
        type Error = String;
        fn architectures(&mut self) -> Result<Vec<String>, String> {
            Ok(vec!["toy".into()])
        }
        fn build(&mut self, config: &ModelConfig) -> Result<(), String> {
            if config.arch != "toy" {
                return Err(format!("unknown architecture {}", config.arch));
            }
            self.built = Some(config.clone());
            Ok(())
        }
        fn set_params(&mut self, params: &[f32]) -> Result<(), String> {
            self.params = params.to_vec();
            Ok(())
        }
        fn params(&mut self) -> Result<Vec<f32>, String> {
            Ok(self.params.clone())
        }
        fn set_learning_rate(&mut self, lr: f32) -> Result<(), String> {
            self.lr = lr;
            Ok(())
        }
        fn train_batch(&mut self, pixels: &[u8], labels: &[u8]) -> Result<(f32, u32), String> {
            assert_eq!(pixels.len(), labels.len() * IMAGE_LEN);
            if labels.len() == 3 {
                return Err("a step of 3 fails".into());
            }
            self.steps.push(labels.len());
            self.params.iter_mut().for_each(|p| *p += self.lr);
            Ok((1.5, labels.iter().filter(|&&l| l == 0).count() as u32))
        }
    }

    const NONCE: [u8; NONCE_LEN] = [7; NONCE_LEN];
    const CHALLENGE: [u8; NONCE_LEN] = [9; NONCE_LEN];

    fn key() -> DeviceKey {
        DeviceKey::derive("secret", "pi-kitchen")
    }

    fn identity() -> Identity {
        Identity {
            worker_id: "pi-kitchen".into(),
            key: key(),
            component_digest: "ab".repeat(32),
            kind: proto::WorkerKind::Host,
            threads: 1,
            memory_mib: 64,
        }
    }

    fn welcome_with(arch: &str, proof: Vec<u8>) -> Vec<u8> {
        proto::encode(&Message::Welcome(proto::Welcome {
            session: 4,
            arch: arch.into(),
            seed: 9,
            optimizer: hearth_worker::OptimizerConfig::default(),
            proof,
        }))
    }

    fn welcome(arch: &str) -> Vec<u8> {
        welcome_with(arch, key().coordinator_proof(&NONCE, &CHALLENGE))
    }

    fn challenge() -> Vec<u8> {
        proto::encode(&Message::Challenge(proto::Challenge {
            nonce: CHALLENGE.to_vec(),
        }))
    }

    /// Hello and the answered challenge, as on a new connection.
    fn join<T: Trainer>(s: &mut WorkerSession<T>) -> Vec<u8> {
        let hello = s.hello(NONCE).unwrap_or_default();
        let Message::Proof(p) = decode(s.handle(&challenge())) else {
            panic!("a challenge is answered with a proof")
        };
        assert!(key().check_worker_proof(&CHALLENGE, &hello, &p.mac));
        hello
    }

    fn assign(round: u64, steps: Vec<u32>, reply: UpdateKind) -> Vec<u8> {
        let n: u32 = steps.iter().sum();
        proto::encode(&Message::Assign(proto::Assign {
            round,
            params_version: 3,
            learning_rate: 0.25,
            steps,
            reply,
            params: vec![1.0, 2.0, 3.0],
            pixels: vec![0; n as usize * IMAGE_LEN],
            labels: (0..n).map(|i| (i % 2) as u8).collect(),
            component: String::new(),
        }))
    }

    fn decode(frame: Option<Vec<u8>>) -> Message {
        proto::decode(&frame.expect("a reply")).expect("the session's frames decode")
    }

    #[test]
    fn hello_welcome_then_rounds_of_local_steps_and_deltas() {
        let mut s = WorkerSession::new(identity(), Counter::default());
        let Message::Hello(h) = proto::decode(&join(&mut s)).unwrap() else {
            panic!("hello expected")
        };
        assert_eq!(
            (h.worker_id.as_str(), h.nonce.as_slice()),
            ("pi-kitchen", &NONCE[..])
        );
        assert_eq!(h.capabilities.architectures, vec!["toy".to_string()]);
        assert!(s.handle(&welcome("toy")).is_none());
        assert_eq!(s.phase(), Phase::Training);
        assert_eq!(s.trainer.built.as_ref().map(|c| c.seed), Some(9));

        let Message::Result(r) = decode(s.handle(&assign(7, vec![2, 2, 1], UpdateKind::Delta)))
        else {
            panic!("result expected")
        };
        assert_eq!(
            s.trainer.steps,
            vec![2, 2, 1],
            "one step per entry, in order"
        );
        assert_eq!((r.round, r.params_version, r.samples), (7, 3, 5));
        assert_eq!(r.correct, 3, "labels 0, 1, 0, 1, 0");
        assert!((r.loss_sum - 7.5).abs() < 1e-9);
        assert_eq!((r.kind, r.values), (UpdateKind::Delta, vec![0.75; 3]));

        let Message::Result(r) = decode(s.handle(&assign(8, vec![1], UpdateKind::Params))) else {
            panic!("result expected")
        };
        assert_eq!(
            (r.kind, r.values),
            (UpdateKind::Params, vec![1.25, 2.25, 3.25])
        );
        assert_eq!((s.stats().rounds, s.stats().images), (2, 6));
    }

    #[test]
    fn a_failed_round_is_reported_for_that_round_and_the_session_goes_on() {
        let mut s = WorkerSession::new(identity(), Counter::default());
        join(&mut s);
        let Message::Error(e) = decode(s.handle(&assign(1, vec![1], UpdateKind::Delta))) else {
            panic!("an assignment before the welcome is refused")
        };
        assert_eq!(e.round, Some(1));
        s.handle(&welcome("toy"));
        let Message::Error(e) = decode(s.handle(&assign(2, vec![2, 3], UpdateKind::Delta))) else {
            panic!("error report expected")
        };
        assert_eq!(e.round, Some(2));
        assert!(e.reason.contains("step of 3"), "{}", e.reason);
        assert_eq!(s.phase(), Phase::Training, "the session goes on");
        assert!(matches!(
            decode(s.handle(&assign(3, vec![2], UpdateKind::Delta))),
            Message::Result(_)
        ));
        let Message::Error(e) = decode(s.handle(b"\x02\x04garbage")) else {
            panic!("malformed frames are reported")
        };
        assert_eq!(e.round, None);
        assert_eq!(s.stats().failed_rounds, 1);
    }

    #[test]
    fn reject_goodbye_and_an_unbuildable_model_end_the_session() {
        let mut s = WorkerSession::new(identity(), Counter::default());
        join(&mut s);
        let Message::Goodbye(g) = decode(s.handle(&welcome("resnet"))) else {
            panic!("goodbye expected")
        };
        assert!(g.reason.contains("resnet"));
        assert_eq!(s.phase(), Phase::Failed);
        assert!(s.phase().is_final());

        join(&mut s);
        let reject = proto::encode(&Message::Reject(proto::Reject {
            reason: "wrong auth token".into(),
        }));
        assert!(s.handle(&reject).is_none());
        assert_eq!(s.phase(), Phase::Rejected);
        assert!(s.note().contains("wrong auth token"));

        join(&mut s);
        s.handle(&welcome("toy"));
        let bye = proto::encode(&Message::Goodbye(proto::Goodbye {
            reason: "training finished".into(),
        }));
        assert!(s.handle(&bye).is_none());
        assert_eq!(s.phase(), Phase::Finished);
    }

    #[test]
    fn a_coordinator_that_cannot_prove_the_key_is_not_trusted() {
        let mut s = WorkerSession::new(identity(), Counter::default());
        join(&mut s);
        let forged = DeviceKey::derive("another household", "pi-kitchen");
        assert!(
            s.handle(&welcome_with(
                "toy",
                forged.coordinator_proof(&NONCE, &CHALLENGE)
            ))
            .is_none()
        );
        assert_eq!(s.phase(), Phase::Rejected);
        assert!(
            s.trainer.built.is_none(),
            "no model is built for an impostor"
        );

        // A welcome without a challenge first (no proof possible) is refused too.
        s.hello(NONCE).unwrap_or_default();
        assert!(s.handle(&welcome("toy")).is_none());
        assert_eq!(s.phase(), Phase::Rejected);

        // A second challenge on one connection is not answered.
        join(&mut s);
        assert!(matches!(decode(s.handle(&challenge())), Message::Error(_)));
        assert!(s.handle(&welcome("toy")).is_none());
        assert_eq!(s.phase(), Phase::Training);
    }
}
