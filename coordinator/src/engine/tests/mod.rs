//! The engine driven directly: fake workers (the real worker session around
//! a fake trainer with deterministic updates), a fake clock, tiny generated
//! images. No sockets, no wasmtime, no files.
//!
//! - `rounds.rs`: epochs, assignments, joins, leaves, deadlines;
//! - `refusals.rs`: bad, stale, duplicate and failed results;
//! - `restore.rs`: a saved and restored engine continues bit for bit;
//! - `rollout.rs`: components rolled out canary-first, swapped, rolled back.

mod ahead;
mod refusals;
mod restore;
mod rollout;
mod rounds;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use hearth_mnist::Split;
use hearth_protocol::auth::{DEV_SECRET, DeviceKey, NONCE_LEN};
use hearth_protocol::{self as proto, IMAGE_LEN, Message, UpdateKind};
use hearth_session::{Identity, Trainer, WorkerSession};
use hearth_worker::{LrSchedule, ModelConfig};

use super::*;
use crate::options::TrainingOptions;
use crate::strategy::FedAvgM;

pub(super) const PARAMS: usize = 5;

/// `n` generated samples: sample `i` has label `i % 10` and pixels `(i + j) % 251`.
pub(super) fn data(n: usize) -> Arc<Split> {
    let pixels: Vec<u8> = (0..n * IMAGE_LEN)
        .map(|k| ((k / IMAGE_LEN + k % IMAGE_LEN) % 251) as u8)
        .collect();
    Arc::new(Split {
        images: ndarray::Array2::from_shape_vec((n, IMAGE_LEN), pixels).unwrap(),
        labels: (0..n).map(|i| (i % 10) as u8).collect(),
    })
}

pub(super) fn options() -> TrainingOptions {
    TrainingOptions {
        arch: "toy".into(),
        epochs: 2,
        batch: 4,
        local_steps: 2,
        early_local_steps: 2,
        lr: 0.5,
        lr_schedule: LrSchedule::Cosine,
        lr_max: None,
        momentum: 0.9,
        wd: 0.0,
        seed: 7,
        min_workers: 2,
        round_timeout: 10,
        join_timeout: None,
        update_guard: crate::engine::UpdateGuard::Clip,
        norm_factor: 10.0,
        strikes: 3,
        aggregate: crate::strategy::Aggregate::Mean,
        checkpoint_every: 1,
        encoding: proto::Encoding::F32,
        lr_scaling: crate::strategy::LrScaling::None,
        split_steps: crate::strategy::StepSplit::None,
        train_ahead_after: 0,
        keep_samples: true,
        max_local_steps: 2,
        momentum_on: crate::strategy::MomentumOn::Server,
        shift: 0,
        shift_after: 0,
        prefetch: false,
        train_ahead: false,
        train_ahead_when_grown: false,
        warmup_epochs: 0.0,
        train_limit: None,
        test_limit: None,
    }
}

/// A deterministic stand-in for the model: each step pulls every parameter
/// towards a value computed from the batch's pixels and labels. Offered
/// components are ready at once, except one whose bytes start with
/// `refuse`; once swapped to, one whose bytes start with `nan` trains NaN
/// parameters.
#[derive(Default)]
pub(super) struct FakeTrainer {
    params: Vec<f32>,
    lr: f32,
    /// Offers prepared: digest, bytes.
    prepared: Vec<(String, Vec<u8>)>,
    /// The outcome of the last preparation, until polled.
    outcome: Option<(String, Result<(), String>)>,
    /// Bytes of the component it runs (empty: the one it started on) and of the previous one.
    running: Vec<u8>,
    previous: Option<Vec<u8>>,
    /// Components it rolled back from.
    pub(super) rolled_back: Vec<String>,
    /// Components it committed to.
    pub(super) committed: Vec<String>,
    /// It cannot take components at all (a device that trusts no key).
    unable: bool,
    /// It builds a model other than the harness's initial one.
    pub(super) builds_another: bool,
}

