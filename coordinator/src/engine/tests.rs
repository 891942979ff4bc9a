//! The engine driven directly: fake workers (the real worker session around
//! a fake trainer with deterministic updates), a fake clock, tiny generated
//! images. No sockets, no wasmtime, no files.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use hearth_mnist::Split;
use hearth_protocol::{self as proto, IMAGE_LEN, Message, UpdateKind};
use hearth_session::{Identity, Trainer, WorkerSession};
use hearth_worker::{LrSchedule, ModelConfig};

use super::*;
use crate::options::TrainingOptions;
use crate::strategy::FedAvgM;

const PARAMS: usize = 5;

/// `n` generated samples: sample `i` has label `i % 10` and pixels `(i + j) % 251`.
fn data(n: usize) -> Arc<Split> {
    let pixels: Vec<u8> = (0..n * IMAGE_LEN)
        .map(|k| ((k / IMAGE_LEN + k % IMAGE_LEN) % 251) as u8)
        .collect();
    Arc::new(Split {
        images: ndarray::Array2::from_shape_vec((n, IMAGE_LEN), pixels).unwrap(),
        labels: (0..n).map(|i| (i % 10) as u8).collect(),
    })
}

fn options() -> TrainingOptions {
    TrainingOptions {
        arch: "toy".into(),
        epochs: 2,
        batch: 4,
        local_steps: 2,
        lr: 0.5,
        lr_schedule: LrSchedule::Cosine,
        momentum: 0.9,
        wd: 0.0,
        seed: 7,
        min_workers: 2,
        round_timeout: 10,
        join_timeout: None,
    }
}

/// A deterministic stand-in for the model: each step pulls every parameter
/// towards a value computed from the batch's pixels and labels.
#[derive(Default)]
struct FakeTrainer {
    params: Vec<f32>,
    lr: f32,
}

impl Trainer for FakeTrainer {
    type Error = String;
    fn architectures(&mut self) -> Result<Vec<String>, String> {
        Ok(vec!["toy".into()])
    }
    fn build(&mut self, _: &ModelConfig) -> Result<(), String> {
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
        let signal: f32 = pixels.iter().step_by(97).map(|&p| p as f32).sum::<f32>() / 1000.0
            + labels.iter().map(|&l| l as f32).sum::<f32>();
        for (j, p) in self.params.iter_mut().enumerate() {
            *p -= self.lr * (*p - signal / (j + 1) as f32) / 8.0;
        }
        Ok((0.5, labels.iter().filter(|&&l| l < 5).count() as u32))
    }
}

fn session(name: &str) -> WorkerSession<FakeTrainer> {
    let identity = Identity {
        worker_id: name.into(),
        token: String::new(),
        component_digest: String::new(),
        kind: proto::WorkerKind::Host,
        threads: 1,
        memory_mib: 0,
    };
    WorkerSession::new(identity, FakeTrainer::default())
}

/// The engine with its surroundings faked: a clock, a mailbox per
/// connection, every notice, and evaluations answered at once.
struct Harness {
    engine: Engine,
    now: Duration,
    inbox: BTreeMap<ConnId, Vec<Vec<u8>>>,
    notices: Vec<Notice>,
    closed: BTreeSet<ConnId>,
    finished: bool,
    failed: Option<String>,
    /// Every output, in order (for comparing two engines).
    log: Vec<Output>,
}

impl Harness {
    fn new(options: TrainingOptions, n: usize) -> Self {
        let strategy = Box::new(FedAvgM::new(options.local_steps, options.momentum));
        let engine = Engine::new(options, data(n), strategy, vec![0.25; PARAMS]);
        Self::around(engine)
    }

    fn around(engine: Engine) -> Self {
        Self {
            engine,
            now: Duration::ZERO,
            inbox: BTreeMap::new(),
            notices: Vec::new(),
            closed: BTreeSet::new(),
            finished: false,
            failed: None,
            log: Vec::new(),
        }
    }

