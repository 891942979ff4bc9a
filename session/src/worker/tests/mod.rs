//! The worker session driven frame by frame with a stand-in trainer.

use super::*;
use proto::{IMAGE_LEN, UpdateKind};

mod ahead;

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
        initial: None,
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