impl Trainer for FakeTrainer {
    type Error = String;
    fn architectures(&mut self) -> Result<Vec<String>, String> {
        Ok(vec!["toy".into()])
    }
    /// The harness's initial model, as every device builds it from the
    /// seed (or another one, if asked).
    fn build(&mut self, _: &ModelConfig) -> Result<(), String> {
        let value = if self.builds_another { 0.5 } else { 0.25 };
        self.params = vec![value; PARAMS];
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
    fn prepare(&mut self, offer: proto::Offer) -> Result<(), String> {
        if self.unable {
            return Err("this device trusts no signing key".into());
        }
        let digest = proto::digest(&offer.component);
        let outcome = if offer.component.starts_with(b"refuse") {
            Err("its self-test failed".to_string())
        } else {
            self.prepared.push((digest.clone(), offer.component));
            Ok(())
        };
        self.outcome = Some((digest, outcome));
        Ok(())
    }
    fn poll_ready(&mut self) -> Option<(String, Result<(), String>)> {
        self.outcome.take()
    }
    fn swap(&mut self, digest: &str) -> Result<(), String> {
        let (_, bytes) = self
            .prepared
            .iter()
            .find(|(d, _)| d == digest)
            .ok_or("not ready")?;
        self.previous = Some(std::mem::replace(&mut self.running, bytes.clone()));
        Ok(())
    }
    fn commit(&mut self) {
        self.previous = None;
        self.committed.push(proto::digest(&self.running));
    }
    fn roll_back(&mut self, _: &str) -> Result<(), String> {
        let previous = self.previous.take().ok_or("nothing to roll back to")?;
        self.rolled_back.push(proto::digest(&self.running));
        self.running = previous;
        Ok(())
    }
    fn train_batch(&mut self, pixels: &[u8], labels: &[u8]) -> Result<(f32, u32), String> {
        if self.running.starts_with(b"nan") {
            self.params.fill(f32::NAN);
            return Ok((0.5, 0));
        }
        let signal: f32 = pixels.iter().step_by(97).map(|&p| p as f32).sum::<f32>() / 1000.0
            + labels.iter().map(|&l| l as f32).sum::<f32>();
        for (j, p) in self.params.iter_mut().enumerate() {
            *p -= self.lr * (*p - signal / (j + 1) as f32) / 800.0;
        }
        Ok((0.5, labels.iter().filter(|&&l| l < 5).count() as u32))
    }
}

/// The nonces of every fake join (the engine never sees them; the proof does).
const NONCE: [u8; NONCE_LEN] = [1; NONCE_LEN];
const CHALLENGE: [u8; NONCE_LEN] = [2; NONCE_LEN];

fn key(name: &str) -> DeviceKey {
    DeviceKey::derive(DEV_SECRET, name)
}

/// A new connection's hello and answered challenge, as the coordinator's
/// session would take them before admitting `w`.
pub(super) fn hello(w: &mut WorkerSession<FakeTrainer>) {
    w.hello(NONCE).unwrap();
    let challenge = proto::encode(&Message::Challenge(proto::Challenge {
        nonce: CHALLENGE.to_vec(),
    }));
    assert!(matches!(
        w.handle(&challenge).map(|f| proto::decode(&f)),
        Some(Ok(Message::Proof(_)))
    ));
}

/// A worker whose name holds "tab" is a browser tab, any other a host.
pub(super) fn kind_of(name: &str) -> proto::WorkerKind {
    if name.contains("tab") {
        proto::WorkerKind::Browser
    } else {
        proto::WorkerKind::Host
    }
}

/// A worker whose name holds "keeps" keeps up to 1000 samples, any other none.
pub(super) fn cache_of(name: &str) -> u32 {
    if name.contains("keeps") { 1000 } else { 0 }
}

pub(super) fn session(name: &str) -> WorkerSession<FakeTrainer> {
    let identity = Identity {
        worker_id: name.into(),
        key: key(name),
        component_digest: String::new(),
        kind: kind_of(name),
        threads: 1,
        memory_mib: 0,
        sample_cache: cache_of(name),
    };
    // A worker named `…-no-trust` cannot take components; one named
    // `…-other` builds another initial model.
    let trainer = FakeTrainer {
        unable: name.ends_with("-no-trust"),
        builds_another: name.ends_with("-other"),
        ..FakeTrainer::default()
    };
    WorkerSession::new(identity, trainer)
}

/// A fake test-set score that depends on the parameters' bits.
pub(super) fn score(params: &[f32]) -> Evaluation {
    Evaluation {
        loss_sum: params.iter().map(|&p| p as f64).sum(),
        correct: params.iter().map(|p| p.to_bits() as u64 % 7).sum(),
        count: 100,
    }
}

/// The engine with its surroundings faked: a clock, a mailbox per
/// connection, every notice, and evaluations answered at once.
pub(super) struct Harness {
    pub(super) engine: Engine,
    pub(super) now: Duration,
    pub(super) inbox: BTreeMap<ConnId, Vec<Vec<u8>>>,
    pub(super) notices: Vec<Notice>,
    pub(super) closed: BTreeSet<ConnId>,
    pub(super) finished: bool,
    pub(super) failed: Option<String>,
    /// Every output, in order (for comparing two engines).
    pub(super) log: Vec<Output>,
    /// Component bytes by digest (what the driver's catalog holds).
    pub(super) catalog: BTreeMap<String, Vec<u8>>,
    /// Components the engine had the evaluator switch to.
    pub(super) used: Vec<String>,
    /// Components the engine banned.
    pub(super) banned: Vec<String>,
    /// Evaluations are held (until [`release`](Self::release)) instead of
    /// answered at once.
    pub(super) hold_evaluations: bool,
    /// Evaluations asked for and held.
    pub(super) held: Vec<(usize, Vec<f32>)>,
}

impl Harness {
    pub(super) fn new(options: TrainingOptions, n: usize) -> Self {
        let strategy = Box::new(
            FedAvgM::new(options.local_steps, options.momentum)
                .with_early_local_steps(options.early_local_steps)
                .with_split(options.split_steps),
        );
        let engine = Engine::new(options, data(n), strategy, vec![0.25; PARAMS]);
        Self::around(engine)
    }