    fn feed(&mut self, input: Input) {
        let outputs = self.engine.handle(self.now, input);
        for o in outputs {
            self.log.push(o.clone());
            match o {
                Output::Send { conn, frame } => self.inbox.entry(conn).or_default().push(frame),
                Output::Close { conn } => {
                    self.closed.insert(conn);
                }
                Output::Evaluate { epoch, params } => {
                    // A fake score that depends on the parameters' bits.
                    let correct = params.iter().map(|p| p.to_bits() as u64 % 7).sum();
                    let score = Evaluation {
                        loss_sum: params.iter().map(|&p| p as f64).sum(),
                        correct,
                        count: 100,
                    };
                    self.feed(Input::Evaluated { epoch, score });
                }
                Output::Notice(n) => self.notices.push(n),
                Output::Finished => self.finished = true,
                Output::Failed(reason) => self.failed = Some(reason),
            }
        }
    }

    fn join(&mut self, conn: ConnId, name: &str) {
        let worker = Admitted {
            name: name.into(),
            kind: proto::WorkerKind::Host,
            component: "c".repeat(64),
        };
        self.feed(Input::Joined { conn, worker });
    }

    fn frame(&mut self, conn: ConnId, message: &Message) {
        let bytes = proto::encode(message);
        self.feed(Input::Frame {
            conn,
            bytes: bytes.len(),
            message: proto::decode(&bytes).unwrap(),
        });
    }

    /// Frames waiting for `conn`, decoded, in order (and taken out).
    fn take(&mut self, conn: ConnId) -> Vec<Message> {
        self.inbox
            .remove(&conn)
            .unwrap_or_default()
            .iter()
            .map(|f| proto::decode(f).unwrap())
            .collect()
    }

    /// Delivers `conn`'s frames to `worker` and the worker's replies back.
    fn exchange(&mut self, conn: ConnId, worker: &mut WorkerSession<FakeTrainer>) -> usize {
        let frames = self.inbox.remove(&conn).unwrap_or_default();
        let mut replies = 0;
        for f in frames {
            if let Some(reply) = worker.handle(&f) {
                replies += 1;
                self.frame(conn, &proto::decode(&reply).unwrap());
            }
        }
        replies
    }

