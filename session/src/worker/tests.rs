//! The worker session driven frame by frame with a stand-in trainer.

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
        sample_cache: 0,
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
        params_encoding: proto::Encoding::F32,
        params_base: None,
        reply_encoding: proto::Encoding::F32,
        shift: 0,
        prefetched: false,
        pixels: vec![0; n as usize * IMAGE_LEN],
        labels: (0..n).map(|i| (i % 2) as u8).collect(),
        cache: None,
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

    let Message::Result(r) = decode(s.handle(&assign(7, vec![2, 2, 1], UpdateKind::Delta))) else {
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

/// Images of round `round` sent ahead (`steps` samples per step), with a
/// head start at learning rate `lr` if given, for a worker alone.
fn prefetch(round: u64, steps: Vec<u32>, lr: Option<f32>) -> Vec<u8> {
    prefetch_shared(round, steps, lr, 1.0)
}

/// As [`prefetch`], for a worker that trained `own_share` of its round.
fn prefetch_shared(round: u64, steps: Vec<u32>, lr: Option<f32>, own_share: f32) -> Vec<u8> {
    let n: u32 = steps.iter().sum();
    proto::encode(&Message::Prefetch(proto::Prefetch {
        round,
        pixels: vec![0; n as usize * IMAGE_LEN],
        labels: vec![0; n as usize],
        cache: None,
        head_start: lr.map(|learning_rate| proto::HeadStart {
            learning_rate,
            steps,
            shift: 0,
            own_share,
        }),
    }))
}

/// The assignment of a prefetched round of `steps` at `lr`, from global
/// parameters `params` (version 4).
fn assign_prefetched(round: u64, steps: Vec<u32>, lr: f32, params: Vec<f32>) -> Vec<u8> {
    proto::encode(&Message::Assign(proto::Assign {
        round,
        params_version: 4,
        learning_rate: lr,
        steps,
        reply: UpdateKind::Delta,
        params,
        params_encoding: proto::Encoding::F32,
        params_base: None,
        reply_encoding: proto::Encoding::F32,
        shift: 0,
        prefetched: true,
        pixels: Vec::new(),
        labels: Vec::new(),
        cache: None,
        component: String::new(),
    }))
}

/// A joined session that answered round 7 (params 1, 2, 3 plus 0.25 × 2 steps).
fn after_round_seven() -> WorkerSession<Counter> {
    let mut s = WorkerSession::new(identity(), Counter::default());
    join(&mut s);
    assert!(s.handle(&welcome("toy")).is_none());
    let Message::Result(_) = decode(s.handle(&assign(7, vec![2, 2], UpdateKind::Delta))) else {
        panic!("result expected")
    };
    assert_eq!(s.trainer.params, vec![1.5, 2.5, 3.5]);
    s
}

#[test]
fn a_head_start_trains_while_idle_and_its_change_goes_on_top_of_the_new_model() {
    let mut s = after_round_seven();
    assert!(s.handle(&prefetch(8, vec![2], Some(0.5))).is_none());
    assert!(s.has_work());
    assert_eq!(s.trainer.steps.len(), 2, "nothing trained before work()");
    s.work();
    assert!(!s.has_work());
    assert_eq!(
        s.trainer.params,
        vec![2.0, 3.0, 4.0],
        "from the model round 7 ended with"
    );
    assert_eq!(s.stats().steps_ahead, 1);
    let global = vec![10.0, 20.0, 30.0];
    let Message::Result(r) = decode(s.handle(&assign_prefetched(8, vec![2], 0.5, global))) else {
        panic!("result expected")
    };
    assert_eq!(s.trainer.steps.len(), 3, "not trained again");
    assert_eq!((r.round, r.params_version, r.samples), (8, 4, 2));
    assert_eq!((r.kind, r.values), (UpdateKind::Delta, vec![0.5; 3]));
    assert_eq!(r.correct, 2);
    assert_eq!(
        s.trainer.params,
        vec![10.5, 20.5, 30.5],
        "the new global model plus the change trained ahead"
    );
    assert_eq!(s.stats().rounds, 2);

    // And on: the next head start builds on that model.
    assert!(s.handle(&prefetch(9, vec![1], Some(0.5))).is_none());
    s.work();
    assert_eq!(s.trainer.params, vec![11.0, 21.0, 31.0]);
}

#[test]
fn a_head_start_shared_with_others_trains_from_the_copy_plus_its_share_of_its_progress() {
    // Round 7 went from the global 1, 2, 3 to 1.5, 2.5, 3.5; a quarter of
    // that round was this worker's: the next global model is expected at
    // 1.125, 2.125, 3.125 as far as it knows.
    let mut s = after_round_seven();
    assert!(
        s.handle(&prefetch_shared(8, vec![2], Some(0.5), 0.25))
            .is_none()
    );
    s.work();
    assert_eq!(s.trainer.params, vec![1.625, 2.625, 3.625]);
    // What it learned ahead goes on top of the model that comes.
    let global = vec![10.0, 20.0, 30.0];
    let Message::Result(r) = decode(s.handle(&assign_prefetched(8, vec![2], 0.5, global))) else {
        panic!("result expected")
    };
    assert_eq!(r.values, vec![0.5; 3]);
    assert_eq!(s.trainer.params, vec![10.5, 20.5, 30.5]);
}

#[test]
fn an_assignment_midway_moves_the_steps_done_onto_its_model_and_trains_the_rest() {
    let mut s = after_round_seven();
    assert!(s.handle(&prefetch(8, vec![1, 1, 2], Some(0.5))).is_none());
    s.work();
    assert!(s.has_work(), "two steps left");
    let global = vec![10.0, 20.0, 30.0];
    let frame = assign_prefetched(8, vec![1, 1, 2], 0.5, global);
    let Message::Result(r) = decode(s.handle(&frame)) else {
        panic!("result expected")
    };
    assert_eq!(s.trainer.steps, vec![2, 2, 1, 1, 2], "each step once");
    assert_eq!((r.samples, r.values), (4, vec![1.5; 3]));
    assert_eq!(s.trainer.params, vec![11.5, 21.5, 31.5]);
    assert!(!s.has_work());
    // An assignment before any step: exactly the round without a head start.
    let mut s = after_round_seven();
    assert!(s.handle(&prefetch(8, vec![2], Some(0.5))).is_none());
    let Message::Result(r) = decode(s.handle(&assign_prefetched(8, vec![2], 0.5, vec![1.0; 3])))
    else {
        panic!("result expected")
    };
    assert_eq!((r.values, s.stats().steps_ahead), (vec![0.5; 3], 0));
    assert_eq!(s.trainer.params, vec![1.5; 3]);
}

#[test]
fn an_assignment_unlike_its_head_start_is_trained_again_from_the_global_model() {
    let mut s = after_round_seven();
    assert!(s.handle(&prefetch(8, vec![2], Some(0.5))).is_none());
    s.work();
    // A different learning rate than announced: the round is trained anew.
    let global = vec![10.0, 20.0, 30.0];
    let Message::Result(r) = decode(s.handle(&assign_prefetched(8, vec![2], 0.25, global))) else {
        panic!("result expected")
    };
    assert_eq!(s.trainer.steps.len(), 4, "trained again");
    assert_eq!(r.values, vec![0.25; 3]);
    assert_eq!(s.trainer.params, vec![10.25, 20.25, 30.25]);
}

#[test]
fn no_head_start_without_a_good_previous_round_or_for_another_round() {
    // Images without a head start wait for their assignment.
    let mut s = after_round_seven();
    assert!(s.handle(&prefetch(8, vec![2], None)).is_none());
    assert!(!s.has_work());
    // A head start for a round that does not follow the answered one.
    let mut s = after_round_seven();
    assert!(s.handle(&prefetch(9, vec![2], Some(0.5))).is_none());
    assert!(!s.has_work());
    // After a failed round (a step of 3 fails) nothing is trained ahead.
    let mut s = after_round_seven();
    let Message::Error(_) = decode(s.handle(&assign(8, vec![3], UpdateKind::Delta))) else {
        panic!("an error report expected")
    };
    assert!(s.handle(&prefetch(9, vec![2], Some(0.5))).is_none());
    assert!(!s.has_work());
    // A round trained ahead whose assignment never comes is dropped: the
    // next assignment trains from the model it brings.
    let mut s = after_round_seven();
    assert!(s.handle(&prefetch(8, vec![2], Some(0.5))).is_none());
    s.work();
    let Message::Result(r) = decode(s.handle(&assign(9, vec![1], UpdateKind::Delta))) else {
        panic!("result expected")
    };
    assert_eq!((r.round, r.values), (9, vec![0.25; 3]));
    assert_eq!(s.trainer.params, vec![1.25, 2.25, 3.25]);
    assert!(!s.has_work());
}

/// An assignment of the samples `ids` with references `held`, sending the
/// ones not held (pixels all `ids[i] % 256`, labels `ids[i] % 2`).
fn assign_kept(round: u64, ids: &[u32], held: &[bool], reset: bool) -> Vec<u8> {
    let sent: Vec<u32> = ids
        .iter()
        .zip(held)
        .filter(|(_, h)| !**h)
        .map(|(&i, _)| i)
        .collect();
    let Ok(Message::Assign(plain)) =
        proto::decode(&assign(round, vec![ids.len() as u32], UpdateKind::Delta))
    else {
        unreachable!("assign() makes an assignment")
    };
    proto::encode(&Message::Assign(proto::Assign {
        pixels: sent
            .iter()
            .flat_map(|&i| vec![(i % 256) as u8; IMAGE_LEN])
            .collect(),
        labels: sent.iter().map(|&i| (i % 2) as u8).collect(),
        cache: Some(proto::SampleRefs {
            ids: ids.to_vec(),
            held: held.to_vec(),
            reset,
        }),
        ..plain
    }))
}

#[test]
fn kept_samples_are_trained_as_if_sent_and_a_missing_one_fails_the_round() {
    let mut s = WorkerSession::new(
        Identity {
            sample_cache: 4,
            ..identity()
        },
        Counter::default(),
    );
    let Message::Hello(h) = proto::decode(&join(&mut s)).unwrap() else {
        panic!("hello expected")
    };
    assert_eq!(h.capabilities.sample_cache, 4);
    assert!(s.handle(&welcome("toy")).is_none());
    // Samples 2 and 3 come in full, then 2, 3 held and 4, 6 sent: 4
    // samples trained, of which label 0 (samples 2, 4, 6) counts as right.
    let r = decode(s.handle(&assign_kept(1, &[2, 3], &[false, false], false)));
    assert!(
        matches!(r, Message::Result(ref r) if r.samples == 2 && r.correct == 1),
        "{r:?}"
    );
    let r = decode(s.handle(&assign_kept(
        2,
        &[2, 4, 3, 6],
        &[true, false, true, false],
        false,
    )));
    let Message::Result(r) = r else {
        panic!("a result expected, got {r:?}")
    };
    assert_eq!((r.samples, r.correct), (4, 3));
    // Sample 9 was never sent: the round fails, and nothing is trained.
    let steps_before = s.trainer().steps.len();
    let e = decode(s.handle(&assign_kept(3, &[2, 9], &[true, true], false)));
    assert!(
        matches!(&e, Message::Error(e) if e.round == Some(3) && e.reason.contains("sample 9")),
        "{e:?}"
    );
    assert_eq!(s.trainer().steps.len(), steps_before);
    // The cache was emptied with the failure: 2 is no longer held, a reset
    // and a resend bring it back.
    let e = decode(s.handle(&assign_kept(4, &[2], &[true], false)));
    assert!(matches!(e, Message::Error(_)));
    let r = decode(s.handle(&assign_kept(5, &[2], &[false], true)));
    assert!(matches!(r, Message::Result(_)), "{r:?}");
}