    pub(super) fn around(engine: Engine) -> Self {
        Self {
            engine,
            now: Duration::ZERO,
            inbox: BTreeMap::new(),
            notices: Vec::new(),
            closed: BTreeSet::new(),
            finished: false,
            failed: None,
            log: Vec::new(),
            catalog: BTreeMap::new(),
            used: Vec::new(),
            banned: Vec::new(),
            hold_evaluations: false,
            held: Vec::new(),
        }
    }

    /// Answers the held evaluations, oldest first.
    pub(super) fn release(&mut self) {
        for (epoch, params) in std::mem::take(&mut self.held) {
            self.feed(Input::Evaluated {
                epoch,
                score: score(&params),
            });
        }
    }

    pub(super) fn feed(&mut self, input: Input) {
        let outputs = self.engine.handle(self.now, input);
        for o in outputs {
            self.log.push(o.clone());
            match o {
                Output::Send { conn, frame } => self.inbox.entry(conn).or_default().push(frame),
                Output::Close { conn } => {
                    self.closed.insert(conn);
                }
                Output::Evaluate { epoch, params } if self.hold_evaluations => {
                    self.held.push((epoch, params));
                }
                Output::Evaluate { epoch, params } => {
                    let score = score(&params);
                    self.feed(Input::Evaluated { epoch, score });
                }
                Output::Offer { conn, digest } => {
                    let offer = Message::Offer(proto::Offer {
                        signature: String::new(),
                        component: self.catalog[&digest].clone(),
                    });
                    self.inbox
                        .entry(conn)
                        .or_default()
                        .push(proto::encode(&offer));
                }
                Output::UseComponent { digest } => self.used.push(digest),
                Output::Banned { digest } => self.banned.push(digest),
                Output::Notice(n) => self.notices.push(n),
                Output::Finished => self.finished = true,
                Output::Failed(reason) => self.failed = Some(reason),
            }
        }
    }

    pub(super) fn join(&mut self, conn: ConnId, name: &str) {
        let worker = Admitted {
            name: name.into(),
            kind: kind_of(name),
            component: "c".repeat(64),
            encodings: proto::encoding::ENCODINGS.to_vec(),
            sample_cache: cache_of(name),
            proof: key(name).coordinator_proof(&NONCE, &CHALLENGE),
        };
        self.feed(Input::Joined { conn, worker });
    }

    pub(super) fn frame(&mut self, conn: ConnId, message: &Message) {
        let bytes = proto::encode(message);
        self.feed(Input::Frame {
            conn,
            bytes: bytes.len(),
            message: proto::decode(&bytes).unwrap(),
        });
    }

    /// Frames waiting for `conn`, decoded, in order (and taken out).
    pub(super) fn take(&mut self, conn: ConnId) -> Vec<Message> {
        self.inbox
            .remove(&conn)
            .unwrap_or_default()
            .iter()
            .map(|f| proto::decode(f).unwrap())
            .collect()
    }