    /// Ledger lines per epoch: the sample indices credited.
    fn credited(&self) -> BTreeMap<usize, Vec<u32>> {
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

    fn refusals(&self) -> Vec<String> {
        self.notices
            .iter()
            .filter_map(|n| match n {
                Notice::Refused { reason, .. } => Some(reason.clone()),
                _ => None,
            })
            .collect()
    }

    fn requeues(&self) -> Vec<(String, usize, Requeue)> {
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
fn workers(h: &mut Harness, names: &[&str]) -> Vec<WorkerSession<FakeTrainer>> {
    names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let mut w = session(name);
            w.hello().unwrap();
            h.join(i as ConnId + 1, name);
            w
        })
        .collect()
}

/// Lets every worker answer until the run is over.
fn run_to_end(h: &mut Harness, ws: &mut [WorkerSession<FakeTrainer>]) {
    for _ in 0..10_000 {
        if h.finished {
            // Deliver the goodbyes.
            for (i, w) in ws.iter_mut().enumerate() {
                h.exchange(i as ConnId + 1, w);
            }
            return;
        }
        h.now += Duration::from_millis(10);
        let mut any = 0;
        for (i, w) in ws.iter_mut().enumerate() {
            any += h.exchange(i as ConnId + 1, w);
        }
        if any == 0 {
            h.feed(Input::Tick);
        }
    }
    panic!("the run did not finish");
}

fn every_sample_once(h: &Harness, n: u32, epochs: usize) {
    let credited = h.credited();
    assert_eq!(credited.len(), epochs, "epochs credited");
    for (epoch, samples) in credited {
        assert_eq!(samples, (0..n).collect::<Vec<_>>(), "epoch {epoch}");
    }
}

#[test]
fn two_epochs_use_every_sample_once_and_everyone_is_told_goodbye() {
    let mut h = Harness::new(options(), 50);
    let mut ws = workers(&mut h, &["a", "b"]);
    run_to_end(&mut h, &mut ws);
    every_sample_once(&h, 50, 2);
    assert!(h.failed.is_none());
    assert!(
        ws.iter()
            .all(|w| w.phase() == hearth_session::Phase::Finished)
    );
    assert_eq!(h.closed, BTreeSet::from([1, 2]));
    let epochs: Vec<_> = h
        .notices
        .iter()
        .filter_map(|n| match n {
            Notice::EpochFinished(m) => Some(m.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(epochs.len(), 2);
    // 13 batches of 4 (the last has 2), 2 workers × 2 local steps per round.
    assert_eq!(epochs[0].rounds, 4);
    assert_eq!(
        epochs[0].train_accuracy,
        25.0 / 50.0,
        "labels 0-4 count as right"
    );
    assert!(epochs[0].bytes_sent > 50 * IMAGE_LEN as u64);
    assert_ne!(h.engine.global(), &[0.25; PARAMS], "the model moved");
}

#[test]
fn assignments_follow_the_ledger_the_schedule_and_the_strategy() {
    let mut h = Harness::new(options(), 50);
    workers(&mut h, &["a", "b"]);
    let assigns: Vec<proto::Assign> = [1, 2]
        .into_iter()
        .flat_map(|c| h.take(c))
        .filter_map(|m| match m {
            Message::Assign(a) => Some(a),
            _ => None,
        })
        .collect();
    assert_eq!(assigns.len(), 2, "one each in round 1");
    for a in &assigns {
        assert_eq!(
            (a.round, a.params_version, a.reply),
            (1, 0, UpdateKind::Delta)
        );
        assert_eq!(a.steps, vec![4, 4], "local_steps batches of 4");
        assert_eq!(
            a.learning_rate, 0.5,
            "the cosine schedule starts at the peak"
        );
        assert_eq!(a.params, vec![0.25; PARAMS]);
    }
    let Some(Message::Welcome(w)) = session_welcome(&mut h) else {
        panic!("a welcome first")
    };
    assert_eq!(
        (w.arch.as_str(), w.seed, w.optimizer.momentum),
        ("toy", 7, 0.0)
    );
}

/// The welcome a newly joined connection gets.
fn session_welcome(h: &mut Harness) -> Option<Message> {
    h.join(9, "late");
    h.take(9).into_iter().next()
}

#[test]
fn a_worker_joining_mid_epoch_trains_from_the_next_round() {
    let mut o = options();
    o.min_workers = 1;
    let mut h = Harness::new(o, 50);
    let mut a = workers(&mut h, &["a"]).remove(0);
    // Round 1 goes to a alone.
    let mut b = session("b");
    b.hello().unwrap();
    h.join(2, "b");
    let first = h.take(2);
    assert!(
        matches!(first.as_slice(), [Message::Welcome(_)]),
        "{first:?}"
    );
    b.handle(&proto::encode(&first[0]));
    h.exchange(1, &mut a);
    // Round 2: both.
    let round2: Vec<u64> = [1, 2]
        .into_iter()
        .flat_map(|c| {
            h.inbox
                .get(&c)
                .into_iter()
                .flatten()
                .filter_map(|f| match proto::decode(f) {
                    Ok(Message::Assign(a)) => Some(a.round),
                    _ => None,
                })
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(round2, vec![2, 2]);
    let mut ws = vec![a, b];
    run_to_end(&mut h, &mut ws);
    every_sample_once(&h, 50, 2);
}

#[test]
fn a_worker_leaving_mid_round_by_close_or_goodbye_gives_its_batches_back() {
    for goodbye in [false, true] {
        let mut h = Harness::new(options(), 50);
        let mut ws = workers(&mut h, &["a", "b"]);
        // b takes its assignment and leaves without answering.
        h.take(2);
        if goodbye {
            let bye = Message::Goodbye(proto::Goodbye {
                reason: "cannot build".into(),
            });
            h.frame(2, &bye);
            assert!(h.closed.contains(&2), "a goodbye closes the connection");
        } else {
            h.feed(Input::Left { conn: 2 });
        }
        assert_eq!(h.requeues(), vec![("b".into(), 2, Requeue::Left)]);
        h.exchange(1, &mut ws[0]);
        let mut ws = vec![ws.remove(0)];
        run_to_end(&mut h, &mut ws);
        every_sample_once(&h, 50, 2);
    }
}

#[test]
fn a_missed_deadline_requeues_and_the_late_result_is_not_averaged() {
    let mut h = Harness::new(options(), 50);
    let mut ws = workers(&mut h, &["a", "slow"]);
    h.exchange(1, &mut ws[0]);
    let late = h.inbox.remove(&2).unwrap();
    let deadline = h.engine.next_deadline().unwrap();
    assert_eq!(
        deadline,
        Duration::from_secs(10),
        "speed unknown: the round timeout"
    );
    h.now = deadline;
    h.feed(Input::Tick);
    let requeued = h.requeues();
    assert!(
        matches!(&requeued[..], [(w, 2, Requeue::MissedDeadline { .. })] if w == "slow"),
        "{requeued:?}"
    );
    let version = h.engine.state().version;
    // The round closed with a's result; the next rounds go to a alone.
    let next: Vec<Message> = h.take(2);
    assert!(
        next.is_empty(),
        "a silent worker gets nothing new: {next:?}"
    );
    // Its late answer is refused, not averaged, and brings it back.
    for f in late {
        if let Some(reply) = ws[1].handle(&f) {
            h.frame(2, &proto::decode(&reply).unwrap());
        }
    }
    assert_eq!(
        h.engine.state().version,
        version,
        "the late result changed nothing"
    );
    assert!(h.refusals().iter().any(|r| r.contains("not given")));
    assert!(
        h.notices
            .iter()
            .any(|n| matches!(n, Notice::Back { worker } if worker == "slow"))
    );
    run_to_end(&mut h, &mut ws);
    every_sample_once(&h, 50, 2);
}

/// mallory's assignment of the round in flight.
fn assignment(h: &mut Harness, conn: ConnId) -> proto::Assign {
    h.take(conn)
        .into_iter()
        .find_map(|m| match m {
            Message::Assign(a) => Some(a),
            _ => None,
        })
        .expect("an assignment")
}

fn result(a: &proto::Assign, values: Vec<f32>) -> proto::RoundResult {
    proto::RoundResult {
        round: a.round,
        params_version: a.params_version,
        samples: a.labels.len() as u32,
        loss_sum: 1.0,
        correct: 0,
        kind: UpdateKind::Delta,
        values,
    }
}

#[test]
fn bad_results_are_refused_named_and_never_aggregated() {
    type Spoil = fn(&mut proto::RoundResult);
    let cases: [(Spoil, &str); 5] = [
        (|r| r.values.truncate(PARAMS - 1), "4 values"),
        (|r| r.values[2] = f32::NAN, "non-finite"),
        (|r| r.kind = UpdateKind::Params, "deltas"),
        (|r| r.samples += 1, "samples"),
        (|r| r.params_version += 1, "version"),
    ];
    // What the round gives when mallory's batches simply go back.
    let reference = {
        let mut h = Harness::new(options(), 50);
        let mut ws = workers(&mut h, &["a", "mallory"]);
        h.feed(Input::Left { conn: 2 });
        h.exchange(1, &mut ws[0]);
        h.engine.global().to_vec()
    };
    for (spoil, needle) in cases {
        let mut h = Harness::new(options(), 50);
        let mut ws = workers(&mut h, &["a", "mallory"]);
        let a = assignment(&mut h, 2);
        let mut r = result(&a, vec![1e-3; PARAMS]);
        spoil(&mut r);
        h.frame(2, &Message::Result(r));
        let replies = h.take(2);
        assert!(
            replies
                .iter()
                .any(|m| matches!(m, Message::Error(e) if e.reason.contains(needle) && e.round == Some(a.round))),
            "{needle}: {replies:?}"
        );
        assert!(
            h.refusals().iter().any(|r| r.contains(needle)),
            "{needle}: logged"
        );
        assert_eq!(
            h.requeues(),
            vec![("mallory".into(), 2, Requeue::Rejected)],
            "{needle}"
        );
        h.exchange(1, &mut ws[0]);
        assert_eq!(
            h.engine.global(),
            &reference[..],
            "{needle}: only a's result counts"
        );
        run_to_end(&mut h, &mut ws);
        every_sample_once(&h, 50, 2);
    }
}

#[test]
fn results_for_another_round_or_twice_are_refused() {
    let mut h = Harness::new(options(), 50);
    let mut ws = workers(&mut h, &["a", "b"]);
    let a = assignment(&mut h, 2);
    let mut other = result(&a, vec![0.0; PARAMS]);
    other.round += 1000;
    h.frame(2, &Message::Result(other));
    assert!(h.refusals().iter().any(|r| r.contains("round 1001")));
    assert!(h.requeues().is_empty(), "its own round is still open");
    let good = Message::Result(result(&a, vec![0.0; PARAMS]));
    h.frame(2, &good);
    h.frame(2, &good);
    assert!(
        h.refusals().iter().any(|r| r.contains("not given")),
        "the duplicate"
    );
    let credited_b = h
        .notices
        .iter()
        .filter(|n| matches!(n, Notice::Completed(e) if e.iter().all(|e| e.worker == "b")))
        .count();
    assert_eq!(credited_b, 1, "credited once");
    let mut ws = vec![ws.remove(0)];
    h.feed(Input::Left { conn: 2 });
    run_to_end(&mut h, &mut ws);
    every_sample_once(&h, 50, 2);
}

#[test]
fn a_failed_round_reported_by_the_worker_goes_back_at_once() {
    let mut h = Harness::new(options(), 50);
    let mut ws = workers(&mut h, &["a", "b"]);
    let a = assignment(&mut h, 2);
    h.frame(
        2,
        &Message::Error(proto::ErrorReport {
            round: Some(a.round),
            reason: "trap".into(),
        }),
    );
    assert_eq!(
        h.requeues(),
        vec![("b".into(), 2, Requeue::Failed("trap".into()))]
    );
    h.exchange(1, &mut ws[0]);
    let mut ws = vec![ws.remove(0)];
    run_to_end(&mut h, &mut ws);
    every_sample_once(&h, 50, 2);
}

#[test]
fn the_run_waits_for_min_workers_and_gives_up_after_the_join_timeout() {
    let mut o = options();
    o.min_workers = 2;
    o.join_timeout = Some(30);
    let mut h = Harness::new(o, 50);
    h.join(1, "a");
    assert!(
        h.take(1).iter().all(|m| !matches!(m, Message::Assign(_))),
        "waits for 2"
    );
    assert!(
        h.notices
            .iter()
            .any(|n| matches!(n, Notice::Waiting { needed: 2, .. }))
    );
    assert_eq!(h.engine.next_deadline(), Some(Duration::from_secs(30)));
    h.now = Duration::from_secs(31);
    h.feed(Input::Tick);
    assert!(
        h.failed.as_deref().unwrap_or("").contains("only 1 of 2"),
        "{:?}",
        h.failed
    );
}

#[test]
fn a_restored_engine_continues_bit_for_bit() {
    let mut h = Harness::new(options(), 50);
    let mut ws = workers(&mut h, &["a", "b"]);
    // Into the first epoch: two rounds done, the third in flight with a's
    // result in and b's outstanding.
    for _ in 0..2 {
        h.now += Duration::from_millis(10);
        h.exchange(1, &mut ws[0]);
        h.exchange(2, &mut ws[1]);
    }
    h.now += Duration::from_millis(10);
    h.exchange(1, &mut ws[0]);
    assert_eq!(h.engine.state().epoch, 1);
    assert!(
        !h.engine.state().round_progress.results.is_empty(),
        "mid-round"
    );
    let saved = h.engine.state().to_bytes().unwrap();
    let restored = RunState::from_bytes(&saved).unwrap();
    assert_eq!(restored, h.engine.state());
    let engine = Engine::restore(restored, data(50), Box::new(FedAvgM::new(2, 0.9))).unwrap();
    let mut twin = Harness::around(engine);
    twin.now = h.now;
    // Feed both the same inputs from here on; the outputs must agree.
    let start = h.log.len();
    let mut inputs: Vec<(Duration, Input)> = Vec::new();
    for _ in 0..10_000 {
        if h.finished {
            break;
        }
        h.now += Duration::from_millis(10);
        for (i, w) in ws.iter_mut().enumerate() {
            let conn = i as ConnId + 1;
            for f in h.inbox.remove(&conn).unwrap_or_default() {
                if let Some(reply) = w.handle(&f) {
                    let input = Input::Frame {
                        conn,
                        bytes: reply.len(),
                        message: proto::decode(&reply).unwrap(),
                    };
                    inputs.push((h.now, input.clone()));
                    h.feed(input);
                }
            }
        }
    }
    assert!(h.finished);
    for (now, input) in inputs {
        twin.now = now;
        twin.feed(input);
    }
    assert!(twin.finished);
    assert_eq!(twin.log, h.log[start..], "same outputs, in the same order");
    let bits = |g: &[f32]| g.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(twin.engine.global()), bits(h.engine.global()));
    every_sample_once(&h, 50, 2);
}