    /// Delivers `conn`'s frames to `worker` and the worker's replies back.
    pub(super) fn exchange(
        &mut self,
        conn: ConnId,
        worker: &mut WorkerSession<FakeTrainer>,
    ) -> usize {
        let frames = self.inbox.remove(&conn).unwrap_or_default();
        let mut replies = 0;
        for f in frames {
            if let Some(reply) = worker.handle(&f) {
                replies += 1;
                self.frame(conn, &proto::decode(&reply).unwrap());
            }
            while let Some(unasked) = worker.poll() {
                replies += 1;
                self.frame(conn, &proto::decode(&unasked).unwrap());
            }
        }
        replies
    }

    /// Ledger lines per epoch: the sample indices credited.
    pub(super) fn credited(&self) -> BTreeMap<usize, Vec<u32>> {
        let mut out: BTreeMap<usize, Vec<u32>> = BTreeMap::new();
        for n in &self.notices {
            if let Notice::Completed(entries) = n {
                for e in entries {
                    out.entry(e.epoch).or_default().extend(&e.samples);
                }
            }
        }
        out.values_mut().for_each(|v| v.sort_unstable());
        out
    }

    pub(super) fn refusals(&self) -> Vec<String> {
        self.notices
            .iter()
            .filter_map(|n| match n {
                Notice::Refused { reason, .. } => Some(reason.clone()),
                _ => None,
            })
            .collect()
    }

    pub(super) fn requeues(&self) -> Vec<(String, usize, Requeue)> {
        self.notices
            .iter()
            .filter_map(|n| match n {
                Notice::Requeued {
                    worker,
                    batches,
                    why,
                } => Some((worker.clone(), *batches, why.clone())),
                _ => None,
            })
            .collect()
    }
}

/// Joins `names` as connections 1, 2, … with a fake worker each.
pub(super) fn workers(h: &mut Harness, names: &[&str]) -> Vec<WorkerSession<FakeTrainer>> {
    names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let mut w = session(name);
            hello(&mut w);
            h.join(i as ConnId + 1, name);
            w
        })
        .collect()
}

/// Lets every worker answer until the run is over.
pub(super) fn run_to_end(h: &mut Harness, ws: &mut [WorkerSession<FakeTrainer>]) {
    run_until(h, ws, |h| h.finished);
    assert!(h.finished, "the run did not finish");
    // Deliver the goodbyes.
    for (i, w) in ws.iter_mut().enumerate() {
        h.exchange(i as ConnId + 1, w);
    }
}

/// Lets every worker answer (time passing) until `done` holds or the run is over.
pub(super) fn run_until(
    h: &mut Harness,
    ws: &mut [WorkerSession<FakeTrainer>],
    done: impl Fn(&Harness) -> bool,
) {
    for _ in 0..10_000 {
        if done(h) || h.finished {
            return;
        }
        h.now += Duration::from_millis(10);
        // Time passed: what fell due goes out before anyone answers.
        h.feed(Input::Tick);
        let mut any = 0;
        for (i, w) in ws.iter_mut().enumerate() {
            any += h.exchange(i as ConnId + 1, w);
            // A step of a round sent ahead while nothing arrives.
            w.work();
        }
        if any == 0 {
            h.feed(Input::Tick);
        }
    }
    panic!("the condition never held");
}

pub(super) fn every_sample_once(h: &Harness, n: u32, epochs: usize) {
    let credited = h.credited();
    assert_eq!(credited.len(), epochs, "epochs credited");
    for (epoch, samples) in credited {
        assert_eq!(samples, (0..n).collect::<Vec<_>>(), "epoch {epoch}");
    }
}

/// The assignment waiting for `conn`.
pub(super) fn assignment(h: &mut Harness, conn: ConnId) -> proto::Assign {
    h.take(conn)
        .into_iter()
        .find_map(|m| match m {
            Message::Assign(a) => Some(a),
            _ => None,
        })
        .expect("an assignment")
}

pub(super) fn result(a: &proto::Assign, values: Vec<f32>) -> proto::RoundResult {
    proto::RoundResult {
        round: a.round,
        params_version: a.params_version,
        samples: a.labels.len() as u32,
        loss_sum: 1.0,
        correct: 0,
        kind: UpdateKind::Delta,
        values,
        encoding: a.reply_encoding,
        compute_seconds: 0.0,
    }
}

/// Every message the engine sent to `conn`, in order.
pub(super) fn sent_to(h: &Harness, conn: ConnId) -> Vec<Message> {
    h.log
        .iter()
        .filter_map(|o| match o {
            Output::Send { conn: c, frame } if *c == conn => proto::decode(frame).ok(),
            _ => None,
        })
        .collect()
}
